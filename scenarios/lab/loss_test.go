package lab_test

// The OOB-I loss spec (label loss): thousands of sealed requests from the
// VMS side (vmsctl/client, OOB-I) through a lossy UDP proxy to a real bmcsim
// process that is killed and restarted from its --state journal mid-run,
// read from Queue 1 by hvagent's OOB loop over the chardev system interface
// and served by the real agent on test:///default. It checks that every
// request id is answered as expected and that the hypervisor ran each one
// exactly once. It needs no lab (no QEMU, no root).
//
//	make e2e LABELS=loss                 # N = 2000
//	make soak                            # N = 10000
//
// Knobs: OOBLAB_LOSS_N (messages), OOBLAB_LOSS_SEED (proxy RNG seed, printed
// on every run so a run can be repeated), OOBLAB_LOSS_DROP (drop probability
// per packet and direction, default 0.2), OOBLAB_BMCSIM (a prebuilt bmcsim
// instead of building ./bmcsim), OOBLAB_LOSS_DEBUG (the agent's and client's
// debug log in the spec's output).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"

	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/oob"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/hvagent/sysif/chardev"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/hvagent/virt/lvirt"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

var _ = Describe("The OOB-I under packet loss and BMC crashes", Loss, Serial, func() {
	It("answers every request id once, as expected, with two SIGKILLs of bmcsim, a second VMS and an alert follower",
		func(ctx SpecContext) { lossyOOB(ctx, GinkgoT()) }, SpecTimeout(lossBudget()+2*time.Minute))
})

// lossN is the number of requests: OOBLAB_LOSS_N, else 2000.
func lossN() (int, error) {
	s := os.Getenv("OOBLAB_LOSS_N")
	if s == "" {
		return 2000, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("OOBLAB_LOSS_N=%q: want a positive integer", s)
	}
	return n, nil
}

// lossBudget is the whole run's deadline: generous per message, for a
// loaded 2-core machine (~15 req/s measured; this allows ~6).
func lossBudget() time.Duration {
	n, err := lossN()
	if err != nil {
		n = 2000 // the spec fails on the bad value itself
	}
	return time.Duration(n)*150*time.Millisecond + time.Minute
}

// buildBmcsim builds bmcsim from this tree into dir (so the spec never runs
// a stale bin/bmcsim), or returns OOBLAB_BMCSIM.
func buildBmcsim(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("OOBLAB_BMCSIM"); p != "" {
		return p, nil
	}
	bin := filepath.Join(dir, "bmcsim")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ooblab/ooblab/bmcsim")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building bmcsim (go build ./bmcsim): %v\n%s", err, out)
	}
	return bin, nil
}

func lossLogger() *slog.Logger {
	if os.Getenv("OOBLAB_LOSS_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// report prints a line of figures in the spec's output and keeps it in
// the JUnit report (a report entry), so CI logs show the counts.
func report(format string, args ...any) {
	AddReportEntry("loss", "loss: "+fmt.Sprintf(format, args...))
}

// ---------------------------------------------------------------------------
// Lossy UDP proxy

// lossyProxy forwards UDP between one client and the BMC's LAN port and drops
// each packet with probability p, independently per direction, from RNGs
// seeded by seed. Its upstream socket is unconnected, so a BMC that is down
// (ICMP port unreachable) does not break it.
type lossyProxy struct {
	front    *net.UDPConn
	bmc      *net.UDPAddr
	p        float64
	up, down struct{ fwd, dropped atomic.Int64 }
	wg       sync.WaitGroup

	mu      sync.Mutex
	downRNG *rand.Rand
	flows   map[string]*net.UDPConn // client address → its own upstream socket
	closed  bool
}

// startProxy forwards like a NAT: each client address (each VMS socket) gets
// an upstream socket of its own, so answers reach the socket that asked and
// a late answer to a client's old socket never reaches its new one (as on a
// real network; a proxy that sent every answer to its latest client fed
// go-ipmi's client packets of a session it had left, which it panics on).
func startProxy(t FullGinkgoTInterface, bmc *net.UDPAddr, p float64, seed uint64) *lossyProxy {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	x := &lossyProxy{front: front, bmc: bmc, p: p, downRNG: rand.New(rand.NewPCG(seed, 2)), flows: map[string]*net.UDPConn{}}
	upRNG := rand.New(rand.NewPCG(seed, 1))
	x.wg.Go(func() { // VMS → BMC
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			back := x.flow(from)
			if back == nil {
				return
			}
			if upRNG.Float64() < x.p {
				x.up.dropped.Add(1)
				continue
			}
			x.up.fwd.Add(1)
			_, _ = back.WriteToUDP(buf[:n], x.bmc)
		}
	})
	t.Cleanup(func() {
		front.Close()
		x.mu.Lock()
		x.closed = true
		for _, b := range x.flows {
			b.Close()
		}
		x.mu.Unlock()
		x.wg.Wait()
	})
	return x
}

// flow returns the upstream socket of client, opening it (and its BMC → VMS
// forwarder) on the client's first packet; nil once the proxy is closed.
func (x *lossyProxy) flow(client *net.UDPAddr) *net.UDPConn {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return nil
	}
	if b := x.flows[client.String()]; b != nil {
		return b
	}
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil
	}
	x.flows[client.String()] = back
	to := *client
	x.wg.Go(func() { // BMC → this VMS socket
		buf := make([]byte, 2048)
		for {
			n, _, err := back.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			x.mu.Lock()
			drop := x.downRNG.Float64() < x.p
			x.mu.Unlock()
			if drop {
				x.down.dropped.Add(1)
				continue
			}
			x.down.fwd.Add(1)
			_, _ = x.front.WriteToUDP(buf[:n], &to)
		}
	})
	return back
}

func (x *lossyProxy) addr() string { return x.front.LocalAddr().String() }

// ---------------------------------------------------------------------------
// bmcsim as a subprocess

// bmcProc runs bin/bmcsim and restarts it with the same flags (and so the
// same --state folder and ports).
type bmcProc struct {
	bin    string
	args   []string
	logp   string
	logf   *os.File
	mu     sync.Mutex // cmd, exited
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

// start runs bmcsim and waits, with a deadline, for its log lines saying
// both listeners are bound ("system interface listening", "LAN channel up").
func (p *bmcProc) start(ctx context.Context) error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout = p.logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start bmcsim: %w", err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.starts++
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	ready := make(chan struct{})
	fmt.Fprintf(p.logf, "---- bmcsim start %d, pid %d\n", p.starts, cmd.Process.Pid)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		lan, kcs, done := false, false, false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.logf, line)
			lan = lan || strings.Contains(line, `msg="LAN channel up"`)
			kcs = kcs || strings.Contains(line, `msg="system interface listening"`)
			if lan && kcs && !done {
				done = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("bmcsim exited before it was ready (%v); log:\n%s", cmd.ProcessState, p.tail())
	case <-tctx.Done():
		return fmt.Errorf("bmcsim not ready after 15 s; log:\n%s", p.tail())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *bmcProc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

func (p *bmcProc) tail() string {
	b, _ := os.ReadFile(p.logp)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// freePorts picks a free UDP port and a free TCP port on loopback; bmcsim
// binds them on every (re)start. They are below the kernel's ephemeral
// range (32768+) and below the lab's blocks (20000+, freeBasePort): a port
// the kernel handed out (127.0.0.1:0) may be given to an outgoing socket
// between this check and a restart of bmcsim after its SIGKILL.
func freePorts(t FullGinkgoTInterface) (udp, tcp string) {
	t.Helper()
	for try := 0; try < 200; try++ {
		p := 10000 + rand.IntN(9000)
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		u.Close()
		if err != nil {
			continue
		}
		l.Close()
		return fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.1:%d", p+1)
	}
	t.Fatal("no free pair of ports below 19000")
	return "", ""
}

// ---------------------------------------------------------------------------
// Counting wrappers on the host side

// calls records which hypervisor methods ran for which request id. The OOB
// loop serves several envelopes at once; the request id being handled
// travels in the context (reqKey), which the agent hands on to the
// hypervisor (actions run under context.WithoutCancel, which keeps values).
type calls struct {
	inflight atomic.Int32
	overlap  atomic.Int32 // handler calls that overlapped (several in flight)

	mu       sync.Mutex
	byID     map[uint64][]string
	arrivals map[uint64]int    // authentic envelopes seen per request id
	msgReq   map[uint64]uint64 // envelope message id → request id
	replays  int               // envelopes handed over a second time
	// replaysUnseen are replays of a message id this loop never read: a
	// BMC restart cannot explain them (every re-read is of a record the
	// loop had read and whose acknowledgement the kill lost).
	replaysUnseen int
	other         int // envelopes that were not requests
}

func newCalls() *calls {
	return &calls{byID: map[uint64][]string{}, arrivals: map[uint64]int{}, msgReq: map[uint64]uint64{}}
}

type reqKey struct{}

func reqOf(ctx context.Context) uint64 { id, _ := ctx.Value(reqKey{}).(uint64); return id }

func (c *calls) add(ctx context.Context, method string) {
	id := reqOf(ctx)
	c.mu.Lock()
	c.byID[id] = append(c.byID[id], method)
	c.mu.Unlock()
}

// countingHV counts every hypervisor call against the request being handled.
type countingHV struct {
	h virt.Hypervisor
	c *calls
}

var _ virt.Hypervisor = countingHV{}

// change counts one state-changing call and makes it.
func (x countingHV) change(ctx context.Context, method string, call func(context.Context, string) (virt.State, error), vm string) (virt.State, error) {
	x.c.add(ctx, method)
	return call(ctx, vm)
}

func (x countingHV) List(ctx context.Context) ([]virt.Domain, error) {
	x.c.add(ctx, "List")
	return x.h.List(ctx)
}
func (x countingHV) Status(ctx context.Context, vm string) (virt.Status, error) {
	x.c.add(ctx, "Status")
	return x.h.Status(ctx, vm)
}
func (x countingHV) Start(ctx context.Context, vm string) (virt.State, error) {
	return x.change(ctx, "Start", x.h.Start, vm)
}
func (x countingHV) Shutdown(ctx context.Context, vm string) (virt.State, error) {
	return x.change(ctx, "Shutdown", x.h.Shutdown, vm)
}
func (x countingHV) Destroy(ctx context.Context, vm string) (virt.State, error) {
	return x.change(ctx, "Destroy", x.h.Destroy, vm)
}
func (x countingHV) Reboot(ctx context.Context, vm string) (virt.State, error) {
	return x.change(ctx, "Reboot", x.h.Reboot, vm)
}
func (x countingHV) Suspend(ctx context.Context, vm string) (virt.State, error) {
	return x.change(ctx, "Suspend", x.h.Suspend, vm)
}
func (x countingHV) Resume(ctx context.Context, vm string) (virt.State, error) {
	return x.change(ctx, "Resume", x.h.Resume, vm)
}

// peekHandler opens each envelope with its own opener (to learn the request
// id), records it, and hands the envelope to the agent. before runs first
// (the test kills bmcsim from there).
type peekHandler struct {
	a      *agent.Agent
	op     *seal.Opener
	c      *calls
	before func(id uint64)
}

func (p *peekHandler) HandleEnvelope(ctx context.Context, env []byte, via string) ([][]byte, error) {
	return p.Prepare(ctx, env, via)(ctx)
}

// Prepare records the envelope, puts it in the agent's line (the loop calls
// it in arrival order) and returns what serves it: before, then the agent,
// with the request id in the context.
func (p *peekHandler) Prepare(ctx context.Context, env []byte, via string) func(context.Context) ([][]byte, error) {
	var id uint64
	hdr, body, err := p.op.Open(env, time.Now())
	p.c.mu.Lock()
	switch {
	case err == nil && hdr.Kind == vmsg.KindRequest:
		if req, derr := vmsg.DecodeRequest(body); derr == nil {
			id = req.ID
			p.c.arrivals[id]++
			p.c.msgReq[hdr.MsgID] = id
		} else {
			p.c.other++
		}
	case errors.Is(err, seal.ErrReplay):
		// The same envelope again: a record bmcsim still held in Queue 1
		// (journaled) after the loop had read it but before the loop's
		// acknowledgement reached it.
		p.c.replays++
		var seen bool
		id, seen = p.c.msgReq[hdr.MsgID]
		if !seen {
			p.c.replaysUnseen++
		}
	default:
		p.c.other++
	}
	p.c.mu.Unlock()
	job := p.a.Prepare(ctx, env, via)
	return func(ctx context.Context) ([][]byte, error) {
		if p.c.inflight.Add(1) != 1 {
			p.c.overlap.Add(1)
		}
		defer p.c.inflight.Add(-1)
		if p.before != nil && id != 0 {
			p.before(id)
		}
		return job.Run(context.WithValue(ctx, reqKey{}, id))
	}
}

// ---------------------------------------------------------------------------
// The plan: a cycle of four requests on the test driver's "test" domain,
// each answer predictable, each run countable.

type step struct {
	cmd   vmsg.Command
	vm    string
	state string   // expected state of "test" in the reply
	calls []string // hypervisor calls one run makes
}

var plan = []step{
	{vmsg.CmdStatus, "test", "running", []string{"Status"}},
	{vmsg.CmdSuspend, "test", "paused", []string{"Suspend", "Status"}},
	{vmsg.CmdResume, "test", "running", []string{"Resume", "Status"}},
	{vmsg.CmdList, "", "running", []string{"List"}},
}

func checkReply(r *vmsg.Reply, id uint64, s step) error {
	if r == nil || r.RequestID != id || !r.OK {
		return fmt.Errorf("reply %+v, want ok for request %d", r, id)
	}
	for _, v := range r.VMs {
		if v.Name == "test" {
			if v.State != s.state {
				return fmt.Errorf("%v: test is %q, want %q", s.cmd, v.State, s.state)
			}
			if s.cmd != vmsg.CmdList && len(r.VMs) != 1 {
				return fmt.Errorf("%v: %d VMs in the reply", s.cmd, len(r.VMs))
			}
			return nil
		}
	}
	return fmt.Errorf("%v: no VM \"test\" in the reply %+v", s.cmd, r.VMs)
}

// ---------------------------------------------------------------------------

// readerTTL is bmcsim's --reader-ttl in the loss test.
const readerTTL = 3 * time.Second

// TestLossyOOB: N sealed requests VMS → lossy UDP → bmcsim (killed and
// restarted twice) → chardev system interface → hvagent → and back. Beside
// the main VMS, a second VMS sends its own requests (reads, and refused
// destroys by an unknown principal, which raise alerts) and a third follows
// the alert log, each through its own lossy proxy: every answer must reach
// the VMS that asked, and every alert the follower.
func lossyOOB(sctx context.Context, t FullGinkgoTInterface) {
	n, err := lossN()
	if err != nil {
		t.Fatal(err)
	}
	dropP := 0.2
	if s := os.Getenv("OOBLAB_LOSS_DROP"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 0 || v >= 1 {
			t.Fatalf("OOBLAB_LOSS_DROP=%q: want a probability in [0,1)", s)
		}
		dropP = v
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("OOBLAB_LOSS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("OOBLAB_LOSS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	report("N=%d drop=%.0f%% each way seed=%d (repeat with OOBLAB_LOSS_SEED=%d)", n, 100*dropP, seed, seed)

	// Overall budget: the spec's own deadline, less time for the checks.
	budget := lossBudget()
	if dl, ok := sctx.Deadline(); ok {
		budget = time.Until(dl) - 15*time.Second
	}
	ctx, cancel := context.WithTimeout(sctx, budget)
	defer cancel()
	log := lossLogger()
	dir := t.TempDir()
	bmcsimBin, err := buildBmcsim(ctx, dir)
	need(err)

	// bmcsim: LAN + KCS + --state, restarted on the same ports.
	lanAddr, kcsAddr := freePorts(t)
	if err := os.WriteFile(filepath.Join(dir, "bmc.pw"), []byte("loss-vms-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "bmcsim.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	bmc := &bmcProc{bin: bmcsimBin, logp: logf.Name(), logf: logf, args: []string{
		"--name", "h1", "--lan", lanAddr, "--kcs", kcsAddr, "--state", filepath.Join(dir, "bmc-state"),
		"--user", "vms:@" + filepath.Join(dir, "bmc.pw") + ":operator", "--log-level", "info",
		// Answers left for a VMS the test "crashed" are evicted this long
		// after it stopped reading (checked at the end: queue 2 empties).
		"--reader-ttl", readerTTL.String(),
	}}
	t.Cleanup(func() {
		bmc.kill()
		if t.Failed() {
			t.Logf("bmcsim log (tail):\n%s", bmc.tail())
		}
	})
	if err := bmc.start(ctx); err != nil {
		t.Fatal(err)
	}

	// Host side: chardev system interface → OOB loop → agent on test:///default.
	key, err := seal.Enroll("hv1")
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse([]byte(`
read_only_default = true
[principals.lossvms]
`+agenttest.KeysLine("lossvms")+`
[[principals.lossvms.rules]]
actions = ["*"]
vms = ["*"]
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	lv, err := lvirt.Open(ctx, "test:///default")
	if err != nil {
		need(fmt.Errorf("libvirt test:///default: %w", err))
	}
	defer lv.Close()
	jr, err := journal.OpenWith(filepath.Join(dir, "agent.journal"), journal.Options{MaxEntries: 2*n + 100})
	if err != nil {
		t.Fatal(err)
	}
	defer jr.Close()
	cs := newCalls()
	alerts := &agenttest.Sink{}
	host, err := chardev.Dial(ctx, kcsAddr, chardev.WithLogger(log), chardev.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() { // the pushed Queue1Notify messages: wake-ups only
		for range host.Messages() {
		}
	}()

	// Two SIGKILLs of bmcsim, each while the agent holds a request it has
	// read from Queue 1 but not yet acknowledged: the first before the
	// agent runs it, the second while the hypervisor runs it (the answer is
	// then written to a dead BMC and retried into the restarted one).
	killAt := []int{n / 3, 2 * n / 3}
	var (
		ids       = make([]uint64, n)
		idIndex   = map[uint64]int{}
		killMu    sync.Mutex
		killed    int
		restarts  atomic.Int32
		downtimes []time.Duration
		restartCh = make(chan error, len(killAt))
	)
	base := rand.New(rand.NewPCG(seed, 3)).Uint64()>>1 | 1<<62
	for i := range ids {
		ids[i] = base + uint64(i)
		idIndex[ids[i]] = i
	}
	restart := func(t0 time.Time, why string) {
		fmt.Fprintf(logf, "---- SIGKILL (%s)\n", why)
		err := bmc.start(ctx)
		if err == nil {
			restarts.Add(1)
			killMu.Lock()
			downtimes = append(downtimes, time.Since(t0))
			killMu.Unlock()
		}
		restartCh <- err
	}
	maybeKill := func(id uint64, stage int) {
		i, ok := idIndex[id]
		if !ok {
			return
		}
		killMu.Lock()
		k := killed
		if k >= len(killAt) || i < killAt[k] || k%2 != stage {
			killMu.Unlock()
			return
		}
		killed++
		killMu.Unlock()
		// Kill synchronously (the agent is held meanwhile), restart in the
		// background while the agent carries on against a dead BMC.
		t0 := time.Now()
		bmc.kill()
		go restart(t0, fmt.Sprintf("request %d, stage %d", i, stage))
	}
	// Stage 0: on handing the envelope over; stage 1: inside the hypervisor.
	ph := &peekHandler{op: seal.NewOpener(key, seal.OpenerOptions{MaxSeen: 1 << 16}), c: cs,
		before: func(id uint64) { maybeKill(id, 0) }}
	hv := countingHVKill{countingHV{lv, cs}, func(ctx context.Context) { maybeKill(reqOf(ctx), 1) }}
	// The alert budgets are raised past the second VMS's 100 refusals
	// (mallory has no key in the policy: they count as junk): this spec
	// checks that no alert is lost on the lossy OOB-I, one per refused
	// request, not the throttle (TestJunkCannotMaskDenied does).
	ag, err := agent.New(agent.Config{Key: key, Policy: pol, Hypervisor: hv, Journal: jr,
		RefusalAlertsPerMinute: 1 << 20, RefusalAlertsTotal: 1 << 20, EnvelopeAlertsPerMinute: 1 << 20,
		Alerts: alerts, Host: vmsg.HostInfo{Hostname: "hv1.loss", Hypervisor: "test:///default"}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ph.a = ag
	loop := oob.New(oob.Config{Conn: host, Handler: ph, PollInterval: 50 * time.Millisecond,
		CallTimeout: 2 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: log})
	lctx, lcancel := context.WithCancel(ctx)
	ldone := make(chan error, 1)
	go func() { ldone <- loop.Run(lctx) }()
	defer func() { lcancel(); <-ldone }()

	const attempt = 400 * time.Millisecond // one try of a request (see below)

	// VMS side: the OOB-I channel through the lossy proxy.
	bmcUDP, err := net.ResolveUDPAddr("udp", lanAddr)
	if err != nil {
		t.Fatal(err)
	}
	px := startProxy(t, bmcUDP, dropP, seed)
	keyFile := filepath.Join(dir, "h1.key")
	if err := os.WriteFile(keyFile, []byte(key.URI()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ident.WritePrivateKey(filepath.Join(dir, "lossvms.key"), agenttest.Key("lossvms"), false); err != nil {
		t.Fatal(err)
	}
	inv := &inventory.Inventory{Principal: "lossvms", Dir: dir,
		Credentials: []inventory.Credential{{Principal: "lossvms", KeyFile: "lossvms.key"}}, Hosts: []inventory.Host{{
			Name: "h1", HostID: "hv1", SecretFile: "h1.key",
			BMC: inventory.BMC{Addr: px.addr(), User: "vms", PasswordFile: "bmc.pw", CipherSuite: 17},
		}}}
	// A VMS is one OOB-I channel and client; the test "crashes" it now and
	// then (closes it mid-request and starts a new one), so an answer the
	// dead VMS had already taken from Queue 2 is lost for good and the retry
	// can only be answered from the agent's journal.
	var (
		och   *client.OOB
		c     *client.Client
		stats []func() client.OOBStats
	)
	newVMS := func() {
		if c != nil {
			c.Close()
		}
		och = client.NewOOB(client.OOBOptions{UDPTimeout: 25 * time.Millisecond, UDPRetries: 3,
			PollMin: 2 * time.Millisecond, PollMax: 10 * time.Millisecond}, log)
		stats = append(stats, och.Stats)
		var err error
		if c, err = client.New(inv, client.Options{Via: client.ViaOOB, OOB: och, Logger: log}); err != nil {
			t.Fatal(err)
		}
	}
	newVMS()
	defer func() { c.Close() }()

	// The second VMS and the alert follower, each an OOB-I channel (its own
	// requester id) behind its own lossy proxy (a proxy serves one client).
	side := func(k uint64) (*client.Client, *client.OOB) {
		pk := startProxy(t, bmcUDP, dropP, seed+100*k)
		invK := *inv
		invK.Hosts = slices.Clone(inv.Hosts)
		invK.Hosts[0].BMC.Addr = pk.addr()
		o := client.NewOOB(client.OOBOptions{UDPTimeout: 25 * time.Millisecond, UDPRetries: 3,
			PollMin: 2 * time.Millisecond, PollMax: 10 * time.Millisecond}, log)
		cl, err := client.New(&invK, client.Options{Via: client.ViaOOB, OOB: o, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl, o
	}
	c2, o2 := side(1)
	cf, of := side(2)
	n2 := max(n/4, 20)
	var (
		ids2      = make([]uint64, n2)
		denied    = map[string]bool{} // VM names of the refused destroys
		side2Done = make(chan struct{})
		side2Err  error
		side2Ans  atomic.Int64
	)
	base2 := base + uint64(n) + 1<<40
	for i := range ids2 {
		ids2[i] = base2 + uint64(i)
		if i%5 == 4 {
			denied[fmt.Sprintf("ghost-%d", i)] = true
		}
	}
	go func() {
		defer close(side2Done)
		for i, id := range ids2 {
			req := &vmsg.Request{ID: id, Command: vmsg.CmdStatus, VM: "test"}
			switch {
			case i%5 == 4:
				req = &vmsg.Request{ID: id, Command: vmsg.CmdDestroy, VM: fmt.Sprintf("ghost-%d", i), Principal: "mallory"}
			case i%2 == 1:
				req = &vmsg.Request{ID: id, Command: vmsg.CmdList}
			}
			for {
				actx, acancel := context.WithTimeout(ctx, attempt)
				res, err := c2.Send(actx, "h1", req)
				acancel()
				var re *client.ReplyError
				switch {
				case err == nil && req.Principal == "" && res.Reply.RequestID == id:
				case errors.As(err, &re) && req.Principal == "mallory" && re.Code == vmsg.ErrDenied:
				case err != nil && errors.As(err, &re):
					side2Err = fmt.Errorf("second VMS request %d: %w", i, err)
					return
				case err == nil:
					side2Err = fmt.Errorf("second VMS request %d (%v): answer %+v", i, req.Command, res.Reply)
					return
				default:
					if ctx.Err() != nil {
						side2Err = fmt.Errorf("second VMS request %d: %w", i, err)
						return
					}
					continue // lost: the same request id again
				}
				side2Ans.Add(1)
				break
			}
		}
	}()
	// The follower reads the alert log until it has seen every refused
	// destroy (or the main part is over and a last drain found no more).
	var (
		seenAlerts   = map[string]int{}
		followerStop = make(chan struct{})
		followerDone = make(chan struct{})
	)
	go func() {
		defer close(followerDone)
		var stopAt time.Time
		for ctx.Err() == nil {
			al, err := cf.Alerts(ctx, "h1")
			for _, a := range al {
				if a.Principal == "mallory" {
					seenAlerts[a.VM]++
				}
			}
			if err == nil && len(al) == 0 {
				select {
				case <-followerStop:
					if stopAt.IsZero() {
						stopAt = time.Now()
					}
					if len(seenAlerts) >= len(denied) || time.Since(stopAt) > 15*time.Second {
						return
					}
				default:
				}
				tm := time.NewTimer(20 * time.Millisecond)
				select {
				case <-tm.C:
				case <-ctx.Done():
				}
				tm.Stop()
			}
		}
	}()

	// Each request under its own id, retried with the same id until its
	// answer arrives. attempt bounds one try: a try that outlives it (lost
	// packets, a dead BMC) is given up and sent again, so the agent sees the
	// same request id twice and must answer the second from its journal.
	// With probability pCrash the first try gets a random 5-80 ms and the
	// VMS is replaced when it fails.
	const pCrash = 0.03
	vmsRNG := rand.New(rand.NewPCG(seed, 4))
	start := time.Now()
	var answered, retries, crashes, restartsSeen int
	var lat []time.Duration
	for i := range n {
		s := plan[i%len(plan)]
		t0 := time.Now()
		for try := 0; ; try++ {
			d, crash := attempt, false
			if try == 0 && vmsRNG.Float64() < pCrash {
				d, crash = time.Duration(5+vmsRNG.IntN(75))*time.Millisecond, true
			}
			actx, acancel := context.WithTimeout(ctx, d)
			res, err := c.Send(actx, "h1", &vmsg.Request{ID: ids[i], Command: s.cmd, VM: s.vm})
			acancel()
			if err == nil {
				if err := checkReply(res.Reply, ids[i], s); err != nil {
					t.Fatalf("request %d (id %d): %v", i, ids[i], err)
				}
				answered++
				break
			}
			var re *client.ReplyError
			if errors.As(err, &re) {
				t.Fatalf("request %d (id %d, %v): refused: %v", i, ids[i], s.cmd, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("request %d (id %d): out of time after %d answers, %d retries: %v (client %+v, loop %+v)",
					i, ids[i], answered, retries, err, och.Stats(), loop.Stats())
			}
			if crash {
				crashes++
				newVMS()
			}
			retries++
		}
		lat = append(lat, time.Since(t0))
		if (i+1)%max(n/10, 100) == 0 && i+1 < n {
			t.Logf("progress: %d/%d answered, %d retries, %d bmcsim restarts, %v", i+1, n, retries, restarts.Load(), time.Since(start).Round(time.Second))
		}
		select {
		case err := <-restartCh:
			restartsSeen++
			if err != nil {
				t.Fatalf("bmcsim restart: %v", err)
			}
		default:
		}
	}
	elapsed := time.Since(start)
	select {
	case <-side2Done:
	case <-ctx.Done():
		t.Fatal("the second VMS did not finish")
	}
	if side2Err != nil {
		t.Fatal(side2Err)
	}
	close(followerStop)
	select {
	case <-followerDone:
	case <-ctx.Done():
		t.Fatal("the alert follower did not finish")
	}
	// Any restart still under way must finish before the checks.
	killMu.Lock()
	kills := killed
	killMu.Unlock()
	for ; restartsSeen < kills; restartsSeen++ {
		select {
		case err := <-restartCh:
			if err != nil {
				t.Fatalf("bmcsim restart: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("bmcsim restart did not finish")
		}
	}

	// Drain Queue 2 (late answers to retried ids) and check both queues
	// ended empty.
	dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	defer dcancel()
	for {
		if _, err := c.Alerts(dctx, "h1"); err == nil {
			break
		} else if dctx.Err() != nil {
			t.Fatalf("draining queue 2: %v", err)
		}
	}
	// Answers left for the VMS instances the test crashed are evicted once
	// they have not read for readerTTL; reads (here, the drain) sweep. The
	// host acknowledges its last request within its AckDelay (100 ms).
	var q1d, q2d int
	qctx, qcancel := context.WithTimeout(ctx, readerTTL+20*time.Second)
	defer qcancel()
	for {
		tg, _ := c.Target("h1")
		q1, q2, err := och.QueueStatus(qctx, tg)
		if err == nil {
			q1d, q2d = int(q1.Depth), int(q2.Depth)
			if (q1d == 0 && q2d == 0) || qctx.Err() != nil {
				break
			}
			pauseCtx(qctx, 250*time.Millisecond)
			_, _ = c.Alerts(qctx, "h1")
			continue
		}
		if qctx.Err() != nil {
			t.Fatalf("queue status: %v", err)
		}
	}

	// Every request id ran exactly once on the hypervisor.
	cs.mu.Lock()
	var first runTally
	for i, id := range ids {
		first.add(cs.byID[id], plan[i%len(plan)].calls, fmt.Sprintf("request %d (%v)", i, plan[i%len(plan)].cmd))
	}
	// The second VMS's requests: each read ran once, each refused destroy
	// never.
	var second runTally
	for i, id := range ids2 {
		var want []string
		switch {
		case i%5 == 4:
		case i%2 == 1:
			want = []string{"List"}
		default:
			want = []string{"Status"}
		}
		second.add(cs.byID[id], want, fmt.Sprintf("second VMS request %d", i))
	}
	bad := slices.Concat(first.bad, second.bad)
	stray := len(cs.byID[0])
	var arrivals, suppressed, maxArr int
	for _, id := range ids {
		a := cs.arrivals[id]
		arrivals += a
		if a > 1 {
			suppressed += a - 1
		}
		maxArr = max(maxArr, a)
	}
	replays, replaysUnseen, other := cs.replays, cs.replaysUnseen, cs.other
	cs.mu.Unlock()

	slices.Sort(lat)
	stats = append(stats, o2.Stats, of.Stats)
	var cst client.OOBStats
	for _, f := range stats {
		x := f()
		cst.Writes += x.Writes
		cst.WriteRetries += x.WriteRetries
		cst.FullWaits += x.FullWaits
		cst.Reads += x.Reads
		cst.Reconnects += x.Reconnects
		cst.Foreign += x.Foreign
	}
	lst := loop.Stats()
	killMu.Lock()
	dts := slices.Clone(downtimes)
	killMu.Unlock()
	report("sent %d requests, answered %d, VMS retries (same request id) %d, of them after a VMS crash %d; elapsed %v (%.1f req/s); per request median %v p99 %v max %v",
		n, answered, retries, crashes, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(),
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	report("proxy: VMS→BMC %d forwarded %d dropped; BMC→VMS %d forwarded %d dropped",
		px.up.fwd.Load(), px.up.dropped.Load(), px.down.fwd.Load(), px.down.dropped.Load())
	report("bmcsim: %d SIGKILL+restarts from --state (down %v)", restarts.Load(), dts)
	report("hypervisor: %d of %d request ids executed, %d duplicate executions, %d never executed, %d with unexpected calls",
		first.ran, n, first.extra, first.never, first.off)
	report("agent: %d envelopes for %d request ids (max %d per id), %d duplicates answered from the journal, %d envelopes re-read after a restart (refused as replays), %d other, %d alerts",
		arrivals, n, maxArr, suppressed, replays, other, len(alerts.Alerts()))
	report("client OOB-I (%d VMS instances): %+v; host loop: %+v; queues at end: q1 %d, q2 %d", len(stats), cst, lst, q1d, q2d)
	lostAlerts := 0
	for vm := range denied {
		if seenAlerts[vm] == 0 {
			lostAlerts++
		}
	}
	report("several readers: second VMS %d of %d answered (%d ran once, %d ran twice, %d never ran, %d refused as expected); "+
		"follower saw %d of %d alerts (%d lost); answers delivered to the wrong VMS: %d",
		side2Ans.Load(), n2, second.once, second.extra, second.never, len(denied), len(seenAlerts), len(denied), lostAlerts, cst.Foreign)
	if int(side2Ans.Load()) != n2 || second.extra != 0 || second.never != 0 || second.once != n2 {
		t.Errorf("second VMS: answered %d, ran once %d, twice %d, never %d (want %d, %d, 0, 0)", side2Ans.Load(), second.once, second.extra, second.never, n2, n2)
	}
	if lostAlerts != 0 {
		t.Errorf("the follower missed %d of %d alerts", lostAlerts, len(denied))
	}
	if cst.Foreign != 0 {
		t.Errorf("%d answers were delivered to a VMS that did not ask", cst.Foreign)
	}

	if answered != n {
		t.Errorf("answered %d of %d", answered, n)
	}
	if len(bad) > 0 {
		t.Errorf("hypervisor runs per request id differ:\n%s", strings.Join(bad, "\n"))
	}
	if first.never != 0 || first.extra != 0 || first.ran != n {
		t.Errorf("executions %d, duplicate runs %d, missing %d (want %d, 0, 0)", first.ran, first.extra, first.never, n)
	}
	if stray != 0 {
		t.Errorf("%d hypervisor calls outside any request", stray)
	}
	report("the OOB loop served %d envelopes while another was being served (counted per request id through the context)", cs.overlap.Load())
	if int(restarts.Load()) != len(killAt) {
		t.Errorf("bmcsim restarted %d times, want %d", restarts.Load(), len(killAt))
	}
	if px.up.dropped.Load() == 0 || px.down.dropped.Load() == 0 {
		if dropP > 0 {
			t.Errorf("the proxy dropped nothing one way")
		}
	}
	if q1d != 0 || q2d != 0 {
		t.Errorf("queues not empty at the end: q1 %d q2 %d", q1d, q2d)
	}
	// A "replayed envelope" alert is true only where the loop really read
	// an envelope a second time, and that happens only when a bmcsim kill
	// lost the loop's acknowledgement of a record it had read: each such
	// alert must be one of those re-reads, of a message id read before,
	// and without a restart there are none.
	replayAlerts := 0
	for _, a := range alerts.Alerts() {
		if a.Principal == "mallory" && strings.HasPrefix(a.Reason, agent.ReasonDenied) {
			continue // the second VMS's refused destroys
		}
		if !strings.HasPrefix(a.Reason, agent.ReasonReplay) {
			t.Errorf("unexpected alert: %+v", a)
			continue
		}
		replayAlerts++
	}
	if replayAlerts > replays {
		t.Errorf("%d replay alerts but only %d envelopes were re-read", replayAlerts, replays)
	}
	if replaysUnseen != 0 {
		t.Errorf("%d replays of message ids the loop never read: not explained by a BMC restart", replaysUnseen)
	}
	if restarts.Load() == 0 && replays != 0 {
		t.Errorf("%d envelopes re-read without a BMC restart", replays)
	}
}

// runTally counts, over the request ids of one VMS, how each id's
// hypervisor calls compare with the calls one run makes (want).
type runTally struct {
	once  int      // ids whose calls are want, exactly
	ran   int      // ids that ran whole: once, or k times (k·len(want) calls, want first)
	extra int      // the k-1 runs beyond the first, summed
	never int      // ids that should have run and made no call
	off   int      // ids whose calls are not want
	bad   []string // the first five that are not want, for the error
}

// add counts one request id; what names it in bad.
func (r *runTally) add(got, want []string, what string) {
	if slices.Equal(got, want) {
		r.once++
		r.ran++
		return
	}
	r.off++
	switch {
	case len(want) > 0 && len(got) == 0:
		r.never++
	case len(want) > 0 && len(got)%len(want) == 0 && slices.Equal(got[:len(want)], want):
		r.ran++
		r.extra += len(got)/len(want) - 1
	}
	if len(r.bad) < 5 {
		r.bad = append(r.bad, fmt.Sprintf("%s: hypervisor calls %v, want %v", what, got, want))
	}
}

// countingHVKill is countingHV with a hook run inside every state change,
// before the hypervisor is called.
type countingHVKill struct {
	countingHV
	hook func(ctx context.Context)
}

func (x countingHVKill) Suspend(ctx context.Context, vm string) (virt.State, error) {
	x.hook(ctx)
	return x.countingHV.Suspend(ctx, vm)
}

func (x countingHVKill) Resume(ctx context.Context, vm string) (virt.State, error) {
	x.hook(ctx)
	return x.countingHV.Resume(ctx, vm)
}

func pauseCtx(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}
