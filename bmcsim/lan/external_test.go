package lan

import (
	"testing"
)

// TestExternalLogins: failed logins another channel (Redfish) checks count
// in the same book as RMCP+ handshakes: they back off their source and
// slow the user for every source with failures, never for a clean one;
// RMCP+ failures likewise make a Redfish attempt from that source wait.
func TestExternalLogins(t *testing.T) {
	lb, clk := testLogins(t, nil)
	max := lb.Policy().BackoffMax
	n := lb.Policy().Threshold
	for i := 0; i < n; i++ {
		w, tk := lb.BeginLogin("admin", "10.0.0.9")
		if w > 0 {
			clk.Add(w) // a patient guesser
			if w, tk = lb.BeginLogin("admin", "10.0.0.9"); w > 0 {
				t.Fatalf("attempt %d after its wait still waits %v", i, w)
			}
		}
		lb.EndLogin("admin", "10.0.0.9", tk, false)
	}
	if !lb.Slowed("admin") {
		t.Fatalf("admin not slowed after %d failed Redfish logins", n)
	}
	if w, _ := lb.BeginLogin("admin", "10.0.0.9"); w <= 0 || w > max {
		t.Errorf("the guessing source: wait %v, want (0, %v]", w, max)
	}
	// The owner at a clean address: no wait, over either channel.
	if w := lb.Wait("admin", "10.0.0.1"); w != 0 {
		t.Errorf("a clean source waits %v on RMCP+", w)
	}
	w, tk := lb.BeginLogin("admin", "10.0.0.1")
	if w != 0 {
		t.Errorf("a clean source waits %v on Redfish", w)
	}
	lb.EndLogin("admin", "10.0.0.1", tk, true)
	// RMCP+ failures from a source make its Redfish attempt wait.
	id := uint32(100)
	for i := 0; i < n; i++ {
		clk.Add(max)
		fail(lb, id, "10.0.0.7:623", "admin")
		id++
	}
	if w, _ := lb.BeginLogin("admin", "10.0.0.7"); w <= 0 {
		t.Errorf("Redfish from a source with %d RMCP+ failures: wait %v, want > 0", n, w)
	}
	// A source with a failure, during the user's slowdown: its successful
	// logins do not make its next one wait (the success gives back the
	// attempt's time), as after a RAKP 4 success.
	clk.Add(max)
	w, tk = lb.BeginLogin("admin", "10.0.0.9")
	if w != 0 {
		t.Fatalf("the failing source waits %v a BackoffMax after its last attempt", w)
	}
	lb.EndLogin("admin", "10.0.0.9", tk, true)
	if w, tk = lb.BeginLogin("admin", "10.0.0.9"); w != 0 {
		t.Errorf("right after a success the source waits %v", w)
	} else {
		lb.EndLogin("admin", "10.0.0.9", tk, true)
	}
	// Nothing stays in flight: provisional counts were all settled.
	if u := lb.users["admin"]; u.pending != 0 {
		t.Errorf("%d attempts still pending", u.pending)
	}
}
