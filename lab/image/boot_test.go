package image_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/lab/image"
	"github.com/ooblab/ooblab/lab/qemu"
)

// TestBootHypervisorHost builds the guest image (cached), boots it with a
// BMC that answers Get Device ID, waits for the init markers, starts a
// nested domain, and unplugs/replugs the VMM-I link through QMP.
//
//	OOBLAB_IMAGE_TEST=1 go test -v -run TestBootHypervisorHost ./lab/image
func TestBootHypervisorHost(t *testing.T) {
	if os.Getenv("OOBLAB_IMAGE_TEST") != "1" {
		t.Skip("set OOBLAB_IMAGE_TEST=1 to build and boot the guest image (root, ~40 s cold build, ~20 s boot)")
	}
	if os.Geteuid() != 0 {
		t.Skip("building the guest image needs root (mmdebstrap root mode)")
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4", "qemu-img", "cpio", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make deps): %v", tool, err)
		}
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	t0 := time.Now()
	// A stand-in hvagent: prints its arguments and greets on the VMM-I port.
	fake := filepath.Join(t.TempDir(), "hvagent")
	if err := os.WriteFile(fake, []byte(fakeHVAgent), 0o755); err != nil {
		t.Fatal(err)
	}
	recipe := image.DefaultRecipe()
	recipe.HVAgent = fake
	art, err := image.Build(ctx, recipe, image.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING image build: %.2fs (cached=%v) %s", time.Since(t0).Seconds(), art.Cached, art.Dir)

	bmc := startTestBMC(t)
	dir := t.TempDir()
	cfgDisk := filepath.Join(dir, "config.ext4")
	if err := image.BuildConfigDisk(ctx, image.Config{
		Hostname: "hv1", StartVMs: []string{"web1"}, HVAgentArgs: []string{"-listen", ":8443"},
	}, cfgDisk); err != nil {
		t.Fatal(err)
	}

	t1 := time.Now()
	m, err := qemu.Start(ctx, qemu.Config{
		Name: "hv1", Dir: filepath.Join(dir, "run"),
		Kernel: art.Kernel, Initrd: art.Initrd, Append: art.Append,
		BaseImage: art.RootQCOW2, ConfigDisk: cfgDisk,
		BMCAddr: bmc.addr, VMMI: []qemu.Forward{{GuestPort: 8443}},
		KillWithParent: true,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		s := time.Now()
		if err := m.Stop(context.Background()); err != nil {
			t.Error(err)
		}
		t.Logf("TIMING stop: %.2fs", time.Since(s).Seconds())
		if t.Failed() {
			b, _ := os.ReadFile(m.Console)
			t.Logf("console:\n%s", b)
		}
	}()
	t.Logf("accel %s, QMP up after %.2fs", m.Config.Accel, time.Since(t1).Seconds())

	wait := func(marker string, d time.Duration) string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		line, err := m.WaitConsole(wctx, marker, "ooblab: FAILED")
		if err != nil {
			t.Fatalf("waiting for %q: %v", marker, err)
		}
		if strings.Contains(line, "FAILED") {
			t.Fatalf("waiting for %q: guest says %q", marker, line)
		}
		t.Logf("TIMING %-22s host %6.2fs  guest %q", marker, time.Since(t1).Seconds(), line)
		return line
	}
	wait("ooblab: rootfs up", 60*time.Second)
	if line := wait("ooblab: ipmi", 5*time.Second); !strings.Contains(line, "/dev/ipmi0") {
		t.Errorf("no /dev/ipmi0 in the guest: %q (BMC saw %d Get Device ID)", line, bmc.devIDs.Load())
	}
	wait("ooblab: network up", 10*time.Second)
	wait("ooblab: libvirtd up", 60*time.Second)
	wait("ooblab: vms defined n=2", 60*time.Second)
	wait("ooblab: vm web1 running", 60*time.Second)
	wait("ooblab: hvagent started", 10*time.Second)
	wait("ooblab-test: fake hvagent args=-listen :8443", 10*time.Second)
	port := m.Config.VMMI[0].HostPort
	if got := greet(ctx, t, port, 20*time.Second); got != "hello-from-hvhost" {
		t.Fatalf("VMM-I 127.0.0.1:%d -> guest :8443: got %q", port, got)
	}
	t.Logf("BMC answered %d Get Device ID requests", bmc.devIDs.Load())

	qctx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	st, err := m.QMP.QueryStatus(qctx)
	if err != nil || !st.Running {
		t.Fatalf("query-status: %+v, %v", st, err)
	}

	// Unplug and replug the VMM-I: the guest sees the carrier go.
	for i, up := range []bool{false, true} {
		s := time.Now()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := m.QMP.SetLink(qctx, "vmmi", up)
		cancel()
		if err != nil {
			t.Fatalf("set_link vmmi up=%v: %v", up, err)
		}
		want := map[bool]string{false: "down", true: "up"}[up]
		wait(fmt.Sprintf("ooblab: vmmi carrier %s n=%d", want, i+1), 10*time.Second)
		t.Logf("TIMING set_link %s -> guest marker: %.2fs", want, time.Since(s).Seconds())
		if !up {
			if got := greet(ctx, t, port, 3*time.Second); got != "" {
				t.Fatalf("VMM-I unplugged, yet the guest answered %q", got)
			}
		} else if got := greet(ctx, t, port, 20*time.Second); got != "hello-from-hvhost" {
			t.Fatalf("VMM-I replugged: got %q", got)
		}
	}

	// ACPI power button: domains stopped, guest powers off, QEMU exits.
	s := time.Now()
	qctx3, cancel3 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel3()
	if err := m.QMP.SystemPowerdown(qctx3); err != nil {
		t.Fatal(err)
	}
	wait("ooblab: powerdown requested", 10*time.Second)
	wait("ooblab: powering off", 60*time.Second)
	select {
	case <-m.Exited():
		t.Logf("TIMING system_powerdown -> QEMU exited: %.2fs", time.Since(s).Seconds())
	case <-time.After(20 * time.Second):
		t.Fatal("QEMU still running 20s after the guest said it powers off")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testBMC is the least BMC that makes Linux's ipmi_si find a KCS device:
// it answers Get Device ID over QEMU's ipmi-bmc-extern protocol and every
// other request with 0xC1 (invalid command). Control commands are ignored.
type testBMC struct {
	addr   string
	devIDs atomic.Int32
}

func startTestBMC(t *testing.T) *testBMC {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	b := &testBMC{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

const (
	vmMsgEnd = 0xA0
	vmCmdEnd = 0xA1
	vmEscape = 0xAA
)

func (b *testBMC) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	var frame []byte
	esc := false
	for {
		ch, err := r.ReadByte()
		if err != nil {
			return
		}
		switch {
		case esc:
			frame = append(frame, ch&^0x10)
			esc = false
		case ch == vmEscape:
			esc = true
		case ch == vmCmdEnd:
			frame = frame[:0]
		case ch == vmMsgEnd:
			if resp := b.answer(frame); resp != nil {
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
			frame = frame[:0]
		default:
			frame = append(frame, ch)
		}
	}
}

// answer takes seq, netfn<<2|lun, cmd, data…, checksum and returns the
// encoded response frame.
func (b *testBMC) answer(m []byte) []byte {
	if len(m) < 4 {
		return nil
	}
	var sum byte
	for _, x := range m {
		sum += x
	}
	if sum != 0 {
		return nil
	}
	seq, netfnLun, cmd := m[0], m[1], m[2]
	netfn := netfnLun >> 2
	resp := []byte{seq, (netfn|1)<<2 | netfnLun&3, cmd}
	if netfn == 0x06 && cmd == 0x01 {
		b.devIDs.Add(1)
		// cc, device id, rev, fw 1.0, IPMI 2.0, chassis device,
		// IANA 32473 (documentation), product 1, aux.
		resp = append(resp, 0x00, 0x20, 0x01, 0x01, 0x00, 0x02, 0x80, 0xD9, 0x7E, 0x00, 0x01, 0x00)
	} else {
		resp = append(resp, 0xC1)
	}
	var s byte
	for _, x := range resp {
		s += x
	}
	resp = append(resp, -s)
	out := make([]byte, 0, len(resp)+4)
	for _, x := range resp {
		if x == vmMsgEnd || x == vmCmdEnd || x == vmEscape {
			out = append(out, vmEscape, x|0x10)
			continue
		}
		out = append(out, x)
	}
	return append(out, vmMsgEnd)
}

const fakeHVAgent = `#!/bin/sh
echo "ooblab-test: fake hvagent args=$*" >/dev/console
printf '#!/bin/sh\necho hello-from-hvhost\n' >/run/greet
chmod +x /run/greet
exec /usr/local/bin/busybox nc -ll -p 8443 -e /run/greet
`

// greet reads the fake hvagent's greeting through the VMM-I port forward,
// dialling again while the guest side is not listening yet (slirp accepts
// on the host, then closes when the guest refuses), until d passes. It
// returns "" if no greeting came.
func greet(ctx context.Context, t *testing.T, port int, d time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		var dl net.Dialer
		c, err := dl.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			last = err
			continue
		}
		dead, _ := ctx.Deadline()
		c.SetDeadline(dead)
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err == nil {
			return strings.TrimSpace(line)
		}
		last = err
	}
	t.Logf("no greeting on 127.0.0.1:%d within %v (last: %v)", port, d, last)
	return ""
}
