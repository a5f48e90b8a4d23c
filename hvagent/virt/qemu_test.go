package virt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

// tinyDomainXML is a diskless, BIOS-only TCG guest: enough for libvirt and
// QEMU to run it, nothing to boot.
const tinyDomainXML = `<domain type='qemu'>
  <name>ooblab-virt-test</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
  </devices>
</domain>`

// TestQEMUSystem runs the actions against a real libvirtd. URI from
// OOBLAB_LIBVIRT_URI, default qemu:///system. Skips with the reason when
// libvirtd is not reachable.
func TestQEMUSystem(t *testing.T) {
	testutil.Integration(t, "qemu-system-x86_64", "libvirtd")
	uri := os.Getenv("OOBLAB_LIBVIRT_URI")
	if uri == "" {
		uri = "qemu:///system"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := Open(ctx, uri)
	if err != nil {
		testutil.Need(t, fmt.Errorf("libvirtd not usable at %s (make test starts it): %w", uri, err))
	}
	defer l.Close()

	// A name of this process's own: two test runs may share one libvirtd.
	name := fmt.Sprintf("ooblab-virt-test-%d", os.Getpid())
	// A leftover from an interrupted run.
	if old, err := l.Conn().LookupDomainByName(name); err == nil {
		old.Destroy()
		old.Undefine()
		old.Free()
	}
	d, err := l.Conn().DomainDefineXML(strings.Replace(tinyDomainXML, "<name>ooblab-virt-test</name>", "<name>"+name+"</name>", 1))
	if err != nil {
		t.Fatalf("define: %v", err)
	}
	t.Cleanup(func() {
		d.Destroy()
		if err := d.Undefine(); err != nil {
			t.Errorf("undefine: %v", err)
		}
		d.Free()
	})

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
