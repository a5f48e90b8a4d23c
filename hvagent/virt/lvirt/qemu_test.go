package lvirt_test

import (
	"context"
	"errors"
	"testing"
	"time"

	. "github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/hvagent/virt/lvirt/lvirttest"
)

// TestQEMUSystem runs the actions against a real libvirtd
// (lvirttest.QEMUSystem: OOBLAB_LIBVIRT_URI, default qemu:///system).
func TestQEMUSystem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := lvirttest.QEMUSystem(t, ctx)
	name, _ := lvirttest.TinyDomain(t, l, "ooblab-virt-test")

	steps := []struct {
		a    Action
		want State
	}{
		{ActionStart, StateRunning},
		{ActionStart, StateRunning},
		{ActionSuspend, StatePaused},
		{ActionSuspend, StatePaused},
		{ActionResume, StateRunning},
		{ActionDestroy, StateShutOff},
		{ActionDestroy, StateShutOff},
	}
	for i, s := range steps {
		got, err := Do(ctx, l, s.a, name)
		if err != nil || got != s.want {
			t.Fatalf("step %d %s = %q, %v; want %q", i, s.a, got, err, s.want)
		}
	}
	if _, err := l.Suspend(ctx, name); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("suspend shut off: err = %v, want ErrInvalidState", err)
	}

	// Graceful shutdown is asynchronous on qemu. A BIOS with nothing to
	// boot does not act on the ACPI power button, so only check that the
	// request is accepted and the returned state is plausible.
	if _, err := l.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	st, err := l.Status(ctx, name)
	if err != nil || st.VCPUs != 1 || st.MaxMemKiB != 32*1024 || st.UptimeSource != UptimeProcess || st.Uptime <= 0 || st.Uptime > time.Minute {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	got, err := l.Shutdown(ctx, name)
	if err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	t.Logf("state right after a graceful shutdown request: %q", got)
	switch got {
	case StateRunning, StateInShutdown, StateShutOff:
	default:
		t.Fatalf("shutdown returned %q", got)
	}
	// Nothing in the guest acts on the power button: waiting ends with the
	// deadline, and the state seen is still not "shut off".
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	if s, err := WaitState(wctx, l, name, StateShutOff, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || s == StateShutOff {
		t.Fatalf("WaitState(shut off) = %q, %v; want the deadline", s, err)
	}
	if got, err := l.Destroy(ctx, name); err != nil || got != StateShutOff {
		t.Fatalf("destroy after shutdown = %q, %v", got, err)
	}
}
