package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// waitEntered waits until the held hypervisor is inside Start.
func (b *bench) waitEntered() {
	b.t.Helper()
	select {
	case <-b.hv.entered:
	case <-time.After(10 * time.Second):
		b.t.Fatal("the action never reached the hypervisor")
	}
}

// answered is a protected start of db-1 whose challenge was answered with
// the automation code (what vmsctl --otp-secret-file sends).
func (b *bench) answered() *vmsg.Request {
	b.t.Helper()
	secret, err := seal.DecodeSecret(aliceB32)
	if err != nil {
		b.t.Fatal(err)
	}
	r := req("vms1", vmsg.CmdStart, "db-1")
	c := b.challenge(r)
	r.Answer = &vmsg.ChallengeAnswer{Nonce: c.Nonce, Code: seal.ChallengeCode(secret, c.Nonce, b.clk.Now())}
	return r
}

func (b *bench) noAlerts() {
	b.t.Helper()
	b.settle()
	if got := b.sel.Alerts(); len(got) != 0 {
		b.t.Fatalf("alerts: %+v", got)
	}
	if got := b.q2.Alerts(); len(got) != 0 {
		b.t.Fatalf("queue 2 alerts: %+v", got)
	}
}

// The live case of issue 10: a protected start sent over the VMM-I runs
// slowly; the OOB-I retry of the same request id, with the same challenge
// answer, arrives while it runs. It must wait for the one execution and get
// its outcome: no second challenge check, no "code already used", no alert.
func TestDuplicateWhileRunning(t *testing.T) {
	b := newBench(t)
	r := b.answered()
	release := b.hv.hold()
	defer release()

	answers := make(chan []vmsg.Message, 2)
	go func() { answers <- b.do(r, ViaVMMI) }()
	b.waitEntered()
	dup := *r
	go func() { answers <- b.do(&dup, ViaOOB) }()
	select {
	case m := <-answers:
		t.Fatalf("answered while the action still runs: %+v", m)
	case <-time.After(50 * time.Millisecond): // the duplicate is waiting, as it must (no event to wait on)
	}
	release()
	for range 2 {
		var msgs []vmsg.Message
		select {
		case msgs = <-answers:
		case <-time.After(10 * time.Second):
			t.Fatal("no answer")
		}
		rep, ok := msgs[0].(*vmsg.Reply)
		if len(msgs) != 1 || !ok || !rep.OK || rep.VMs[0].State != "running" {
			t.Fatalf("answer %+v", msgs)
		}
	}
	if n := b.hv.starts.Load(); n != 1 {
		t.Fatalf("%d starts, want 1", n)
	}
	if n := b.a.Executions(); n != 1 {
		t.Fatalf("%d executions, want 1", n)
	}
	b.noAlerts()
}

// A duplicate that waits longer than DuplicateWait is told the request is
// in progress, not refused; the retry after the action gets its outcome.
func TestDuplicateInProgress(t *testing.T) {
	b := newBenchWith(t, func(c *Config) { c.DuplicateWait = 20 * time.Millisecond })
	r := b.answered()
	release := b.hv.hold()
	defer release()
	first := make(chan []vmsg.Message, 1)
	go func() { first <- b.do(r, ViaVMMI) }()
	b.waitEntered()
	dup := *r
	if rep := b.reply(&dup); rep.Code != vmsg.ErrInProgress {
		t.Fatalf("duplicate while running: %+v", rep)
	}
	release()
	<-first
	if rep := b.reply(&dup); !rep.OK || b.hv.starts.Load() != 1 {
		t.Fatalf("retry after the action: %+v, %d starts", rep, b.hv.starts.Load())
	}
	b.noAlerts()
}

// The requester goes away mid-action (connection closed, loop cancelled,
// SIGTERM): the action runs to its end and its real outcome is journalled.
func TestRequesterGoneMidAction(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	env := b.seal(r)
	release := b.hv.hold()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.a.HandleEnvelope(ctx, env, ViaVMMI)
		done <- err
	}()
	b.waitEntered()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("HandleEnvelope after its requester left: %v", err)
	}
	release()
	b.settle()
	rec, ok := b.j.Get(r.ID)
	if !ok {
		t.Fatal("no outcome journalled")
	}
	_, body, _ := splitRecord(rec)
	m, err := vmsg.Decode(vmsg.KindReply, body)
	if rep, _ := m.(*vmsg.Reply); err != nil || rep == nil || !rep.OK || rep.VMs[0].State != "running" {
		t.Fatalf("journalled outcome %+v, %v", m, err)
	}
	if rep := b.reply(r); !rep.OK || rep.VMs[0].State != "running" || b.hv.starts.Load() != 1 {
		t.Fatalf("retry: %+v, %d starts", rep, b.hv.starts.Load())
	}
}

// Shutdown: Wait lets a running action finish and journal its outcome.
func TestWaitLetsActionsFinish(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	release := b.hv.hold()
	ctx, cancel := context.WithCancel(context.Background())
	env := b.seal(r)
	go b.a.HandleEnvelope(ctx, env, ViaOOB)
	b.waitEntered()
	cancel() // SIGTERM: the channels stop
	short, scancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer scancel()
	if err := b.a.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait returned before the action ended: %v", err)
	}
	release()
	b.settle()
	if _, ok := b.j.Get(r.ID); !ok {
		t.Fatal("outcome not journalled before shutdown")
	}
}

// A challenge issued before an agent restart is answered after it, once.
func TestChallengeAcrossRestart(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "db-1")
	c := b.challenge(r)
	b.restart()
	code, err := totp.GenerateCode(aliceB32, b.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	r.Answer = &vmsg.ChallengeAnswer{Nonce: c.Nonce, Code: code}
	if rep := b.reply(r); !rep.OK || rep.VMs[0].State != "running" {
		t.Fatalf("answer after a restart: %+v", rep)
	}
	b.noAlerts()
	b.restart()
	// The same code (time step) again, on another challenge: refused.
	r2 := req("vms1", vmsg.CmdDestroy, "db-1")
	c2 := b.challenge(r2)
	r2.Answer = &vmsg.ChallengeAnswer{Nonce: c2.Nonce, Code: code}
	msgs := b.do(r2, ViaOOB)
	b.checkAlert(msgs, ViaOOB, vmsg.ErrChallengeNo, ClassChallenge, 1)
	if !strings.Contains(msgs[0].(*vmsg.Reply).Error, "already used") {
		t.Fatalf("reused app code: %+v", msgs[0])
	}
}

// An authenticator app's code answers a challenge once and only once: a
// second challenge in the same time step is refused, the next step's code
// is accepted.
func TestAppCodeOnce(t *testing.T) {
	b := newBench(t)
	now := b.clk.Now()
	code, err := totp.GenerateCode(aliceB32, now)
	if err != nil {
		t.Fatal(err)
	}
	r := req("vms1", vmsg.CmdStart, "db-1")
	c := b.challenge(r)
	r.Answer = &vmsg.ChallengeAnswer{Nonce: c.Nonce, Code: code}
	if rep := b.reply(r); !rep.OK {
		t.Fatalf("app code: %+v", rep)
	}
	if rep := b.reply(r); !rep.OK || b.hv.starts.Load() != 1 { // a retransmission: the outcome, no check
		t.Fatalf("retransmission: %+v", rep)
	}
	b.noAlerts()
	r2 := req("vms1", vmsg.CmdDestroy, "db-1")
	c2 := b.challenge(r2)
	r2.Answer = &vmsg.ChallengeAnswer{Nonce: c2.Nonce, Code: code}
	b.checkAlert(b.do(r2, ViaOOB), ViaOOB, vmsg.ErrChallengeNo, ClassChallenge, 1)
	// The refusal is the outcome of r2: a duplicate gets it again, no alert.
	dup := *r2
	if rep := b.reply(&dup); rep.Code != vmsg.ErrChallengeNo {
		t.Fatalf("duplicate of a refused request: %+v", rep)
	}
	b.settle()
	if n := len(b.sel.Alerts()); n != 1 {
		t.Fatalf("duplicate of a refusal alerted again: %d alerts", n)
	}
	b.clk.Add(30 * time.Second)
	next, _ := totp.GenerateCode(aliceB32, b.clk.Now())
	r3 := req("vms1", vmsg.CmdDestroy, "db-1")
	c3 := b.challenge(r3)
	r3.Answer = &vmsg.ChallengeAnswer{Nonce: c3.Nonce, Code: next}
	if rep := b.reply(r3); !rep.OK || rep.VMs[0].State != "shut off" {
		t.Fatalf("next step's code: %+v", rep)
	}
}

// Guessing codes hits the failure budget: the operator is locked out, the
// right code no longer gets through, and the alerts stay few.
func TestBruteForceBudget(t *testing.T) {
	b := newBench(t)
	refused := 0
	for i := range 40 {
		r := req("vms1", vmsg.CmdStart, "db-1")
		msgs := b.do(r, ViaOOB)
		if c, ok := msgs[0].(*vmsg.Challenge); ok {
			r.Answer = &vmsg.ChallengeAnswer{Nonce: c.Nonce, Code: fmt.Sprintf("%06d", i)}
			msgs = b.do(r, ViaOOB)
		}
		if rep, ok := msgs[0].(*vmsg.Reply); !ok || rep.Code != vmsg.ErrChallengeNo {
			t.Fatalf("guess %d: %+v", i, msgs[0])
		}
		refused++
	}
	b.settle()
	alerts := b.sel.Alerts()
	if len(alerts) == 0 || len(alerts) > 4 {
		t.Fatalf("%d alerts for %d refusals, want 1..4", len(alerts), refused)
	}
	lock := false
	for _, al := range alerts {
		lock = lock || strings.Contains(al.Reason, "locked")
	}
	if !lock {
		t.Fatalf("the lockout was not alerted: %+v", alerts)
	}
	if b.hv.starts.Load() != 0 {
		t.Fatal("a guess ran")
	}
	// The right code is refused while locked.
	r := req("vms1", vmsg.CmdStart, "db-1")
	msgs := b.do(r, ViaOOB)
	if rep, ok := msgs[0].(*vmsg.Reply); !ok || rep.Code != vmsg.ErrChallengeNo || !strings.Contains(rep.Error, "locked") {
		t.Fatalf("while locked: %+v", msgs[0])
	}
	// After a minute, the refusals held back are counted in a summary.
	b.clk.Add(time.Minute)
	b.a.FlushAlerts(context.Background())
	b.settle()
	all := b.sel.Alerts()
	if last := all[len(all)-1]; len(all) != len(alerts)+1 || !strings.Contains(last.Reason, "challenge refused: challenge answers refused: 37 refused in the last 1m0s") {
		t.Fatalf("summary alert: %+v", all)
	}
}

// blockingSink is a Queue 2 that takes nothing: every Send waits for its
// context.
type blockingSink struct {
	mu    sync.Mutex
	calls int
}

func (s *blockingSink) Send(ctx context.Context, _ alert.Alert) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// A full Queue 2 never stalls request handling: alerts are dropped and
// counted once their outlets are busy.
func TestFullQueue2DoesNotStall(t *testing.T) {
	q2 := &blockingSink{}
	b := newBenchWith(t, func(c *Config) {
		c.Queue2 = q2
		c.MaxAlertsInFlight = 2
		c.AlertTimeout = 200 * time.Millisecond
	})
	start := time.Now()
	for i := range 6 {
		// Denied requests over the VMM-I: their alerts go to Queue 2.
		msgs := b.do(req(fmt.Sprintf("stranger%d", i), vmsg.CmdList, ""), ViaVMMI)
		if rep, ok := msgs[0].(*vmsg.Reply); !ok || rep.Code != vmsg.ErrDenied {
			t.Fatalf("refusal %d: %+v", i, msgs[0])
		}
	}
	if rep := b.reply(req("vms1", vmsg.CmdStart, "web1")); !rep.OK {
		t.Fatalf("request behind a full Queue 2: %+v", rep)
	}
	if d := time.Since(start); d >= 200*time.Millisecond {
		t.Fatalf("requests took %s behind a full Queue 2", d)
	}
	if n := b.a.AlertsDropped(); n < 4 {
		t.Fatalf("%d alerts counted as dropped, want ≥ 4", n)
	}
	b.settle() // deliveries end with their deadline
	if !strings.Contains(b.logs.String(), "alert dropped") {
		t.Fatal("drop not logged")
	}
}
