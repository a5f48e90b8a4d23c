// Package lvirt is hvagent's [virt.Hypervisor] over libvirt
// (libvirt.org/go/libvirt, cgo): [Open] a URI, act on its domains with the
// rules of [virt.Plan], and watch their lifecycle events
// ([Libvirt.WatchLifecycle]). It is the only package of hvagent that links
// libvirt; tests that need no real libvirt use hvagent/virt/virttest.
package lvirt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/ooblab/ooblab/hvagent/virt"
)

// Libvirt is a [virt.Hypervisor] over one libvirt connection. The connection is
// thread-safe in libvirt; Libvirt additionally serializes the actions on
// one VM so that "read state, decide, act" is atomic as far as this agent
// is concerned.
type Libvirt struct {
	conn *libvirt.Connect
	uri  string
	now  func() time.Time

	// procStart finds a domain's start time from its process, if it can.
	procStart func(name string) (time.Time, bool)

	mu      sync.Mutex
	vmLocks map[string]*sync.Mutex
	started map[string]startRec

	// inflight marks this agent's actions, for WatchLifecycle.
	inflight  inflight
	eventsErr error // the event loop could not be registered

	// evMu guards the event callbacks and the background calls against
	// Close.
	evMu      sync.Mutex
	callbacks map[int]bool
	closed    bool
	closing   chan struct{}
	// calls counts libvirt calls still running in the background (see
	// call): Close waits for them before it closes the connection under
	// them.
	calls sync.WaitGroup
}

type startRec struct {
	at  time.Time
	src virt.UptimeSource
}

var _ virt.Hypervisor = (*Libvirt)(nil)

// Open connects to libvirt at uri ("qemu:///system", "test:///default").
// The dial is a blocking cgo call; if ctx ends first Open returns ctx's
// error and closes the connection once the dial finishes.
func Open(ctx context.Context, uri string) (*Libvirt, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type res struct {
		c   *libvirt.Connect
		err error
	}
	// Events flow only on connections opened after the loop exists.
	evErr := startEventLoop()
	ch := make(chan res, 1)
	go func() {
		c, err := libvirt.NewConnect(uri)
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("virt: connect to %s: %w", uri, r.err)
		}
		l := &Libvirt{
			conn:      r.c,
			uri:       uri,
			now:       time.Now,
			vmLocks:   map[string]*sync.Mutex{},
			started:   map[string]startRec{},
			eventsErr: evErr,
			closing:   make(chan struct{}),
		}
		if uri == "qemu:///system" {
			l.procStart = func(name string) (time.Time, bool) {
				return qemuProcessStart("/run/libvirt/qemu", "/proc", name)
			}
		}
		return l, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("virt: connect to %s: %w", uri, ctx.Err())
	}
}

// URI is the connection's URI.
func (l *Libvirt) URI() string { return l.uri }

// Conn gives the underlying connection, for tests and tools that define
// domains. Do not close it; call Close.
func (l *Libvirt) Conn() *libvirt.Connect { return l.conn }

// Close drops the event callbacks and closes the connection.
func (l *Libvirt) Close() error {
	l.evMu.Lock()
	if !l.closed {
		l.closed = true
		for id := range l.callbacks {
			l.conn.DomainEventDeregister(id)
		}
		l.callbacks = nil
		close(l.closing)
	}
	l.evMu.Unlock()
	done := make(chan struct{})
	go func() { l.calls.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		// Closing the connection under a running call is a use after
		// free in the binding; a process that is stopping loses nothing
		// by leaving it open.
		return fmt.Errorf("virt: libvirt calls still running after %v; connection %s left open", closeWait, l.uri)
	}
	_, err := l.conn.Close()
	return err
}

// closeWait bounds how long Close waits for abandoned background calls.
const closeWait = 10 * time.Second

// call runs fn (blocking cgo) in its own goroutine and returns when it ends
// or ctx ends, whichever is first. fn keeps running after a cancellation and
// releases whatever it holds itself; l.Close waits for it.
func call[T any](ctx context.Context, l *Libvirt, fn func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	l.evMu.Lock()
	if l.closed {
		l.evMu.Unlock()
		return zero, fmt.Errorf("virt: connection %s is closed", l.uri)
	}
	l.calls.Add(1)
	l.evMu.Unlock()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		defer l.calls.Done()
		v, err := fn()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, fmt.Errorf("virt: %w (the libvirt call finishes in the background)", ctx.Err())
	}
}

func (l *Libvirt) lockVM(name string) func() {
	l.mu.Lock()
	m, ok := l.vmLocks[name]
	if !ok {
		m = &sync.Mutex{}
		l.vmLocks[name] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// observe updates the agent's start-time record from a state read.
func (l *Libvirt) observe(name string, s virt.State) startRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !active(s) {
		delete(l.started, name)
		return startRec{}
	}
	r, ok := l.started[name]
	if !ok {
		r = startRec{at: l.now(), src: virt.UptimeAgentObserved}
		l.started[name] = r
	}
	return r
}

func (l *Libvirt) markStarted(name string) {
	l.mu.Lock()
	l.started[name] = startRec{at: l.now(), src: virt.UptimeAgentStart}
	l.mu.Unlock()
}

func active(s virt.State) bool {
	switch s {
	case virt.StateRunning, virt.StateIdle, virt.StatePaused, virt.StateInShutdown, virt.StatePMSuspended:
		return true
	}
	return false
}

func stateOf(s libvirt.DomainState) virt.State {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return virt.StateRunning
	case libvirt.DOMAIN_BLOCKED:
		return virt.StateIdle
	case libvirt.DOMAIN_PAUSED:
		return virt.StatePaused
	case libvirt.DOMAIN_SHUTDOWN:
		return virt.StateInShutdown
	case libvirt.DOMAIN_SHUTOFF:
		return virt.StateShutOff
	case libvirt.DOMAIN_CRASHED:
		return virt.StateCrashed
	case libvirt.DOMAIN_PMSUSPENDED:
		return virt.StatePMSuspended
	}
	return virt.StateNoState
}

// mapErr turns libvirt's errors into the package's sentinels.
func mapErr(vm string, a virt.Action, cur virt.State, err error) error {
	if err == nil {
		return nil
	}
	var le libvirt.Error
	if errors.As(err, &le) {
		switch le.Code {
		case libvirt.ERR_NO_DOMAIN:
			return fmt.Errorf("%w: %q", virt.ErrNoSuchVM, vm)
		case libvirt.ERR_OPERATION_INVALID:
			return &virt.StateError{VM: vm, Action: a, State: cur, Detail: le.Message}
		}
		return fmt.Errorf("virt: %s %q: %s", a, vm, le.Message)
	}
	return fmt.Errorf("virt: %s %q: %w", a, vm, err)
}

func domState(d *libvirt.Domain) (virt.State, error) {
	s, _, err := d.GetState()
	if err != nil {
		return "", err
	}
	return stateOf(s), nil
}

// settledState is the domain's state once a start in progress is over:
// libvirt starts a domain paused (reason "starting up") and lets it run a
// moment later, and an action then must see "running", not a pause nobody
// asked for. It waits at most settleLimit.
func settledState(d *libvirt.Domain) (virt.State, error) {
	deadline := time.Now().Add(settleLimit)
	for {
		s, reason, err := d.GetState()
		if err != nil {
			return "", err
		}
		if s != libvirt.DOMAIN_PAUSED || reason != int(libvirt.DOMAIN_PAUSED_STARTING_UP) || time.Now().After(deadline) {
			return stateOf(s), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settleLimit bounds settledState's wait for a domain that is starting up.
const settleLimit = 15 * time.Second

// List returns every defined domain, active or not, with its state.
func (l *Libvirt) List(ctx context.Context) ([]virt.Domain, error) {
	return call(ctx, l, func() ([]virt.Domain, error) {
		doms, err := l.conn.ListAllDomains(0)
		if err != nil {
			return nil, fmt.Errorf("virt: list domains: %w", err)
		}
		out := make([]virt.Domain, 0, len(doms))
		var firstErr error
		for i := range doms {
			d := &doms[i]
			name, err := d.GetName()
			if err == nil {
				var st virt.Status
				if st, err = l.statusOf(d, name); err == nil {
					out = append(out, st)
				}
			}
			// A domain undefined between list and read is skipped.
			var le libvirt.Error
			if err != nil && !(errors.As(err, &le) && le.Code == libvirt.ERR_NO_DOMAIN) && firstErr == nil {
				firstErr = fmt.Errorf("virt: list domains: %w", err)
			}
			d.Free()
		}
		if len(out) == 0 && firstErr != nil {
			return nil, firstErr
		}
		return out, nil
	})
}

// Status reports one domain.
func (l *Libvirt) Status(ctx context.Context, vm string) (virt.Status, error) {
	return call(ctx, l, func() (virt.Status, error) {
		d, err := l.conn.LookupDomainByName(vm)
		if err != nil {
			return virt.Status{}, mapErr(vm, "status", "", err)
		}
		defer d.Free()
		st, err := l.statusOf(d, vm)
		if err != nil {
			return virt.Status{}, mapErr(vm, "status", "", err)
		}
		return st, nil
	})
}

// statusOf reads d's figures: state and reason, vCPUs, memory, CPU time,
// autostart, persistence, and the uptime as well as the agent can tell.
func (l *Libvirt) statusOf(d *libvirt.Domain, name string) (virt.Status, error) {
	info, err := d.GetInfo()
	if err != nil {
		return virt.Status{}, err
	}
	s, reason, err := d.GetState()
	if err != nil {
		return virt.Status{}, err
	}
	st := virt.Status{
		Name:      name,
		State:     stateOf(s),
		Reason:    reasonText(s, reason),
		VCPUs:     info.NrVirtCpu,
		MemoryKiB: info.Memory,
		MaxMemKiB: info.MaxMem,
		CPUTime:   time.Duration(info.CpuTime),
	}
	// Neither is worth failing the whole answer for.
	st.Autostart, _ = d.GetAutostart()
	st.Persistent, _ = d.IsPersistent()
	if r := l.observe(name, st.State); !r.at.IsZero() {
		st.Uptime, st.UptimeSource = l.now().Sub(r.at), r.src
		if l.procStart != nil {
			if t, ok := l.procStart(name); ok {
				st.Uptime, st.UptimeSource = l.now().Sub(t), virt.UptimeProcess
			}
		}
	}
	return st, nil
}

// act is the common shape of every action: under the VM's lock, read the
// state, let virt.Plan say whether it is already reached (skip), allowed
// (run op) or refused, then read the state back.
func (l *Libvirt) act(ctx context.Context, vm string, a virt.Action, op func(*libvirt.Domain) error) (virt.State, error) {
	return call(ctx, l, func() (virt.State, error) {
		unlock := l.lockVM(vm)
		defer unlock()
		d, err := l.conn.LookupDomainByName(vm)
		if err != nil {
			return "", mapErr(vm, a, "", err)
		}
		defer d.Free()
		cur, err := settledState(d)
		if err != nil {
			return "", mapErr(vm, a, "", err)
		}
		l.observe(vm, cur)
		run, ok := virt.Plan(a, cur)
		if !ok {
			return cur, &virt.StateError{VM: vm, Action: a, State: cur}
		}
		if !run {
			return cur, nil
		}
		m := l.inflight.begin(vm, a)
		err = op(d)
		l.inflight.end(m, l.now())
		if err != nil {
			// Report the state as it is now, the caller may retry.
			now, serr := domState(d)
			if serr != nil {
				now = cur
			}
			return now, mapErr(vm, a, now, err)
		}
		after, err := domState(d)
		if err != nil {
			return "", mapErr(vm, a, cur, err)
		}
		if a == virt.ActionStart {
			l.markStarted(vm)
		}
		l.observe(vm, after)
		return after, nil
	})
}

// Adopt takes a's lifecycle events on vm until until for this agent's own:
// an action a previous agent process began (its request journalled as
// interrupted) that libvirt may still be carrying out, so a restarted agent
// does not report its completion as a change behind its back.
func (l *Libvirt) Adopt(vm string, a virt.Action, until time.Time) { l.inflight.adopt(vm, a, until) }

// Start boots a shut-off (or crashed) domain; running is already done.
func (l *Libvirt) Start(ctx context.Context, vm string) (virt.State, error) {
	return l.act(ctx, vm, virt.ActionStart, (*libvirt.Domain).Create)
}

// Shutdown asks the guest to power off (ACPI with qemu; libvirt's default
// method, which uses the guest agent only when one is configured). It does
// not wait: see [virt.WaitState].
func (l *Libvirt) Shutdown(ctx context.Context, vm string) (virt.State, error) {
	return l.act(ctx, vm, virt.ActionShutdown, (*libvirt.Domain).Shutdown)
}

// Destroy forces the domain off, from any active state.
func (l *Libvirt) Destroy(ctx context.Context, vm string) (virt.State, error) {
	return l.act(ctx, vm, virt.ActionDestroy, (*libvirt.Domain).Destroy)
}

// Reboot asks a running guest to reboot (libvirt's default method).
func (l *Libvirt) Reboot(ctx context.Context, vm string) (virt.State, error) {
	return l.act(ctx, vm, virt.ActionReboot, func(d *libvirt.Domain) error { return d.Reboot(libvirt.DOMAIN_REBOOT_DEFAULT) })
}

// Suspend pauses a running domain's vCPUs; paused is already done.
func (l *Libvirt) Suspend(ctx context.Context, vm string) (virt.State, error) {
	return l.act(ctx, vm, virt.ActionSuspend, (*libvirt.Domain).Suspend)
}

// Resume continues a paused domain; running is already done.
func (l *Libvirt) Resume(ctx context.Context, vm string) (virt.State, error) {
	return l.act(ctx, vm, virt.ActionResume, (*libvirt.Domain).Resume)
}
