// Command lab benchmarks a whole ooblab lab (bmcsim + QEMU hypervisor-host
// guests + hvagent + vmsctl/client) and prints four tables, each figure
// beside its goal:
//
//  1. `lab up` per stage, to ready (both channels answer): cold (guest
//     image rebuilt) and warm for one host, warm for three hosts, and the
//     ratio three hosts / one host.
//  2. Round trip of `vm status h1 web1` over VMM-I and over OOB-I,
//     interleaved request by request (median, p99).
//  3. Failover: an auto-mode client that VMM-I has just answered; the VMM-I
//     NIC is unplugged (QMP set_link) and `vm status` is sent back to back
//     until the first answer over OOB-I; time from the unplug to that
//     answer, for the default auto budget and for tuned ones.
//  4. Sealed payload throughput over OOB-I (requests with a large metadata
//     body, through the guest's real KCS path) beside the raw KCS ceiling
//     of bench/kcs (240-byte OEM requests from /dev/ipmi0 in a minimal TCG
//     guest against an in-process bmcsim), measured in this run.
//
// The lab runs in its own state folder, on its own ports (-base-port), from
// copies of bmcsim and hvagent (so a concurrent `make build` cannot change
// the guest image key between the cold and the warm run), and with its own
// guest image cache (XDG_CACHE_HOME under the state folder), so the cold
// build neither reads nor replaces anyone else's cached image. Every lab it
// brings up it takes down again, also on failure or interrupt.
//
//	go run ./bench/lab -dir DIR [-base-port 36230] [-bin bin] [-n 200]
//	    [-reps 5] [-budgets 300ms,100ms,50ms] [-payload 16384] [-payload-n 10]
//	    [-kcs-n 300] [-cold=true] [-hosts3=true] [-timeout 7m30s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	br "github.com/ooblab/ooblab/bench/results"
	"github.com/ooblab/ooblab/lab/ctl"
)

type config struct {
	dir       string
	basePort  int
	binDir    string
	n         int
	reps      int
	budgets   []time.Duration
	payload   int
	payloadN  int
	kcsN      int
	cold      bool
	hosts3    bool
	timeout   time.Duration
	log       *slog.Logger
	progress  io.Writer
	labDir    string
	imageRoot string
	jsonPath  string // -json: the figures in bench/results format too
}

func main() {
	var c config
	var budgets string
	flag.StringVar(&c.dir, "dir", "", "work folder (lab state, image cache, binaries); default a new temporary folder, removed at the end")
	flag.IntVar(&c.basePort, "base-port", 36230, "first BMC LAN port of the bench's lab; KCS +100, VMM-I +2000, metrics +3000")
	flag.StringVar(&c.binDir, "bin", "bin", "folder with the built bmcsim and hvagent")
	flag.IntVar(&c.n, "n", 200, "round trips per channel (table 2)")
	flag.IntVar(&c.reps, "reps", 5, "failover repetitions per auto budget (table 3)")
	flag.StringVar(&budgets, "budgets", "0,100ms,50ms", "auto budgets to measure failover with (0 = client default)")
	flag.IntVar(&c.payload, "payload", 16<<10, "metadata bytes per large request (table 4)")
	flag.IntVar(&c.payloadN, "payload-n", 10, "large requests (table 4)")
	flag.IntVar(&c.kcsN, "kcs-n", 300, "requests per raw KCS measurement (table 4)")
	flag.BoolVar(&c.cold, "cold", true, "measure a cold `lab up` (guest image rebuilt, ~40-60 s more)")
	flag.BoolVar(&c.hosts3, "hosts3", true, "measure a warm `lab up` of three hosts")
	flag.StringVar(&c.jsonPath, "json", "", "also write the figures to FILE (bench/results format)")
	flag.DurationVar(&c.timeout, "timeout", 7*time.Minute+30*time.Second, "bound on the whole run")
	flag.Parse()
	for _, s := range strings.Split(budgets, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if s == "0" {
			d, err = 0, nil
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lab bench: -budgets:", err)
			os.Exit(2)
		}
		c.budgets = append(c.budgets, d)
	}
	c.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c.progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := run(ctx, &c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab bench:", err)
		os.Exit(1)
	}
}

// results are printed at the end, or as far as they got on failure.
type results struct {
	ups      []upRun // cold 1, warm 1, warm 3 (as measured)
	rtt      *rttResult
	failover []failoverRun
	payload  *payloadResult
	kcs      *kcsResult
	notes    []string
}

func run(ctx context.Context, c *config) (err error) {
	if c.dir == "" {
		d, err := os.MkdirTemp("", "ooblab-benchlab-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		c.dir = d
	}
	c.dir, _ = filepath.Abs(c.dir)
	c.labDir = filepath.Join(c.dir, "lab")
	c.imageRoot = filepath.Join(c.dir, "cache")
	bin := filepath.Join(c.dir, "bin")
	for _, d := range []string{c.labDir, c.imageRoot, bin} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	for _, p := range []string{"bmcsim", "hvagent"} {
		if err := copyFile(filepath.Join(c.binDir, p), filepath.Join(bin, p)); err != nil {
			return fmt.Errorf("%s (run scripts/build.sh first): %w", p, err)
		}
	}
	c.binDir = bin

	var r results
	defer func() {
		printAll(os.Stdout, c, &r)
		if c.jsonPath != "" {
			if jerr := labSection(c, &r).WriteFile(c.jsonPath); jerr != nil && err == nil {
				err = fmt.Errorf("-json: %w", jerr)
			}
		}
	}()

	// The raw KCS ceiling first, while no lab guest of ours competes for
	// the CPUs. It builds guestprog with `go build`: keep Go's build cache
	// where it is before XDG_CACHE_HOME moves for the guest image.
	fmt.Fprintf(c.progress, "lab bench: raw KCS ceiling (bench/kcs guest, n=%d)…\n", c.kcsN)
	if r.kcs, err = measureKCS(ctx, c); err != nil {
		return fmt.Errorf("raw KCS ceiling: %w", err)
	}
	if os.Getenv("GOCACHE") == "" {
		if d, err := os.UserCacheDir(); err == nil {
			os.Setenv("GOCACHE", filepath.Join(d, "go-build"))
		}
	}
	// image.CacheRoot is <os.UserCacheDir()>/ooblab/images.
	os.Setenv("XDG_CACHE_HOME", c.imageRoot)

	if c.cold {
		u, err := labUp(ctx, c, "cold", 1, true)
		if err != nil {
			return err
		}
		r.ups = append(r.ups, u)
		if err := labDown(c); err != nil {
			return err
		}
	}
	u, err := labUp(ctx, c, "warm", 1, false)
	if err != nil {
		return err
	}
	r.ups = append(r.ups, u)
	defer func() {
		if derr := labDown(c); derr != nil && err == nil {
			err = derr
		}
	}()
	if u.cached == false {
		r.notes = append(r.notes, "the warm 1-host run rebuilt the image: its figures are not warm")
	}

	fmt.Fprintf(c.progress, "lab bench: waiting for %s's boot-time start…\n", vm)
	if d, err := settle(ctx, c, u.qemuPids); err != nil {
		return fmt.Errorf("settle: %w", err)
	} else {
		r.notes = append(r.notes, fmt.Sprintf("tables 2-4 were measured once the lab had settled, %.1f s after ready: %s running (the nested VM hvagent starts once it answers) and the host's QEMU below %.1f CPUs over a second", d.Seconds(), vm, settledCPUs))
	}
	fmt.Fprintf(c.progress, "lab bench: vm status round trips, %d per channel…\n", c.n)
	if r.rtt, err = measureRTT(ctx, c); err != nil {
		return fmt.Errorf("round trips: %w", err)
	}
	fmt.Fprintf(c.progress, "lab bench: sealed payload throughput, %d × %d bytes…\n", c.payloadN, c.payload)
	if r.payload, err = measurePayload(ctx, c, r.rtt); err != nil {
		return fmt.Errorf("sealed payload: %w", err)
	}
	fmt.Fprintf(c.progress, "lab bench: failover, %d repetitions × %d budgets…\n", c.reps, len(c.budgets))
	var skipped []string
	r.failover, skipped, err = measureFailover(ctx, c)
	r.notes = append(r.notes, skipped...)
	if err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	if err := labDown(c); err != nil {
		return err
	}

	if c.hosts3 {
		u, err := labUp(ctx, c, "warm", 3, false)
		if err != nil {
			return err
		}
		r.ups = append(r.ups, u)
		if err := labDown(c); err != nil {
			return err
		}
	}
	return nil
}

// upRun is one `lab up`.
type upRun struct {
	label  string // "cold" or "warm"
	hosts  int
	cached bool
	stages []ctl.StageTiming
	wall   time.Duration
	load   string
	// qemuPids are the hosts' QEMU processes (settle watches their CPU).
	qemuPids []int
}

func labUp(ctx context.Context, c *config, label string, hosts int, rebuild bool) (upRun, error) {
	u := upRun{label: label, hosts: hosts, load: br.LoadAvg()}
	fmt.Fprintf(c.progress, "lab bench: %s lab up, %d host(s), load %s\n", label, hosts, u.load)
	t0 := time.Now()
	st, err := ctl.Up(ctx, ctl.Options{
		Dir: c.labDir, Hosts: hosts, BinDir: c.binDir, BasePort: c.basePort,
		Force: rebuild, Out: c.progress, Probe: ctl.ProbeBoth,
	}, c.log)
	u.wall = time.Since(t0)
	if err != nil {
		return u, fmt.Errorf("%s lab up (%d hosts): %w", label, hosts, err)
	}
	u.stages = st.Stages
	for _, h := range st.Hosts {
		u.qemuPids = append(u.qemuPids, h.QEMU.Pid)
	}
	for _, s := range st.Stages {
		if strings.HasPrefix(s.Stage, "guest image (cached") {
			u.cached = true
		}
	}
	return u, nil
}

func labDown(c *config) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := ctl.Down(ctx, c.labDir, io.Discard, c.log)
	if errors.Is(err, ctl.ErrNotUp) {
		return nil
	}
	return err
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// stats of a sample of durations.
type stats struct {
	n                          int
	min, median, p99, max, avg time.Duration
}

func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	p99 := (len(s)*99 + 99) / 100 // ceil(0.99 n)
	return stats{n: len(s), min: s[0], median: s[len(s)/2], p99: s[p99-1], max: s[len(s)-1], avg: sum / time.Duration(len(s))}
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
