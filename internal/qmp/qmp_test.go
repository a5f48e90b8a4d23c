package qmp

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/qmp/qmptest"
	"github.com/ooblab/ooblab/internal/testutil"
)

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
	m := dial(t, qmptest.Start(t).Sock)
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
	m := dial(t, qmptest.Start(t).Sock)
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
	q := qmptest.Start(t)
	m := dial(t, q.Sock)
	q.Stop(t)
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
	q.Cont(t)
	st, err := m.QueryStatus(testutil.Context(t, 10*time.Second))
	if err != nil {
		t.Fatalf("after SIGCONT: %v", err)
	}
	t.Logf("after hang: %+v", st)
}

func TestQuit(t *testing.T) {
	q := qmptest.Start(t)
	m := dial(t, q.Sock)
	if err := m.Quit(testutil.Context(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Exited():
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
