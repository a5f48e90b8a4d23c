package agent

import (
	"context"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// prepare seals req and puts it in the agent's line.
func (b *bench) prepare(req *vmsg.Request, via string) *Job {
	b.t.Helper()
	return b.a.Prepare(context.Background(), b.seal(req), via)
}

// runAsync runs j in a goroutine and delivers its opened reply.
func (b *bench) runAsync(j *Job) <-chan *vmsg.Reply {
	ch := make(chan *vmsg.Reply, 1)
	go func() {
		out, err := j.Run(context.Background())
		if err != nil || len(out) == 0 {
			ch <- nil
			return
		}
		m, err := b.vms.Open(out[0])
		r, _ := m.(*vmsg.Reply)
		if err != nil {
			r = nil
		}
		ch <- r
	}()
	return ch
}

func waitReply(t *testing.T, ch <-chan *vmsg.Reply, what string) *vmsg.Reply {
	t.Helper()
	select {
	case r := <-ch:
		if r == nil {
			t.Fatalf("%s: no reply", what)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer in time", what)
	}
	return nil
}

// notYet checks that ch has no answer while something else is held. There
// is no event for "still waiting"; the other request answering first (and
// the reply's content below) is the proof, this only catches the gross case.
func notYet(t *testing.T, ch <-chan *vmsg.Reply, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s answered too early: %+v", what, r)
	default:
	}
}

// Requests for one VM run in the order they were prepared, whatever order
// their goroutines start in; a request without a VM (list) does not wait.
func TestGatePerVMOrder(t *testing.T) {
	b := newBench(t)
	release := b.hv.hold()
	defer release()
	start := b.prepare(req("vms1", vmsg.CmdStart, "web1"), ViaOOB)
	status := b.prepare(req("vms1", vmsg.CmdStatus, "web1"), ViaOOB)
	list := b.prepare(req("vms1", vmsg.CmdList, ""), ViaOOB)
	stCh := b.runAsync(status) // started first, prepared second
	startCh := b.runAsync(start)
	b.waitEntered()
	if r := waitReply(t, b.runAsync(list), "list"); !r.OK {
		t.Fatalf("list while a start runs: %+v", r)
	}
	notYet(t, stCh, "status behind the start of the same VM")
	release()
	if r := waitReply(t, startCh, "start"); !r.OK {
		t.Fatalf("start: %+v", r)
	}
	r := waitReply(t, stCh, "status")
	if !r.OK || len(r.VMs) != 1 || r.VMs[0].State != "running" {
		t.Fatalf("status ran before the start it followed: %+v", r)
	}
}

// At most MaxConcurrent requests are served at once.
func TestGateBound(t *testing.T) {
	b := newBenchWith(t, func(c *Config) { c.MaxConcurrent = 1 })
	release := b.hv.hold()
	defer release()
	startCh := b.runAsync(b.prepare(req("vms1", vmsg.CmdStart, "web1"), ViaOOB))
	b.waitEntered()
	listCh := b.runAsync(b.prepare(req("vms1", vmsg.CmdList, ""), ViaOOB))
	select {
	case r := <-listCh:
		t.Fatalf("a second request served beyond MaxConcurrent=1: %+v", r)
	case <-time.After(50 * time.Millisecond): // no event for "waiting for a slot"
	}
	release()
	waitReply(t, startCh, "start")
	if r := waitReply(t, listCh, "list"); !r.OK {
		t.Fatalf("list after the slot freed: %+v", r)
	}
}

// A duplicate of a running request waits for its outcome, under
// concurrency, without holding up other requests, and the action runs once.
func TestGateDuplicateWhileRunning(t *testing.T) {
	b := newBench(t)
	release := b.hv.hold()
	defer release()
	r := req("vms1", vmsg.CmdStart, "web1")
	firstCh := b.runAsync(b.prepare(r, ViaOOB))
	b.waitEntered()
	dup := *r
	dupCh := b.runAsync(b.prepare(&dup, ViaOOB))
	if rep := waitReply(t, b.runAsync(b.prepare(req("vms1", vmsg.CmdList, ""), ViaOOB)), "list"); !rep.OK {
		t.Fatalf("list beside a waiting duplicate: %+v", rep)
	}
	notYet(t, dupCh, "duplicate of a running request")
	release()
	for _, ch := range []<-chan *vmsg.Reply{firstCh, dupCh} {
		if rep := waitReply(t, ch, "start"); !rep.OK || rep.VMs[0].State != "running" {
			t.Fatalf("answer %+v", rep)
		}
	}
	if n := b.hv.starts.Load(); n != 1 {
		t.Fatalf("%d starts, want 1", n)
	}
	b.noAlerts()
}

// A duplicate whose first copy is still waiting in its VM's line longer
// than DuplicateWait is answered in progress; the action runs once.
func TestGateDuplicateQueued(t *testing.T) {
	b := newBenchWith(t, func(c *Config) { c.DuplicateWait = 30 * time.Millisecond })
	release := b.hv.hold()
	defer release()
	aCh := b.runAsync(b.prepare(req("vms1", vmsg.CmdStart, "web1"), ViaOOB))
	b.waitEntered()
	r := req("vms1", vmsg.CmdStatus, "web1")
	second := b.runAsync(b.prepare(r, ViaOOB)) // in line behind the start
	dup := *r
	if rep := waitReply(t, b.runAsync(b.prepare(&dup, ViaOOB)), "duplicate"); rep.Code != vmsg.ErrInProgress {
		t.Fatalf("duplicate of a queued request: %+v", rep)
	}
	release()
	waitReply(t, aCh, "start")
	if rep := waitReply(t, second, "status"); !rep.OK {
		t.Fatalf("status: %+v", rep)
	}
}
