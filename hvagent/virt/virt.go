// Package virt executes VM actions on the hypervisor host.
//
// The seam is [Hypervisor]: the few calls hvagent needs (list, status and
// the six state changes). This package is pure Go (no cgo): the types, the
// action rules ([Plan]) and the helpers over the interface. Two packages
// implement it: hvagent/virt/lvirt over libvirt.org/go/libvirt for any URI
// (qemu:///system inside the lab guest, test:///default in integration
// tests; test:///default keeps its state per connection, so an agent holds
// exactly one lvirt.Libvirt for its lifetime), and hvagent/virt/virttest,
// an in-memory fake with the same rules, for unit tests that must not
// build libvirt.
//
// Every action is idempotent with respect to its goal and returns the state
// read back after the action:
//
//	action    already there (ok, no call)   runs from            otherwise
//	Start     running                       shut off, crashed    ErrInvalidState
//	Shutdown  shut off, in shutdown         running              ErrInvalidState
//	Destroy   shut off                      any other state      -
//	Reboot    -                             running              ErrInvalidState
//	Suspend   paused                        running              ErrInvalidState
//	Resume    running                       paused               ErrInvalidState
//
// Shutdown is graceful (ACPI power button with qemu, since the domains carry
// no guest agent); on qemu it is asynchronous, so the state returned is
// usually "running" or "in shutdown". Use [WaitState] to wait for "shut off".
package virt

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// State is a domain state, spelled as virsh prints it.
type State string

// The states virsh reports (virsh domstate).
const (
	StateNoState     State = "no state"
	StateRunning     State = "running"
	StateIdle        State = "idle" // VIR_DOMAIN_BLOCKED
	StatePaused      State = "paused"
	StateInShutdown  State = "in shutdown"
	StateShutOff     State = "shut off"
	StateCrashed     State = "crashed"
	StatePMSuspended State = "pmsuspended"
)

// Action names a state change. The strings are the ones the authorization
// list and the messages use.
type Action string

// Actions.
const (
	ActionStart    Action = "start"
	ActionShutdown Action = "shutdown"
	ActionDestroy  Action = "destroy"
	ActionReboot   Action = "reboot"
	ActionSuspend  Action = "suspend"
	ActionResume   Action = "resume"
)

// Sentinel errors, found with errors.Is.
var (
	// ErrNoSuchVM: no domain of that name is defined.
	ErrNoSuchVM = errors.New("virt: no such VM")
	// ErrInvalidState: the action cannot run from the VM's current state.
	ErrInvalidState = errors.New("virt: action invalid in current state")
)

// StateError says which action was refused in which state. It matches
// ErrInvalidState with errors.Is.
type StateError struct {
	VM     string
	Action Action
	State  State
	Detail string // from libvirt, when libvirt refused
}

func (e *StateError) Error() string {
	s := fmt.Sprintf("virt: cannot %s VM %q while %s", e.Action, e.VM, e.State)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, ErrInvalidState) true.
func (e *StateError) Is(target error) bool { return target == ErrInvalidState }

// Domain is one line of [Hypervisor.List]: the same figures as
// [Hypervisor.Status] gives for one VM.
type Domain = Status

// Status is the answer to [Hypervisor.Status] (and one line of List).
type Status struct {
	Name  string
	State State
	// Reason is libvirt's reason for the state, spelled as
	// "virsh domstate --reason" prints it ("booted", "destroyed",
	// "user"…); "" when unknown.
	Reason     string
	Autostart  bool // started when libvirtd starts
	Persistent bool // defined (survives a shut off), not transient
	VCPUs      uint
	MemoryKiB  uint64 // current memory
	MaxMemKiB  uint64
	CPUTime    time.Duration // guest CPU time consumed, from libvirt
	// Uptime is the time since the domain was started (not since the
	// guest OS last rebooted); zero when it is not active. libvirt has no
	// start time, so UptimeSource says where it comes from.
	Uptime       time.Duration
	UptimeSource UptimeSource
}

// UptimeSource says how Status.Uptime was found.
type UptimeSource string

// Uptime sources, best first.
const (
	// UptimeProcess: the start time of the domain's QEMU process
	// (qemu:///system on the same host: the pid from
	// /run/libvirt/qemu/NAME.pid, its start from /proc; 10 ms steps).
	UptimeProcess UptimeSource = "qemu-process"
	// UptimeAgentStart: this agent started the domain.
	UptimeAgentStart UptimeSource = "agent-start"
	// UptimeAgentObserved: the first time this agent saw the domain
	// active; a lower bound.
	UptimeAgentObserved UptimeSource = "agent-observed"
	UptimeNone          UptimeSource = ""
)

// Hypervisor is what hvagent needs from the host's virtualization layer.
// Implementations are safe for concurrent use.
type Hypervisor interface {
	List(ctx context.Context) ([]Domain, error)
	Status(ctx context.Context, vm string) (Status, error)
	Start(ctx context.Context, vm string) (State, error)
	Shutdown(ctx context.Context, vm string) (State, error)
	Destroy(ctx context.Context, vm string) (State, error)
	Reboot(ctx context.Context, vm string) (State, error)
	Suspend(ctx context.Context, vm string) (State, error)
	Resume(ctx context.Context, vm string) (State, error)
}

// Do runs the named action on h. It returns ErrUnknownAction wrapped for an
// action it does not know.
func Do(ctx context.Context, h Hypervisor, a Action, vm string) (State, error) {
	switch a {
	case ActionStart:
		return h.Start(ctx, vm)
	case ActionShutdown:
		return h.Shutdown(ctx, vm)
	case ActionDestroy:
		return h.Destroy(ctx, vm)
	case ActionReboot:
		return h.Reboot(ctx, vm)
	case ActionSuspend:
		return h.Suspend(ctx, vm)
	case ActionResume:
		return h.Resume(ctx, vm)
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownAction, a)
}

// Plan applies the table above to action a on a VM in state s: run says
// the action must be carried out, ok false that it is refused
// (ErrInvalidState); run false with ok true is "already there". Every
// [Hypervisor] decides with it, so the real one and the fake agree.
func Plan(a Action, s State) (run, ok bool) {
	switch a {
	case ActionStart:
		switch s {
		case StateRunning, StateIdle:
			return false, true
		case StateShutOff, StateCrashed:
			return true, true
		}
	case ActionShutdown:
		switch s {
		case StateShutOff, StateInShutdown:
			return false, true
		case StateRunning, StateIdle:
			return true, true
		}
	case ActionDestroy:
		return s != StateShutOff, true
	case ActionReboot:
		switch s {
		case StateRunning, StateIdle:
			return true, true
		}
	case ActionSuspend:
		switch s {
		case StatePaused:
			return false, true
		case StateRunning, StateIdle:
			return true, true
		}
	case ActionResume:
		switch s {
		case StateRunning, StateIdle:
			return false, true
		case StatePaused:
			return true, true
		}
	}
	return false, false
}

// ErrUnknownAction: [Do] was given an action it does not know.
var ErrUnknownAction = errors.New("virt: unknown action")

// WaitState polls h every interval until vm is in state want, and returns
// the last state seen. It returns ctx's error (with the last state) when
// the context ends first. Use it after Shutdown on qemu, where the guest
// powers off asynchronously.
func WaitState(ctx context.Context, h Hypervisor, vm string, want State, interval time.Duration) (State, error) {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st, err := h.Status(ctx, vm)
		if err != nil {
			return st.State, err
		}
		if st.State == want {
			return st.State, nil
		}
		select {
		case <-ctx.Done():
			return st.State, fmt.Errorf("virt: waiting for VM %q to be %s (is %s): %w", vm, want, st.State, ctx.Err())
		case <-t.C:
		}
	}
}
