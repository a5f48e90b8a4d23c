package watch

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
)

// TestQEMUSystemVirshDestroy: with a real libvirtd, the agent starts a
// tiny domain (no alert) and a separate "virsh destroy" process stops it
// behind the agent's back (one alert: unauthorized local change). URI from
// OOBLAB_LIBVIRT_URI, default qemu:///system; skips when libvirtd, QEMU or
// virsh is missing.
func TestQEMUSystemVirshDestroy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := virttest.QEMUSystem(t, ctx, "virsh")
	virsh, _ := exec.LookPath("virsh")
	// Unique per process: other worktrees run tests on the same libvirtd.
	name, _ := virttest.TinyDomain(t, l, "ooblab-watch-test")

	alerts := make(chan alert.Alert, 16)
	ready := make(chan struct{})
	done := make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		done <- Run(wctx, Config{Source: l, Host: "hv1", Ready: func() { close(ready) },
			Sink: alert.SinkFunc(func(_ context.Context, a alert.Alert) error {
				if a.VM == name {
					alerts <- a
				}
				return nil
			})})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("watcher: %v", err)
	}
	if _, err := l.Start(ctx, name); err != nil {
		t.Fatalf("agent start: %v", err)
	}
	if out, err := exec.CommandContext(ctx, virsh, "-c", l.URI(), "destroy", name).CombinedOutput(); err != nil {
		t.Fatalf("virsh destroy: %v\n%s", err, out)
	}
	select {
	case a := <-alerts:
		if a.Action != "destroy" || !strings.HasPrefix(a.Reason, string(Local)+":") || a.Principal != "local" {
			t.Fatalf("alert %+v, want an unauthorized local destroy (and none for the agent's start)", a)
		}
		t.Logf("alert: %s", a.Reason)
	case <-ctx.Done():
		t.Fatal("no alert for virsh destroy")
	}
}
