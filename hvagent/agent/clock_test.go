package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// skewedVMS is a VMS whose clock is off the bench's by off.
func (b *bench) skewedVMS(off time.Duration) *agenttest.VMS {
	return agenttest.NewVMS(b.key, func() time.Time { return b.clk.Now().Add(off) })
}

// ask seals r with v's clock, hands it to the agent and opens the answers
// with v (nil, err when the agent answers nothing).
func (b *bench) ask(v *agenttest.VMS, r *vmsg.Request) ([]vmsg.Message, []byte, error) {
	b.t.Helper()
	r.IssuedMs = v.Now().UnixMilli()
	env, err := v.Seal(r)
	if err != nil {
		b.t.Fatal(err)
	}
	out, err := b.a.HandleEnvelope(context.Background(), env, ViaVMMI)
	if err != nil {
		return nil, env, err
	}
	var msgs []vmsg.Message
	for _, e := range out {
		m, err := v.Open(e)
		if err != nil {
			b.t.Fatalf("the VMS cannot open the answer: %v", err)
		}
		msgs = append(msgs, m)
	}
	return msgs, env, nil
}

// TestClockSkewIsLoud: a VMS whose clock was stepped back by 312 s gets an
// answer it can open — ErrClockSkew naming the offset, the host's clock —
// nothing runs, and the host alerts (class clock skew). On the old code the
// envelope was dropped unanswered and unalerted. Within the tolerance (20 s
// off) requests run; beyond ClockReportRange nothing is answered.
func TestClockSkewIsLoud(t *testing.T) {
	b := newBench(t)
	vms := b.skewedVMS(-312 * time.Second)
	msgs, env, err := b.ask(vms, req("vms1", vmsg.CmdStart, "web1"))
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stepped-back VMS: %d answers, %v", len(msgs), err)
	}
	rep, ok := msgs[0].(*vmsg.Reply)
	if !ok || rep.Code != vmsg.ErrClockSkew || !strings.Contains(rep.Error, "312 s ahead of the request's issue time") ||
		rep.Host == nil || rep.Host.TimeMs != b.clk.Now().UnixMilli() {
		t.Fatalf("answer %+v", msgs[0])
	}
	if b.hv.starts.Load() != 0 {
		t.Fatal("a request from a skewed clock ran")
	}
	b.settle()
	al := b.sel.Alerts()
	if len(al) != 1 || Class(al[0]) != ClassClock || !strings.Contains(al[0].Reason, "clock 312 s behind this host's") || al[0].Principal != "vms1" {
		t.Fatalf("alerts %+v", al)
	}
	if !strings.Contains(b.logs.String(), "request not run: clock skew") {
		t.Fatal("no log line for the clock fault")
	}
	// Replayed: the same answer, nothing run, the id not taken.
	out, err := b.a.HandleEnvelope(context.Background(), env, ViaVMMI)
	if err != nil || len(out) != 1 || b.hv.starts.Load() != 0 {
		t.Fatalf("replayed skewed envelope: %d answers, %v, %d starts", len(out), err, b.hv.starts.Load())
	}
	// A host ahead of the VMS by as much, the other way round.
	if msgs, _, _ := b.ask(b.skewedVMS(312*time.Second), req("vms1", vmsg.CmdPing, "")); len(msgs) != 1 ||
		!strings.Contains(msgs[0].(*vmsg.Reply).Error, "312 s behind the request's issue time") {
		t.Fatalf("VMS ahead: %+v", msgs)
	}
	// Within the tolerance: served.
	for _, off := range []time.Duration{-20 * time.Second, 20 * time.Second} {
		msgs, _, err := b.ask(b.skewedVMS(off), req("vms1", vmsg.CmdStart, "web1"))
		if err != nil || len(msgs) != 1 || !msgs[0].(*vmsg.Reply).OK {
			t.Fatalf("VMS %v off: %+v %v", off, msgs, err)
		}
		b.ask(b.skewedVMS(off), req("vms1", vmsg.CmdDestroy, "web1"))
	}
	// Beyond the report range: dropped as before.
	if msgs, _, err := b.ask(b.skewedVMS(-ClockReportRange-time.Minute), req("vms1", vmsg.CmdPing, "")); err == nil {
		t.Fatalf("envelope %v off answered: %+v", ClockReportRange+time.Minute, msgs)
	}
}

// TestHostClockWentBack: the host's (and the VMS's) clock stepped back 2 min
// while the agent ran: the replay window does not move back, so requests
// in the window are refused until the clock catches up — loudly, saying
// so, instead of silently.
func TestHostClockWentBack(t *testing.T) {
	b := newBench(t)
	if rep := b.reply(req("vms1", vmsg.CmdPing, "")); !rep.OK {
		t.Fatalf("ping: %+v", rep)
	}
	b.clk.Add(-2 * time.Minute)
	// A fresh VMS (vmsctl is one process per command): a long-running
	// one's own replay window stays ahead too.
	msgs, _, err := b.ask(b.skewedVMS(0), req("vms1", vmsg.CmdPing, ""))
	if err != nil || len(msgs) != 1 {
		t.Fatalf("after the step back: %d answers, %v", len(msgs), err)
	}
	if rep := msgs[0].(*vmsg.Reply); rep.Code != vmsg.ErrClockSkew || !strings.Contains(rep.Error, "this host's clock went back") {
		t.Fatalf("answer %+v", rep)
	}
	b.clk.Add(2*time.Minute + 30*time.Second) // caught up
	if msgs, _, err := b.ask(b.skewedVMS(0), req("vms1", vmsg.CmdPing, "")); err != nil || !msgs[0].(*vmsg.Reply).OK {
		t.Fatalf("ping after catching up: %+v %v", msgs, err)
	}
}

// TestClockFaultAfterRun: a request ran, its answer was lost, and the
// VMS's clock was stepped back 312 s (NTP) before it asked again with the
// same request id. The host must not answer "not run" (vmsctl: exit 8,
// safe to run again): it answers the recorded outcome, sealed so the VMS
// can open it, and still says the clocks are off (log and alert).
func TestClockFaultAfterRun(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	if msgs, _, err := b.ask(b.skewedVMS(0), r); err != nil || len(msgs) != 1 || !msgs[0].(*vmsg.Reply).OK {
		t.Fatalf("first copy: %+v %v", msgs, err)
	}
	again := *r
	msgs, _, err := b.ask(b.skewedVMS(-312*time.Second), &again)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("asked again from a stepped-back clock: %d answers, %v", len(msgs), err)
	}
	if rep := msgs[0].(*vmsg.Reply); !rep.OK || rep.RequestID != r.ID {
		t.Fatalf("the request ran, the answer says %+v", rep)
	}
	if n := b.hv.starts.Load(); n != 1 {
		t.Fatalf("%d starts, want 1", n)
	}
	b.settle()
	if al := b.sel.Alerts(); len(al) != 1 || Class(al[0]) != ClassClock {
		t.Fatalf("alerts %+v", al)
	}
}

// TestClockFaultWhileRunning: a copy of a request id still running (its
// first answer was "still running"), sent by a clock stepped back, is
// answered "still running", not "not run" (ErrClockSkew); once libvirt
// ends it, a copy gets its outcome.
func TestClockFaultWhileRunning(t *testing.T) {
	b := newBenchWith(t, func(c *Config) { c.ActionTimeout, c.DuplicateWait = 50*time.Millisecond, 20*time.Millisecond })
	began, release := b.hv.Hypervisor.(*virttest.Hypervisor).Hold()
	defer release()
	r := req("vms1", vmsg.CmdStart, "web1")
	if rep := b.reply(r); rep.Code != vmsg.ErrInProgress {
		t.Fatalf("first copy: %+v", rep)
	}
	select {
	case <-began:
	case <-time.After(10 * time.Second):
		t.Fatal("the start never reached the hypervisor")
	}
	again := *r
	msgs, _, err := b.ask(b.skewedVMS(-312*time.Second), &again)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("copy from a stepped-back clock: %d answers, %v", len(msgs), err)
	}
	if rep := msgs[0].(*vmsg.Reply); rep.Code != vmsg.ErrInProgress {
		t.Fatalf("the request runs, the answer says %v %q", rep.Code, rep.Error)
	}
	release()
	b.settle()
	again = *r
	if msgs, _, _ := b.ask(b.skewedVMS(-312*time.Second), &again); len(msgs) != 1 || !msgs[0].(*vmsg.Reply).OK {
		t.Fatalf("after it ended: %+v", msgs)
	}
	if n := b.hv.starts.Load(); n != 1 {
		t.Fatalf("%d starts", n)
	}
}

// TestClockFaultAfterInterrupted: a copy of a request id begun before an
// agent restart (killed mid-action), sent by a clock stepped back, is
// answered interrupted (outcome unknown, vmsctl exit 7), not "not run".
func TestClockFaultAfterInterrupted(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	if _, claimed, err := b.j.BeginNote(context.Background(), r.ID, beginNote(r, ViaVMMI)); err != nil || !claimed {
		t.Fatal(err)
	}
	b.restart() // killed between the claim and its outcome
	again := *r
	msgs, _, err := b.ask(b.skewedVMS(-312*time.Second), &again)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("copy from a stepped-back clock: %d answers, %v", len(msgs), err)
	}
	if rep := msgs[0].(*vmsg.Reply); rep.Code != vmsg.ErrInterrupted {
		t.Fatalf("the request was begun, the answer says %v %q", rep.Code, rep.Error)
	}
	if n := b.hv.starts.Load(); n != 0 {
		t.Fatalf("%d starts", n)
	}
}

// A stale read (a ping that waited in a VMM-I socket while the guest was
// off or the agent paused, or a skewed VMS's status) gets the loud answer
// but no alert: reads change nothing, and late is as likely as skewed.
func TestStaleReadAnsweredNotAlerted(t *testing.T) {
	b := newBench(t)
	for _, c := range []vmsg.Command{vmsg.CmdPing, vmsg.CmdList, vmsg.CmdStatus} {
		vm := ""
		if c == vmsg.CmdStatus {
			vm = "web1"
		}
		msgs, _, err := b.ask(b.skewedVMS(-71*time.Second), req("vms1", c, vm))
		if err != nil || len(msgs) != 1 || msgs[0].(*vmsg.Reply).Code != vmsg.ErrClockSkew {
			t.Fatalf("%s 71 s late: %+v %v", c, msgs, err)
		}
	}
	b.settle()
	if al := b.sel.Alerts(); len(al) != 0 {
		t.Fatalf("stale reads alerted: %+v", al)
	}
	if !strings.Contains(b.logs.String(), "a read: logged, not alerted") {
		t.Fatal("no log line for the stale reads")
	}
}
