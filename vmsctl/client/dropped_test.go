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
	const sent = 10
	for i := range sent {
		writeAlert(t, ob, fmt.Sprintf("denied: %d", i))
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

// writeAlert puts a sealed alert in the BMC's alert log, as the host does.
func writeAlert(t *testing.T, ob *oobBench, reason string) {
	t.Helper()
	kind, body, _ := vmsg.Encode(&vmsg.Alert{TimeMs: time.Now().UnixMilli(), Host: "hv1", Principal: "p", Action: "start", Reason: reason})
	id := client.NewID()
	env, _ := seal.NewSealer(ob.key).Seal(kind, id, body, time.Now())
	recs, _ := record.Fragment(id, env)
	for _, r := range recs {
		if err := ob.qs.Queue2().Write(r); err != nil {
			t.Fatalf("alert %q: %v", reason, err)
		}
	}
}

// A follower that comes back under the same id (vmsctl alerts
// --follower-id) resumes where it was: no alert lost, none shown twice,
// although another follower read them all meanwhile.
func TestFollowerResumesByID(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reasons := func(al []*vmsg.Alert) string {
		var s []string
		for _, a := range al {
			s = append(s, a.Reason)
		}
		return strings.Join(s, ",")
	}
	first, _ := ob.oobClient(t, client.OOBOptions{Requester: 0x7001})
	other, _ := ob.oobClient(t, client.OOBOptions{})
	other.Alerts(ctx, "h1")
	writeAlert(t, ob, "a1")
	writeAlert(t, ob, "a2")
	if al, err := first.Alerts(ctx, "h1"); err != nil || reasons(al) != "a1,a2" {
		t.Fatalf("first run: %q %v", reasons(al), err)
	}
	first.Close()
	writeAlert(t, ob, "a3")
	if al, _ := other.Alerts(ctx, "h1"); reasons(al) != "a1,a2,a3" {
		t.Fatalf("other follower: %q", reasons(al))
	}
	again, _ := ob.oobClient(t, client.OOBOptions{Requester: 0x7001})
	if al, err := again.Alerts(ctx, "h1"); err != nil || reasons(al) != "a3" {
		t.Fatalf("the same follower again: %q %v, want a3", reasons(al), err)
	}
}
