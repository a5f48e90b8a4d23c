package lan

import (
	"container/list"
	"time"
)

// maxSources bounds the login book's per-source records (~200 bytes each).
// Past it the least recently active source is forgotten: a flood from many
// addresses costs each of them its record, not the BMC its memory. What a
// forgotten source loses (its failures) the per-user slowdown still counts.
const maxSources = 4096

// source is one IP address's login record.
type source struct {
	ip      string
	fails   int       // settled failed handshakes since the last reset
	pending int       // handshakes past RAKP 1 not yet settled
	last    time.Time // its last RAKP 1 that passed, or failure
	tokens  float64   // handshake budget (unknown names, repeated RAKP 1s)
	at      time.Time // when tokens was last refilled
	touched time.Time // last change, for the table's order
	elem    *list.Element
}

// sourceTable is a map of sources with least-recently-touched eviction:
// every operation is O(1).
type sourceTable struct {
	max int
	m   map[string]*source
	lru list.List // front: most recently touched
}

func (t *sourceTable) init(n int) {
	t.max = n
	t.m = make(map[string]*source)
	t.lru.Init()
}

func (t *sourceTable) len() int { return len(t.m) }

func (t *sourceTable) get(ip string) *source { return t.m[ip] }

// getOrAdd returns ip's record, made with a full budget if it had none.
func (t *sourceTable) getOrAdd(ip string, now time.Time, budget float64) *source {
	if s := t.m[ip]; s != nil {
		s.touched = now
		t.lru.MoveToFront(s.elem)
		return s
	}
	if len(t.m) >= t.max {
		if old := t.lru.Back(); old != nil {
			t.remove(old.Value.(*source))
		}
	}
	s := &source{ip: ip, tokens: budget, at: now, touched: now}
	s.elem = t.lru.PushFront(s)
	t.m[ip] = s
	return s
}

// touch marks s as changed now.
func (t *sourceTable) touch(s *source, now time.Time) {
	s.touched = now
	t.lru.MoveToFront(s.elem)
}

func (t *sourceTable) remove(s *source) {
	t.lru.Remove(s.elem)
	delete(t.m, s.ip)
}

// forgetIdle drops the records untouched since cutoff and with no
// handshake in flight, from the least recently touched on.
func (t *sourceTable) forgetIdle(cutoff time.Time) {
	for e := t.lru.Back(); e != nil; {
		s := e.Value.(*source)
		if !s.touched.Before(cutoff) {
			return
		}
		prev := e.Prev()
		if s.pending == 0 {
			t.remove(s)
		}
		e = prev
	}
}
