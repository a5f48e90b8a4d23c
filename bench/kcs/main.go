// Command kcs measures the raw KCS path from inside a TCG guest: a static
// program on /dev/ipmi0 (hvagent/sysif/devipmi, the ipmi_si driver, QEMU's
// isa-ipmi-kcs and ipmi-bmc-extern) to a BMC on the chardev socket. It boots
// the lab/kcsguest guest once per BMC and prints one table:
//
//   - Get Device ID round trip (median, p99), through devipmi and, as a
//     baseline, through raw ioctl/poll(2) in one goroutine (getdeviceid-raw),
//   - OEM READ_BMC_BUFF_QUEUE1 of an empty Queue 1 round trip,
//   - 240-byte OEM requests (WRITE_BMC_BUFF_QUEUE2 with a full record)
//     back to back: request bytes per second, the raw ceiling that sealed
//     OOB-I throughput is compared to (the -raw row without devipmi).
//
// The guest interleaves the measurements request by request, so a change
// of host load during a run falls on all rows alike.
//
// BMCs: bmcsim in process (sim + queue + kcs), and OpenIPMI's ipmi_sim
// ("serial kcs ADDR PORT codec VM") when installed. ipmi_sim has no ooblab
// OEM commands: it answers them with a completion code (shown), which still
// measures the same KCS transfer of the same request bytes.
//
//	go run ./bench/kcs [-n 300] [-ipmisim=false] [-keep DIR]
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
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ooblab/ooblab/lab/kcsguest"
)

func main() {
	n := flag.Int("n", 300, "requests per measurement")
	useSim := flag.Bool("ipmisim", true, "also measure OpenIPMI ipmi_sim (skipped when not installed)")
	keep := flag.String("keep", "", "keep artifacts (initramfs, consoles) in this folder")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(*n, *useSim, *keep, log); err != nil {
		fmt.Fprintln(os.Stderr, "kcs bench:", err)
		os.Exit(1)
	}
}

type result struct {
	bmc   string
	devid string
	rows  map[string]map[string]string // measurement name → fields
}

func run(n int, useSim bool, keep string, log *slog.Logger) error {
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
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	initrd, err := kcsguest.BuildInitrd(ctx, dir, env, "-mode", "bench", "-n", strconv.Itoa(n))
	if err != nil {
		return err
	}
	var results []result

	// bmcsim, in process.
	{
		d := filepath.Join(dir, "bmcsim")
		os.MkdirAll(d, 0o755)
		bctx, bcancel := context.WithCancel(ctx)
		b, err := kcsguest.StartBMC(bctx, log)
		if err != nil {
			bcancel()
			return err
		}
		r, err := measure(ctx, env, d, initrd, b.Port, "bmcsim")
		bcancel()
		b.Wait()
		if err != nil {
			return err
		}
		results = append(results, r)
	}

	// OpenIPMI ipmi_sim over the same chardev protocol.
	if useSim {
		if p, err := exec.LookPath("ipmi_sim"); err != nil {
			fmt.Fprintln(os.Stderr, "ipmi_sim not installed (apt-get install openipmi): measuring bmcsim only")
		} else {
			d := filepath.Join(dir, "ipmi_sim")
			os.MkdirAll(d, 0o755)
			r, err := withIPMISim(ctx, p, d, func(port int) (result, error) {
				return measure(ctx, env, d, initrd, port, "ipmi_sim")
			})
			if err != nil {
				return fmt.Errorf("ipmi_sim: %w", err)
			}
			results = append(results, r)
		}
	}
	print(results, n)
	return nil
}

var measurements = []string{"getdeviceid", "getdeviceid-raw", "oemread-empty", "oemwrite-240", "oemwrite-240-raw"}

func measure(ctx context.Context, env kcsguest.Env, dir, initrd string, port int, name string) (result, error) {
	r := result{bmc: name, rows: map[string]map[string]string{}}
	g, err := kcsguest.Boot(ctx, env, dir, initrd, port)
	if err != nil {
		return r, err
	}
	defer g.Stop()
	expect := func(prefix string, d time.Duration) (string, error) {
		c, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return g.Expect(c, prefix)
	}
	l, err := expect("KCSGUEST-DEVID", 60*time.Second)
	if err != nil {
		return r, err
	}
	r.devid = strings.TrimPrefix(l, "KCSGUEST-DEVID ")
	for range measurements {
		l, err := expect("KCSGUEST-BENCH", 120*time.Second)
		if err != nil {
			return r, err
		}
		f := kcsguest.ParseFields(l)
		r.rows[f["name"]] = f
	}
	if _, err := expect("KCSGUEST-DONE", 10*time.Second); err != nil {
		return r, err
	}
	return r, nil
}

// withIPMISim runs ipmi_sim with one BMC (MC 0x20) whose system interface
// is a KCS served over the VM codec on a loopback port.
func withIPMISim(ctx context.Context, bin, dir string, fn func(port int) (result, error)) (result, error) {
	port, err := freePort()
	if err != nil {
		return result{}, err
	}
	conf := fmt.Sprintf("name \"kcsbench\"\nset_working_mc 0x20\n  serial kcs 127.0.0.1 %d codec VM\n", port)
	cmds := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "lan.conf"), []byte(conf), 0o644); err != nil {
		return result{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sim.emu"), []byte(cmds), 0o644); err != nil {
		return result{}, err
	}
	out, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	if err != nil {
		return result{}, err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, bin, "-n", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", state)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := waitListen(ctx, port, 10*time.Second); err != nil {
		return result{}, fmt.Errorf("%w (see %s)", err, out.Name())
	}
	return fn(port)
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

func print(rs []result, n int) {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "BMC\tmeasurement\treq bytes\tmedian µs\tp99 µs\tmin µs\tmax µs\treq bytes/s\tcompletion codes\t\n")
	for _, r := range rs {
		for _, m := range measurements {
			f := r.rows[m]
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.bmc, m, f["reqbytes"], f["median_us"], f["p99_us"],
				f["min_us"], f["max_us"], f["bytes_per_s"], strings.TrimSuffix(f["cc"], ","))
		}
	}
	w.Flush()
	for _, r := range rs {
		fmt.Printf("%s Get Device ID as the guest saw it: %s\n", r.bmc, r.devid)
	}
	if len(rs) == 2 {
		fmt.Printf("ratio %s/%s (median latency; throughput), n=%d each, TCG guest:\n", rs[0].bmc, rs[1].bmc, n)
		for _, m := range measurements {
			a, b := rs[0].rows[m], rs[1].rows[m]
			fmt.Printf("  %-17s latency %.2f×  throughput %.2f×\n", m, ratio(a["median_us"], b["median_us"]), ratio(a["bytes_per_s"], b["bytes_per_s"]))
		}
	}
}

func ratio(a, b string) float64 {
	x, _ := strconv.ParseFloat(a, 64)
	y, _ := strconv.ParseFloat(b, 64)
	if y == 0 {
		return 0
	}
	return x / y
}
