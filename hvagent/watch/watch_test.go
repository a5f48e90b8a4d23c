package watch

import (
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/agent"
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
