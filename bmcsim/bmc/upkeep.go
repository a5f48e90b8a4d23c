package bmc

import (
	"sync"
	"time"
)

// upkeepEvery is how often each serving BMC's LAN guard ends abandoned
// handshakes (charging them to their source, logins.go) and forgets the
// cached responses of ended sessions, and its session gauge is refreshed.
const upkeepEvery = time.Second

// upkeep runs every serving BMC's once-a-second chores from one goroutine
// per process instead of one per BMC: a `--fleet 1000` process had 1000
// tickers waking it every second (2% of a core idle) and 1000 parked
// goroutines' stacks. The goroutine exits when no BMC is left.
type upkeep struct {
	mu      sync.Mutex
	bmcs    map[*BMC]struct{}
	running bool
}

var chores upkeep

// add starts b's chores; remove ends them (ServeLAN defers it).
func (u *upkeep) add(b *BMC) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.bmcs == nil {
		u.bmcs = map[*BMC]struct{}{}
	}
	u.bmcs[b] = struct{}{}
	if !u.running {
		u.running = true
		go u.loop()
	}
}

func (u *upkeep) remove(b *BMC) {
	u.mu.Lock()
	delete(u.bmcs, b)
	u.mu.Unlock()
}

func (u *upkeep) loop() {
	t := time.NewTicker(upkeepEvery)
	defer t.Stop()
	var batch []*BMC
	for range t.C {
		u.mu.Lock()
		if len(u.bmcs) == 0 {
			u.running = false
			u.mu.Unlock()
			return
		}
		batch = batch[:0]
		for b := range u.bmcs {
			batch = append(batch, b)
		}
		u.mu.Unlock()
		// Outside u.mu: a guard's sweep takes its own lock, which its
		// packet path holds while it works.
		for _, b := range batch {
			b.chores()
		}
	}
}

// chores is one BMC's share of the upkeep.
func (s *BMC) chores() {
	s.guard.Sweep()
	s.metrics.Sessions.WithLabelValues(s.Config.Name).Set(float64(s.IPMI.Sessions.Count()))
}
