package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

// kernelOnly returns a Config that boots the build host's kernel with no
// initramfs and an empty disk: it prints "Linux version" and then panics
// (VFS), and -no-reboot makes QEMU exit.
func kernelOnly(t *testing.T) Config {
	t.Helper()
	testutil.Integration(t, "qemu-system-x86_64", "qemu-img")
	kernel := hostKernel()
	if kernel == "" {
		t.Skip("no readable /boot/vmlinuz-* (install linux-image-amd64; Debian makes it root-only)")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	return Config{
		Name: "k", Dir: filepath.Join(dir, "run"), Accel: "tcg", MemoryMiB: 256,
		Kernel: kernel, Append: "console=ttyS0 panic=-1", BaseImage: base,
		VMMI: []Forward{{GuestPort: 8443}}, KillWithParent: true,
	}
}

func TestStartStop(t *testing.T) {
	cfg := kernelOnly(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	m, err := Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QMP up after %v", time.Since(start))
	if m.Config.VMMI[0].HostPort == 0 {
		t.Error("no host port chosen")
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Dir, "qemu.pid")); err != nil || strings.TrimSpace(string(b)) == "" {
		t.Errorf("pidfile: %q, %v", b, err)
	}
	line, err := m.WaitConsole(ctx, "Linux version")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console after %v: %.60s", time.Since(start), line)
	if err := m.QMP.SetLink(ctx, "vmmi-nic", false); err != nil {
		t.Errorf("set_link by device id: %v", err)
	}
	s := time.Now()
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop took %v", time.Since(s))
	select {
	case <-m.Exited():
	default:
		t.Fatal("Stop returned with QEMU running")
	}
}

func TestWaitConsoleSeesExit(t *testing.T) {
	cfg := kernelOnly(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m, err := Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	_, err = m.WaitConsole(ctx, "a marker the guest never prints")
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("err = %v, want exit with the panic quoted", err)
	}
}

func TestStartFailsFast(t *testing.T) {
	cfg := kernelOnly(t)
	cfg.ExtraArgs = []string{"-device", "no-such-device"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := time.Now()
	_, err := Start(ctx, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "no-such-device") {
		t.Fatalf("err = %v, want QEMU's complaint", err)
	}
	if time.Since(s) > 10*time.Second {
		t.Fatalf("took %v", time.Since(s))
	}
}
