package qmp

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

// startQEMU runs a CPU-less QEMU (-machine none) with a user netdev "vmmi"
// and QMP on a unix socket in a temp folder.
func startQEMU(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	testutil.Integration(t, "qemu-system-x86_64")
	bin, _ := exec.LookPath("qemu-system-x86_64")
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-nodefaults", "-no-user-config", "-machine", "none", "-display", "none",
		"-netdev", "user,id=vmmi", "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, sock
}

func dial(t *testing.T, sock string) *Monitor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := Dial(ctx, "unix", sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestCommands(t *testing.T) {
	_, sock := startQEMU(t)
	m := dial(t, sock)
	if m.Version() == "" || m.Version() == "0.0.0" {
		t.Errorf("version = %q", m.Version())
	}
	st, err := m.QueryStatus(testutil.Context(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status %+v", st)
	if st.Status == "" {
		t.Errorf("empty status")
	}
	for _, up := range []bool{false, true} {
		if err := m.SetLink(testutil.Context(t, 5*time.Second), "vmmi", up); err != nil {
			t.Fatalf("set_link vmmi %v: %v", up, err)
		}
	}
	err = m.SetLink(testutil.Context(t, 5*time.Second), "nosuch", false)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Command != "set_link" {
		t.Fatalf("set_link nosuch: err = %v, want CommandError", err)
	}
	// The monitor stays usable after a command error.
	if _, err := m.QueryStatus(testutil.Context(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestAnswerTooLarge(t *testing.T) {
	_, sock := startQEMU(t)
	m := dial(t, sock)
	_, err := m.Run(testutil.Context(t, 10*time.Second), []byte(`{"execute":"query-qmp-schema"}`))
	if !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("query-qmp-schema: err = %v, want ErrAnswerTooLarge", err)
	}
	// The next command reconnects and works.
	if _, err := m.QueryStatus(testutil.Context(t, 10*time.Second)); err != nil {
		t.Fatalf("after oversized answer: %v", err)
	}
}

func TestDeadlineWhenQEMUHangs(t *testing.T) {
	cmd, sock := startQEMU(t)
	m := dial(t, sock)
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := m.QueryStatus(testutil.Context(t, 300*time.Millisecond))
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stopped QEMU: err = %v, want DeadlineExceeded", err)
	}
	if took > 5*time.Second {
		t.Fatalf("returned after %v, deadline was 300ms", took)
	}
	// Reconnecting to a stopped QEMU also honours the deadline.
	start = time.Now()
	if _, err := m.QueryStatus(testutil.Context(t, 300*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reconnect to stopped QEMU: err = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("reconnect returned after %v", took)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	st, err := m.QueryStatus(testutil.Context(t, 10*time.Second))
	if err != nil {
		t.Fatalf("after SIGCONT: %v", err)
	}
	t.Logf("after hang: %+v", st)
}

func TestQuit(t *testing.T) {
	cmd, sock := startQEMU(t)
	m := dial(t, sock)
	if err := m.Quit(testutil.Context(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("QEMU still running 10s after quit")
	}
	if _, err := m.QueryStatus(testutil.Context(t, 500*time.Millisecond)); err == nil {
		t.Fatal("query-status after quit succeeded")
	}
}

func TestDialWaitsForSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	start := time.Now()
	_, err := Dial(testutil.Context(t, 200*time.Millisecond), "unix", sock, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("err = %v, want DeadlineExceeded wrapping the last dial error (ENOENT)", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("Dial overran its deadline")
	}
}
