package alert

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A flood of distinct keys is held in bounded memory, and every alert held
// back is counted in a summary when its window ends; the other budget is
// untouched.
func TestThrottleBoundedAndCounted(t *testing.T) {
	th := NewThrottle(ThrottleConfig{MaxKeys: 64})
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	sent := 0
	for i := range 100_000 {
		if th.Admit(Event{Budget: Junk, Key: fmt.Sprintf("1/x%d", i), Kind: "denied: forged"}, Alert{Principal: fmt.Sprintf("x%d", i)}, t0) {
			sent++
		}
		if th.Keys() > 64 {
			t.Fatalf("%d keys held after %d distinct ones, want ≤ 64", th.Keys(), i+1)
		}
	}
	if sent != 6 {
		t.Fatalf("%d junk alerts sent, want the cap 6", sent)
	}
	if !th.Admit(Event{Budget: Principals, Key: "1/alice", Kind: "denied: list"}, Alert{Principal: "alice"}, t0) {
		t.Fatal("a proven principal's refusal was held back by junk")
	}
	for range 5 {
		th.Admit(Event{Budget: Principals, Key: "1/alice", Kind: "denied: list"}, Alert{Principal: "alice"}, t0)
	}
	if got := th.Flush(t0.Add(59 * time.Second)); len(got) != 0 {
		t.Fatalf("summaries before the window ended: %+v", got)
	}
	got := th.Flush(t0.Add(time.Minute))
	if len(got) != 2 || got[0].Reason != "denied: forged: 99994 refused in the last 1m0s, not alerted one by one" ||
		got[0].Principal != "(several)" || !strings.HasPrefix(got[1].Reason, "denied: list: 3 refused") || got[1].Principal != "alice" {
		t.Fatalf("summaries %+v", got)
	}
	if th.Keys() != 0 || th.Held(Junk) != 99994 || th.Held(Principals) != 3 {
		t.Fatalf("after the window: %d keys, held %d junk %d principals", th.Keys(), th.Held(Junk), th.Held(Principals))
	}
	if got := th.Flush(t0.Add(3 * time.Minute)); len(got) != 0 {
		t.Fatalf("summaries of a quiet window: %+v", got)
	}
}

// A lockout always passes; a clock stepped back starts a new window.
func TestThrottleAlwaysAndClockBack(t *testing.T) {
	th := NewThrottle(ThrottleConfig{PerKey: 1})
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	e := Event{Budget: Principals, Key: "2/bob", Kind: "challenge refused: x"}
	if !th.Admit(e, Alert{}, t0) || th.Admit(e, Alert{}, t0) {
		t.Fatal("per-key cap 1")
	}
	e.Always = true
	if !th.Admit(e, Alert{}, t0) {
		t.Fatal("a lockout was held back")
	}
	e.Always = false
	if !th.Admit(e, Alert{}, t0.Add(-time.Hour)) {
		t.Fatal("a clock stepped back kept the old window")
	}
	if got := th.Flush(t0.Add(-time.Hour)); len(got) != 1 || !strings.HasPrefix(got[0].Reason, "challenge refused: x: 1 refused") {
		t.Fatalf("summary %+v", got)
	}
}

func BenchmarkThrottleDistinctKeys(b *testing.B) {
	th := NewThrottle(ThrottleConfig{})
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		th.Admit(Event{Budget: Junk, Key: fmt.Sprintf("1/x%d", i), Kind: "denied: forged"}, Alert{}, t0.Add(time.Duration(i)*time.Millisecond))
	}
	b.ReportMetric(float64(th.Keys()), "keys")
}
