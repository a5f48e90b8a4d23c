package virttest

import (
	"context"
	"errors"
	"testing"

	"github.com/ooblab/ooblab/hvagent/virt"
)

// RunScripts runs scripts of actions, each as a subtest on a fresh
// hypervisor and shut-off VM from open, and checks every returned state,
// error and the Status read after it: the rules of [virt.Plan] as a
// Hypervisor carries them out. The fake and hvagent/virt/lvirt (on
// test:///default) both pass it.
func RunScripts(t *testing.T, open func(t *testing.T) (virt.Hypervisor, string)) {
	type step struct {
		action  virt.Action
		want    virt.State
		wantErr error
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"start from shut off, then idempotent", []step{
			{virt.ActionStart, virt.StateRunning, nil},
			{virt.ActionStart, virt.StateRunning, nil},
		}},
		{"shutdown (test driver completes at once), then idempotent", []step{
			{virt.ActionStart, virt.StateRunning, nil},
			{virt.ActionShutdown, virt.StateShutOff, nil},
			{virt.ActionShutdown, virt.StateShutOff, nil},
		}},
		{"destroy, then idempotent", []step{
			{virt.ActionStart, virt.StateRunning, nil},
			{virt.ActionDestroy, virt.StateShutOff, nil},
			{virt.ActionDestroy, virt.StateShutOff, nil},
		}},
		{"destroy a paused VM", []step{
			{virt.ActionStart, virt.StateRunning, nil},
			{virt.ActionSuspend, virt.StatePaused, nil},
			{virt.ActionDestroy, virt.StateShutOff, nil},
		}},
		{"suspend and resume, each idempotent", []step{
			{virt.ActionStart, virt.StateRunning, nil},
			{virt.ActionSuspend, virt.StatePaused, nil},
			{virt.ActionSuspend, virt.StatePaused, nil},
			{virt.ActionResume, virt.StateRunning, nil},
			{virt.ActionResume, virt.StateRunning, nil},
		}},
		{"reboot a running VM", []step{
			{virt.ActionStart, virt.StateRunning, nil},
			{virt.ActionReboot, virt.StateRunning, nil},
		}},
		{"invalid from shut off", []step{
			{virt.ActionSuspend, virt.StateShutOff, virt.ErrInvalidState},
			{virt.ActionResume, virt.StateShutOff, virt.ErrInvalidState},
			{virt.ActionReboot, virt.StateShutOff, virt.ErrInvalidState},
		}},
		{"invalid from paused", []step{
			{virt.ActionStart, virt.StateRunning, nil},
			{virt.ActionSuspend, virt.StatePaused, nil},
			{virt.ActionStart, virt.StatePaused, virt.ErrInvalidState},
			{virt.ActionShutdown, virt.StatePaused, virt.ErrInvalidState},
			{virt.ActionReboot, virt.StatePaused, virt.ErrInvalidState},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, vm := open(t)
			ctx := context.Background()
			for i, s := range tt.steps {
				got, err := virt.Do(ctx, h, s.action, vm)
				if !errors.Is(err, s.wantErr) || (err != nil && s.wantErr == nil) {
					t.Fatalf("step %d %s: err = %v, want %v", i, s.action, err, s.wantErr)
				}
				if got != s.want {
					t.Fatalf("step %d %s: state = %q, want %q", i, s.action, got, s.want)
				}
				st, err := h.Status(ctx, vm)
				if err != nil {
					t.Fatalf("step %d Status: %v", i, err)
				}
				if st.State != s.want {
					t.Fatalf("step %d: Status says %q, action said %q", i, st.State, s.want)
				}
			}
		})
	}
}
