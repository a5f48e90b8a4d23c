package bmc

import (
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// TestUpkeep: every serving BMC's chores run from the one shared goroutine
// (a stale session gauge is refreshed), and the goroutine ends with the last
// BMC.
func TestUpkeep(t *testing.T) {
	var bmcs []*lanBMC
	for _, name := range []string{"u1", "u2", "u3"} {
		cfg := testConfig()
		cfg.Name = name
		bmcs = append(bmcs, startLAN(t, cfg))
	}
	// ServeLAN registers from its own goroutine: wait for all three.
	joined := time.Now().Add(30 * time.Second) // generous: a loaded machine
	for {
		chores.mu.Lock()
		n, running := 0, chores.running
		for _, b := range bmcs {
			if _, ok := chores.bmcs[b.BMC]; ok {
				n++
			}
		}
		chores.mu.Unlock()
		if n == 3 && running {
			break
		}
		if time.Now().After(joined) {
			t.Fatalf("upkeep has %d of the 3 serving BMCs, running %v", n, running)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, b := range bmcs {
		b.metrics.Sessions.WithLabelValues(b.Config.Name).Set(42) // stale: no session is open
	}
	deadline := time.Now().Add(30 * upkeepEvery) // generous: a loaded machine
	for _, b := range bmcs {
		g := b.metrics.Sessions.WithLabelValues(b.Config.Name)
		for promtest.ToFloat64(g) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("bmc %s: session gauge still %v after %v: chores did not run", b.Config.Name, promtest.ToFloat64(g), 30*upkeepEvery)
			}
			time.Sleep(10 * time.Millisecond) // polling a gauge; the chores tick once a second
		}
	}
}

func TestUpkeepStopsWithLastBMC(t *testing.T) {
	var u upkeep
	b := &BMC{}
	u.add(b)
	u.remove(b)
	deadline := time.Now().Add(30 * upkeepEvery) // generous: a loaded machine
	for {
		u.mu.Lock()
		running := u.running
		u.mu.Unlock()
		if !running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("upkeep loop still running with no BMC")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
