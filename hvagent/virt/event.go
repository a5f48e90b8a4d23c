package virt

import "time"

// Event is one libvirt domain lifecycle event, as lvirt.Libvirt's
// WatchLifecycle hands it out.
type Event struct {
	Time time.Time
	VM   string
	// Type and Detail are libvirt's event and detail, spelled as
	// "virsh event --event lifecycle" prints them ("Stopped",
	// "Destroyed").
	Type   EventType
	Detail string
	// Own is true when this agent's own action on the VM was in flight
	// (or had just ended) when libvirt reported the event.
	Own bool
	// Action is that own action, when Own.
	Action Action
}

// EventType is a lifecycle event type.
type EventType string

// Lifecycle event types (virsh's spelling).
const (
	EventDefined     EventType = "Defined"
	EventUndefined   EventType = "Undefined"
	EventStarted     EventType = "Started"
	EventSuspended   EventType = "Suspended"
	EventResumed     EventType = "Resumed"
	EventStopped     EventType = "Stopped"
	EventShutdown    EventType = "Shutdown"
	EventPMSuspended EventType = "PMSuspended"
	EventCrashed     EventType = "Crashed"
)

// Grace periods after an own action during which the events it causes
// are counted as its own: libvirt delivers them through the event loop a
// moment after the call returns, and a graceful shutdown completes when
// the guest is done.
const (
	OwnGrace         = 3 * time.Second
	OwnShutdownGrace = 5 * time.Minute
)
