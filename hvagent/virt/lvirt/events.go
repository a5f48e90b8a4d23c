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

// Event details, per type, indexed by libvirt's detail number (virsh's
// spelling, tools/virsh-domain-event.c).
var eventNames = []struct {
	t       virt.EventType
	details []string
}{
	libvirt.DOMAIN_EVENT_DEFINED:     {virt.EventDefined, []string{"Added", "Updated", "Renamed", "Snapshot"}},
	libvirt.DOMAIN_EVENT_UNDEFINED:   {virt.EventUndefined, []string{"Removed", "Renamed"}},
	libvirt.DOMAIN_EVENT_STARTED:     {virt.EventStarted, []string{"Booted", "Migrated", "Restored", "Snapshot", "Event wakeup", "Recreated"}},
	libvirt.DOMAIN_EVENT_SUSPENDED:   {virt.EventSuspended, []string{"Paused", "Migrated", "I/O Error", "Watchdog", "Restored", "Snapshot", "API error", "Post-copy", "Post-copy Error"}},
	libvirt.DOMAIN_EVENT_RESUMED:     {virt.EventResumed, []string{"Unpaused", "Migrated", "Snapshot", "Post-copy", "Post-copy Error"}},
	libvirt.DOMAIN_EVENT_STOPPED:     {virt.EventStopped, []string{"Shutdown", "Destroyed", "Crashed", "Migrated", "Saved", "Failed", "Snapshot", "Recreated"}},
	libvirt.DOMAIN_EVENT_SHUTDOWN:    {virt.EventShutdown, []string{"Finished", "Finished after guest request", "Finished after host request"}},
	libvirt.DOMAIN_EVENT_PMSUSPENDED: {virt.EventPMSuspended, []string{"Memory", "Disk"}},
	libvirt.DOMAIN_EVENT_CRASHED:     {virt.EventCrashed, []string{"Panicked", "Crashloaded"}},
}

// eventName spells a libvirt event and detail.
func eventName(e libvirt.DomainEventType, detail int) (virt.EventType, string) {
	if int(e) < 0 || int(e) >= len(eventNames) {
		return virt.EventType(fmt.Sprintf("event %d", e)), fmt.Sprintf("detail %d", detail)
	}
	n := eventNames[e]
	if detail < 0 || detail >= len(n.details) {
		return n.t, fmt.Sprintf("detail %d", detail)
	}
	return n.t, n.details[detail]
}

// ownEvents are the event types each action causes; only these are taken
// for the action's own while it is in flight or in its grace period, so a
// local "virsh destroy" right after the agent started the VM is still seen.
var ownEvents = map[virt.Action][]virt.EventType{
	virt.ActionStart:    {virt.EventStarted, virt.EventResumed},
	virt.ActionShutdown: {virt.EventShutdown, virt.EventStopped},
	virt.ActionDestroy:  {virt.EventStopped},
	virt.ActionReboot:   {virt.EventShutdown, virt.EventStarted, virt.EventResumed, virt.EventSuspended},
	virt.ActionSuspend:  {virt.EventSuspended},
	virt.ActionResume:   {virt.EventResumed},
}

// inflight records this agent's actions per VM, so the lifecycle events
// they cause are not taken for changes behind its back.
type inflight struct {
	mu sync.Mutex
	m  map[string][]*mark
}

type mark struct {
	action  virt.Action
	active  bool
	until   time.Time // once ended
	adopted bool      // begun by the agent before it restarted
}

// begin marks an action of this agent on vm. It supersedes what a killed
// predecessor may have had under way there: libvirt serializes a domain's
// jobs, so once this agent acts on vm the old action is over, and the
// events after it are this action's or somebody else's (a `virsh start`
// right after the agent's own destroy must not pass for the start the
// host's reset interrupted two minutes earlier).
func (f *inflight) begin(vm string, a virt.Action) *mark {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]*mark{}
	}
	marks := f.m[vm][:0]
	for _, old := range f.m[vm] {
		if !old.adopted {
			marks = append(marks, old)
		}
	}
	f.m[vm] = marks
	m := &mark{action: a, active: true}
	f.m[vm] = append(f.m[vm], m)
	return m
}

// adopt marks an action this agent may still have under way on vm until
// until (begun by the agent before it restarted): the events it causes
// until then are the agent's own.
func (f *inflight) adopt(vm string, a virt.Action, until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]*mark{}
	}
	f.m[vm] = append(f.m[vm], &mark{action: a, until: until, adopted: true})
}

func (f *inflight) end(m *mark, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	grace := virt.OwnGrace
	if m.action == virt.ActionShutdown {
		grace = virt.OwnShutdownGrace
	}
	m.active, m.until = false, now.Add(grace)
}

// own says whether an event of type t for vm at now is one of this
// agent's actions' doing, and which. A Stopped event ends a shutdown's
// long grace: a later Stopped is not the shutdown's.
func (f *inflight) own(vm string, t virt.EventType, now time.Time) (virt.Action, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	marks := f.m[vm][:0]
	var found *mark
	for _, m := range f.m[vm] {
		if !m.active && now.After(m.until) {
			continue
		}
		marks = append(marks, m)
		if found == nil {
			for _, et := range ownEvents[m.action] {
				if et == t {
					found = m
				}
			}
		}
	}
	if len(marks) == 0 {
		delete(f.m, vm)
	} else {
		f.m[vm] = marks
	}
	if found == nil {
		return "", false
	}
	if t == virt.EventStopped && found.action == virt.ActionShutdown && !found.active {
		found.until = now.Add(virt.OwnGrace)
	}
	return found.action, true
}

var (
	eventLoopOnce sync.Once
	eventLoopErr  error
)

// startEventLoop registers libvirt's default event loop implementation
// and runs it for the life of the process. libvirt needs it registered
// before a connection is opened for that connection to deliver events.
func startEventLoop() error {
	eventLoopOnce.Do(func() {
		if eventLoopErr = libvirt.EventRegisterDefaultImpl(); eventLoopErr != nil {
			return
		}
		go func() {
			for {
				if err := libvirt.EventRunDefaultImpl(); err != nil {
					time.Sleep(100 * time.Millisecond) // never a busy loop on a broken loop
				}
			}
		}()
	})
	return eventLoopErr
}

// WatchLifecycle calls fn for every domain lifecycle event on this
// connection until ctx ends or the connection is closed. fn runs on
// libvirt's event loop goroutine: it must not block (hand the event to a
// channel or goroutine).
func (l *Libvirt) WatchLifecycle(ctx context.Context, fn func(virt.Event)) error {
	if l.eventsErr != nil {
		return fmt.Errorf("virt: libvirt event loop: %w", l.eventsErr)
	}
	l.evMu.Lock()
	defer l.evMu.Unlock()
	if l.closed {
		return errors.New("virt: connection closed")
	}
	id, err := l.conn.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		name, err := d.GetName()
		if err != nil {
			return
		}
		t, detail := eventName(ev.Event, ev.Detail)
		now := l.now()
		e := virt.Event{Time: now, VM: name, Type: t, Detail: detail}
		e.Action, e.Own = l.inflight.own(name, t, now)
		fn(e)
	})
	if err != nil {
		return fmt.Errorf("virt: register for lifecycle events: %w", err)
	}
	if l.callbacks == nil {
		l.callbacks = map[int]bool{}
	}
	l.callbacks[id] = true
	go func() {
		select {
		case <-ctx.Done():
			l.deregister(id)
		case <-l.closing:
		}
	}()
	return nil
}

// deregister drops callback id unless Close already did.
func (l *Libvirt) deregister(id int) {
	l.evMu.Lock()
	defer l.evMu.Unlock()
	if !l.callbacks[id] {
		return
	}
	delete(l.callbacks, id)
	l.conn.DomainEventDeregister(id)
}
