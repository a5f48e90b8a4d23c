package alert

import (
	"fmt"
	"sync"
	"time"
)

// Budget is one of the two alert budgets of a [Throttle]. They are counted
// apart so one cannot use up the other: whoever holds the host key (or a
// flood of garbage) spends only the Junk budget, and a real refusal of a
// known principal still reaches every outlet.
type Budget int

const (
	// Principals: refusals of a principal whose signature verified (the
	// authorization list denied it, the challenge failed).
	Principals Budget = iota
	// Junk: envelopes that did not open (tampered, undecryptable, replayed)
	// and requests whose signature did not verify (a forged or unknown
	// principal).
	Junk
)

func (b Budget) String() string {
	if b == Junk {
		return "junk"
	}
	return "principals"
}

// ThrottleConfig bounds the alerts a Throttle lets through. Zero values take
// the defaults.
type ThrottleConfig struct {
	// Window is the period every count covers (default 1 min).
	Window time.Duration
	// PerKey caps the alerts of one key (class and principal) per window
	// (default 3).
	PerKey int
	// Principals and Junk cap each budget's alerts per window (defaults 20
	// and 6).
	Principals, Junk int
	// MaxKeys caps the keys counted one by one (default 1024); beyond it a
	// new key is counted only against its budget's cap, so memory stays
	// bounded under a flood of distinct keys.
	MaxKeys int
}

// Event is one alert offered to a Throttle.
type Event struct {
	Budget Budget
	// Key is who and what, e.g. "1/alice": the PerKey cap applies to it
	// ("" for none: only the budget's cap).
	Key string
	// Kind names what is counted in a summary, and starts with the alert's
	// class (e.g. "denied: requests whose signature did not verify").
	Kind string
	// Always lets the alert through whatever the counts (a lockout); it
	// still counts.
	Always bool
}

// Throttle keeps alert outlets that have little room (the SEL rolls over,
// the hook pages a human) from being flooded, without ever being silent: an
// alert held back is counted, and Flush turns the counts of a window that
// ended into one summary alert per kind ("bad envelope: …: 57 refused in the
// last 1m0s, not alerted one by one", action "summary"). Summaries pass no cap; there are at
// most as many per window as kinds. Keys of a window that ended are
// forgotten, and at most MaxKeys are held. Safe for concurrent use.
type Throttle struct {
	cfg ThrottleConfig

	mu      sync.Mutex
	start   time.Time // the current window's
	sent    [2]int    // per budget, this window
	keys    map[string]int
	held    map[string]*held // by kind, this window
	order   []string         // kinds in held, first held first
	ready   []Alert          // summaries of ended windows, not yet flushed
	total   [2]uint64        // held back since the start, per budget
	tracked bool             // start is set
}

type held struct {
	n         int
	template  Alert
	principal string // "" once two principals differ
}

// NewThrottle returns a Throttle with cfg's bounds.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.PerKey <= 0 {
		cfg.PerKey = 3
	}
	if cfg.Principals <= 0 {
		cfg.Principals = 20
	}
	if cfg.Junk <= 0 {
		cfg.Junk = 6
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 1024
	}
	return &Throttle{cfg: cfg, keys: map[string]int{}, held: map[string]*held{}}
}

// Admit counts al under e at now and reports whether it goes to the
// outlets. One held back is counted in its kind's summary (see Flush).
func (t *Throttle) Admit(e Event, al Alert, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roll(now)
	b := e.Budget
	if b != Junk {
		b = Principals
	}
	limit := t.cfg.Principals
	if b == Junk {
		limit = t.cfg.Junk
	}
	n, known := t.keys[e.Key]
	if !known && len(t.keys) < t.cfg.MaxKeys {
		known = true
	}
	known = known && e.Key != ""
	overKey := known && n >= t.cfg.PerKey
	if !e.Always && (t.sent[b] >= limit || overKey) {
		t.hold(b, e.Kind, al)
		return false
	}
	t.sent[b]++
	if known {
		t.keys[e.Key] = n + 1
	}
	return true
}

func (t *Throttle) hold(b Budget, kind string, al Alert) {
	t.total[b]++
	h := t.held[kind]
	if h == nil {
		h = &held{template: al, principal: al.Principal}
		t.held[kind] = h
		t.order = append(t.order, kind)
	}
	h.n++
	if h.principal != al.Principal {
		h.principal = ""
	}
}

// roll ends the current window when now is past it (or before it: a clock
// stepped back), turning what it held into summaries. Caller holds t.mu.
func (t *Throttle) roll(now time.Time) {
	if t.tracked && now.Sub(t.start) < t.cfg.Window && !now.Before(t.start) {
		return
	}
	for _, kind := range t.order {
		h := t.held[kind]
		s := h.template
		s.Time, s.Principal, s.VM, s.RequestID, s.Action = now, h.principal, "", 0, "summary"
		if h.principal == "" {
			s.Principal = "(several)"
		}
		s.Reason = fmt.Sprintf("%s: %d refused in the last %s, not alerted one by one", kind, h.n, t.cfg.Window)
		t.ready = append(t.ready, s)
	}
	t.start, t.tracked = now, true
	t.sent = [2]int{}
	clear(t.keys)
	clear(t.held)
	t.order = t.order[:0]
}

// Flush ends the window if it is over at now and returns the summaries of
// every window that ended since the last Flush, oldest first. Call it when
// the window may have ended (Next says when).
func (t *Throttle) Flush(now time.Time) []Alert {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roll(now)
	out := t.ready
	t.ready = nil
	return out
}

// Next is when the current window ends, and whether it holds anything a
// Flush would then summarize.
func (t *Throttle) Next() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.start.Add(t.cfg.Window), len(t.order) > 0 || len(t.ready) > 0
}

// Held is how many alerts of budget b were held back since the throttle
// was made (each is counted in a summary).
func (t *Throttle) Held(b Budget) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b != Junk {
		b = Principals
	}
	return t.total[b]
}

// Keys is how many keys are counted one by one now (at most MaxKeys).
func (t *Throttle) Keys() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}
