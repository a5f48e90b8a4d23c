// Command kcs measures the raw KCS path from inside a TCG guest: a static
// program on /dev/ipmiK (hvagent/sysif/devipmi, the ipmi_si driver, QEMU's
// isa-ipmi-kcs) to a BMC. One guest (lab/kcsguest) is booted with one KCS
// interface per BMC, and its program sends every request to each BMC in
// turn, so all BMCs are measured in the same guest under the same host load:
//
//   - bmcsim in this process (sim + queue + kcs) behind ipmi-bmc-extern,
//     a chardev socket on loopback (the path the lab uses),
//   - OpenIPMI's ipmi_sim ("serial kcs ADDR PORT codec VM") behind
//     ipmi-bmc-extern, when installed,
//   - QEMU's own in-process BMC (-device ipmi-bmc-sim): no socket hop, the
//     BMC answers inside QEMU's vCPU thread — the ceiling of this guest.
//
// Measurements, each through devipmi and (-raw) through raw ioctl/poll(2):
//
//   - Get Device ID round trip (median, p99),
//   - OEM READ_BMC_BUFF_QUEUE1 of an empty Queue 1 round trip,
//   - 240-byte OEM requests (WRITE_BMC_BUFF_QUEUE2 with a full record) back
//     to back: request bytes per second, the raw ceiling of the guest-to-BMC
//     direction (the agent's answers),
//   - on bmcsim only, windowed reads of a full Queue 1 record (rewind, never
//     acknowledged: the same record each time) back to back: answer bytes
//     per second, the raw ceiling of the BMC-to-guest direction, which a
//     VMS's request takes.
//
// Behind ipmi-bmc-extern every answer waits for QEMU's main loop to wake on
// the socket and read the frame one byte per iteration (the chardev's
// can_receive is 1), and for the halted vCPU to be kicked; ipmi-bmc-sim
// answers inside the vCPU's own I/O exit. bmcsim and ipmi_sim share that
// hop: their ratio shows what the BMC adds, the ipmi-bmc-sim one mostly what
// the hop costs on this host.
//
// ipmi_sim and ipmi-bmc-sim have no ooblab OEM commands: they answer them
// with a completion code (shown), which still measures the same KCS
// transfer of the same request bytes (the KCS state machine moves every
// byte before the BMC sees the request).
//
//	go run ./bench/kcs [-n 300] [-ipmisim=false] [-qemusim=false] [-json FILE] [-keep DIR]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ooblab/ooblab/bench/results"
	"github.com/ooblab/ooblab/lab/kcsguest"
)

func main() {
	n := flag.Int("n", 300, "requests per measurement and BMC")
	useSim := flag.Bool("ipmisim", true, "also measure OpenIPMI ipmi_sim (skipped when not installed)")
	useQEMU := flag.Bool("qemusim", true, "also measure QEMU's in-process BMC (ipmi-bmc-sim)")
	keep := flag.String("keep", "", "keep artifacts (initramfs, console) in this folder")
	jsonOut := flag.String("json", "", "also write the figures to FILE (bench/results format)")
	timeout := flag.Duration("timeout", 6*time.Minute, "deadline for the whole run (build, boot, measure)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(*n, *useSim, *useQEMU, *keep, *jsonOut, *timeout, log); err != nil {
		fmt.Fprintln(os.Stderr, "kcs bench:", err)
		os.Exit(1)
	}
}

// bmcRow is one BMC of the guest.
type bmcRow struct {
	name  string
	dev   kcsguest.Device
	mfr   uint32                       // manufacturer id its Get Device ID reports: how the guest's /dev/ipmiK is matched
	devid string                       // Get Device ID as the guest saw it
	rows  map[string]map[string]string // measurement name → fields
}

// QEMU's ipmi-bmc-sim is given this manufacturer id (its default, 0), to
// tell it apart from bmcsim (its IANA number) and ipmi_sim (0x1291, from the
// mc_add line below).
const (
	qemuMfg    = 0
	ipmiSimMfg = 0x1291
)

func run(n int, useSim, useQEMU bool, keep, jsonOut string, timeout time.Duration, log *slog.Logger) error {
	env, err := kcsguest.FindEnv()
	if err != nil {
		return err
	}
	dir := keep
	if dir == "" {
		if dir, err = os.MkdirTemp("", "kcsbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	started := time.Now()
	load := results.LoadAvg()

	// bmcsim, in process, first: ipmi_si gives up on a BMC that does not
	// answer, so every BMC listens before QEMU starts.
	bctx, bcancel := context.WithCancel(ctx)
	b, err := kcsguest.StartBMC(bctx, log)
	if err != nil {
		bcancel()
		return err
	}
	defer func() { bcancel(); b.Wait() }()
	if err := b.PutReadRecord(ctx); err != nil {
		return fmt.Errorf("bmcsim: the oemread-240 record: %w", err)
	}
	bmcs := []*bmcRow{{name: "bmcsim", dev: kcsguest.Extern(b.Port), mfr: b.Sim.Config.ManufacturerID}}

	if useSim {
		if p, err := exec.LookPath("ipmi_sim"); err != nil {
			fmt.Fprintln(os.Stderr, "ipmi_sim not installed (apt-get install openipmi): no ipmi_sim row")
		} else {
			port, stop, err := startIPMISim(ctx, p, filepath.Join(dir, "ipmi_sim"))
			if err != nil {
				return fmt.Errorf("ipmi_sim: %w", err)
			}
			defer stop()
			bmcs = append(bmcs, &bmcRow{name: "ipmi_sim", dev: kcsguest.Extern(port), mfr: ipmiSimMfg})
		}
	}
	if useQEMU {
		bmcs = append(bmcs, &bmcRow{name: "ipmi-bmc-sim", dev: kcsguest.InQEMU(qemuMfg), mfr: qemuMfg})
	}

	initrd, err := kcsguest.BuildInitrd(ctx, dir, env, "-mode", "bench", "-n", strconv.Itoa(n), "-devs", strconv.Itoa(len(bmcs)))
	if err != nil {
		return err
	}
	devs := make([]kcsguest.Device, len(bmcs))
	for i, r := range bmcs {
		devs[i] = r.dev
	}
	bootAt := time.Now()
	g, err := kcsguest.BootWith(ctx, env, dir, initrd, devs...)
	if err != nil {
		return err
	}
	defer g.Stop()
	boot, err := measure(ctx, g, bmcs)
	if err != nil {
		return fmt.Errorf("%w (console: %s)", err, filepath.Join(dir, "console.log"))
	}
	measured := time.Since(bootAt) - boot
	print(bmcs, n, boot, measured)
	if jsonOut != "" {
		return writeJSON(jsonOut, bmcs, n, started, load, boot, measured)
	}
	return nil
}

// measurements are the guest's rows, in print order; the oemread-240 ones
// only bmcsim has (its Queue 1 holds the record they read: the peers have
// no ooblab queues).
var measurements = []string{"getdeviceid", "getdeviceid-raw", "oemread-empty", "oemwrite-240", "oemwrite-240-raw", "oemread-240", "oemread-240-raw"}

// measure reads the guest's report: one DEVID line per device (matched to
// a BMC by manufacturer id), then every device's measurements. It returns
// the time from QEMU's start to the last DEVID line (boot).
func measure(ctx context.Context, g *kcsguest.Guest, bmcs []*bmcRow) (time.Duration, error) {
	expect := func(prefix string, d time.Duration) (string, error) {
		c, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return g.Expect(c, prefix)
	}
	byDev := map[string]*bmcRow{}
	for range bmcs {
		l, err := expect("KCSGUEST-DEVID", 3*time.Minute) // TCG boot on a loaded 2-core machine
		if err != nil {
			return 0, err
		}
		f := kcsguest.ParseFields(l)
		mfr, _ := strconv.ParseUint(f["mfr"], 10, 32)
		var r *bmcRow
		for _, c := range bmcs {
			if c.mfr == uint32(mfr) && c.devid == "" {
				r = c
			}
		}
		if r == nil {
			return 0, fmt.Errorf("guest's %s reports manufacturer %s: no BMC of this bench, or two alike (%s)", f["dev"], f["mfr"], l)
		}
		r.devid = strings.TrimPrefix(l, "KCSGUEST-DEVID ")
		r.rows = map[string]map[string]string{}
		byDev[f["dev"]] = r
	}
	boot := time.Since(g.Started)
	for {
		l, err := expect("KCSGUEST-", 5*time.Minute)
		if err != nil {
			return 0, err
		}
		if strings.HasPrefix(l, "KCSGUEST-DONE") {
			break
		}
		if !strings.HasPrefix(l, "KCSGUEST-BENCH") {
			return 0, fmt.Errorf("guest: %s", l)
		}
		f := kcsguest.ParseFields(l)
		r := byDev[f["dev"]]
		if r == nil {
			return 0, fmt.Errorf("guest reports figures of unknown device %q", f["dev"])
		}
		r.rows[f["name"]] = f
	}
	for _, r := range bmcs {
		if len(r.rows) == 0 {
			return 0, fmt.Errorf("the guest reported no figures for %s", r.name)
		}
	}
	return boot, nil
}

// startIPMISim runs ipmi_sim with one BMC (MC 0x20) whose system interface
// is a KCS served over the VM codec on a loopback port, and waits until it
// listens.
func startIPMISim(ctx context.Context, bin, dir string) (port int, stop func(), err error) {
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return 0, nil, err
	}
	if port, err = freePort(); err != nil {
		return 0, nil, err
	}
	conf := fmt.Sprintf("name \"kcsbench\"\nset_working_mc 0x20\n  serial kcs 127.0.0.1 %d codec VM\n", port)
	cmds := fmt.Sprintf("mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f %#x 0xf02 persist_sdr\nmc_enable 0x20\n", ipmiSimMfg)
	if err := os.WriteFile(filepath.Join(dir, "lan.conf"), []byte(conf), 0o644); err != nil {
		return 0, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sim.emu"), []byte(cmds), 0o644); err != nil {
		return 0, nil, err
	}
	out, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	if err != nil {
		return 0, nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-n", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return 0, nil, err
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait(); out.Close() }
	if err := waitListen(ctx, port, 10*time.Second); err != nil {
		stop()
		return 0, nil, fmt.Errorf("%w (see %s)", err, out.Name())
	}
	return port, stop, nil
}

func freePort() (int, error) {
	// Ask the kernel for a free port through a listener, then release it for
	// ipmi_sim, which only takes a fixed port.
	l, err := listenTCP()
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Port, nil
}

// waitListen waits until a socket listens on 127.0.0.1:port, reading
// /proc/net/tcp (a probe connection would count as QEMU connecting).
func waitListen(ctx context.Context, port int, within time.Duration) error {
	want := fmt.Sprintf(":%04X", port)
	deadline := time.After(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if f, err := os.Open("/proc/net/tcp"); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fs := strings.Fields(sc.Text())
				if len(fs) > 3 && strings.HasSuffix(fs[1], want) && fs[3] == "0A" { // TCP_LISTEN
					f.Close()
					return nil
				}
			}
			f.Close()
		}
		select {
		case <-tick.C:
		case <-deadline:
			return errors.New("ipmi_sim did not listen on its serial port")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func print(rs []*bmcRow, n int, boot, measured time.Duration) {
	fmt.Printf("raw KCS from one TCG guest (%d BMCs, requests interleaved across them), n=%d per row, %d CPUs; boot %.1f s, measurements %.1f s\n",
		len(rs), n, runtime.NumCPU(), boot.Seconds(), measured.Seconds())
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "BMC\tmeasurement\tbytes moved\tmedian µs\tp99 µs\tmin µs\tmax µs\tKB/s\tKB/s at median\tcompletion codes\t\n")
	for _, r := range rs {
		for _, m := range measurements {
			f := r.rows[m]
			if f == nil {
				continue
			}
			kbs, atMed := "-", "-"
			if moved(f) != 0 {
				kbs, atMed = fmt.Sprintf("%.1f", num(f["bytes_per_s"])/1000), fmt.Sprintf("%.1f", medianKBs(f))
			}
			fmt.Fprintf(w, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, m, moved(f), f["median_us"], f["p99_us"],
				f["min_us"], f["max_us"], kbs, atMed, strings.TrimSuffix(f["cc"], ","))
		}
	}
	w.Flush()
	for _, r := range rs {
		fmt.Printf("%s Get Device ID as the guest saw it: %s\n", r.name, r.devid)
	}
	for _, peer := range rs[1:] {
		a, b := rs[0], peer
		fmt.Printf("ratio %s/%s (throughput; median latency), same guest, interleaved:\n", a.name, b.name)
		for _, m := range measurements {
			x, y := a.rows[m], b.rows[m]
			if x == nil || y == nil {
				continue
			}
			thr := ""
			if moved(x) != 0 {
				thr = fmt.Sprintf("throughput ×%.2f (at median ×%.2f)", ratio(x["bytes_per_s"], y["bytes_per_s"]), medianKBs(x)/medianKBs(y))
			}
			fmt.Printf("  %-17s %-36s latency ×%.2f\n", m, thr, ratio(x["median_us"], y["median_us"]))
		}
	}
}

func num(s string) float64 {
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return x
}

func ratio(a, b string) float64 {
	x, y := num(a), num(b)
	if y == 0 {
		return 0
	}
	return x / y
}
