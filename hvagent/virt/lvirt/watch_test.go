package lvirt_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/virt/lvirt"
	"github.com/ooblab/ooblab/hvagent/virt/lvirt/lvirttest"
	"github.com/ooblab/ooblab/hvagent/watch"
)

// The watcher (hvagent/watch) over the real lifecycle events of a libvirt
// connection: test:///default, and a real libvirtd with QEMU.

var _ watch.Source = (*lvirt.Libvirt)(nil)

const domXML = `<domain type='test'><name>vm1</name><memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`

// TestLibvirtEvents drives a test:///default domain both through the
// agent's virt actions (no alert) and behind its back through the raw
// connection (one alert each, classified), and checks the alerts come in
// order with nothing from the agent's own actions between them.
func TestLibvirtEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := lvirt.Open(ctx, "test:///default")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer l.Close()
	d, err := l.Conn().DomainDefineXML(domXML)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free()
	alerts := make(chan alert.Alert, 16)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- watch.Run(wctx, watch.Config{Source: l, Host: "hv1", Users: func() []string { return []string{"alice"} }, Ready: func() { close(ready) },
			Sink: alert.SinkFunc(func(_ context.Context, a alert.Alert) error { alerts <- a; return nil })})
	}()
	next := func(step string) alert.Alert {
		t.Helper()
		select {
		case a := <-alerts:
			return a
		case err := <-done:
			t.Fatalf("%s: watcher ended: %v", step, err)
		case <-ctx.Done():
			t.Fatalf("%s: no alert before the deadline", step)
		}
		return alert.Alert{}
	}
	// Each own action is followed at once (inside its grace period) by a
	// local change: exactly the local change's alert must come.
	// An event of a type the agent's own recent action causes counts as
	// its own for virt.OwnGrace (a local start right after the agent's
	// start is missed), so the local changes here differ in type from the
	// own actions before them. Events come in order: an own action that
	// alerted would show up as the next alert and fail the step.
	none := func() error { return nil }
	steps := []struct {
		name   string
		own    func() error
		local  func() error
		class  watch.Class
		action string
	}{
		{"virsh start", none, d.Create, watch.Local, "start"},
		{"virsh resume after an agent suspend", func() error { _, err := l.Suspend(ctx, "vm1"); return err }, d.Resume, watch.Local, "resume"},
		{"virsh destroy after an agent suspend", func() error { _, err := l.Suspend(ctx, "vm1"); return err }, d.Destroy, watch.Local, "destroy"},
		{"guest shutdown after an agent start", func() error { _, err := l.Start(ctx, "vm1"); return err }, d.Shutdown, watch.Guest, "shutdown"},
		{"virsh undefine after an agent start and destroy", func() error {
			if _, err := l.Start(ctx, "vm1"); err != nil {
				return err
			}
			_, err := l.Destroy(ctx, "vm1")
			return err
		}, d.Undefine, watch.Local, "undefine"},
	}
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("watcher ended: %v", err)
	}
	for i, s := range steps {
		if err := s.own(); err != nil {
			t.Fatalf("%s: agent action: %v", s.name, err)
		}
		if err := s.local(); err != nil {
			t.Fatalf("%s: local change: %v", s.name, err)
		}
		a := next(s.name)
		if !strings.HasPrefix(a.Reason, string(s.class)+":") || a.Action != s.action || a.VM != "vm1" || a.Host != "hv1" || len(a.Users) != 1 {
			t.Fatalf("step %d %s: alert %+v, want class %q action %q", i, s.name, a, s.class, s.action)
		}
	}
	wcancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case a := <-alerts:
		t.Fatalf("extra alert %+v", a)
	default:
	}
}

// TestQEMUSystemVirshDestroy: with a real libvirtd, the agent starts a
// tiny domain (no alert) and a separate "virsh destroy" process stops it
// behind the agent's back (one alert: unauthorized local change). URI from
// OOBLAB_LIBVIRT_URI, default qemu:///system; skips when libvirtd, QEMU or
// virsh is missing.
func TestQEMUSystemVirshDestroy(t *testing.T) {
	ctx, l, name, alerts := watchTiny(t, "ooblab-watch-test")
	if _, err := l.Start(ctx, name); err != nil {
		t.Fatalf("agent start: %v", err)
	}
	virsh(t, ctx, l, "destroy", name)
	a := nextAlert(t, ctx, alerts, "virsh destroy")
	if a.Action != "destroy" || !strings.HasPrefix(a.Reason, string(watch.Local)+":") || a.Principal != "local" {
		t.Fatalf("alert %+v, want an unauthorized local destroy (and none for the agent's start)", a)
	}
}

// TestQEMUSystemVirshStart: with a real libvirtd, a "virsh start" behind
// the agent's back is one alert (an unauthorized local start), though
// libvirt reports both the start and the unpause of the CPUs QEMU starts
// paused (watch counts the unpause as the start's). Skips as
// TestQEMUSystemVirshDestroy does.
func TestQEMUSystemVirshStart(t *testing.T) {
	ctx, l, name, alerts := watchTiny(t, "ooblab-watch-start")
	virsh(t, ctx, l, "start", name)
	a := nextAlert(t, ctx, alerts, "virsh start")
	if a.Action != "start" || !strings.HasPrefix(a.Reason, string(watch.Local)+":") {
		t.Fatalf("alert %+v, want an unauthorized local start", a)
	}
	select {
	case a := <-alerts:
		t.Fatalf("a second alert for one virsh start: %s", a.Reason)
	case <-time.After(3 * time.Second): // past watch's StartWindow (2 s)
	}
}

// watchTiny defines a tiny QEMU domain (a name unique per process: other
// worktrees run tests on the same libvirtd) on a real libvirtd and runs
// the watcher until the test ends; alerts carries the domain's alerts.
func watchTiny(t *testing.T, prefix string) (context.Context, *lvirt.Libvirt, string, <-chan alert.Alert) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	l := lvirttest.QEMUSystem(t, ctx, "virsh")
	name, _ := lvirttest.TinyDomain(t, l, prefix)
	alerts := make(chan alert.Alert, 16)
	ready := make(chan struct{})
	done := make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	go func() {
		done <- watch.Run(wctx, watch.Config{Source: l, Host: "hv1", Ready: func() { close(ready) },
			Sink: alert.SinkFunc(func(_ context.Context, a alert.Alert) error {
				if a.VM == name {
					alerts <- a
				}
				return nil
			})})
	}()
	t.Cleanup(func() { wcancel(); <-done }) // before TinyDomain's cleanup removes the domain
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("watcher: %v", err)
	}
	return ctx, l, name, alerts
}

func virsh(t *testing.T, ctx context.Context, l *lvirt.Libvirt, args ...string) {
	t.Helper()
	bin, _ := exec.LookPath("virsh")
	if out, err := exec.CommandContext(ctx, bin, append([]string{"-c", l.URI()}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("virsh %v: %v\n%s", args, err, out)
	}
}

func nextAlert(t *testing.T, ctx context.Context, alerts <-chan alert.Alert, what string) alert.Alert {
	t.Helper()
	select {
	case a := <-alerts:
		t.Logf("alert: %s", a.Reason)
		return a
	case <-ctx.Done():
		t.Fatalf("no alert for %s", what)
	}
	return alert.Alert{}
}
