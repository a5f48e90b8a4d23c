package redfish

import (
	"context"
	"sync"
	"time"
)

// powerWatch turns power changes made outside Redfish (IPMI Chassis
// Control, the guest shutting itself down, QEMU killed) into events. It
// polls the backend once a second, and only while someone listens (an SSE
// stream or a subscription): a fleet of idle BMCs polls nothing.
type powerWatch struct {
	mu       sync.Mutex
	known    bool
	on       bool
	watching bool
}

// powerPoll is how often the watcher reads the power state.
const powerPoll = time.Second

// observe records the power state; it reports whether it changed from a
// known one.
func (w *powerWatch) observe(on bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	changed := w.known && w.on != on
	w.known, w.on = true, on
	return changed
}

// listening reports whether anyone gets events.
func (s *Service) listening() bool {
	s.subs.mu.Lock()
	n := len(s.subs.byID)
	s.subs.mu.Unlock()
	return n > 0 || s.Subscribers() > 0
}

// watchPower starts the watcher unless it runs; call it when a stream or
// subscription opens.
func (s *Service) watchPower(ctx context.Context) {
	w := &s.power
	w.mu.Lock()
	if w.watching {
		w.mu.Unlock()
		return
	}
	w.watching = true
	w.mu.Unlock()
	s.observePower(ctx) // the state the first listener starts from
	go func() {
		t := time.NewTicker(powerPoll)
		defer t.Stop()
		for {
			select {
			case <-s.done:
			case <-t.C:
				if s.listening() {
					s.observePower(context.Background())
					continue
				}
			}
			w.mu.Lock()
			if s.listening() && !s.closed() {
				w.mu.Unlock()
				continue
			}
			w.watching = false
			w.known = false // nobody saw the changes from here on
			w.mu.Unlock()
			return
		}
	}()
}

// observePower reads the power state and publishes a change. It holds
// powerOp, so a read cannot straddle a Reset and report a stale state.
func (s *Service) observePower(ctx context.Context) {
	s.powerOp.Lock()
	defer s.powerOp.Unlock()
	on := s.backend.PowerOn(ctx)
	if s.power.observe(on) {
		s.publishPower(on)
	}
}

func (s *Service) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
