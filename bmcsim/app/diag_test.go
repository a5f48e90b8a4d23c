package app

import (
	"context"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

// TestDiagInjectsNMI: power diag reaches a real QEMU (a PC with one CPU,
// stopped before it runs anything) as QMP inject-nmi, which QEMU accepts.
func TestDiagInjectsNMI(t *testing.T) {
	testutil.Integration(t, "qemu-system-x86_64")
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command("qemu-system-x86_64", "-nodefaults", "-no-user-config", "-machine", "pc,accel=tcg",
		"-m", "32", "-display", "none", "-S", "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := newHostPower(nil, sock, testutil.Logger(t))
	testutil.WaitFor(t, 10*time.Second, "QEMU's QMP socket answers", func() bool {
		_, ok := p.State(context.Background())
		return ok
	})
	if err := p.Diag(context.Background()); err != nil {
		t.Fatalf("power diag: %v", err)
	}
}
