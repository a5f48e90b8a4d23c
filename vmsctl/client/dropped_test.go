package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/app"
	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/internal/oem"
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

func reasons(al []*vmsg.Alert) string {
	var s []string
	for _, a := range al {
		s = append(s, a.Reason)
	}
	return strings.Join(s, ",")
}

// A durable follower that comes back under the same id (vmsctl alerts
// --follower-id) resumes where it was: no alert lost, none shown twice,
// although another follower read them all meanwhile and it was away
// longer than the BMC's reader TTL (50 ms here: it only has to pass). One
// that did not ask to be durable is forgotten after the reader TTL: what
// the others acknowledged meanwhile is gone for it.
func TestFollowerResumesByID(t *testing.T) {
	const readerTTL = 50 * time.Millisecond
	for _, durable := range []bool{true, false} {
		ob := newOOBBench(t, bmcsimtest.Options{Config: func(c *config.Config) { c.ReaderTTL.Duration = readerTTL }})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		first, _ := ob.oobClient(t, client.OOBOptions{Requester: 0x7001, Durable: durable})
		other, _ := ob.oobClient(t, client.OOBOptions{})
		first.Alerts(ctx, "h1")
		other.Alerts(ctx, "h1")
		writeAlert(t, ob, "a1")
		writeAlert(t, ob, "a2")
		if al, err := first.Alerts(ctx, "h1"); err != nil || reasons(al) != "a1,a2" {
			t.Fatalf("durable %v: first run: %q %v", durable, reasons(al), err)
		}
		first.Close()
		writeAlert(t, ob, "a3")
		time.Sleep(2 * readerTTL) // a lower bound: the reader TTL has passed after it
		// other was away as long: a new follower now, shown what is left.
		if al, _ := other.Alerts(ctx, "h1"); !strings.HasSuffix(reasons(al), "a3") {
			t.Fatalf("durable %v: other follower: %q", durable, reasons(al))
		}
		again, _ := ob.oobClient(t, client.OOBOptions{Requester: 0x7001, Durable: durable})
		al, err := again.Alerts(ctx, "h1")
		// Not durable: forgotten, so a3 was trimmed under it when other
		// acknowledged it.
		if want := map[bool]string{true: "a3", false: ""}[durable]; err != nil || reasons(al) != want {
			t.Fatalf("durable %v: the same follower again: %q %v, want %q", durable, reasons(al), err, want)
		}
	}
}

// A BMC older than durable followers refuses the flag (0xCC): the channel
// reads the alert log without it, and keeps doing so.
func TestDurableFollowerOnOlderBMC(t *testing.T) {
	var refused atomic.Int32
	ob := newOOBBench(t, bmcsimtest.Options{BeforeServe: func(h *app.Host) {
		next := h.Queues.Handler(oem.CmdReadQueue2For, oem.IANA(config.DefaultIANA))
		h.BMC.Registry.Register(queue.Commands[oem.CmdReadQueue2For], handlers.HandlerFunc(
			func(ctx context.Context, hctx *handlers.HandlerContext, data []byte) ([]byte, types.CompletionCode, error) {
				if len(data) >= 8 && data[7]&^byte(oem.ReadAlertLog) != 0 { // its flags check
					refused.Add(1)
					return nil, types.CompletionCode(oem.CCInvalidDataField), nil
				}
				return next.Handle(ctx, hctx, data)
			}))
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := ob.oobClient(t, client.OOBOptions{Requester: 0x7003, Durable: true})
	writeAlert(t, ob, "a1")
	if al, err := c.Alerts(ctx, "h1"); err != nil || reasons(al) != "a1" {
		t.Fatalf("alerts: %q %v", reasons(al), err)
	}
	writeAlert(t, ob, "a2")
	if al, err := c.Alerts(ctx, "h1"); err != nil || reasons(al) != "a2" {
		t.Fatalf("alerts again: %q %v", reasons(al), err)
	}
	if n := refused.Load(); n != 1 {
		t.Fatalf("the flag was sent %d times to a BMC that refused it, want once", n)
	}
}
