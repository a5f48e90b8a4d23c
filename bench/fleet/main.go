// Command fleet measures ooblab at fleet scale on one machine: bin/bmcsim
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
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ooblab/ooblab/bench/results"
	"github.com/ooblab/ooblab/hvagent/run"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
)

const (
	vmsUser   = "vms"
	principal = "vms"
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
	if o.dir == "" {
		d, err := os.MkdirTemp("", "ooblab-fleet-")
		if err != nil {
			fatal(err)
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	if *serve > 0 {
		if err := serveFleet(ctx, o, *serve); err != nil {
			fatal(err)
		}
		return
	}
	var sizes []int
	for _, s := range strings.Split(*sizesF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatal(fmt.Errorf("-sizes: %q is not a fleet size", s))
		}
		sizes = append(sizes, n)
	}
	var all []*measure
	for _, n := range sizes {
		m, err := measureSize(ctx, o, n)
		if err != nil {
			fatal(fmt.Errorf("fleet of %d: %w", n, err))
		}
		all = append(all, m)
	}
	sec := section(all, o)
	printTable(os.Stdout, sec)
	if *jsonF != "" {
		if err := sec.WriteFile(*jsonF); err != nil {
			fatal(err)
		}
	}
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

// fleet is a running bmcsim --fleet with its hosts and inventory.
type fleet struct {
	n        int
	lan, kcs int
	cmd      *exec.Cmd
	inv      string
	stopHost context.CancelFunc
	hostsWG  sync.WaitGroup
	bmcUp    time.Duration
	hostsUp  time.Duration
	logPath  string
}

func measureSize(ctx context.Context, o options, n int) (*measure, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	m := &measure{n: n}
	f, err := startFleet(ctx, o, n)
	if err != nil {
		return nil, err
	}
	defer f.stop()
	m.bmcUp, m.hostsUp = f.bmcUp, f.hostsUp
	m.rssIdle = f.idleRSS
	if m.rssHosts, err = rssMiB(f.cmd.Process.Pid); err != nil {
		return nil, err
	}
	if m.rssAgents, err = rssMiB(os.Getpid()); err != nil {
		return nil, err
	}
	for range o.runs {
		d, ok, err := f.vmsctl(ctx, o, "host", "status")
		if err != nil {
			return nil, err
		}
		m.status = append(m.status, d)
		m.answered = ok
		if d, ok, err = f.vmsctl(ctx, o, "vm", "list"); err != nil {
			return nil, err
		}
		m.list = append(m.list, d)
		m.listed = ok
	}
	if m.rssSt, err = rssMiB(f.cmd.Process.Pid); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "fleet of %d: bmcsim %.1f MiB idle, %.1f with hosts, %.1f after status; host status %v (%d answered); vm list %v (%d answered)\n",
		n, m.rssIdle, m.rssHosts, m.rssSt, m.status, m.answered, m.list, m.listed)
	return m, nil
}

func serveFleet(ctx context.Context, o options, n int) error {
	f, err := startFleet(ctx, o, n)
	if err != nil {
		return err
	}
	defer f.stop()
	fmt.Printf("fleet of %d up: BMC LAN ports %d-%d, bmcsim log %s\n", n, f.lan, f.lan+n-1, f.logPath)
	fmt.Printf("try: %s/vmsctl --inventory %s --via oob host status\n", o.bin, f.inv)
	<-ctx.Done()
	return nil
}

// startedFleet is a fleet and the RSS its bmcsim had before any host.
type startedFleet struct {
	*fleet
	idleRSS float64
}

// startFleet starts bmcsim --fleet n, waits for every BMC, records its idle
// RSS, starts n hosts in this process, waits for each to reach its BMC, and
// writes the inventory.
func startFleet(ctx context.Context, o options, n int) (*startedFleet, error) {
	dir := filepath.Join(o.dir, fmt.Sprintf("fleet-%d", n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lan, kcs, err := freeRanges(n)
	if err != nil {
		return nil, err
	}
	f := &fleet{n: n, lan: lan, kcs: kcs, logPath: filepath.Join(dir, "bmcsim.log")}
	pw := filepath.Join(dir, "bmc.pw")
	if err := os.WriteFile(pw, []byte("fleet-"+strconv.FormatUint(rand.Uint64()%1e9, 10)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(f.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	start := time.Now()
	f.cmd = exec.Command(filepath.Join(o.bin, "bmcsim"), "--fleet", strconv.Itoa(n), "--name", "h",
		"--lan", "127.0.0.1:"+strconv.Itoa(lan), "--kcs", "127.0.0.1:"+strconv.Itoa(kcs),
		"--user", vmsUser+":@"+pw+":operator", "--log-level", "info")
	f.cmd.Stderr = logf
	if err := f.cmd.Start(); err != nil {
		return nil, err
	}
	sf := &startedFleet{fleet: f}
	ok := false
	defer func() {
		if !ok {
			f.stop()
		}
	}()
	if err := waitLines(ctx, f.logPath, "LAN channel up", n, f.cmd); err != nil {
		return nil, err
	}
	f.bmcUp = time.Since(start)
	if sf.idleRSS, err = rssMiB(f.cmd.Process.Pid); err != nil {
		return nil, err
	}

	inv := inventory.Inventory{Principal: principal}
	policy := filepath.Join(dir, "authz.toml")
	if err := os.WriteFile(policy, []byte("read_only_default = true\n[principals."+principal+"]\n"), 0o600); err != nil {
		return nil, err
	}
	hctx, hcancel := context.WithCancel(context.Background())
	f.stopHost = hcancel
	var ready sync.WaitGroup
	var failed atomic.Int64
	hstart := time.Now()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		name := "h-" + strconv.Itoa(i)
		key, err := seal.Enroll(name)
		if err != nil {
			return nil, err
		}
		kf := filepath.Join(dir, name+".key")
		if err := os.WriteFile(kf, []byte(key.URI()+"\n"), 0o600); err != nil {
			return nil, err
		}
		inv.Hosts = append(inv.Hosts, inventory.Host{Name: name, HostID: name, SecretFile: name + ".key",
			BMC: inventory.BMC{Addr: "127.0.0.1:" + strconv.Itoa(lan+i), User: vmsUser, PasswordFile: "bmc.pw", CipherSuite: 17}})
		ready.Add(1)
		var once sync.Once
		done := func() { once.Do(ready.Done) }
		f.hostsWG.Go(func() {
			defer done()
			err := run.Run(hctx, run.Options{HostID: name, KeyFile: kf, PolicyFile: policy, LibvirtURI: "test:///default",
				Sysif: "chardev:127.0.0.1:" + strconv.Itoa(kcs+i), JournalFile: filepath.Join(dir, name+".journal"), Logger: quiet,
				Ready: func(st run.Status) {
					if !strings.HasPrefix(st.OOB, "up") {
						failed.Add(1)
					}
					done()
				}})
			if err != nil && hctx.Err() == nil {
				failed.Add(1)
				fmt.Fprintf(os.Stderr, "fleet: host %s: %v\n", name, err)
			}
		})
	}
	if err := waitGroup(ctx, &ready); err != nil {
		return nil, fmt.Errorf("hosts not ready: %w", err)
	}
	if k := failed.Load(); k > 0 {
		return nil, fmt.Errorf("%d of %d hosts did not reach their BMC", k, n)
	}
	f.hostsUp = time.Since(hstart)
	f.inv = filepath.Join(dir, "inventory.json")
	if err := inv.Save(f.inv); err != nil {
		return nil, err
	}
	ok = true
	return sf, nil
}

func (f *fleet) stop() {
	if f.stopHost != nil {
		f.stopHost()
		f.hostsWG.Wait()
	}
	if f.cmd != nil && f.cmd.Process != nil {
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		_ = f.cmd.Wait()
	}
}

// vmsctl runs `vmsctl host status` or `vmsctl vm list` with no host named,
// over the OOB-I, once, and returns its wall time and how many hosts
// answered.
func (f *fleet) vmsctl(ctx context.Context, o options, cmdArgs ...string) (time.Duration, int, error) {
	args := append([]string{"--inventory", f.inv, "--via", "oob", "--timeout", "60s", "-o", "json"}, cmdArgs...)
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
	if answered < f.n {
		fmt.Fprintf(os.Stderr, "fleet: %s: %d of %d hosts answered (%v): %s\n", strings.Join(cmdArgs, " "), answered, f.n, err, tail(errb.String()))
	}
	return d, answered, nil
}

func tail(s string) string {
	if len(s) > 600 {
		return "…" + s[len(s)-600:]
	}
	return s
}

// waitLines waits until the file at path holds n lines containing s, the
// process exits, or ctx ends.
func waitLines(ctx context.Context, path, s string, n int, cmd *exec.Cmd) error {
	exited := make(chan struct{})
	go func() {
		// Only a hint for the loop below; Wait is called by stop.
		for cmd.ProcessState == nil {
			if p, err := os.FindProcess(cmd.Process.Pid); err != nil || p.Signal(syscall.Signal(0)) != nil {
				close(exited)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if c, err := countLines(path, s); err == nil && c >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			c, _ := countLines(path, s)
			return fmt.Errorf("%d of %d BMCs up: %w (log %s)", c, n, ctx.Err(), path)
		case <-exited:
			b, _ := os.ReadFile(path)
			return fmt.Errorf("bmcsim exited: %s", tail(string(b)))
		case <-t.C:
		}
	}
}

func countLines(path, s string) (int, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	c := 0
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			c++
		}
	}
	return c, sc.Err()
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rssMiB reads a process's resident set from /proc.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return 0, err
			}
			return float64(kb) / 1024, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// freeRanges finds n consecutive free UDP ports and n consecutive free TCP
// ports by binding them all, then releases them for bmcsim. (Another
// process may take one in between; bmcsim then fails and says which.)
func freeRanges(n int) (lan, kcs int, err error) {
	for try := 0; try < 50; try++ {
		base := 20000 + rand.IntN(40000-2*n)
		if bindAll(base, n) && bindAll(base+n, n) {
			return base, base + n, nil
		}
	}
	return 0, 0, fmt.Errorf("no %d free consecutive ports found", 2*n)
}

func bindAll(base, n int) bool {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for p := base; p < base+n; p++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		closers = append(closers, u)
		t, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		closers = append(closers, t)
	}
	return true
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
			"load_before": loadavg(),
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

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
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
