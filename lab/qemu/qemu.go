// Package qemu starts and stops the lab's hypervisor-host guest: one QEMU
// process with the lab's disk, BMC chardev, VMM-I NIC, QMP socket and serial
// console laid out in one run folder:
//
//	<Dir>/root.qcow2    copy-on-write overlay on the cached base image
//	<Dir>/qmp.sock      QMP (lab/qmp)
//	<Dir>/console.log   serial console (ttyS0): the guest's "ooblab: …" markers
//	<Dir>/shell.sock    with Config.Shell: the second serial port (ttyS1), on
//	                    which the lab's guest runs a root shell (see Exec)
//	<Dir>/qemu.log      QEMU's own stdout/stderr
//	<Dir>/qemu.pid      pidfile
//
// The guest's devices, by id:
//
//	vmmi       -netdev user with hostfwd tcp:127.0.0.1:<HostPort>-:<GuestPort>
//	vmmi-nic   virtio-net-pci on vmmi; QMP set_link vmmi off unplugs the VMM-I
//	bmc0       ipmi-bmc-extern on chardev ipmi0 (TCP client to the BMC,
//	           reconnect=1) behind an isa-ipmi-kcs (/dev/ipmi0 in the guest)
//
// The BMC must listen before QEMU starts: the guest loads ipmi_si about 1.5 s
// into boot, and if no BMC answers then, /dev/ipmi0 never appears.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/internal/qmp"
)

// Forward is one VMM-I port forward from the build host to the guest.
type Forward struct {
	HostPort  int // on 127.0.0.1; 0 picks a free port
	GuestPort int
}

// Config describes one hypervisor-host guest.
type Config struct {
	Name string // for logs
	Dir  string // run folder, created if missing

	Binary    string // default qemu-system-x86_64
	Machine   string // default "q35"
	Accel     string // "kvm", "tcg", or "" to probe with KVMUsable
	MemoryMiB int    // default 1024 (libvirt host: ≥1024; the kernel alone needs ≥128)
	CPUs      int    // default 2

	Kernel, Initrd, Append string
	BaseImage              string // base image (lab/image RootQCOW2), never written
	BaseFormat             string // its format: "qcow2" (default) or "raw"
	ConfigDisk             string // optional raw image attached as the second virtio disk

	// BMCAddr is the BMC's chardev server, "127.0.0.1:port"; empty means no
	// IPMI devices at all.
	BMCAddr string
	// SerialAddr is the BMC's serial port server (bmcsim --serial),
	// "127.0.0.1:port": ttyS0 goes there (Serial-over-LAN) through a socket
	// chardev whose logfile is still console.log; QEMU writes the log
	// whether or not the BMC is connected (QEMU ≥ 6.0 drops, not fails,
	// writes to an unconnected socket). Empty: ttyS0 goes to console.log only.
	SerialAddr string
	// VMMI are the VMM-I port forwards (none: the NIC is still there).
	VMMI []Forward

	// Reboot lets a guest reset (a reboot, a BMC's hard reset, QMP
	// system_reset) restart the machine; without it a reset powers the guest
	// off (-no-reboot), which tests use to see a kernel panic as an exit.
	Reboot bool
	// KillWithParent kills QEMU when the process that started it dies
	// (tests). Linux ties this to the starting OS thread, which Go keeps
	// alive unless a LockOSThread'd goroutine exits: fine for tests.
	KillWithParent bool
	// Shell adds a second serial port (ttyS1) on <Dir>/shell.sock, a unix
	// socket only the lab's user can reach, where the lab's guest init runs
	// a root shell when the kernel command line says ooblab.shell=ttyS1
	// (ShellAppend, added by Args). Specs use it (Exec, `lab exec`) to change the host
	// behind hvagent's back; hvagent knows nothing of it.
	Shell     bool
	ExtraArgs []string
}

// ShellAppend is the kernel command-line word that starts the lab shell on
// ttyS1 (Config.Shell).
const ShellAppend = "ooblab.shell=ttyS1"

// Machine is one running QEMU.
type Machine struct {
	Config  Config // with defaults and chosen ports filled in
	Console string // console log path
	QMPPath string
	QMP     *qmp.Monitor

	cmd     *exec.Cmd
	log     *slog.Logger
	exited  chan struct{}
	exitErr error
}

func (c *Config) fill(ctx context.Context, log *slog.Logger) error {
	if c.Dir == "" || c.Kernel == "" || c.BaseImage == "" {
		return errors.New("qemu: Config needs Dir, Kernel and BaseImage")
	}
	if c.Name == "" {
		c.Name = filepath.Base(c.Dir)
	}
	if c.BaseFormat == "" {
		c.BaseFormat = "qcow2"
	}
	if c.Binary == "" {
		c.Binary = "qemu-system-x86_64"
	}
	if c.Machine == "" {
		c.Machine = "q35"
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1024
	}
	if c.CPUs == 0 {
		c.CPUs = 2
	}
	if c.Accel == "" {
		c.Accel = "tcg"
		if KVMUsable(ctx, c.Kernel, log) {
			c.Accel = "kvm"
		}
	}
	for i := range c.VMMI {
		if c.VMMI[i].HostPort == 0 {
			p, err := freePort()
			if err != nil {
				return err
			}
			c.VMMI[i].HostPort = p
		}
	}
	return nil
}

// freePort asks the kernel for a free TCP port on 127.0.0.1. Another process
// may take it before QEMU binds it; QEMU then fails to start and says so.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("qemu: pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Args returns QEMU's command line for c (after defaults are filled).
func (c Config) Args() []string {
	d := c.Dir
	a := []string{
		"-nodefaults", "-no-user-config", "-display", "none",
		"-name", c.Name,
		"-machine", c.Machine, "-accel", c.Accel,
		"-m", strconv.Itoa(c.MemoryMiB), "-smp", strconv.Itoa(c.CPUs),
		"-kernel", c.Kernel,
		"-drive", "file=" + filepath.Join(d, "root.qcow2") + ",if=virtio,format=qcow2,cache=unsafe",
	}
	if c.Accel == "kvm" {
		a = append(a, "-cpu", "host")
	}
	if c.Initrd != "" {
		a = append(a, "-initrd", c.Initrd)
	}
	if app := c.Append; app != "" || c.Shell {
		if c.Shell {
			app = strings.TrimSpace(app + " " + ShellAppend)
		}
		a = append(a, "-append", app)
	}
	if c.ConfigDisk != "" {
		a = append(a, "-drive", "file="+c.ConfigDisk+",if=virtio,format=raw,readonly=on")
	}
	if c.BMCAddr != "" {
		host, port, _ := net.SplitHostPort(c.BMCAddr)
		a = append(a,
			"-chardev", fmt.Sprintf("socket,id=ipmi0,host=%s,port=%s,reconnect=1", host, port),
			"-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
			"-device", "isa-ipmi-kcs,bmc=bmc0")
	}
	nd := "user,id=vmmi"
	for _, f := range c.VMMI {
		nd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", f.HostPort, f.GuestPort)
	}
	if c.SerialAddr != "" {
		host, port, _ := net.SplitHostPort(c.SerialAddr)
		a = append(a,
			"-chardev", fmt.Sprintf("socket,id=serial0,host=%s,port=%s,reconnect=1,logfile=%s", host, port, filepath.Join(d, "console.log")),
			"-serial", "chardev:serial0")
	} else {
		a = append(a, "-serial", "file:"+filepath.Join(d, "console.log"))
	}
	a = append(a,
		"-netdev", nd, "-device", "virtio-net-pci,netdev=vmmi,id=vmmi-nic",
		"-qmp", "unix:"+filepath.Join(d, "qmp.sock")+",server=on,wait=off",
		"-pidfile", filepath.Join(d, "qemu.pid"))
	if c.Shell {
		// The second -serial is ttyS1.
		a = append(a, "-chardev", "socket,id=shell,path="+filepath.Join(d, "shell.sock")+",server=on,wait=off",
			"-serial", "chardev:shell")
	}
	if !c.Reboot {
		a = append(a, "-no-reboot")
	}
	return append(a, c.ExtraArgs...)
}

// Start creates the overlay and starts QEMU, and returns once QMP answers.
// ctx bounds the start only; the guest outlives it (see Stop). Boot
// progress is read with WaitConsole.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Machine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.fill(ctx, log); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	for _, f := range []string{"root.qcow2", "qmp.sock", "shell.sock", "console.log", "qemu.pid"} {
		os.Remove(filepath.Join(cfg.Dir, f))
	}
	base, err := filepath.Abs(cfg.BaseImage)
	if err != nil {
		return nil, err
	}
	overlay := filepath.Join(cfg.Dir, "root.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", cfg.BaseFormat, "-b", base, overlay).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu: overlay on %s: %w: %s", base, err, out)
	}
	qlog, err := os.Create(filepath.Join(cfg.Dir, "qemu.log"))
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	defer qlog.Close()
	args := cfg.Args()
	cmd := exec.Command(cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = qlog, qlog
	// Own process group: a terminal's Ctrl-C goes to the lab, which stops
	// QEMU in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cfg.KillWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	m := &Machine{
		Config: cfg, Console: filepath.Join(cfg.Dir, "console.log"), QMPPath: filepath.Join(cfg.Dir, "qmp.sock"),
		cmd: cmd, log: log.With("guest", cfg.Name), exited: make(chan struct{}),
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: start %s: %w", cfg.Binary, err)
	}
	m.log.Info("QEMU started", "pid", cmd.Process.Pid, "accel", cfg.Accel, "dir", cfg.Dir, "vmmi", cfg.VMMI, "bmc", cfg.BMCAddr)
	go func() {
		m.exitErr = cmd.Wait()
		close(m.exited)
	}()

	// QMP answers once QEMU's main loop runs; stop waiting if QEMU dies.
	dctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-m.exited:
			cancel()
		case <-dctx.Done():
		}
	}()
	mon, err := qmp.Dial(dctx, "unix", m.QMPPath, log)
	cancel()
	if err != nil {
		// QEMU may fail after creating the QMP socket (a bad -device): give
		// its exit a moment to show, to report its own words.
		grace := 3 * time.Second
		if ctx.Err() != nil {
			grace = 0
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-m.exited:
			return nil, fmt.Errorf("qemu: %s exited at start (%v): %s", cfg.Name, m.exitErr, tailFile(filepath.Join(cfg.Dir, "qemu.log"), 2000))
		case <-t.C:
		}
		m.kill()
		return nil, fmt.Errorf("qemu: %s: %w", cfg.Name, err)
	}
	m.QMP = mon
	m.log.Info("QMP up", "took", time.Since(t0).Round(time.Millisecond), "qemu", mon.Version())
	return m, nil
}

// Overlay is the guest's copy-on-write disk (qemu-img commit writes it
// into the base).
func (m *Machine) Overlay() string { return filepath.Join(m.Config.Dir, "root.qcow2") }

// Pid is QEMU's process id.
func (m *Machine) Pid() int { return m.cmd.Process.Pid }

// Exited is closed when QEMU has exited.
func (m *Machine) Exited() <-chan struct{} { return m.exited }

// ExitErr is cmd.Wait's result, valid once Exited is closed.
func (m *Machine) ExitErr() error { return m.exitErr }

func (m *Machine) kill() {
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
}

// Stop ends QEMU: QMP quit, then SIGTERM, then SIGKILL, each with part of
// ctx's time (at most 5 s and 3 s for the first two). Stop always returns
// with QEMU gone; the error says which step it took.
func (m *Machine) Stop(ctx context.Context) error {
	defer func() {
		if m.QMP != nil {
			m.QMP.Close()
		}
	}()
	select {
	case <-m.exited:
		return nil
	default:
	}
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-m.exited:
			return true
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := m.QMP.Quit(qctx)
	cancel()
	if err == nil && wait(5*time.Second) {
		m.log.Info("QEMU quit")
		return nil
	}
	m.log.Warn("QEMU did not quit through QMP; sending SIGTERM", "err", err)
	m.cmd.Process.Signal(syscall.SIGTERM)
	if wait(3 * time.Second) {
		return nil
	}
	m.log.Warn("QEMU ignored SIGTERM; killing it")
	m.kill()
	return fmt.Errorf("qemu: %s had to be killed (quit: %v)", m.Config.Name, err)
}

func tailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
