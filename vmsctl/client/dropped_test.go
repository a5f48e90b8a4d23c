package client_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// A follower that comes to a full alert log is shown how many alerts the
// BMC dropped before it, then the alerts left, newest last.
func TestFollowerSeesDroppedCount(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{Queue2Capacity: 16}) // an alert log of 4
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sl := seal.NewSealer(ob.key)
	const sent = 10
	for i := range sent {
		kind, body, _ := vmsg.Encode(&vmsg.Alert{TimeMs: time.Now().UnixMilli(), Host: "hv1", Principal: "p", Action: "start", Reason: fmt.Sprintf("denied: %d", i)})
		id := client.NewID()
		env, _ := sl.Seal(kind, id, body, time.Now())
		recs, _ := record.Fragment(id, env)
		for _, r := range recs {
			if err := ob.qs.Queue2().Write(r); err != nil {
				t.Fatalf("alert %d: %v", i, err)
			}
		}
	}
	c, _ := ob.oobClient(t, client.OOBOptions{})
	al, err := c.Alerts(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if len(al) < 2 || !strings.HasPrefix(al[0].Reason, client.ReasonDropped) {
		t.Fatalf("alerts %+v, want the dropped count first", al)
	}
	want := fmt.Sprintf("up to %d alerts were dropped", sent-(len(al)-1))
	if !strings.Contains(al[0].Reason, want) || al[len(al)-1].Reason != fmt.Sprintf("denied: %d", sent-1) {
		t.Fatalf("alerts %+v, want %q then the newest", al, want)
	}
}
