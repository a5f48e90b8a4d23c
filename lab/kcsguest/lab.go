// Package kcsguest boots a minimal Linux guest under QEMU whose only job is
// to talk to a BMC through the real KCS path: QEMU's isa-ipmi-kcs +
// ipmi-bmc-extern, the Debian kernel's ipmi_si/ipmi_devintf, /dev/ipmi0,
// and hvagent/sysif/devipmi in a static program (guestprog). The host side
// is an in-process bmcsim BMC (sim + queue + kcs) or any other BMC that
// serves the chardev (OpenIPMI's ipmi_sim, for the benchmark).
//
// The guest reports on its serial console in lines starting "KCSGUEST-";
// the console is a FIFO that QEMU writes ("-serial file:FIFO"), read line by
// line here and copied to console.log, so waits are event-driven with
// deadlines, never sleeps.
package kcsguest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/app"
	"github.com/ooblab/ooblab/bmcsim/bmc"
	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/kcs"
	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/lab/initramfs"
)

// NotifyCmd is the OEM command (NetFn 0x2E) the BMC pushes into its
// receive message queue when Queue 1 gains a record (oem.CmdQueue1Notify,
// as bmcsim does); guestprog registers for it. StopID ends guestprog's echo
// mode. ReadID is the full record PutReadRecord leaves in Queue 1 for
// bench mode's oemread-240 rows. Keep in step with guestprog.
const (
	NotifyCmd = uint8(oem.CmdQueue1Notify)
	StopID    = 0xFFFF_FFFF_FFFF_FF00
	ReadID    = 0xFFFF_FFFF_FFFF_FE00
)

// Env is what booting needs from the host.
type Env struct {
	QEMU, Busybox string
	Kernel, KVer  string // /boot/vmlinuz-KVER with /lib/modules/KVER
}

// FindEnv locates QEMU, a static busybox and a kernel with modules; the
// error says what is missing and how to install it.
func FindEnv() (Env, error) {
	var e Env
	var err error
	if e.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		return e, errors.New("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	if e.Busybox, err = exec.LookPath("busybox"); err != nil {
		return e, errors.New("busybox not installed (apt-get install busybox-static)")
	}
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(ks)))
	for _, k := range ks {
		v := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v, "kernel")); err == nil {
			if f, err := os.Open(k); err == nil { // readable (Ubuntu makes it 0600)
				f.Close()
				e.Kernel, e.KVer = k, v
				return e, nil
			}
		}
	}
	return e, errors.New("no readable /boot/vmlinuz-* with modules in /lib/modules (apt-get install linux-image-amd64)")
}

const initScript = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ipmi_msghandler ipmi_devintf ipmi_si; do insmod /lib/modules/$m.ko || echo KCSGUEST-ERROR insmod $m; done
i=0
while [ ! -e /dev/ipmi0 ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
[ -e /dev/ipmi0 ] || echo KCSGUEST-ERROR no /dev/ipmi0: ipmi_si found no BMC
/bin/guestprog %s
echo KCSGUEST-EXIT $?
poweroff -f
`

// BuildInitrd builds guestprog (static) and an initramfs that runs it with
// args, both under dir; it returns the initramfs path.
func BuildInitrd(ctx context.Context, dir string, env Env, args ...string) (string, error) {
	prog := filepath.Join(dir, "guestprog")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", prog,
		"github.com/ooblab/ooblab/lab/kcsguest/guestprog")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build guestprog: %v\n%s", err, out)
	}
	img := initramfs.New()
	if err := img.AddBusybox(env.Busybox, "sh", "mount", "insmod", "sleep", "echo", "poweroff", "["); err != nil {
		return "", err
	}
	for _, m := range []string{"ipmi_msghandler", "ipmi_devintf", "ipmi_si"} {
		p, err := initramfs.FindModule(env.KVer, m)
		if err != nil {
			return "", err
		}
		if _, err := img.AddModule(p); err != nil {
			return "", err
		}
	}
	if err := img.AddFile("bin/guestprog", prog); err != nil {
		return "", err
	}
	img.Add(initramfs.File{Path: "init", Mode: 0o755, Data: fmt.Appendf(nil, initScript, strings.Join(args, " "))})
	img.Add(initramfs.File{Path: "dev/console", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Rdev: [2]uint32{5, 1}})
	for _, d := range []string{"proc", "sys", "dev"} {
		img.Add(initramfs.File{Path: d, Mode: os.ModeDir | 0o755})
	}
	initrd := filepath.Join(dir, "initrd.cpio.gz")
	return initrd, img.WriteFile(initrd)
}

// Event is something the guest did to the queues, seen by the BMC.
type Event struct {
	Cmd   oem.Cmd // CmdReadQueue1 or CmdWriteQueue2
	Empty bool    // a read that found Queue 1 empty
	Rec   record.Record
	At    time.Time
}

// BMC is an in-process bmcsim BMC (bmcsimtest: the program's own host)
// with the OOB-I queues and the QEMU system interface on a loopback TCP port.
type BMC struct {
	Sim    *bmc.BMC
	Queues *queue.Queues
	KCS    *kcs.Server
	Port   int // chardev TCP port
	// Events carries every guest read of Queue 1 and write of Queue 2.
	Events chan Event

	tb    *bmcsimtest.BMC
	lanCh *ipmibmc.Channel
	done  chan error
}

// Pushes counts notifications pushed into the host's receive message queue.
func (b *BMC) Pushes() int64 { return b.tb.Pushes() }

// StartBMC builds the BMC and starts serving the chardev; it listens
// before returning, so QEMU may start at once (ipmi_si gives up on a BMC
// that does not answer). It stops when ctx ends; Wait waits for that.
func StartBMC(ctx context.Context, log *slog.Logger) (*BMC, error) {
	out := &BMC{Events: make(chan Event, 8192), done: make(chan error, 1)}
	tb, err := bmcsimtest.New(bmcsimtest.Options{
		Name:           "kcsguest",
		Users:          []config.User{{Name: "op", Password: "kcsguest-op", Privilege: "operator"}},
		Queue1Capacity: 4096, Queue2Capacity: 4096,
		Logger: log,
		BeforeServe: func(h *app.Host) {
			out.Queues = h.Queues
			out.observe(h.BMC.Registry, oem.IANA(h.BMC.Config.IANA))
		},
	})
	if err != nil {
		return nil, err
	}
	out.tb, out.Sim, out.KCS = tb, tb.Host.BMC, tb.Host.KCS
	out.lanCh, _ = out.Sim.IPMI.Channels.Get(1)
	if out.lanCh == nil {
		out.lanCh = &ipmibmc.Channel{Number: 1, Medium: ipmibmc.ChannelMediumLAN}
	}
	_, port, _ := net.SplitHostPort(tb.KCSAddr())
	out.Port, _ = strconv.Atoi(port)
	go func() {
		<-ctx.Done()
		out.done <- tb.Stop()
	}()
	return out, nil
}

// Wait waits for the BMC to stop after ctx is cancelled.
func (b *BMC) Wait() error { return <-b.done }

// observe wraps the guest-side queue handlers to report Events.
func (b *BMC) observe(reg *handlers.Registry, iana oem.IANA) {
	for _, cmd := range []oem.Cmd{oem.CmdReadQueue1, oem.CmdWriteQueue2} {
		inner := b.Queues.Handler(cmd, iana)
		reg.Register(queue.Commands[cmd], handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, data []byte) ([]byte, types.CompletionCode, error) {
			resp, cc, err := inner.Handle(ctx, hctx, data)
			if cc != 0 {
				return resp, cc, err
			}
			ev := Event{Cmd: cmd, At: time.Now()}
			switch cmd {
			case oem.CmdReadQueue1:
				var r oem.ReadQueueResponse
				if r.Unpack(resp) != nil {
					return resp, cc, err
				}
				ev.Empty, ev.Rec = r.Empty, r.Record
			case oem.CmdWriteQueue2:
				var r oem.WriteQueueRequest
				if r.Unpack(data) != nil {
					return resp, cc, err
				}
				ev.Rec = r.Record
			}
			select {
			case b.Events <- ev:
			default:
			}
			return resp, cc, err
		}))
	}
}

// lan is a request as it arrives from an operator's RMCP+ session (user
// "op": the queues bind Queue 2 readers to the session's user).
func (b *BMC) lan() *handlers.HandlerContext {
	return &handlers.HandlerContext{BMC: b.Sim.IPMI, Channel: b.lanCh,
		Session: &ipmibmc.Session{PrivilegeLevel: ipmibmc.PrivilegeLevelOperator, User: &ipmibmc.User{Name: "op"}}}
}

// WriteQueue1 writes rec as the VMS would over the LAN (operator session),
// through the BMC's registry.
func (b *BMC) WriteQueue1(ctx context.Context, rec record.Record) error {
	req, err := (&oem.WriteQueueRequest{IANA: oem.IANA(b.Sim.Config.IANA), Record: rec}).Pack()
	if err != nil {
		return err
	}
	_, cc, err := b.Sim.Registry.Dispatch(ctx, b.lan(), uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdWriteQueue1), req)
	if err != nil {
		return err
	}
	return oem.Check(oem.CmdWriteQueue1, oem.CompletionCode(cc))
}

// PutReadRecord writes one record with a full payload (message id ReadID)
// to Queue 1, as a VMS would, for guestprog's bench mode: its oemread-240
// rows read it again and again (windowed read with rewind, never
// acknowledged), the path a VMS's request takes to the host.
func (b *BMC) PutReadRecord(ctx context.Context) error {
	rec := record.Record{MsgID: ReadID, Index: 0, Count: 1, Payload: make([]byte, record.MaxPayload)}
	for i := range rec.Payload {
		rec.Payload[i] = byte(i)
	}
	return b.WriteQueue1(ctx, rec)
}

// ReadQueue2 reads Queue 2 as the VMS would, acknowledging ack.
func (b *BMC) ReadQueue2(ctx context.Context, ack *oem.Ack) (oem.ReadQueueResponse, error) {
	var r oem.ReadQueueResponse
	req, _ := (&oem.ReadQueueRequest{IANA: oem.IANA(b.Sim.Config.IANA), Ack: ack}).Pack()
	resp, cc, err := b.Sim.Registry.Dispatch(ctx, b.lan(), uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdReadQueue2), req)
	if err != nil {
		return r, err
	}
	if err := oem.Check(oem.CmdReadQueue2, oem.CompletionCode(cc)); err != nil {
		return r, err
	}
	return r, r.Unpack(resp)
}

// Guest is a running QEMU.
type Guest struct {
	cmd     *exec.Cmd
	out     *syncBuf
	lines   chan string
	exited  chan struct{}
	waitErr error
	fifo    *os.File
	Started time.Time
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Device is one BMC behind one of the guest's KCS interfaces: a BMC on a
// chardev socket (QEMU's ipmi-bmc-extern: bmcsim, ipmi_sim) or QEMU's own
// in-process BMC (ipmi-bmc-sim, no socket hop).
type Device struct {
	Port   int    // chardev TCP port on 127.0.0.1 of an external BMC
	InQEMU bool   // QEMU's ipmi-bmc-sim instead of a socket
	MfgID  uint32 // InQEMU: the manufacturer id its Get Device ID reports
}

// Extern is a BMC serving the chardev at 127.0.0.1:port.
func Extern(port int) Device { return Device{Port: port} }

// InQEMU is QEMU's ipmi-bmc-sim reporting manufacturer id mfg.
func InQEMU(mfg uint32) Device { return Device{InQEMU: true, MfgID: mfg} }

// kcsIRQs are free ISA IRQs of QEMU's pc machine with -nodefaults (4 is
// the serial console's), one per KCS interface.
var kcsIRQs = []int{5, 10, 11, 7}

// MaxDevices is how many BMCs BootWith can wire into one guest.
const MaxDevices = 4

// deviceArgs wires devs to KCS interfaces K = 0, 1, …: I/O port 0xca2+8K
// (0xca2 is the spec's default), its own IRQ. Linux's ipmi_si finds them
// through QEMU's ACPI tables.
func deviceArgs(devs []Device) ([]string, error) {
	if len(devs) == 0 || len(devs) > MaxDevices {
		return nil, fmt.Errorf("kcsguest: %d BMCs (want 1 to %d)", len(devs), MaxDevices)
	}
	var args []string
	for k, d := range devs {
		bmc := fmt.Sprintf("bmc%d", k)
		if d.InQEMU {
			args = append(args, "-device", fmt.Sprintf("ipmi-bmc-sim,id=%s,mfg_id=%d", bmc, d.MfgID))
		} else {
			chr := fmt.Sprintf("ipmi%d", k)
			args = append(args,
				"-chardev", fmt.Sprintf("socket,id=%s,host=127.0.0.1,port=%d,reconnect=1", chr, d.Port),
				"-device", fmt.Sprintf("ipmi-bmc-extern,id=%s,chardev=%s", bmc, chr))
		}
		args = append(args, "-device", fmt.Sprintf("isa-ipmi-kcs,bmc=%s,ioport=%#x,irq=%d", bmc, 0xca2+8*k, kcsIRQs[k]))
	}
	return args, nil
}

// Boot starts QEMU (TCG) with the KCS device wired to the chardev at
// 127.0.0.1:port. The console is copied to dir/console.log.
func Boot(ctx context.Context, env Env, dir, initrd string, port int) (*Guest, error) {
	return BootWith(ctx, env, dir, initrd, Extern(port))
}

// BootWith starts QEMU (TCG) with one KCS interface per BMC in devs, in
// that order (the guest's /dev/ipmiK need not follow it: tell the BMCs
// apart by their Get Device ID). The console is copied to dir/console.log.
func BootWith(ctx context.Context, env Env, dir, initrd string, devs ...Device) (*Guest, error) {
	devArgs, err := deviceArgs(devs)
	if err != nil {
		return nil, err
	}
	fifoPath := filepath.Join(dir, "console.fifo")
	os.Remove(fifoPath) // a kept artifact folder from an earlier run
	if err := syscall.Mkfifo(fifoPath, 0o600); err != nil {
		return nil, fmt.Errorf("console fifo: %w", err)
	}
	// O_RDWR: opening does not block for a writer, and QEMU's exit is no EOF
	// (the exit is watched instead).
	fifo, err := os.OpenFile(fifoPath, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		fifo.Close()
		return nil, err
	}
	g := &Guest{out: &syncBuf{}, lines: make(chan string, 4096), exited: make(chan struct{}), fifo: fifo}
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(io.TeeReader(fifo, logf))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case g.lines <- sc.Text():
			default: // nobody reads the console: keep only the log
			}
		}
	}()
	args := []string{
		"-machine", "pc", "-accel", "tcg", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "file:" + fifoPath,
		"-kernel", env.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=1 panic=-1",
	}
	g.cmd = exec.Command(env.QEMU, append(args, devArgs...)...)
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	g.Started = time.Now()
	if err := g.cmd.Start(); err != nil {
		fifo.Close()
		return nil, err
	}
	go func() { g.waitErr = g.cmd.Wait(); close(g.exited) }()
	go func() {
		select {
		case <-ctx.Done():
			g.cmd.Process.Kill()
		case <-g.exited:
		}
	}()
	return g, nil
}

// Expect waits for the next console line that contains prefix and returns
// it from prefix on. A "KCSGUEST-ERROR" line, QEMU's exit or ctx end first
// is an error.
func (g *Guest) Expect(ctx context.Context, prefix string) (string, error) {
	for {
		select {
		case l := <-g.lines:
			if i := strings.Index(l, prefix); i >= 0 {
				return l[i:], nil
			}
			if i := strings.Index(l, "KCSGUEST-ERROR"); i >= 0 {
				return "", fmt.Errorf("guest: %s", l[i:])
			}
		case <-g.exited:
			// Lines written before the exit may still be in the channel.
			select {
			case l := <-g.lines:
				if i := strings.Index(l, prefix); i >= 0 {
					return l[i:], nil
				}
				continue
			default:
			}
			return "", fmt.Errorf("QEMU exited (%v) before %q; QEMU said: %s", g.waitErr, prefix, g.out.String())
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q: %w", prefix, ctx.Err())
		}
	}
}

// Stop kills QEMU if it still runs and waits for it.
func (g *Guest) Stop() {
	g.cmd.Process.Kill()
	<-g.exited
	g.fifo.Close()
}

// Exited is closed when QEMU has exited.
func (g *Guest) Exited() <-chan struct{} { return g.exited }

// QEMUOutput is what QEMU printed on stdout/stderr.
func (g *Guest) QEMUOutput() string { return g.out.String() }

// ParseFields parses "KEY=VALUE" words of a console line.
func ParseFields(line string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}
