package watch

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/virt"
)

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		name   string
		events []virt.Event // the last one is classified
		want   Change
		ok     bool
	}{
		{"virsh destroy", []virt.Event{{Type: virt.EventStopped, Detail: "Destroyed"}}, Change{Local, "destroy", ""}, true},
		{"guest powers off", []virt.Event{{Type: virt.EventShutdown, Detail: "Finished after guest request"}, {Type: virt.EventStopped, Detail: "Shutdown"}},
			Change{Guest, "shutdown", ""}, true},
		{"virsh shutdown", []virt.Event{{Type: virt.EventShutdown, Detail: "Finished after host request"}, {Type: virt.EventStopped, Detail: "Shutdown"}},
			Change{Local, "shutdown", ""}, true},
		{"shutdown alone is not alerted", []virt.Event{{Type: virt.EventShutdown, Detail: "Finished"}}, Change{}, false},
		{"qemu died", []virt.Event{{Type: virt.EventStopped, Detail: "Failed"}}, Change{Crash, "crash", ""}, true},
		{"guest panic", []virt.Event{{Type: virt.EventCrashed, Detail: "Panicked"}}, Change{Crash, "crash", ""}, true},
		{"virsh start", []virt.Event{{Type: virt.EventStarted, Detail: "Booted"}}, Change{Local, "start", ""}, true},
		{"virsh suspend", []virt.Event{{Type: virt.EventSuspended, Detail: "Paused"}}, Change{Local, "suspend", ""}, true},
		{"disk error pause", []virt.Event{{Type: virt.EventSuspended, Detail: "I/O Error"}}, Change{Crash, "suspend", ""}, true},
		{"virsh resume", []virt.Event{{Type: virt.EventResumed, Detail: "Unpaused"}}, Change{Local, "resume", ""}, true},
		{"guest S3", []virt.Event{{Type: virt.EventPMSuspended, Detail: "Memory"}}, Change{Guest, "pmsuspend", ""}, true},
		{"virsh undefine", []virt.Event{{Type: virt.EventUndefined, Detail: "Removed"}}, Change{Local, "undefine", ""}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c classifier
			var got Change
			var ok bool
			for _, e := range tt.events {
				e.VM = "web1"
				got, ok = c.classify(e)
			}
			if ok != tt.ok || got.Class != tt.want.Class || got.Action != tt.want.Action {
				t.Fatalf("classify = %+v, %v; want class %q action %q, %v", got, ok, tt.want.Class, tt.want.Action, tt.ok)
			}
		})
	}
}

// The alert's reason starts with its class, so the SEL entry gets the
// class number.
func TestAlertClassOnSEL(t *testing.T) {
	e := virt.Event{Time: time.Unix(100, 0), VM: "web1", Type: virt.EventStopped, Detail: "Destroyed"}
	for class, want := range map[Class]byte{Local: agent.ClassLocal, Guest: agent.ClassGuest, Crash: agent.ClassCrash} {
		al := Alert("hv1", e, Change{Class: class, Action: "destroy", What: "destroyed"}, []string{"alice"})
		if got := agent.Class(al); got != want {
			t.Errorf("%s: SEL class %#x, want %#x (reason %q)", class, got, want, al.Reason)
		}
		if al.VM != "web1" || al.Host != "hv1" || !strings.Contains(al.Reason, "Stopped/Destroyed") || al.Users[0] != "alice" {
			t.Errorf("%s: alert %+v", class, al)
		}
	}
}

const domXML = `<domain type='test'><name>vm1</name><memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`

// TestLibvirtEvents drives a test:///default domain both through the
// agent's virt actions (no alert) and behind its back through the raw
// connection (one alert each, classified), and checks the alerts come in
// order with nothing from the agent's own actions between them.
func TestLibvirtEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := virt.Open(ctx, "test:///default")
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
		done <- Run(wctx, Config{Source: l, Host: "hv1", Users: func() []string { return []string{"alice"} }, Ready: func() { close(ready) },
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
		class  Class
		action string
	}{
		{"virsh start", none, d.Create, Local, "start"},
		{"virsh resume after an agent suspend", func() error { _, err := l.Suspend(ctx, "vm1"); return err }, d.Resume, Local, "resume"},
		{"virsh destroy after an agent suspend", func() error { _, err := l.Suspend(ctx, "vm1"); return err }, d.Destroy, Local, "destroy"},
		{"guest shutdown after an agent start", func() error { _, err := l.Start(ctx, "vm1"); return err }, d.Shutdown, Guest, "shutdown"},
		{"virsh undefine after an agent start and destroy", func() error {
			if _, err := l.Start(ctx, "vm1"); err != nil {
				return err
			}
			_, err := l.Destroy(ctx, "vm1")
			return err
		}, d.Undefine, Local, "undefine"},
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
