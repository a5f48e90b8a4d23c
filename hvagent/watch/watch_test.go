package watch

import (
	"context"
	"log/slog"
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

// fakeSource hands the watcher's callback to the test.
type fakeSource struct{ fn chan func(virt.Event) }

func (f *fakeSource) WatchLifecycle(_ context.Context, fn func(virt.Event)) error {
	f.fn <- fn
	return nil
}

// A start of a QEMU domain is Resumed/Unpaused and Started/Booted (libvirt
// reports the unpause of the CPUs it started paused): one "start" alert,
// in either order; an unpause with no start near it is a "resume" alert,
// StartWindow later; other events of the VM flush a held unpause first.
func TestUnpauseOfAStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := &fakeSource{fn: make(chan func(virt.Event), 1)}
	alerts := make(chan alert.Alert, 16)
	const window = 150 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Source: src, Host: "hv1", StartWindow: window, Logger: slog.New(slog.DiscardHandler),
			Sink: alert.SinkFunc(func(_ context.Context, a alert.Alert) error { alerts <- a; return nil })})
	}()
	emit := <-src.fn
	ev := func(vm string, typ virt.EventType, detail string) {
		emit(virt.Event{Time: time.Now(), VM: vm, Type: typ, Detail: detail})
	}
	next := func(step string) alert.Alert {
		t.Helper()
		select {
		case a := <-alerts:
			return a
		case <-ctx.Done():
			t.Fatalf("%s: no alert", step)
		}
		return alert.Alert{}
	}
	none := func(step string) {
		t.Helper()
		select {
		case a := <-alerts:
			t.Fatalf("%s: unexpected alert %s %s: %s", step, a.VM, a.Action, a.Reason)
		case <-time.After(2 * window):
		}
	}
	for _, order := range [][2]virt.EventType{{virt.EventResumed, virt.EventStarted}, {virt.EventStarted, virt.EventResumed}} {
		details := map[virt.EventType]string{virt.EventResumed: "Unpaused", virt.EventStarted: "Booted"}
		ev("web1", order[0], details[order[0]])
		ev("web1", order[1], details[order[1]])
		if a := next("virsh start"); a.Action != "start" || a.VM != "web1" {
			t.Fatalf("virsh start (%s first): alert %s %s", order[0], a.Action, a.Reason)
		}
		none("after the start")
	}
	// A start, an (agent's) suspend, then an unpause: a resume of its own.
	ev("app1", virt.EventStarted, "Booted")
	next("app1 start")
	emit(virt.Event{Time: time.Now(), VM: "app1", Type: virt.EventSuspended, Detail: "Paused", Own: true})
	ev("app1", virt.EventResumed, "Unpaused")
	if a := next("resume after an own suspend"); a.Action != "resume" || a.VM != "app1" {
		t.Fatalf("resume after a start and a suspend: alert %s %s", a.Action, a.Reason)
	}
	t0 := time.Now()
	ev("db1", virt.EventResumed, "Unpaused")
	if a := next("virsh resume"); a.Action != "resume" || a.VM != "db1" {
		t.Fatalf("virsh resume: alert %s %s", a.Action, a.Reason)
	} else if d := time.Since(t0); d < window {
		t.Fatalf("the resume alert came after %v, before the start window (%v) passed", d, window)
	}
	ev("db1", virt.EventResumed, "Unpaused")
	ev("db1", virt.EventStopped, "Destroyed")
	if a, b := next("resume, destroy"), next("destroy"); a.Action != "resume" || b.Action != "destroy" {
		t.Fatalf("resume then destroy came as %s, %s", a.Action, b.Action)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
