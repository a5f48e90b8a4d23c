package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/pki"
	"github.com/ooblab/ooblab/lab/image"
	"github.com/ooblab/ooblab/lab/qemu"
	"golang.org/x/sync/errgroup"
)

// Options steer `lab up`.
type Options struct {
	Dir      string // state folder
	Hosts    int    // number of hypervisor hosts (default 1)
	BinDir   string // where bmcsim and hvagent are (default: beside this executable)
	BasePort int    // first BMC LAN port (default 6230); KCS = +100, serial (SOL) = +200, Redfish = +400, VMM-I = +2000
	Accel    string // "", "kvm" or "tcg"
	Force    bool   // rebuild the guest image
	Out      io.Writer
	// Probe checks that a host's agent answers over both channels; nil
	// skips the check (readiness is then the agent's console marker).
	Probe func(ctx context.Context, inv *inventory.Inventory, host string) (vmmi, oob time.Duration, err error)
}

// NestedVMs are the lab's nested domains on every host: web1 and db1 are
// baked into the image, app1 comes on the config disk; web1 starts at boot.
var NestedVMs = []string{"web1", "db1", "app1"}

func (o *Options) defaults() error {
	if o.Dir == "" {
		o.Dir = Dir()
	}
	if o.Hosts <= 0 {
		o.Hosts = 1
	}
	if o.BasePort == 0 {
		o.BasePort = 6230
	}
	if o.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.BinDir = filepath.Dir(exe)
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	return nil
}

type stageClock struct {
	st    *State
	start time.Time
	out   io.Writer
}

func (c *stageClock) done(stage string) { c.doneAt(stage, time.Now()) }

// doneAt ends stage at the time at (≥ the previous stage's end).
func (c *stageClock) doneAt(stage string, at time.Time) {
	d := at.Sub(c.start)
	c.st.Stages = append(c.st.Stages, StageTiming{Stage: stage, Elapsed: d})
	fmt.Fprintf(c.out, "  %-28s %6.1fs\n", stage, d.Seconds())
	c.start = at
}

// Up brings a lab up and returns when every host's agent answers. On
// failure it stops what it started; the logs stay in the state folder. The
// stages, each a method of upRun named after it, are those docs/lab.md
// lists with what "done" means for each.
func Up(ctx context.Context, o Options, log *slog.Logger) (st *State, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	closeInheritedOnExec()
	if old, err := loadState(o.Dir); err == nil {
		if pids := old.alivePids(); len(pids) > 0 {
			// Left running, untouched: this run started nothing.
			return nil, fmt.Errorf("%w in %s (pids %v); it is left running: `lab down` first, or use it as it is",
				ErrLabUp, o.Dir, pids)
		}
	}
	var u *upRun
	defer func() {
		// A failed run stops what it started — its own processes, never
		// a lab that was already up or a stale state file's pids.
		if err != nil && u != nil {
			fmt.Fprintf(o.Out, "lab up failed; stopping what it started (logs stay in %s)\n", o.Dir)
			_ = stopState(context.Background(), o.Dir, u.st, o.Out, log)
		}
	}()
	for _, d := range []string{o.Dir, filepath.Join(o.Dir, "tls")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	total := time.Now()
	u = &upRun{o: o, log: log, st: &State{Started: time.Now()}}
	u.clk = &stageClock{st: u.st, start: time.Now(), out: o.Out}
	fmt.Fprintf(o.Out, "lab up: %d host(s) in %s\n", o.Hosts, o.Dir)
	for _, stage := range []func(context.Context) error{
		u.writeConfig, u.buildImage, u.startBMCSim, u.startGuests, u.waitAgents, u.startUI,
	} {
		if err := stage(ctx); err != nil {
			return nil, err
		}
	}
	u.st.Stages = append(u.st.Stages, StageTiming{Stage: "total", Elapsed: time.Since(total)})
	if err := saveState(o.Dir, u.st); err != nil {
		return nil, err
	}
	return u.st, nil
}

// upRun is one `lab up` between its stages.
type upRun struct {
	o   Options
	log *slog.Logger
	st  *State
	clk *stageClock

	ca       *pki.CA // the lab CA, signing hvagent's and the VMS's certificates
	policy   string  // every host's authorization list
	bmcConf  string  // bmcsim.toml
	art      image.Artifacts
	machines []*qemu.Machine
}

// writeConfig: secrets (0600) and configuration, written once and kept.
func (u *upRun) writeConfig(ctx context.Context) error {
	if err := writeSecretOnce(filepath.Join(u.o.Dir, "operator.key"), enrollKey("ops")); err != nil {
		return fmt.Errorf("operator key: %w", err)
	}
	ca, err := labCA(filepath.Join(u.o.Dir, "tls"))
	if err != nil {
		return fmt.Errorf("lab CA: %w", err)
	}
	u.ca = ca
	creds, pubs, err := principalCreds(u.o.Dir, ca)
	if err != nil {
		return fmt.Errorf("principal keys: %w", err)
	}
	u.policy = labPolicy(pubs)
	policy := u.policy
	inv := &inventory.Inventory{Principal: "vms", Credentials: creds,
		Operators: []inventory.Operator{{Name: "ops", SecretFile: "operator.key"}}}
	var bmcToml strings.Builder
	fmt.Fprintf(&bmcToml, "# written by lab up\nmetrics = \"127.0.0.1:%d\"\nadmin = %q\n", u.o.BasePort+3000, AdminSocket(u.o.Dir))
	for i := 1; i <= u.o.Hosts; i++ {
		name := "h" + strconv.Itoa(i)
		hdir := filepath.Join(u.o.Dir, name)
		if err := os.MkdirAll(filepath.Join(hdir, "bmc-state"), 0o700); err != nil {
			return err
		}
		for _, u := range labBMCUsers {
			if err := writeSecretOnce(filepath.Join(hdir, u.passwordFile), randomPassword); err != nil {
				return err
			}
		}
		// root's password for the login prompt on the host's serial
		// console (bin/lab console, SOL); set by ooblab-init.
		if err := writeSecretOnce(filepath.Join(hdir, "console-root.password"), randomPassword); err != nil {
			return err
		}
		if err := writeSecretOnce(filepath.Join(hdir, "host.key"), enrollKey(name)); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(hdir, "policy.toml"), []byte(policy), 0o600); err != nil {
			return err
		}
		hs := HostState{
			Name:       name,
			BMCLAN:     fmt.Sprintf("127.0.0.1:%d", u.o.BasePort+i-1),
			BMCKCS:     fmt.Sprintf("127.0.0.1:%d", u.o.BasePort+100+i-1),
			BMCSerial:  fmt.Sprintf("127.0.0.1:%d", u.o.BasePort+200+i-1),
			BMCRedfish: fmt.Sprintf("127.0.0.1:%d", u.o.BasePort+400+i-1),
			VMMI:       fmt.Sprintf("127.0.0.1:%d", u.o.BasePort+2000+i-1),
			RunDir:     filepath.Join(hdir, "qemu"),
			VMs:        NestedVMs,
		}
		for _, a := range []string{hs.BMCLAN, hs.VMMI, hs.BMCRedfish} {
			if err := portFree(a, a == hs.BMCLAN); err != nil {
				return err
			}
		}
		if err := redfishCert(ca, hdir, name); err != nil {
			return fmt.Errorf("%s: redfish certificate: %w", name, err)
		}
		u.st.Hosts = append(u.st.Hosts, hs)
		bmcToml.WriteString(hostBMCConfig(hs, hdir))
		inv.Hosts = append(inv.Hosts, inventory.Host{
			Name: name, HostID: name, SecretFile: filepath.Join(name, "host.key"),
			VMMI: inventory.VMMI{Addr: hs.VMMI, CAFile: filepath.Join("tls", "ca.pem"), ServerName: name},
			BMC:  inventoryBMC(hs),
		})
	}
	u.bmcConf = filepath.Join(u.o.Dir, "bmcsim.toml")
	if err := os.WriteFile(u.bmcConf, []byte(bmcToml.String()), 0o600); err != nil {
		return err
	}
	if err := fileio.SaveInventory(inv, filepath.Join(u.o.Dir, "inventory.json")); err != nil {
		return err
	}
	u.clk.done("secrets and config")

	return nil
}

// buildImage: the guest image, cached by its recipe's hash.
func (u *upRun) buildImage(ctx context.Context) error {
	hvagent := filepath.Join(u.o.BinDir, "hvagent")
	if _, err := os.Stat(hvagent); err != nil {
		return fmt.Errorf("hvagent binary: %w (run make build)", err)
	}
	recipe := image.DefaultRecipe()
	recipe.HVAgent = hvagent
	art, err := image.Build(ctx, recipe, image.Options{Force: u.o.Force}, u.log)
	if err != nil {
		return fmt.Errorf("guest image: %w", err)
	}
	u.art = art
	u.st.ImageKey = art.Key
	if art.Cached {
		u.clk.done("guest image (cached)")
	} else {
		u.clk.done("guest image (built)")
	}

	return nil
}

// startBMCSim: every BMC listens before any QEMU starts (ipmi_si gives up
// on a BMC that is not there).
func (u *upRun) startBMCSim(ctx context.Context) error {
	argv := []string{filepath.Join(u.o.BinDir, "bmcsim"), "--config", u.bmcConf}
	pid, err := startDetached(argv[0], argv[1:],
		filepath.Join(u.o.Dir, "bmcsim.log"), filepath.Join(u.o.Dir, "bmcsim.pid"))
	if err != nil {
		return fmt.Errorf("start bmcsim: %w", err)
	}
	u.st.BMCSim = Proc{Pid: pid, Argv: argv}
	if err := saveState(u.o.Dir, u.st); err != nil {
		return err
	}
	for _, h := range u.st.Hosts {
		if err := waitTCP(ctx, h.BMCKCS, 10*time.Second, pid); err != nil {
			return fmt.Errorf("bmcsim (log %s/bmcsim.u.log): %w", u.o.Dir, err)
		}
	}
	u.clk.done("bmcsim listening")

	return nil
}

// startGuests: one QEMU guest per host, its config disk written first.
func (u *upRun) startGuests(ctx context.Context) error {
	accel := u.o.Accel
	if accel == "" {
		accel = probeAccel(ctx, u.art.Kernel, u.log)
	}
	u.st.Accel = accel
	u.clk.done("accelerator probe (" + accel + ")")
	caPEM, err := os.ReadFile(filepath.Join(u.o.Dir, "tls", "ca.pem"))
	if err != nil {
		return err
	}
	u.machines = make([]*qemu.Machine, len(u.st.Hosts))
	for i := range u.st.Hosts {
		h := &u.st.Hosts[i]
		hdir := filepath.Join(u.o.Dir, h.Name)
		certPEM, keyPEM, err := serverCert(u.ca, h.Name)
		if err != nil {
			return err
		}
		hostKey, err := fileio.ReadSecret(filepath.Join(hdir, "host.key"))
		if err != nil {
			return err
		}
		opKey, err := fileio.ReadSecret(filepath.Join(u.o.Dir, "operator.key"))
		if err != nil {
			return err
		}
		rootPW, err := fileio.ReadSecret(filepath.Join(hdir, "console-root.password"))
		if err != nil {
			return err
		}
		cfg := image.Config{
			Hostname: h.Name,
			HVAgentArgs: []string{
				"--host-id", h.Name, "--key", "/etc/ooblab/host.key", "--policy", "/etc/ooblab/policy.toml",
				"--libvirt", "qemu:///system", "--sysif", "dev:/dev/ipmi0",
				"--vmmi", "0.0.0.0:8443", "--tls-cert", "/etc/ooblab/tls.pem", "--tls-key", "/etc/ooblab/tls.key",
				"--tls-client-ca", "/etc/ooblab/client-ca.pem",
				"--journal", "/var/lib/ooblab/journal", "--log-level", "info",
				"--start-vms", "/run/ooblab-start-vms",
			},
			VMs:      map[string]string{"app1": image.DomainXML("app1", 32)},
			StartVMs: []string{"web1"},
			Files: map[string][]byte{
				"host.key": hostKey, "operator.key": opKey, "policy.toml": []byte(u.policy),
				"tls.pem": certPEM, "tls.key": keyPEM, "client-ca.pem": caPEM,
				"console.password": rootPW,
			},
		}
		disk := filepath.Join(hdir, "config.img")
		if err := image.BuildConfigDisk(ctx, cfg, disk); err != nil {
			return fmt.Errorf("%s config disk: %w", h.Name, err)
		}
		_, vport, _ := net.SplitHostPort(h.VMMI)
		hp, _ := strconv.Atoi(vport)
		_ = os.RemoveAll(h.RunDir)
		m, err := qemu.Start(ctx, qemu.Config{
			Name: h.Name, Dir: h.RunDir, Accel: accel, MemoryMiB: 1024, CPUs: guestCPUs(len(u.st.Hosts), runtime.NumCPU()), Machine: labMachine(),
			Kernel: u.art.Kernel, Initrd: u.art.Initrd, Append: u.art.Append,
			BaseImage: u.art.RootQCOW2, ConfigDisk: disk, BMCAddr: h.BMCKCS, SerialAddr: h.BMCSerial,
			VMMI: []qemu.Forward{{HostPort: hp, GuestPort: 8443}},
			// A BMC power off leaves QEMU waiting (-no-shutdown) for the
			// BMC's power on (QMP system_reset + cont); resets reboot.
			Reboot: true,
			// A root shell on ttyS1 for `lab exec` (lab only).
			Shell: true,
			// The BMC gets a QEMU monitor of its own (QMP serves one
			// client at a time; lab commands use qmp.sock).
			ExtraArgs: []string{"-no-shutdown", "-qmp", "unix:" + filepath.Join(h.RunDir, "qmp-bmc.sock") + ",server=on,wait=off"},
		}, u.log)
		if err != nil {
			return fmt.Errorf("%s: start QEMU: %w", h.Name, err)
		}
		u.machines[i] = m
		// Free the monitor for `lab unplug` and friends (one client at a time).
		if m.QMP != nil {
			m.QMP.Close()
		}
		h.QEMU = Proc{Pid: m.Pid()}
		h.VMMILink = true
	}
	if err := saveState(u.o.Dir, u.st); err != nil {
		return err
	}
	u.clk.done("qemu started")

	return nil
}

// waitAgents: readiness by events, the guests' console markers, then (with
// a Probe) an answer over both channels. Each host is probed as soon as its
// own agent started, all hosts at once: a host that booted first answers
// while the others still boot. The stages end when the last host got there.
func (u *upRun) waitAgents(ctx context.Context) error {
	var inv *inventory.Inventory
	if u.o.Probe != nil {
		var err error
		if inv, err = fileio.LoadInventory(filepath.Join(u.o.Dir, "inventory.json")); err != nil {
			return err
		}
	}
	type hostReady struct {
		booted, answered time.Time
		vmmi, oob        time.Duration
	}
	ready := make([]hostReady, len(u.machines))
	g, gctx := errgroup.WithContext(ctx) // the first host that fails stops the wait for the others
	for i, m := range u.machines {
		g.Go(func() error {
			h, r := u.st.Hosts[i], &ready[i]
			wctx, wcancel := context.WithTimeout(gctx, 5*time.Minute)
			_, err := m.WaitConsole(wctx, "ooblab: hvagent started")
			wcancel()
			if err != nil {
				return fmt.Errorf("%s did not start its agent (console %s): %w", h.Name, filepath.Join(h.RunDir, "console.log"), err)
			}
			r.booted = time.Now()
			if u.o.Probe == nil {
				return nil
			}
			pctx, pcancel := context.WithTimeout(gctx, 2*time.Minute)
			r.vmmi, r.oob, err = probeUntil(pctx, u.o.Probe, inv, h.Name)
			pcancel()
			if err != nil {
				return fmt.Errorf("%s: agent does not answer: %w", h.Name, err)
			}
			r.answered = time.Now()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var booted, answered time.Time // the last host's
	for _, r := range ready {
		if r.booted.After(booted) {
			booted = r.booted
		}
		if r.answered.After(answered) {
			answered = r.answered // each host answers after it booted: ≥ booted
		}
	}
	u.clk.doneAt("guests booted (agent up)", booted)
	if u.o.Probe != nil {
		for i, h := range u.st.Hosts {
			fmt.Fprintf(u.o.Out, "  %s answers: vmm-i %v, oob-i %v\n", h.Name, ready[i].vmmi.Round(time.Millisecond), ready[i].oob.Round(time.Millisecond))
		}
		u.clk.doneAt("both channels answer", answered)
	}
	return nil
}

// guestCPUs is each host's vCPU count: 2, or fewer when the hosts would
// have more vCPUs than the machine has cores (at least 1). TCG runs a vCPU
// per thread, and more busy vCPUs than cores makes every guest slower than
// its share: a vCPU preempted while it holds a guest lock leaves the
// other spinning (three 2-vCPU hosts on 2 cores took 2.8× one host to
// ready, three 1-vCPU hosts 2.2×).
func guestCPUs(hosts, cores int) int {
	return min(2, max(1, cores/max(hosts, 1)))
}

func probeUntil(ctx context.Context, p func(context.Context, *inventory.Inventory, string) (time.Duration, time.Duration, error), inv *inventory.Inventory, host string) (time.Duration, time.Duration, error) {
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		v, b, err := p(actx, inv, host)
		cancel()
		if err == nil {
			return v, b, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func portFree(addr string, udp bool) error {
	if udp {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("port %s is taken: %w", addr, err)
		}
		return c.Close()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("port %s is taken: %w", addr, err)
	}
	return l.Close()
}

// startDetached starts a program in its own session so it outlives `lab up`.
func startDetached(bin string, args []string, logPath, pidPath string) (int, error) {
	return startDetachedLog(bin, args, logPath, pidPath, os.O_TRUNC)
}

// startDetachedLog is startDetached with the log opened with flag
// (os.O_TRUNC or os.O_APPEND).
func startDetachedLog(bin string, args []string, logPath, pidPath string, flag int) (int, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|flag, 0o600)
	if err != nil {
		return 0, err
	}
	defer lf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, os.WriteFile(pidPath, []byte(strconv.Itoa(pid)+"\n"), 0o600)
}

// waitTCP waits until addr accepts connections or the process dies.
func waitTCP(ctx context.Context, addr string, limit time.Duration, pid int) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if !processAlive(pid) {
			return errors.New("process exited")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %v", addr, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie counts as gone, once it is alone: a multi-threaded process's
	// leader shows Z while its other threads are still exiting (one in an
	// fsync, say) and still hold its files — sockets included. A bmcsim
	// restarted then found its port in use (fresh-clone c11: "bind:
	// address already in use" right after a SIGKILL). A thread that has
	// left /proc/PID/task has closed what it held.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		return err == nil && len(tasks) > 1
	}
	return true
}

// labMachine is the QEMU machine type of the hosts ($OOBLAB_MACHINE, default q35).
func labMachine() string {
	if m := os.Getenv("OOBLAB_MACHINE"); m != "" {
		return m
	}
	return "q35"
}

// probeAccel decides between KVM and TCG. The probe boots a kernel under KVM
// (2.5 s when KVM hangs, as on some machines), so its answer is kept for a
// day in the cache folder, keyed by the kernel.
func probeAccel(ctx context.Context, kernel string, log *slog.Logger) string {
	root, err := image.CacheRoot()
	var cache string
	if err == nil {
		cache = filepath.Join(root, "accel-"+strings.NewReplacer("/", "_").Replace(kernel))
		if st, err := os.Stat(cache); err == nil && time.Since(st.ModTime()) < 24*time.Hour {
			if b, err := os.ReadFile(cache); err == nil {
				if a := strings.TrimSpace(string(b)); a == "kvm" || a == "tcg" {
					return a
				}
			}
		}
	}
	accel := "tcg"
	if qemu.KVMUsable(ctx, kernel, log) {
		accel = "kvm"
	}
	if cache != "" {
		_ = os.WriteFile(cache, []byte(accel+"\n"), 0o644)
	}
	return accel
}

// closeInheritedOnExec marks every descriptor this process inherited
// (beyond stdin, stdout and stderr) close-on-exec, so the daemons lab up
// leaves running do not keep them: a lock held by the caller (flock make
// e2e) or a pipe of CI's would otherwise stay open until lab down.
func closeInheritedOnExec() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
