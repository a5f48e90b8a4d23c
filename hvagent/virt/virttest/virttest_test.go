package virttest

import (
	"context"
	"errors"
	"testing"

	"github.com/ooblab/ooblab/hvagent/virt"
)

func TestActionsTable(t *testing.T) {
	RunScripts(t, func(t *testing.T) (virt.Hypervisor, string) { return New(VM{Name: "vm1"}), "vm1" })
}

// TestDefaultAndFigures: like test:///default, a running "test" and the
// defined VMs shut off, with their figures; an unknown VM is ErrNoSuchVM;
// a refusal is a StateError naming the action and state.
func TestDefaultAndFigures(t *testing.T) {
	ctx := context.Background()
	h := New(VM{Name: "web1", VCPUs: 2, MemoryKiB: 65536})
	doms, err := h.List(ctx)
	if err != nil || len(doms) != 2 || doms[0].Name != "test" || doms[1].Name != "web1" {
		t.Fatalf("List = %+v, %v", doms, err)
	}
	if d := doms[0]; d.State != virt.StateRunning || d.UptimeSource != virt.UptimeAgentObserved || d.VCPUs != 2 || !d.Persistent {
		t.Errorf("test = %+v", d)
	}
	if d := doms[1]; d.State != virt.StateShutOff || d.Uptime != 0 || d.VCPUs != 2 || d.MemoryKiB != 65536 || d.MaxMemKiB != 65536 {
		t.Errorf("web1 = %+v", d)
	}
	if _, err := h.Start(ctx, "web1"); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.Status(ctx, "web1"); st.State != virt.StateRunning || st.Reason != "booted" || st.UptimeSource != virt.UptimeAgentStart {
		t.Errorf("after start: %+v", st)
	}
	if _, err := h.Status(ctx, "nope"); !errors.Is(err, virt.ErrNoSuchVM) {
		t.Errorf("Status(nope) err = %v", err)
	}
	if _, err := h.Destroy(ctx, "nope"); !errors.Is(err, virt.ErrNoSuchVM) {
		t.Errorf("Destroy(nope) err = %v", err)
	}
	h.Destroy(ctx, "web1")
	var se *virt.StateError
	if _, err := h.Resume(ctx, "web1"); !errors.As(err, &se) || se.Action != virt.ActionResume || se.State != virt.StateShutOff || se.VM != "web1" {
		t.Errorf("Resume shut off: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := h.Start(cctx, "web1"); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with an ended context: %v", err)
	}
}
