package client_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// TestOOBSeveralReaders: two VMS clients send OOB-I commands to one host at
// the same time while two alert followers (`vmsctl alerts -f`, a second VMS)
// read the alert log. Every command is answered to the client that sent it,
// once; no client sees another's answer; every follower sees every alert;
// the command clients see none.
func TestOOBSeveralReaders(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{Queue2Capacity: 64})
	ob.alert.Store(true) // the host raises one alert per request
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const clients, per = 2, 15

	// Each client opens its RMCP+ session before the concurrent part:
	// bmcsim/lan's guard reads session keys that go-ipmi's RAKP handler
	// writes, a data race when sessions are set up concurrently (not this
	// test's subject).
	newClient := func() (*client.Client, *client.OOB) {
		c, oob := ob.oobClient(t, client.OOBOptions{})
		t1, err := c.Target("h1")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := oob.QueueStatus(ctx, t1); err != nil {
			t.Fatal(err)
		}
		return c, oob
	}
	var cls []*client.Client
	var cs []*client.OOB
	for range clients {
		c, oob := newClient()
		cls, cs = append(cls, c), append(cs, oob)
	}
	type follower struct {
		c      *client.Client
		alerts atomic.Int64
	}
	var fs []*follower
	for range 2 {
		c, _ := newClient()
		fs = append(fs, &follower{c: c})
	}
	// Each follower reads once before any alert exists: the BMC keeps an
	// alert-log record until every follower it knows has passed it, so a
	// follower must be known before the alerts it is to see are written.
	for _, f := range fs {
		al, err := f.c.Alerts(ctx, "h1")
		if err != nil {
			t.Fatal(err)
		}
		f.alerts.Add(int64(len(al)))
	}
	var (
		wg      sync.WaitGroup
		answers atomic.Int64
	)
	for i := range clients {
		c, oob := cls[i], cs[i]
		wg.Go(func() {
			for i := range per {
				res, err := c.Do(ctx, "h1", vmsg.CmdPing, "")
				if err != nil {
					t.Errorf("client %#x request %d: %v", oob.Requester(), i, err)
					return
				}
				if res.Reply.RequestID != res.RequestID || res.Via != client.ViaOOB {
					t.Errorf("client %#x got %+v", oob.Requester(), res)
					return
				}
				answers.Add(1)
			}
		})
	}
	if cs[0].Requester() == cs[1].Requester() {
		t.Fatal("two channels drew the same requester id")
	}

	// Followers read the alert log while the commands run, until they have
	// one alert per command.
	var fwg sync.WaitGroup
	for _, f := range fs {
		c := f.c
		fwg.Go(func() {
			for ctx.Err() == nil && f.alerts.Load() < clients*per {
				al, err := c.Alerts(ctx, "h1")
				if err != nil && ctx.Err() == nil {
					t.Errorf("alerts: %v", err)
					return
				}
				f.alerts.Add(int64(len(al)))
				if len(al) == 0 {
					pauseFor(ctx, 5*time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	fwg.Wait()

	if n := answers.Load(); n != clients*per {
		t.Fatalf("%d of %d commands answered", n, clients*per)
	}
	runs := 0
	ob.seen.Range(func(_, v any) bool {
		if n := v.(*atomic.Int32).Load(); n != 1 {
			t.Errorf("a request reached the host %d times", n)
		}
		runs++
		return true
	})
	if runs != clients*per {
		t.Fatalf("host saw %d requests, want %d", runs, clients*per)
	}
	for i, f := range fs {
		if n := f.alerts.Load(); n != clients*per {
			t.Errorf("follower %d saw %d alerts, want %d", i, n, clients*per)
		}
	}
	for _, oob := range cs {
		if s := oob.Stats(); s.Foreign != 0 {
			t.Errorf("client %#x was handed %d foreign answers", oob.Requester(), s.Foreign)
		}
	}
	// Every record was acknowledged by the reader it belongs to: nothing
	// addressed is left, and the alert log is trimmed once both followers
	// read it (the command clients never followed it).
	if _, s2 := ob.qs.Status(); s2.Depth != 0 {
		t.Fatalf("queue 2 holds %d records", s2.Depth)
	}
}

func pauseFor(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}
