// Package watch reports VM state changes that hvagent did not make: a
// local "virsh destroy", a guest that shut itself down, a crash. It
// listens to libvirt's domain lifecycle events (lvirt.Libvirt's
// WatchLifecycle), drops those caused by the agent's own actions (lvirt
// marks each action in flight per VM, with a grace period after it), and
// sends every other state change as an alert to the agent's outlets:
// queue 2 (a sealed Alert message), the BMC's SEL, the log and the hook.
//
//	libvirt event (type/detail)             class (reason prefix)        alert action
//	Stopped/Destroyed                       unauthorized local change    destroy
//	Stopped/Shutdown after a Shutdown/      unauthorized local change    shutdown
//	  "Finished after host request"
//	Stopped/Shutdown otherwise              guest-initiated              shutdown
//	Stopped/Crashed, Stopped/Failed         crash                        crash
//	Crashed/*                               crash                        crash
//	Started/Event wakeup, PMSuspended/*     guest-initiated              start, pmsuspend
//	Started/* (other)                       unauthorized local change    start
//	Suspended/I/O Error, Watchdog,          crash                        suspend
//	  API error
//	Suspended/* (other)                     unauthorized local change    suspend
//	Resumed/*                               unauthorized local change    resume
//	  (Resumed/Unpaused next to a Started of the same VM, within StartWindow
//	  and with no other event of the VM between, either order, is that
//	  start's: QEMU domains start paused and libvirt reports the unpause
//	  too, so one "virsh start" is one alert)
//	Stopped/Migrated, Saved, Snapshot…      unauthorized local change    stop
//	Defined/*, Undefined/*                  unauthorized local change    define, undefine
//	Shutdown/*                              (remembered, not alerted: the Stopped event follows)
//
// libvirt cannot tell who ran a host-side command; "local" means "on the
// host, not through hvagent". An event of a type the agent's own action
// causes (a Started for a start, a Stopped for a destroy…), arriving while
// that action runs on the same VM or within virt.OwnGrace after it, is
// taken as the agent's: the same change made locally in that window is
// missed. A graceful shutdown's window lasts until the VM stops or
// virt.OwnShutdownGrace passes.
package watch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/virt"
)

// Source delivers lifecycle events (*lvirt.Libvirt).
type Source interface {
	WatchLifecycle(ctx context.Context, fn func(virt.Event)) error
}

// Config is a watcher's wiring.
type Config struct {
	Source Source
	// Sink gets each alert: every outlet the agent has (log, hook, SEL,
	// queue 2).
	Sink alert.Sink
	// Host is the agent's host id, put in each alert.
	Host string
	// Users returns the registered users to alert (the policy's, which
	// may be reloaded); nil for none.
	Users func() []string
	// Timeout bounds the delivery of one alert (default 15 s).
	Timeout time.Duration
	// StartWindow is how long a Resumed/Unpaused waits for the Started of
	// the same VM that makes it part of a start (default 2 s): a resume
	// alert comes that much later.
	StartWindow time.Duration
	Logger      *slog.Logger
	// Ready, when set, is called once the watcher is registered: changes
	// from then on are seen.
	Ready func()
}

// Class is the kind of a change hvagent did not make.
type Class string

// Classes; the strings are the alert reasons' prefixes (and agent.Class
// maps them to SEL class numbers).
const (
	Local Class = agent.ReasonLocal
	Guest Class = agent.ReasonGuest
	Crash Class = agent.ReasonCrash
)

// Change is a classified event worth an alert.
type Change struct {
	Class  Class
	Action string // a vmsg command name where one fits ("destroy")
	What   string // for humans: "destroyed", "shut down by the guest"
}

// classifier keeps what one event needs from the ones before it: whether
// a shutdown was requested on the host.
type classifier struct {
	hostShutdown map[string]bool
}

// classify returns the change e stands for; ok is false for an event that
// is not alerted on its own (Shutdown, which a Stopped event follows).
func (c *classifier) classify(e virt.Event) (ch Change, ok bool) {
	switch e.Type {
	case virt.EventShutdown:
		if c.hostShutdown == nil {
			c.hostShutdown = map[string]bool{}
		}
		c.hostShutdown[e.VM] = e.Detail == "Finished after host request"
		return Change{}, false
	case virt.EventStopped:
		host := c.hostShutdown[e.VM]
		delete(c.hostShutdown, e.VM)
		switch e.Detail {
		case "Destroyed":
			return Change{Local, "destroy", "destroyed (forced off)"}, true
		case "Shutdown":
			if host {
				return Change{Local, "shutdown", "shut down on a request made on the host"}, true
			}
			return Change{Guest, "shutdown", "shut down by the guest"}, true
		case "Crashed", "Failed":
			return Change{Crash, "crash", "stopped: " + e.Detail}, true
		}
		return Change{Local, "stop", "stopped: " + e.Detail}, true
	case virt.EventCrashed:
		return Change{Crash, "crash", "crashed: " + e.Detail}, true
	case virt.EventStarted:
		if e.Detail == "Event wakeup" {
			return Change{Guest, "start", "woke up"}, true
		}
		return Change{Local, "start", "started: " + e.Detail}, true
	case virt.EventPMSuspended:
		return Change{Guest, "pmsuspend", "suspended by the guest: " + e.Detail}, true
	case virt.EventSuspended:
		switch e.Detail {
		case "I/O Error", "Watchdog", "API error":
			return Change{Crash, "suspend", "paused: " + e.Detail}, true
		}
		return Change{Local, "suspend", "paused: " + e.Detail}, true
	case virt.EventResumed:
		return Change{Local, "resume", "resumed: " + e.Detail}, true
	case virt.EventDefined:
		return Change{Local, "define", "defined: " + e.Detail}, true
	case virt.EventUndefined:
		return Change{Local, "undefine", "undefined: " + e.Detail}, true
	}
	return Change{Local, "change", fmt.Sprintf("%s: %s", e.Type, e.Detail)}, true
}

// Alert builds the alert for ch seen in e.
func Alert(host string, e virt.Event, ch Change, users []string) alert.Alert {
	principal := "local"
	switch ch.Class {
	case Guest:
		principal = "guest"
	case Crash:
		principal = ""
	}
	return alert.Alert{Time: e.Time, Host: host, Principal: principal, VM: e.VM, Action: ch.Action,
		Reason: fmt.Sprintf("%s: VM %s %s (libvirt event %s/%s)", ch.Class, e.VM, ch.What, e.Type, e.Detail),
		Users:  users}
}

// queueLen bounds the events waiting for delivery; libvirt's loop never
// waits for a slow outlet.
const queueLen = 256

// Run registers for lifecycle events and alerts on every change the agent
// did not make, until ctx ends. It returns at once with an error when it
// cannot register; otherwise it returns nil when ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	events := make(chan virt.Event, queueLen)
	var mu sync.Mutex
	dropped := 0
	err := cfg.Source.WatchLifecycle(ctx, func(e virt.Event) {
		select {
		case events <- e:
		default:
			mu.Lock()
			dropped++
			mu.Unlock()
		}
	})
	if err != nil {
		return err
	}
	log.Info("watching libvirt lifecycle events for changes made behind the agent's back")
	if cfg.Ready != nil {
		cfg.Ready()
	}
	if cfg.StartWindow <= 0 {
		cfg.StartWindow = 2 * time.Second
	}
	deliver := func(e virt.Event, ch Change) {
		var users []string
		if cfg.Users != nil {
			users = cfg.Users()
		}
		al := Alert(cfg.Host, e, ch, users)
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Timeout)
		if err := cfg.Sink.Send(actx, al); err != nil {
			log.Error("alert for a change behind the agent's back not delivered to every outlet", "vm", e.VM, "reason", al.Reason, "err", err)
		}
		cancel()
	}
	var c classifier
	// An unpause held back for the start it may belong to, per VM, and
	// when each VM last started (locally or by the agent).
	type heldResume struct {
		e     virt.Event
		ch    Change
		until time.Time
	}
	held := map[string]heldResume{}
	started := map[string]time.Time{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	rearm := func() {
		timer.Stop()
		var next time.Time
		for _, h := range held {
			if next.IsZero() || h.until.Before(next) {
				next = h.until
			}
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), 0))
		}
	}
	flush := func(vm string) { // a held unpause that no start claimed
		if h, ok := held[vm]; ok {
			delete(held, vm)
			deliver(h.e, h.ch)
		}
	}
	for {
		var e virt.Event
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			now := time.Now()
			for vm, h := range held {
				if !h.until.After(now) {
					flush(vm)
				}
			}
			rearm()
			continue
		case e = <-events:
		}
		mu.Lock()
		if dropped > 0 {
			log.Error("lifecycle events lost: alerts were slower than libvirt; check the alert outlets", "lost", dropped)
			dropped = 0
		}
		mu.Unlock()
		ch, ok := c.classify(e)
		now := time.Now()
		unpause := e.Type == virt.EventResumed && e.Detail == "Unpaused"
		switch {
		case e.Type == virt.EventStarted:
			started[e.VM] = now
			if _, ok := held[e.VM]; ok {
				delete(held, e.VM) // the unpause was this start's
				delete(started, e.VM)
				log.Debug("an unpause counted as part of the start after it", "vm", e.VM)
				rearm()
			}
		case !unpause:
			// Anything else between a start and an unpause (an agent's
			// suspend…) makes the unpause a resume of its own.
			delete(started, e.VM)
			flush(e.VM) // alerts of one VM keep their order
			rearm()
		}
		if e.Own {
			log.Debug("lifecycle event from the agent's own action", "vm", e.VM, "event", e.Type, "detail", e.Detail, "action", e.Action)
			continue
		}
		if !ok {
			continue
		}
		if unpause {
			if t, ok := started[e.VM]; ok && now.Sub(t) < cfg.StartWindow {
				delete(started, e.VM)
				log.Debug("an unpause counted as part of the start before it", "vm", e.VM)
				continue
			}
			flush(e.VM)
			held[e.VM] = heldResume{e: e, ch: ch, until: now.Add(cfg.StartWindow)}
			rearm()
			continue
		}
		deliver(e, ch)
	}
}
