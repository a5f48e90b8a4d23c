package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

const aliceB32 = agenttest.AliceB32

// countingHV counts state changes so a test can prove one ran once.
// With gate set, Start signals entered and then holds until gate is closed
// (or its context ends), as a slow libvirt start does.
type countingHV struct {
	virt.Hypervisor
	starts  atomic.Int32
	gate    chan struct{}
	entered chan struct{}
}

func (c *countingHV) Start(ctx context.Context, vm string) (virt.State, error) {
	c.starts.Add(1)
	if c.gate != nil {
		c.entered <- struct{}{}
		select {
		case <-c.gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return c.Hypervisor.Start(ctx, vm)
}

// hold makes the next Starts block until the returned release is called.
func (c *countingHV) hold() (release func()) {
	c.gate, c.entered = make(chan struct{}), make(chan struct{}, 8)
	return sync.OnceFunc(func() { close(c.gate) })
}

type bench struct {
	t       testing.TB
	key     *seal.Key
	clk     *testutil.Clock
	hv      *countingHV
	jpath   string
	j       *journal.Journal
	a       *Agent
	vms     *agenttest.VMS
	sel     *agenttest.Sink // stands in for the SEL sink
	q2      *agenttest.Sink // stands in for the Queue 2 sink
	logs    *syncBuf
	hookOut string
	q2seen  int
	dir     string
	tune    func(*Config)
	jopt    journal.Options // the journal's options (its filesystem)
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newBench(t testing.TB) *bench { return newBenchWith(t, nil) }

// newBenchWith builds a bench whose agent config tune adjusts.
func newBenchWith(t testing.TB, tune func(*Config)) *bench {
	t.Helper()
	key, err := seal.Enroll("hv1")
	if err != nil {
		t.Fatal(err)
	}
	pol, hv := agenttest.Host(t, virttest.VM{Name: "web1", VCPUs: 2, MemoryKiB: 65536}, virttest.VM{Name: "db-1", VCPUs: 2, MemoryKiB: 65536})
	dir := t.TempDir()
	b := &bench{t: t, key: key, clk: testutil.NewClock(time.Now()), hv: &countingHV{Hypervisor: hv},
		jpath: filepath.Join(dir, "journal"), sel: &agenttest.Sink{}, q2: &agenttest.Sink{}, logs: &syncBuf{},
		hookOut: filepath.Join(dir, "hook.json"), dir: dir, tune: tune}
	b.vms = agenttest.NewVMS(key, b.clk.Now)
	b.start(pol)
	return b
}

// start (re)opens the journal and builds a fresh agent, as a restart would.
func (b *bench) start(pol *policy.Policy) {
	b.t.Helper()
	j, err := journal.OpenWith(b.jpath, b.jopt)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { j.Close() })
	b.j = j
	log := slog.New(slog.NewTextHandler(b.logs, nil))
	hook := &alert.Hook{Command: []string{"sh", "-c", "cat >> " + b.hookOut}, Logger: log}
	cfg := Config{Key: b.key, Policy: pol, Hypervisor: b.hv, Journal: j,
		Alerts: alert.Multi{alert.Log{Logger: log}, hook, b.sel}, Queue2: b.q2,
		Host:           vmsg.HostInfo{Hostname: "hv1.lab", Hypervisor: "test:///default"},
		ChallengeState: filepath.Join(b.dir, "challenges"),
		Now:            b.clk.Now, Logger: log}
	if b.tune != nil {
		b.tune(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.a = a
	// Alerts are delivered in the background: let them end before the
	// temporary folders go.
	b.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Wait(ctx)
	})
}

func (b *bench) restart() {
	b.t.Helper()
	b.settle()
	if err := b.j.Close(); err != nil {
		b.t.Fatal(err)
	}
	b.start(b.a.policy())
}

// settle waits until the agent's actions and alert deliveries are done.
func (b *bench) settle() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.a.Wait(ctx); err != nil {
		b.t.Fatalf("agent did not settle: %v", err)
	}
}

// do seals req, hands it to the agent on via and opens every answer.
func (b *bench) do(req *vmsg.Request, via string) []vmsg.Message {
	b.t.Helper()
	return b.doCtx(context.Background(), req, via)
}

func (b *bench) doCtx(ctx context.Context, req *vmsg.Request, via string) []vmsg.Message {
	b.t.Helper()
	out, err := b.a.HandleEnvelope(ctx, b.seal(req), via)
	if err != nil {
		b.t.Fatalf("HandleEnvelope: %v", err)
	}
	var msgs []vmsg.Message
	for _, e := range out {
		m, err := b.vms.Open(e)
		if err != nil {
			b.t.Fatalf("open answer: %v", err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func (b *bench) reply(req *vmsg.Request) *vmsg.Reply {
	b.t.Helper()
	msgs := b.do(req, ViaOOB)
	if len(msgs) != 1 {
		b.t.Fatalf("%d answers, want 1 reply: %+v", len(msgs), msgs)
	}
	r, ok := msgs[0].(*vmsg.Reply)
	if !ok {
		b.t.Fatalf("answer is %T", msgs[0])
	}
	if r.RequestID != req.ID {
		b.t.Fatalf("reply for %d, want %d", r.RequestID, req.ID)
	}
	return r
}

var nextID atomic.Uint64

// seal stamps r with the bench clock's time (unless it has one) and seals
// it as the VMS does.
func (b *bench) seal(r *vmsg.Request) []byte {
	b.t.Helper()
	if r.IssuedMs == 0 {
		r.IssuedMs = b.clk.Now().UnixMilli()
	}
	env, err := b.vms.Seal(r)
	if err != nil {
		b.t.Fatal(err)
	}
	return env
}

func req(p string, c vmsg.Command, vm string) *vmsg.Request {
	return &vmsg.Request{ID: nextID.Add(1) + 1000, Principal: p, Command: c, VM: vm}
}

func TestEveryAction(t *testing.T) {
	b := newBench(t)
	steps := []struct {
		cmd   vmsg.Command
		state string
	}{
		{vmsg.CmdStatus, "shut off"},
		{vmsg.CmdStart, "running"},
		{vmsg.CmdSuspend, "paused"},
		{vmsg.CmdResume, "running"},
		{vmsg.CmdReboot, "running"},
		{vmsg.CmdShutdown, "shut off"},
		{vmsg.CmdStart, "running"},
		{vmsg.CmdDestroy, "shut off"},
	}
	for _, s := range steps {
		r := b.reply(req("vms1", s.cmd, "web1"))
		if !r.OK || len(r.VMs) != 1 || r.VMs[0].Name != "web1" || r.VMs[0].State != s.state {
			t.Fatalf("%v: %+v", s.cmd, r)
		}
		if r.VMs[0].VCPUs != 2 || r.VMs[0].MemoryKiB != 65536 {
			t.Fatalf("%v: status details missing: %+v", s.cmd, r.VMs[0])
		}
		if r.Host == nil || r.Host.HostID != "hv1" || r.Host.Hostname != "hv1.lab" {
			t.Fatalf("%v: host %+v", s.cmd, r.Host)
		}
	}
	r := b.reply(req("vms1", vmsg.CmdList, ""))
	got := map[string]string{}
	for _, v := range r.VMs {
		got[v.Name] = v.State
		// list carries the same figures as status (issue 12: it used to
		// carry the name and state only).
		if v.VCPUs == 0 || v.MemoryKiB == 0 || v.MaxMemKiB == 0 || !v.Persistent {
			t.Errorf("list: %s lacks figures: %+v", v.Name, v)
		}
		if v.State == "running" && v.UptimeSource == "" {
			t.Errorf("list: running %s has no uptime source: %+v", v.Name, v)
		}
	}
	if !r.OK || got["web1"] != "shut off" || got["db-1"] != "shut off" || got["test"] != "running" {
		t.Fatalf("list: %+v", r)
	}
	if r := b.reply(req("monitor", vmsg.CmdPing, "")); !r.OK || r.Host == nil || r.Host.TimeMs == 0 {
		t.Fatalf("ping: %+v", r)
	}
	// Hypervisor errors come back as codes.
	if r := b.reply(req("vms1", vmsg.CmdStatus, "nope")); r.OK || r.Code != vmsg.ErrNoSuchVM {
		t.Fatalf("no such VM: %+v", r)
	}
	if r := b.reply(req("vms1", vmsg.CmdResume, "web1")); r.OK || r.Code != vmsg.ErrHypervisor || !strings.Contains(r.Error, "shut off") {
		t.Fatalf("invalid state: %+v", r)
	}
	if r := b.reply(req("vms1", vmsg.CmdStart, "")); r.Code != vmsg.ErrBadRequest {
		t.Fatalf("no VM name: %+v", r)
	}
	if len(b.sel.Alerts()) != 0 {
		t.Fatalf("alerts for allowed requests: %+v", b.sel.Alerts())
	}
}

// checkAlert checks a refusal: reply code, an Alert in the answer, and the
// alert on the SEL fake, the log and the hook; on Queue 2's sink only when
// the answer did not go to Queue 2 itself.
func (b *bench) checkAlert(msgs []vmsg.Message, via string, code vmsg.ErrorCode, class byte, nAlerts int) {
	b.t.Helper()
	if len(msgs) != 2 {
		b.t.Fatalf("%d answers, want reply + alert: %+v", len(msgs), msgs)
	}
	r, ok := msgs[0].(*vmsg.Reply)
	if !ok || r.OK || r.Code != code {
		b.t.Fatalf("reply %+v, want code %v", msgs[0], code)
	}
	al, ok := msgs[1].(*vmsg.Alert)
	if !ok || al.Host != "hv1" || al.Reason == "" || al.Principal == "" {
		b.t.Fatalf("alert message %+v", msgs[1])
	}
	b.settle()
	got := b.sel.Alerts()
	if len(got) != nAlerts || Class(got[nAlerts-1]) != class || got[nAlerts-1].Users[0] != "alice" {
		b.t.Fatalf("SEL sink got %+v, want %d alerts, last of class %d", got, nAlerts, class)
	}
	if n := strings.Count(b.logs.String(), "alerting registered users"); n != nAlerts {
		b.t.Fatalf("%d alerts in the log, want %d:\n%s", n, nAlerts, b.logs.String())
	}
	hook, _ := os.ReadFile(b.hookOut)
	if n := strings.Count(string(hook), `"reason"`); n != nAlerts {
		b.t.Fatalf("hook ran %d times, want %d: %s", n, nAlerts, hook)
	}
	q2 := len(b.q2.Alerts()) - b.q2seen
	b.q2seen += q2
	if via == ViaOOB && q2 != 0 {
		b.t.Fatalf("OOB refusal also went to the Queue 2 sink (would be twice on Queue 2)")
	}
	if via == ViaVMMI && q2 != 1 {
		b.t.Fatalf("VMM-I refusal not on Queue 2")
	}
}

func TestDeny(t *testing.T) {
	b := newBench(t)
	// monitor has only the read-only default.
	if r := b.reply(req("monitor", vmsg.CmdStatus, "web1")); !r.OK {
		t.Fatalf("read-only default: %+v", r)
	}
	b.checkAlert(b.do(req("monitor", vmsg.CmdStart, "web1"), ViaOOB), ViaOOB, vmsg.ErrDenied, ClassDenied, 1)
	b.checkAlert(b.do(req("stranger", vmsg.CmdList, ""), ViaVMMI), ViaVMMI, vmsg.ErrDenied, ClassDenied, 2)
	if n := b.hv.starts.Load(); n != 0 {
		t.Fatalf("denied start ran %d times", n)
	}
	st, _ := b.hv.Status(context.Background(), "web1")
	if st.State != virt.StateShutOff {
		t.Fatalf("web1 is %s", st.State)
	}
}

// TestForgedPrincipal: holding the host key is not enough to speak as a
// principal. A request naming vms1 but signed with monitor's key, one with
// a broken or missing signature, one signed for another host, and one whose
// VMM-I client certificate names someone else are each refused and alerted,
// and nothing runs.
func TestForgedPrincipal(t *testing.T) {
	b := newBench(t)
	n := 0
	refused := func(name string, r *vmsg.Request, ctx context.Context, via string) {
		t.Helper()
		// A minute apart: refusal alerts are capped per minute and
		// principal, and every one of these must reach every outlet.
		b.clk.Add(time.Minute + time.Second)
		out, err := b.a.HandleEnvelope(ctx, b.seal(r), via)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var msgs []vmsg.Message
		for _, e := range out {
			m, err := b.vms.Open(e)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, m)
		}
		n++
		b.checkAlert(msgs, via, vmsg.ErrDenied, ClassDenied, n)
		if rep := msgs[0].(*vmsg.Reply); !strings.Contains(rep.Error, "signature") {
			t.Fatalf("%s: reply %q does not say why", name, rep.Error)
		}
		if al := msgs[1].(*vmsg.Alert); al.Principal != r.Principal {
			t.Fatalf("%s: alert names %q, want the claimed principal %q", name, al.Principal, r.Principal)
		}
	}
	bg := context.Background()

	// monitor (a known principal with its own key) claims to be vms1.
	b.vms.Signer = func(string) ed25519.PrivateKey { return agenttest.Key("monitor") }
	refused("forged principal", req("vms1", vmsg.CmdStart, "web1"), bg, ViaOOB)
	refused("forged principal on the VMM-I", req("vms1", vmsg.CmdDestroy, "web1"), bg, ViaVMMI)
	b.vms.Signer = agenttest.Key

	bad := req("vms1", vmsg.CmdStart, "web1")
	bad.Sig = make([]byte, ed25519.SignatureSize)
	refused("zero signature", bad, bg, ViaOOB)

	b.vms.Signer = func(string) ed25519.PrivateKey { return nil }
	refused("unsigned", req("vms1", vmsg.CmdStart, "web1"), bg, ViaOOB)
	b.vms.Signer = agenttest.Key

	// Signed by vms1, but for another host.
	other := req("vms1", vmsg.CmdStart, "web1")
	if err := ident.SignRequest(agenttest.Key("vms1"), "hv2", other); err != nil {
		t.Fatal(err)
	}
	refused("signed for another host", other, bg, ViaOOB)

	// Properly signed by vms1, but the TLS client certificate is monitor's.
	refused("certificate of another principal", req("vms1", vmsg.CmdStart, "web1"), WithPeer(bg, "monitor"), ViaVMMI)

	if got := b.hv.starts.Load(); got != 0 {
		t.Fatalf("a forged request ran %d starts", got)
	}
	// The real vms1, also with its certificate, still works.
	if r := b.reply(req("vms1", vmsg.CmdStatus, "web1")); !r.OK {
		t.Fatalf("genuine request: %+v", r)
	}
	msgs := b.doCtx(WithPeer(bg, "vms1"), req("vms1", vmsg.CmdStart, "web1"), ViaVMMI)
	if r, ok := msgs[0].(*vmsg.Reply); !ok || !r.OK || b.hv.starts.Load() != 1 {
		t.Fatalf("genuine request with its certificate: %+v", msgs)
	}
}

func (b *bench) challenge(r *vmsg.Request) *vmsg.Challenge {
	b.t.Helper()
	msgs := b.do(r, ViaOOB)
	if len(msgs) != 1 {
		b.t.Fatalf("answers %+v", msgs)
	}
	c, ok := msgs[0].(*vmsg.Challenge)
	if !ok || c.RequestID != r.ID || len(c.Nonce) != vmsg.NonceLen || c.VM != r.VM || c.Command != r.Command {
		b.t.Fatalf("want a challenge, got %+v", msgs[0])
	}
	if d := c.Expires().Sub(b.clk.Now()); d <= 0 || d > 5*time.Minute {
		b.t.Fatalf("challenge expires in %s", d)
	}
	return c
}

func TestChallenge(t *testing.T) {
	b := newBench(t)
	secret, err := seal.DecodeSecret(aliceB32)
	if err != nil {
		t.Fatal(err)
	}
	// Unprotected VM: no challenge.
	if r := b.reply(req("vms1", vmsg.CmdStart, "web1")); !r.OK {
		t.Fatalf("unprotected start: %+v", r)
	}
	// Read-only on a protected VM: no challenge.
	if r := b.reply(req("vms1", vmsg.CmdStatus, "db-1")); !r.OK {
		t.Fatalf("status of protected VM: %+v", r)
	}

	// Right answer: runs.
	r := req("vms1", vmsg.CmdStart, "db-1")
	c := b.challenge(r)
	if b.hv.starts.Load() != 1 {
		t.Fatal("a challenged request ran")
	}
	r.Answer = &vmsg.ChallengeAnswer{Nonce: c.Nonce, Code: seal.ChallengeCode(secret, c.Nonce, b.clk.Now())}
	if rep := b.reply(r); !rep.OK || rep.VMs[0].State != "running" {
		t.Fatalf("answered start: %+v", rep)
	}
	if len(b.sel.Alerts()) != 0 {
		t.Fatalf("alert on success: %+v", b.sel.Alerts())
	}
	// The same request again (a retransmission): from the journal, no alert.
	if rep := b.reply(r); !rep.OK || b.hv.starts.Load() != 2 {
		t.Fatalf("retransmitted answered request: %+v, starts %d", rep, b.hv.starts.Load())
	}
	// Reused: the same nonce and code under a new request id.
	r2 := req("vms1", vmsg.CmdDestroy, "db-1")
	r2.Answer = r.Answer
	b.checkAlert(b.do(r2, ViaOOB), ViaOOB, vmsg.ErrChallengeNo, ClassChallenge, 1)

	// Wrong code.
	r3 := req("vms1", vmsg.CmdDestroy, "db-1")
	c3 := b.challenge(r3)
	good := seal.ChallengeCode(secret, c3.Nonce, b.clk.Now())
	bad := fmt.Sprintf("%06d", (atoi(good)+1)%1000000)
	r3.Answer = &vmsg.ChallengeAnswer{Nonce: c3.Nonce, Code: bad}
	b.checkAlert(b.do(r3, ViaOOB), ViaOOB, vmsg.ErrChallengeNo, ClassChallenge, 2)
	// Code bound to another nonce.
	r4 := req("vms1", vmsg.CmdDestroy, "db-1")
	c4 := b.challenge(r4)
	r4.Answer = &vmsg.ChallengeAnswer{Nonce: c4.Nonce, Code: seal.ChallengeCode(secret, c3.Nonce, b.clk.Now())}
	b.checkAlert(b.do(r4, ViaVMMI), ViaVMMI, vmsg.ErrChallengeNo, ClassChallenge, 3)

	// Expired: the right code for the current step, after the expiry.
	r5 := req("vms1", vmsg.CmdDestroy, "db-1")
	c5 := b.challenge(r5)
	b.clk.Add(c5.Expires().Sub(b.clk.Now()) + time.Second)
	r5.Answer = &vmsg.ChallengeAnswer{Nonce: c5.Nonce, Code: seal.ChallengeCode(secret, c5.Nonce, b.clk.Now())}
	msgs := b.do(r5, ViaOOB)
	b.checkAlert(msgs, ViaOOB, vmsg.ErrChallengeNo, ClassChallenge, 4)
	if !strings.Contains(msgs[0].(*vmsg.Reply).Error, "expired") {
		t.Fatalf("expired: %+v", msgs[0])
	}
	st, _ := b.hv.Status(context.Background(), "db-1")
	if st.State != virt.StateRunning {
		t.Fatalf("db-1 is %s after refused destroys", st.State)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestDuplicateAcrossRestart(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	first := b.reply(r)
	if !first.OK || b.hv.starts.Load() != 1 {
		t.Fatalf("first: %+v", first)
	}
	// Someone stops it behind the agent's back; a duplicate must not start it again.
	if _, err := b.hv.Destroy(context.Background(), "web1"); err != nil {
		t.Fatal(err)
	}
	b.restart()
	again := b.do(r, ViaVMMI) // a retry on the other channel, sealed anew
	rep := again[0].(*vmsg.Reply)
	if len(again) != 1 || !rep.OK || rep.VMs[0].State != "running" || b.hv.starts.Load() != 1 {
		t.Fatalf("duplicate after restart: %+v, starts %d", rep, b.hv.starts.Load())
	}
	if !strings.Contains(b.logs.String(), "answered from the journal") {
		t.Fatal("duplicate not logged")
	}
	// The same id for something else is refused.
	other := *r
	other.Command = vmsg.CmdDestroy
	if rep := b.reply(&other); rep.Code != vmsg.ErrBadRequest {
		t.Fatalf("reused id: %+v", rep)
	}
}

func TestInterruptedRequest(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	if _, claimed, err := b.j.Begin(context.Background(), r.ID); err != nil || !claimed {
		t.Fatal(err)
	}
	b.restart()   // crash between Begin and Put
	for range 2 { // every retry reads the state afresh
		rep := b.reply(r)
		if rep.Code != vmsg.ErrInterrupted || !strings.Contains(rep.Error, "outcome is unknown") || b.hv.starts.Load() != 0 ||
			len(rep.VMs) != 1 || rep.VMs[0].Name != "web1" || rep.VMs[0].State != "shut off" || rep.Host == nil {
			t.Fatalf("interrupted: %+v", rep)
		}
	}
	b.settle()
	if len(b.sel.Alerts()) != 0 {
		t.Fatalf("alerts for an interrupted request: %+v", b.sel.Alerts())
	}
}

// An agent killed mid-action leaves a claim that names the action: its
// successor learns what libvirt may still be doing (and takes those VM
// events for its own, hvagent/run).
func TestInterruptedActionsNamed(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	env := b.seal(r)
	release := b.hv.hold()
	defer release()
	go b.a.HandleEnvelope(context.Background(), env, ViaVMMI)
	b.waitEntered()
	b.j.Close() // the process dies while libvirt starts web1
	j, err := journal.Open(b.jpath)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	in := InterruptedActions(j)
	if len(in) != 1 || in[0].RequestID != r.ID || in[0].Action != virt.ActionStart || in[0].VM != "web1" {
		t.Fatalf("InterruptedActions = %+v", in)
	}
	// Reads claim no note, so they are never adopted.
	if _, _, err := j.BeginNote(context.Background(), 99, beginNote(req("vms1", vmsg.CmdStatus, "web1"), ViaVMMI)); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j2, _ := journal.Open(b.jpath)
	defer j2.Close()
	if in := InterruptedActions(j2); len(in) != 1 {
		t.Fatalf("a read listed as an interrupted action: %+v", in)
	}
}

func TestBadEnvelopes(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	env, err := b.vms.Seal(&vmsg.Request{ID: 7, Command: vmsg.CmdPing, Principal: "vms1", IssuedMs: b.clk.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(env)
	bad[len(bad)-1] ^= 1
	if out, err := b.a.HandleEnvelope(ctx, bad, ViaOOB); !errors.Is(err, seal.ErrAuth) || out != nil {
		t.Fatalf("tampered: %v %v", out, err)
	}
	if out, err := b.a.HandleEnvelope(ctx, env, ViaOOB); err != nil || len(out) != 1 {
		t.Fatalf("good: %v %v", out, err)
	}
	if out, err := b.a.HandleEnvelope(ctx, env, ViaOOB); !errors.Is(err, seal.ErrReplay) || out != nil {
		t.Fatalf("replay: %v %v", out, err)
	}
	if out, err := b.a.HandleEnvelope(ctx, []byte("garbage"), ViaOOB); err == nil || out != nil {
		t.Fatalf("garbage: %v %v", out, err)
	}
	other, _ := seal.Enroll("hv2")
	env2, _ := agenttest.NewVMS(other, b.clk.Now).Seal(&vmsg.Request{ID: 8, Command: vmsg.CmdPing})
	if _, err := b.a.HandleEnvelope(ctx, env2, ViaOOB); !errors.Is(err, seal.ErrHostMismatch) {
		t.Fatalf("other host: %v", err)
	}
	b.settle()
	// A reply sent to the host is not a request.
	env3, _ := b.vms.Seal(&vmsg.Reply{RequestID: 9, OK: true})
	if out, err := b.a.HandleEnvelope(ctx, env3, ViaOOB); err == nil || out != nil {
		t.Fatalf("reply to host: %v %v", out, err)
	}
	// Alerts reach the outlets in the background: in either order.
	got := b.sel.Alerts()
	classes := map[byte]int{}
	for _, a := range got {
		classes[Class(a)]++
	}
	if len(got) != 2 || classes[ClassEnvelope] != 1 || classes[ClassReplay] != 1 {
		t.Fatalf("alerts %+v", got)
	}
	if len(b.q2.Alerts()) != 2 {
		t.Fatalf("queue 2 alerts %+v", b.q2.Alerts())
	}
	// Flooding is capped.
	for range 20 {
		b.a.HandleEnvelope(ctx, bad, ViaOOB)
	}
	b.settle()
	if n := len(b.sel.Alerts()); n != 6 {
		t.Fatalf("%d envelope alerts in a minute, want the cap 6", n)
	}
}

func TestStale(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	r.IssuedMs = b.clk.Now().Add(-time.Hour).UnixMilli()
	if rep := b.reply(r); rep.Code != vmsg.ErrStale || b.hv.starts.Load() != 0 {
		t.Fatalf("stale: %+v", rep)
	}
	// Not an outcome: the same id with a fresh issue time runs.
	r.IssuedMs = b.clk.Now().UnixMilli()
	if rep := b.reply(r); !rep.OK || b.hv.starts.Load() != 1 {
		t.Fatalf("resent with a fresh time: %+v", rep)
	}
}
