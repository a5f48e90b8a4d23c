// Command fleet measures ooblab at fleet scale on one machine (lab/simfleet): bin/bmcsim
// --fleet N serving N BMCs (RMCP+ on N UDP ports, the QEMU chardev system
// interface on N TCP ports), N hvagents in this one process (hvagent's own
// run.Run, each over its BMC's chardev, against libvirt's test:///default),
// and bin/vmsctl `host status` with no host named, over the OOB-I, against
// the inventory this program writes.
//
// For each N of -sizes it reports:
//
//   - bmcsim RSS idle (all N BMCs listening, no host attached), with the N
//     hosts attached, and after the status runs (N RMCP+ sessions open);
//   - bmcsim start-up time (process start to the N-th "LAN channel up");
//   - hosts ready: the N agents' start to the last one reading Queue 1;
//   - `vmsctl host status --via oob` and `vmsctl vm list --via oob` (no host
//     named: every host) wall time, median and max of -runs runs (a new
//     vmsctl process each: RMCP+ session setup included), and how many
//     hosts answered.
//
// -serve N brings a fleet of N up, prints the inventory's path and waits
// for Ctrl-C: a fleet to try vmsctl against by hand.
//
//	go run ./bench/fleet -bin bin -sizes 10,100,1000 -json fleet.json
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ooblab/ooblab/bench/results"
	"github.com/ooblab/ooblab/lab/simfleet"
)

type options struct {
	bin      string
	dir      string
	runs     int
	parallel int
	timeout  time.Duration
}

func main() {
	var (
		o      options
		sizesF = flag.String("sizes", "10,100,1000", "fleet sizes, comma-separated")
		jsonF  = flag.String("json", "", "also write the figures to FILE (bench/results format)")
		serve  = flag.Int("serve", 0, "bring up a fleet of N, print its inventory and wait for Ctrl-C")
	)
	flag.StringVar(&o.bin, "bin", "bin", "folder with bmcsim and vmsctl")
	flag.StringVar(&o.dir, "dir", "", "work folder (default: a temporary one, removed at the end)")
	flag.IntVar(&o.runs, "runs", 3, "host status runs per size")
	flag.IntVar(&o.parallel, "parallel", 0, "vmsctl --parallel (0: vmsctl's default)")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "deadline of one size")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, *sizesF, *jsonF, *serve); err != nil {
		stop()
		fatal(err)
	}
}

// run is main without os.Exit, so the work folder is removed on error too.
func run(ctx context.Context, o options, sizesF, jsonF string, serve int) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "ooblab-fleet-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	if serve > 0 {
		return serveFleet(ctx, o, serve)
	}
	var sizes []int
	for _, s := range strings.Split(sizesF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-sizes: %q is not a fleet size", s)
		}
		sizes = append(sizes, n)
	}
	var all []*measure
	for _, n := range sizes {
		m, err := measureSize(ctx, o, n)
		if err != nil {
			return fmt.Errorf("fleet of %d: %w", n, err)
		}
		all = append(all, m)
	}
	sec := section(all, o)
	printTable(os.Stdout, sec)
	if jsonF != "" {
		return sec.WriteFile(jsonF)
	}
	return nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "fleet:", err)
	os.Exit(1)
}

// measure is what one fleet size gave.
type measure struct {
	n                        int
	rssIdle, rssHosts, rssSt float64 // MiB
	rssAgents                float64 // MiB, this process with the N hosts
	bmcUp, hostsUp           time.Duration
	status, list             []time.Duration
	answered, listed         int
}

func measureSize(ctx context.Context, o options, n int) (*measure, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	m := &measure{n: n}
	f, err := simfleet.Start(ctx, simfleet.Options{N: n, BinDir: o.bin, Dir: filepath.Join(o.dir, fmt.Sprintf("fleet-%d", n))})
	if err != nil {
		return nil, err
	}
	defer f.Stop()
	m.bmcUp, m.hostsUp = f.BMCUp, f.HostsUp
	m.rssIdle = f.IdleRSS
	if m.rssHosts, err = simfleet.RSSMiB(f.BMCPid); err != nil {
		return nil, err
	}
	if m.rssAgents, err = simfleet.RSSMiB(os.Getpid()); err != nil {
		return nil, err
	}
	for range o.runs {
		d, ok, err := vmsctl(ctx, o, f, "host", "status")
		if err != nil {
			return nil, err
		}
		m.status = append(m.status, d)
		m.answered = ok
		if d, ok, err = vmsctl(ctx, o, f, "vm", "list"); err != nil {
			return nil, err
		}
		m.list = append(m.list, d)
		m.listed = ok
	}
	if m.rssSt, err = simfleet.RSSMiB(f.BMCPid); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "fleet of %d: bmcsim %.1f MiB idle, %.1f with hosts, %.1f after status; host status %v (%d answered); vm list %v (%d answered)\n",
		n, m.rssIdle, m.rssHosts, m.rssSt, m.status, m.answered, m.list, m.listed)
	return m, nil
}

func serveFleet(ctx context.Context, o options, n int) error {
	f, err := simfleet.Start(ctx, simfleet.Options{N: n, BinDir: o.bin, Dir: filepath.Join(o.dir, fmt.Sprintf("fleet-%d", n))})
	if err != nil {
		return err
	}
	defer f.Stop()
	fmt.Printf("fleet of %d up: BMC LAN ports %d-%d, bmcsim log %s\n", n, f.LANBase, f.LANBase+n-1, f.BMCLog)
	fmt.Printf("try: %s/vmsctl --inventory %s --via oob host status\n", o.bin, f.Inventory)
	<-ctx.Done()
	return nil
}

// vmsctl runs `vmsctl host status` or `vmsctl vm list` with no host named,
// over the OOB-I, once, and returns its wall time and how many hosts
// answered.
func vmsctl(ctx context.Context, o options, f *simfleet.Fleet, cmdArgs ...string) (time.Duration, int, error) {
	args := append([]string{"--inventory", f.Inventory, "--via", "oob", "--timeout", "60s", "-o", "json"}, cmdArgs...)
	args = append(args, "--progress", "never")
	if o.parallel > 0 {
		args = append(args, "--parallel", strconv.Itoa(o.parallel))
	}
	cmd := exec.CommandContext(ctx, filepath.Join(o.bin, "vmsctl"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	var rows []struct {
		OK *bool `json:"ok"`
	} // host status and vm list with no host print the same rows
	if jerr := json.Unmarshal(out.Bytes(), &rows); jerr != nil {
		return 0, 0, fmt.Errorf("vmsctl %s: %v; %v; stderr: %s", strings.Join(cmdArgs, " "), err, jerr, tail(errb.String()))
	}
	answered := 0
	for _, r := range rows {
		if r.OK != nil && *r.OK {
			answered++
		}
	}
	if answered < f.N {
		fmt.Fprintf(os.Stderr, "fleet: %s: %d of %d hosts answered (%v): %s\n", strings.Join(cmdArgs, " "), answered, f.N, err, tail(errb.String()))
	}
	return d, answered, nil
}

func tail(s string) string {
	if len(s) > 600 {
		return "…" + s[len(s)-600:]
	}
	return s
}

// section turns the measures into the report's tables and plots.
func section(ms []*measure, o options) *results.Section {
	par := o.parallel
	if par == 0 {
		par = 32 // vmsctl's default (vmsctl/cmd.DefaultParallel)
	}
	sec := &results.Section{Section: "fleet", Title: "Fleet: bmcsim --fleet N, N hosts, vmsctl host status over the OOB-I",
		Started: time.Now(), Env: map[string]string{
			"cpus": strconv.Itoa(runtime.NumCPU()), "runs": strconv.Itoa(o.runs), "parallel": strconv.Itoa(par),
			"load_before": results.LoadAvg(),
		}}
	t := results.Table{ID: "scale", Title: "bmcsim RSS, vmsctl host status and vm list (OOB-I, every host) by fleet size",
		Goal: "bmcsim RSS at 1000 BMCs ≤ 500 MiB; host status over 1000 hosts ≤ 3 s; OOB-I vm list over 1000 hosts ≤ 10 s",
		Columns: []results.Column{
			{Name: "BMCs", Better: ""},
			{Name: "RSS idle", Unit: "MiB", Better: "lower"},
			{Name: "RSS with hosts", Unit: "MiB", Better: "lower"},
			{Name: "RSS after status", Unit: "MiB", Better: "lower"},
			{Name: "RSS per BMC", Unit: "KiB", Better: "lower"},
			{Name: "bmcsim up", Unit: "s", Better: "lower"},
			{Name: "hosts ready", Unit: "s", Better: "lower"},
			{Name: "hosts RSS", Unit: "MiB", Better: "lower"},
			{Name: "host status median", Unit: "s", Better: "lower"},
			{Name: "host status max", Unit: "s", Better: "lower"},
			{Name: "answered", Better: "higher"},
			{Name: "vm list median", Unit: "s", Better: "lower"},
			{Name: "vm list max", Unit: "s", Better: "lower"},
			{Name: "listed", Better: "higher"},
		},
		Notes: []string{"RSS per BMC: bmcsim's RSS after status divided by N. Hosts RSS: the bench process holding the N simulated hosts (hvagent's run.Run each, libvirt test:///default). Each host status or vm list run is a new vmsctl process " +
			"(RMCP+ session setup per host included); --parallel " + strconv.Itoa(par) + "."}}
	var xs, idle, after, st, vl []float64
	for _, m := range ms {
		secs, lsecs := seconds(m.status), seconds(m.list)
		med, lmed := results.Median(secs), results.Median(lsecs)
		t.AddRow(fmt.Sprintf("%d BMCs", m.n), results.V(float64(m.n)), results.V(m.rssIdle), results.V(m.rssHosts), results.V(m.rssSt),
			results.V(m.rssSt*1024/float64(m.n)), results.V(m.bmcUp.Seconds()), results.V(m.hostsUp.Seconds()), results.V(m.rssAgents),
			results.V(med), results.V(slices.Max(secs)), results.V(float64(m.answered)),
			results.V(lmed), results.V(slices.Max(lsecs)), results.V(float64(m.listed)))
		xs = append(xs, float64(m.n))
		idle = append(idle, m.rssIdle)
		after = append(after, m.rssSt)
		st = append(st, med)
		vl = append(vl, lmed)
	}
	sec.Tables = append(sec.Tables, t)
	sec.Plots = append(sec.Plots,
		results.Plot{ID: "rss", Title: "bmcsim RSS by fleet size", Kind: "lines", XLabel: "BMCs", YLabel: "MiB", LogX: true,
			Series: []results.Series{{Name: "idle", X: xs, Y: idle}, {Name: "after host status", X: xs, Y: after}}},
		results.Plot{ID: "status", Title: "vmsctl over the OOB-I, every host, median wall time", Kind: "lines", XLabel: "hosts", YLabel: "s", LogX: true,
			Series: []results.Series{{Name: "host status", X: xs, Y: st}, {Name: "vm list", X: xs, Y: vl}}})
	return sec
}

func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// printTable prints the section's tables as text (the bench log).
func printTable(w io.Writer, s *results.Section) {
	for _, t := range s.Tables {
		fmt.Fprintf(w, "%s (goal: %s)\n", t.Title, t.Goal)
		tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', tabwriter.AlignRight)
		for _, c := range t.Columns {
			h := c.Name
			if c.Unit != "" {
				h += " (" + c.Unit + ")"
			}
			fmt.Fprint(tw, h, "\t")
		}
		fmt.Fprintln(tw)
		for _, r := range t.Rows {
			for _, v := range r.Values {
				if v == nil {
					fmt.Fprint(tw, "-\t")
				} else {
					fmt.Fprint(tw, strconv.FormatFloat(*v, 'g', 4, 64), "\t")
				}
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
		for _, n := range t.Notes {
			fmt.Fprintln(w, n)
		}
	}
}
