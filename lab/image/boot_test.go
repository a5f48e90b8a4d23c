package image_test

import (
	"bufio"
	"context"
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
	art, err := image.Build(ctx, image.DefaultRecipe(), image.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING image build: %.2fs (cached=%v) %s", time.Since(t0).Seconds(), art.Cached, art.Dir)

	bmc := startTestBMC(t)
	dir := t.TempDir()
	cfgDisk := filepath.Join(dir, "config.ext4")
	if err := image.BuildConfigDisk(ctx, image.Config{Hostname: "hv1", StartVMs: []string{"web1"}}, cfgDisk); err != nil {
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
	wait("ooblab: no hvagent", 10*time.Second)
	t.Logf("BMC answered %d Get Device ID requests", bmc.devIDs.Load())

	for _, up := range []bool{false, true} {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := m.QMP.SetLink(qctx, "vmmi", up)
		cancel()
		if err != nil {
			t.Fatalf("set_link vmmi up=%v: %v", up, err)
		}
	}
	qctx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	st, err := m.QMP.QueryStatus(qctx)
	if err != nil || !st.Running {
		t.Fatalf("query-status: %+v, %v", st, err)
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
