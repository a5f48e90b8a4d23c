// Command lan measures in-session IPMI request latency and throughput of
// RMCP+ BMCs over UDP: C concurrent sessions per target, each sending Get
// Device ID back to back (one request outstanding per session) for a fixed
// time after a warm-up, and prints one table with every target side by side
// and the ratio of two of them.
//
//	go run ./bench/lan -target bmcsim,127.0.0.1:6230,3,PID -target ipmi_sim,127.0.0.1:6231,3,PID \
//	    -ratio bmcsim/ipmi_sim -c 1,4,16
//
// The targets of a row are measured interleaved: sessions to all of them
// stay open, and the measured time is cut into -slice long turns.
//
// A target is LABEL,HOST:PORT,SUITE[,PID]; with a PID the table also shows
// the server's CPU (from /proc/PID/stat) over the measured window. The client
// shares the machine with the servers: its own CPU is shown too, so a row
// where the client, not the server, is the bottleneck can be told apart.
//
// -client lean (default) uses this package's RMCP+ client (session setup with
// go-ipmi's rmcpplus and crypto packages, hand-built in-session packets);
// -client goipmi (build with -tags goipmi) uses go-ipmi v0.9.1's pkg/client,
// which spends more CPU per request (a goroutine, a channel, a 4 KiB buffer
// and two packet decodes each). pkg/client pulls in modules that go.mod does
// not list yet (kylelemons/godebug, x/term), hence the build tag.
//
// -ipmitool-exec N adds a row per suite-3 target: ipmitool driving N
// in-session Get Device ID requests with its exec command (exec.go).
//
// -wait HOST:PORT[,HOST:PORT…] only waits for RMCP presence pongs (readiness);
// -free-ports N only prints N free UDP ports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

type target struct {
	label string
	addr  string
	suite uint8
	pid   int
}

type targetFlags []target

func (t *targetFlags) String() string { return fmt.Sprint(len(*t), " targets") }
func (t *targetFlags) Set(s string) error {
	f := strings.Split(s, ",")
	if len(f) < 3 || len(f) > 4 {
		return errors.New("want LABEL,HOST:PORT,SUITE[,PID]")
	}
	if _, _, err := net.SplitHostPort(f[1]); err != nil {
		return err
	}
	suite, err := strconv.ParseUint(f[2], 10, 8)
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	tg := target{label: f[0], addr: f[1], suite: uint8(suite)}
	if len(f) == 4 {
		if tg.pid, err = strconv.Atoi(f[3]); err != nil {
			return fmt.Errorf("pid: %w", err)
		}
	}
	*t = append(*t, tg)
	return nil
}

type result struct {
	t          target
	conc       int
	n, errs    int
	window     time.Duration
	lat        []time.Duration // sorted
	clientCPU  time.Duration
	serverCPU  time.Duration // -1: unknown
	firstError error
}

func (r *result) rate() float64 { return float64(r.n) / r.window.Seconds() }
func (r *result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(p * float64(len(r.lat)-1))
	return r.lat[i]
}

func main() {
	var (
		targets  targetFlags
		user     = flag.String("user", "admin", "user name")
		pass     = flag.String("password", "password", "password")
		concs    = flag.String("c", "1,4,16", "comma-separated numbers of concurrent sessions")
		dur      = flag.Duration("d", 4*time.Second, "measured time per row")
		warm     = flag.Duration("warmup", time.Second, "unmeasured time per row and target, after the sessions are open")
		slice    = flag.Duration("slice", 500*time.Millisecond, "the measured time goes to the targets in turn, this long each")
		timeout  = flag.Duration("timeout", time.Second, "per-request timeout (a timeout counts as an error)")
		mode     = flag.String("client", "lean", "lean, or goipmi when built with -tags goipmi")
		ratio    = flag.String("ratio", "", "A/B: add a row per concurrency with A's figures over B's (a label's first target)")
		procs    = flag.Int("procs", 1, "GOMAXPROCS of this client (0: leave as is)")
		wait     = flag.String("wait", "", "only wait for RMCP presence pongs from these HOST:PORTs, then exit")
		waitTime = flag.Duration("wait-timeout", 15*time.Second, "deadline for -wait")
		free     = flag.Int("free-ports", 0, "only print this many free UDP ports on 127.0.0.1, then exit")
		jsonOut  = flag.String("json", "", "also write the figures to FILE (bench/results format)")
		execN    = flag.Int("ipmitool-exec", 0, "also time `ipmitool -I lanplus -C 3 exec` of this many Get Device ID lines against each suite-3 target (0: no)")
		execRuns = flag.Int("exec-runs", 5, "ipmitool exec runs per target, interleaved")
	)
	flag.Var(&targets, "target", "LABEL,HOST:PORT,SUITE[,PID] (repeatable)")
	flag.Parse()

	if *free > 0 {
		if err := printFreePorts(*free); err != nil {
			fmt.Fprintln(os.Stderr, "lan:", err)
			os.Exit(1)
		}
		return
	}
	if *wait != "" {
		ctx, cancel := context.WithTimeout(context.Background(), *waitTime)
		defer cancel()
		for _, a := range strings.Split(*wait, ",") {
			if err := ping(ctx, a); err != nil {
				fmt.Fprintln(os.Stderr, "lan:", err)
				os.Exit(1)
			}
		}
		return
	}
	if len(targets) == 0 {
		fmt.Fprintln(os.Stderr, "lan: give at least one -target")
		os.Exit(2)
	}
	if dialers[*mode] == nil {
		fmt.Fprintln(os.Stderr, "lan: -client: unknown mode (goipmi needs -tags goipmi)", *mode)
		os.Exit(2)
	}
	var cs []int
	for _, f := range strings.Split(*concs, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			fmt.Fprintln(os.Stderr, "lan: bad -c value", f)
			os.Exit(2)
		}
		cs = append(cs, c)
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}

	fmt.Printf("LAN in-session Get Device ID over loopback UDP: %s client (GOMAXPROCS=%d), %d CPUs shared by client and servers,\n",
		*mode, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Printf("one request outstanding per session, %v warm-up + %v measured per row and target, in slices of %v interleaved across the targets.\n\n", *warm, *dur, *slice)
	tw := tabwriter.NewWriter(os.Stdout, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tsuite\tsessions\trequests\treq/s\tmedian\tp99\terrors\tclient CPU\tserver CPU\tserver µs/req\t")
	failed := false
	rep := newReport(*mode, *warm, *dur)
	for _, c := range cs {
		byLabel := map[string]*result{}
		rs, errs := runRow(targets, c, *mode, *user, *pass, *warm, *dur, *slice, *timeout)
		for i, t := range targets {
			r, err := rs[i], errs[i]
			if err != nil {
				fmt.Fprintf(tw, "%s\t%d\t%d\tfailed\t\n", t.label, t.suite, c)
				fmt.Fprintf(os.Stderr, "lan: %s (suite %d), %d sessions: %s\n", t.label, t.suite, c,
					strings.ReplaceAll(err.Error(), "\n", "; "))
				failed = true
				continue
			}
			if byLabel[t.label] == nil { // -ratio uses a label's first target
				byLabel[t.label] = r
			}
			rep.add(r)
			srv, per := "-", "-"
			if r.serverCPU >= 0 {
				srv = fmt.Sprintf("%.0f%%", 100*r.serverCPU.Seconds()/r.window.Seconds())
				if r.n > 0 {
					per = fmt.Sprintf("%.1f", float64(r.serverCPU.Microseconds())/float64(r.n))
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%s\t%s\t%d\t%.0f%%\t%s\t%s\t\n", t.label, t.suite, c, r.n, r.rate(),
				us(r.pct(0.5)), us(r.pct(0.99)), r.errs, 100*r.clientCPU.Seconds()/r.window.Seconds(), srv, per)
			if r.firstError != nil {
				fmt.Fprintf(os.Stderr, "lan: %s, %d sessions: first error: %v\n", t.label, c, r.firstError)
			}
		}
		if a, b, ok := strings.Cut(*ratio, "/"); ok {
			ra, rb := byLabel[a], byLabel[b]
			if ra != nil && rb != nil && rb.n > 0 && ra.n > 0 {
				fmt.Fprintf(tw, "%s/%s\t\t%d\t\t×%.2f\t×%.2f\t×%.2f\t\t\t\t%s\t\n", a, b, c, ra.rate()/rb.rate(),
					float64(ra.pct(0.5))/float64(rb.pct(0.5)), float64(ra.pct(0.99))/float64(rb.pct(0.99)),
					perRatio(ra, rb))
				rep.ratio(a, b, c, ra, rb)
			}
		}
	}
	tw.Flush()
	if *execN > 0 {
		rs, err := runExec(targets, *execN, max(1, *execRuns), *user, *pass)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lan: ipmitool exec:", err)
			failed = true
		} else if len(rs) > 0 {
			printExec(rs, *execN, *ratio)
			rep.addExec(rs, *execN, *ratio)
		}
	}
	if *jsonOut != "" {
		if err := rep.write(*jsonOut); err != nil {
			fmt.Fprintln(os.Stderr, "lan: -json:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// printFreePorts binds n UDP sockets to kernel-chosen ports at once (so the
// ports differ), prints them and releases them for the servers to bind.
func printFreePorts(n int) error {
	var ports []string
	for range n {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer c.Close()
		ports = append(ports, strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port))
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1e3) }

func perRatio(a, b *result) string {
	if a.serverCPU <= 0 || b.serverCPU <= 0 {
		return ""
	}
	return fmt.Sprintf("×%.2f", (a.serverCPU.Seconds()/float64(a.n))/(b.serverCPU.Seconds()/float64(b.n)))
}

// requester is one open session.
type requester interface {
	getDeviceID(ctx context.Context) error
	close(ctx context.Context) error
}

type leanReq struct{ s *leanSession }

func (l leanReq) getDeviceID(context.Context) error {
	_, err := l.s.do(0x06, 0x01, nil)
	return err
}
func (l leanReq) close(context.Context) error { return l.s.close() }

// dialers open a session for each -client mode; goipmi.go (build tag
// goipmi) adds go-ipmi's own client.
var dialers = map[string]func(ctx context.Context, t target, user, pass string, timeout time.Duration) (requester, error){
	"lean": func(ctx context.Context, t target, user, pass string, timeout time.Duration) (requester, error) {
		s, err := dialLean(ctx, t.addr, user, pass, t.suite, timeout)
		if err != nil {
			return nil, err
		}
		return leanReq{s}, nil
	},
}

// rig is conc open sessions to one target and what they measured so far.
type rig struct {
	t     target
	sess  []requester
	lats  [][]time.Duration
	nerr  []int
	first []error
	r     *result
}

// openRig opens conc sessions to t.
func openRig(t target, conc int, mode, user, pass string, timeout time.Duration) (*rig, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := &rig{t: t, sess: make([]requester, conc), lats: make([][]time.Duration, conc), nerr: make([]int, conc),
		first: make([]error, conc), r: &result{t: t, conc: conc, serverCPU: 0}}
	var wg sync.WaitGroup
	errs := make([]error, conc)
	// At most 4 logins in flight from this one address: bmcsim backs off a
	// source with as many unfinished handshakes as its Bad Password
	// Threshold (5 by default), as a burst of guesses would be
	// (docs/bmcsim.md, "LAN login accounting").
	slots := make(chan struct{}, 4)
	for i := range g.sess {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			g.sess[i], errs[i] = dialers[mode](ctx, t, user, pass, timeout)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		g.close()
		return nil, fmt.Errorf("open sessions: %w", err)
	}
	return g, nil
}

func (g *rig) close() {
	var wg sync.WaitGroup
	for _, s := range g.sess {
		if s != nil {
			wg.Go(func() { _ = s.close(context.Background()) })
		}
	}
	wg.Wait()
}

// slice loops Get Device ID on every session for warm+dur and keeps the
// requests that complete inside the measured dur (measure false: none).
func (g *rig) slice(warm, dur time.Duration, measure bool) {
	var phase atomic.Int32 // 0 warm-up, 1 measured, 2 stop
	var wg sync.WaitGroup
	rctx := context.Background()
	for i, s := range g.sess {
		wg.Go(func() {
			for {
				ph := phase.Load()
				if ph == 2 {
					return
				}
				t0 := time.Now()
				err := s.getDeviceID(rctx)
				d := time.Since(t0)
				if !measure || phase.Load() != 1 || ph != 1 {
					continue // started or ended outside the window
				}
				if err != nil {
					g.nerr[i]++
					if g.first[i] == nil {
						g.first[i] = err
					}
					continue
				}
				g.lats[i] = append(g.lats[i], d)
			}
		})
	}
	time.Sleep(warm) // the warm-up is a measured duration, not a wait for readiness
	cpu0, srv0 := selfCPU(), procCPU(g.t.pid)
	start := time.Now()
	phase.Store(1)
	time.Sleep(dur)
	phase.Store(2)
	window := time.Since(start)
	cpu1, srv1 := selfCPU(), procCPU(g.t.pid)
	wg.Wait()
	if !measure {
		return
	}
	g.r.window += window
	g.r.clientCPU += cpu1 - cpu0
	if srv0 >= 0 && srv1 >= 0 && g.r.serverCPU >= 0 {
		g.r.serverCPU += srv1 - srv0
	} else {
		g.r.serverCPU = -1
	}
}

func (g *rig) result() *result {
	r := g.r
	r.lat, r.errs, r.firstError = nil, 0, nil
	for i := range g.lats {
		r.lat = append(r.lat, g.lats[i]...)
		r.errs += g.nerr[i]
		if r.firstError == nil {
			r.firstError = g.first[i]
		}
	}
	slices.Sort(r.lat)
	r.n = len(r.lat)
	return r
}

// runRow measures every target at conc sessions, interleaved: sessions to
// all targets are opened first, then each target in turn gets a warm-up,
// and the measured time is cut into slices that go to the targets in turn,
// so a change of host load (the machine is shared) falls on all of them.
func runRow(targets []target, conc int, mode, user, pass string, warm, dur, slice, timeout time.Duration) ([]*result, []error) {
	rigs := make([]*rig, len(targets))
	errs := make([]error, len(targets))
	for i, t := range targets {
		rigs[i], errs[i] = openRig(t, conc, mode, user, pass, timeout)
	}
	defer func() {
		for _, g := range rigs {
			if g != nil {
				g.close()
			}
		}
	}()
	for _, g := range rigs {
		if g != nil {
			g.slice(warm, 0, false)
		}
	}
	turns := max(1, int((dur+slice/2)/slice))
	per := dur / time.Duration(turns)
	for range turns {
		for _, g := range rigs {
			if g != nil {
				g.slice(50*time.Millisecond, per, true) // a short warm-up: the other target's load drains
			}
		}
	}
	out := make([]*result, len(targets))
	for i, g := range rigs {
		if g != nil {
			out[i] = g.result()
		}
	}
	return out, errs
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user+system CPU time of process pid, or -1.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}
