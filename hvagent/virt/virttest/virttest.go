// Package virttest is an in-memory [virt.Hypervisor] for unit tests: no
// cgo, no libvirt, no root. It decides every action with [virt.Plan], as
// hvagent/virt/lvirt does, and carries the actions out the way libvirt's
// test:///default driver does (synchronously: a shutdown is "shut off" at
// once, a reboot stays "running"), starting, like test:///default, with
// one running domain named "test". Tests that exercise libvirt itself use
// hvagent/virt/lvirt with test:///default or lvirttest's real libvirtd.
package virttest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ooblab/ooblab/hvagent/virt"
)

// Default is the domain test:///default defines at connect time, running.
var Default = VM{Name: "test", VCPUs: 2, MemoryKiB: 8 << 20}

// VM is a domain to [Hypervisor.Define].
type VM struct {
	Name      string
	VCPUs     uint
	MemoryKiB uint64
}

// Hypervisor is the fake. The zero value is not usable; call New.
type Hypervisor struct {
	now func() time.Time

	mu    sync.Mutex
	vms   map[string]*dom
	held  chan struct{} // non-nil: actions wait for it to close (Hold)
	began chan string   // Hold: each held action's VM when it begins
}

type dom struct {
	vm      VM
	state   virt.State
	reason  string
	started time.Time // zero unless active
	src     virt.UptimeSource
}

var _ virt.Hypervisor = (*Hypervisor)(nil)

// New returns a fake holding [Default] (running) and vms (shut off), each
// VM with zero VCPUs or memory given test:///default's figures for a
// domain XML with <vcpu>1</vcpu> and 64 MiB.
func New(vms ...VM) *Hypervisor {
	h := &Hypervisor{now: time.Now, vms: map[string]*dom{}}
	h.vms[Default.Name] = &dom{vm: Default, state: virt.StateRunning, reason: "booted",
		started: h.now(), src: virt.UptimeAgentObserved}
	for _, v := range vms {
		h.Define(v)
	}
	return h
}

// Define adds (or redefines, when shut off) a shut-off domain.
func (h *Hypervisor) Define(v VM) {
	if v.VCPUs == 0 {
		v.VCPUs = 1
	}
	if v.MemoryKiB == 0 {
		v.MemoryKiB = 64 << 10
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if d, ok := h.vms[v.Name]; ok && d.state != virt.StateShutOff {
		d.vm = v
		return
	}
	h.vms[v.Name] = &dom{vm: v, state: virt.StateShutOff, reason: "unknown"}
}

// List implements [virt.Hypervisor], sorted by name.
func (h *Hypervisor) List(ctx context.Context) ([]virt.Domain, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]virt.Domain, 0, len(h.vms))
	for _, d := range h.vms {
		out = append(out, h.status(d))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Status implements [virt.Hypervisor].
func (h *Hypervisor) Status(ctx context.Context, vm string) (virt.Status, error) {
	if err := ctx.Err(); err != nil {
		return virt.Status{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.vms[vm]
	if !ok {
		return virt.Status{}, fmt.Errorf("%w: %q", virt.ErrNoSuchVM, vm)
	}
	return h.status(d), nil
}

func (h *Hypervisor) status(d *dom) virt.Status {
	st := virt.Status{Name: d.vm.Name, State: d.state, Reason: d.reason, Persistent: true,
		VCPUs: d.vm.VCPUs, MemoryKiB: d.vm.MemoryKiB, MaxMemKiB: d.vm.MemoryKiB}
	if !d.started.IsZero() {
		st.Uptime, st.UptimeSource = h.now().Sub(d.started), d.src
	}
	return st
}

// Start implements [virt.Hypervisor].
func (h *Hypervisor) Start(ctx context.Context, vm string) (virt.State, error) {
	return h.act(ctx, vm, virt.ActionStart)
}

// Shutdown implements [virt.Hypervisor]; the domain is shut off at once.
func (h *Hypervisor) Shutdown(ctx context.Context, vm string) (virt.State, error) {
	return h.act(ctx, vm, virt.ActionShutdown)
}

// Destroy implements [virt.Hypervisor].
func (h *Hypervisor) Destroy(ctx context.Context, vm string) (virt.State, error) {
	return h.act(ctx, vm, virt.ActionDestroy)
}

// Reboot implements [virt.Hypervisor]; the domain stays running.
func (h *Hypervisor) Reboot(ctx context.Context, vm string) (virt.State, error) {
	return h.act(ctx, vm, virt.ActionReboot)
}

// Suspend implements [virt.Hypervisor].
func (h *Hypervisor) Suspend(ctx context.Context, vm string) (virt.State, error) {
	return h.act(ctx, vm, virt.ActionSuspend)
}

// Resume implements [virt.Hypervisor].
func (h *Hypervisor) Resume(ctx context.Context, vm string) (virt.State, error) {
	return h.act(ctx, vm, virt.ActionResume)
}

// Hold makes the state changes from now on take as long as the test wants,
// as a slow libvirt call does: each one reports its VM on began when it
// starts and completes once release is called. Like hvagent/virt/lvirt, a
// caller whose context ends first gets the context's error while the
// action still completes, in the background, when released.
func (h *Hypervisor) Hold() (began <-chan string, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, b := make(chan struct{}), make(chan string, 64)
	h.held, h.began = ch, b
	return b, sync.OnceFunc(func() {
		h.mu.Lock()
		if h.held == ch {
			h.held, h.began = nil, nil
		}
		h.mu.Unlock()
		close(ch)
	})
}

// act runs the action, after the hold if there is one.
func (h *Hypervisor) act(ctx context.Context, vm string, a virt.Action) (virt.State, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	h.mu.Lock()
	held, began := h.held, h.began
	h.mu.Unlock()
	if held == nil {
		return h.apply(ctx, vm, a)
	}
	type result struct {
		st  virt.State
		err error
	}
	done := make(chan result, 1)
	began <- vm
	go func() {
		<-held
		st, err := h.apply(context.WithoutCancel(ctx), vm, a)
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		return r.st, r.err
	case <-ctx.Done():
		return "", fmt.Errorf("virt: %w (the action finishes in the background)", ctx.Err())
	}
}

// apply decides with virt.Plan and applies the change as test:///default
// does; the reasons are virsh's ("domstate --reason").
func (h *Hypervisor) apply(ctx context.Context, vm string, a virt.Action) (virt.State, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.vms[vm]
	if !ok {
		return "", fmt.Errorf("%w: %q", virt.ErrNoSuchVM, vm)
	}
	run, ok := virt.Plan(a, d.state)
	if !ok {
		return d.state, &virt.StateError{VM: vm, Action: a, State: d.state}
	}
	if !run {
		return d.state, nil
	}
	switch a {
	case virt.ActionStart:
		d.state, d.reason, d.started, d.src = virt.StateRunning, "booted", h.now(), virt.UptimeAgentStart
	case virt.ActionShutdown:
		d.state, d.reason, d.started, d.src = virt.StateShutOff, "shutdown", time.Time{}, ""
	case virt.ActionDestroy:
		d.state, d.reason, d.started, d.src = virt.StateShutOff, "destroyed", time.Time{}, ""
	case virt.ActionReboot:
		d.state, d.reason = virt.StateRunning, "booted"
	case virt.ActionSuspend:
		d.state, d.reason = virt.StatePaused, "user"
	case virt.ActionResume:
		d.state, d.reason = virt.StateRunning, "unpaused"
	}
	return d.state, nil
}
