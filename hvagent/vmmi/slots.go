package vmmi

import (
	"net"
	"sync"
)

// Connection slots, in two stages so that peers who say nothing cannot
// hold the slots of those who authenticate:
//
//	accept ──▶ pending (MaxPending, MaxPendingPerSource) ──TLS + client cert──▶ authenticated (MaxConns)
//	           ├─ its source at MaxPendingPerSource, or at MaxConnsPerSource
//	           │  with some pending: the source's oldest pending connection
//	           │  is closed to make room (newest wins within a source)
//	           └─ all MaxPending taken: the oldest pending connection of the
//	              source holding the most is closed to make room (never one
//	              of a source holding no more than the newcomer's would)
//
// Every connection, in either stage, counts against MaxConnsPerSource. A
// pending connection lives at most HandshakeTimeout; an authenticated one
// IdleTimeout between frames. So a crowd of silent TCP peers, from however
// many addresses, keeps at most MaxPending connections that each live a
// few seconds and are displaced by newcomers from quieter sources and by
// newer ones from their own; a VMS whose handshake takes milliseconds gets
// through — also behind a NAT that shows it and the crowd as one address
// (the lab's QEMU user networking does) — and once authenticated its
// connection is out of their reach. Only a peer that opens connections
// from the VMS's own address as fast as the VMS's handshake completes can
// keep it out.
type slots struct {
	maxPending, maxPendingPerSrc, maxAuthed, maxPerSrc int

	mu        sync.Mutex
	pending   []*slot // oldest first
	pendBySrc map[string]int
	bySrc     map[string]int
	authed    int
}

type slotState uint8

const (
	slotPending slotState = iota
	slotAuthed
	slotGone
)

// slot is one accepted connection's place.
type slot struct {
	conn  net.Conn
	src   string
	state slotState
}

// admitResult says why a connection was not admitted.
type admitResult uint8

const (
	admitted admitResult = iota
	refusedSource
	refusedPending
)

func newSlots(maxPending, maxPendingPerSrc, maxAuthed, maxPerSrc int) *slots {
	return &slots{maxPending: maxPending, maxPendingPerSrc: maxPendingPerSrc, maxAuthed: maxAuthed, maxPerSrc: maxPerSrc,
		pendBySrc: map[string]int{}, bySrc: map[string]int{}}
}

// admit gives c from src a pending slot. evicted, when not nil, is a
// pending connection that lost its slot to c: the caller closes it.
func (s *slots) admit(c net.Conn, src string) (sl *slot, evicted net.Conn, why admitResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := -1
	switch {
	case s.bySrc[src] >= s.maxPerSrc || s.pendBySrc[src] >= s.maxPendingPerSrc:
		if v = s.oldestOf(src); v < 0 { // all of them authenticated
			return nil, nil, refusedSource
		}
	case len(s.pending) >= s.maxPending:
		v = s.victim()
		if v < 0 || s.pendBySrc[s.pending[v].src] <= s.pendBySrc[src] {
			return nil, nil, refusedPending
		}
	}
	if v >= 0 {
		old := s.pending[v]
		s.dropPending(v)
		s.bySrc[old.src]--
		s.forget(old.src)
		old.state = slotGone
		evicted = old.conn
	}
	sl = &slot{conn: c, src: src}
	s.pending = append(s.pending, sl)
	s.pendBySrc[src]++
	s.bySrc[src]++
	return sl, evicted, admitted
}

// oldestOf is the index of src's oldest pending connection (-1: none).
func (s *slots) oldestOf(src string) int {
	for i, p := range s.pending {
		if p.src == src {
			return i
		}
	}
	return -1
}

// victim is the index of the oldest pending connection of the source with
// the most pending connections (-1 when none): O(MaxPending).
func (s *slots) victim() int {
	best, bestN := -1, 0
	for i, p := range s.pending {
		if n := s.pendBySrc[p.src]; n > bestN {
			best, bestN = i, n
		}
	}
	return best
}

func (s *slots) dropPending(i int) {
	p := s.pending[i]
	s.pending = append(s.pending[:i], s.pending[i+1:]...)
	if s.pendBySrc[p.src]--; s.pendBySrc[p.src] <= 0 {
		delete(s.pendBySrc, p.src)
	}
}

func (s *slots) forget(src string) {
	if s.bySrc[src] <= 0 {
		delete(s.bySrc, src)
	}
}

func (s *slots) indexOf(sl *slot) int {
	for i, p := range s.pending {
		if p == sl {
			return i
		}
	}
	return -1
}

// promote moves an authenticated connection to its authenticated slot. It
// fails when sl was evicted meanwhile (evicted) or MaxConns are
// authenticated (sl is then released).
func (s *slots) promote(sl *slot) (ok, evicted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl.state != slotPending {
		return false, true
	}
	if i := s.indexOf(sl); i >= 0 {
		s.dropPending(i)
	}
	if s.authed >= s.maxAuthed {
		sl.state = slotGone
		s.bySrc[sl.src]--
		s.forget(sl.src)
		return false, false
	}
	s.authed++
	sl.state = slotAuthed
	return true, false
}

// release frees sl's slot, whichever stage it is in (idempotent).
func (s *slots) release(sl *slot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch sl.state {
	case slotGone:
		return
	case slotPending:
		if i := s.indexOf(sl); i >= 0 {
			s.dropPending(i)
		}
	case slotAuthed:
		s.authed--
	}
	sl.state = slotGone
	s.bySrc[sl.src]--
	s.forget(sl.src)
}

// counts reports the pending and authenticated connections.
func (s *slots) counts() (pending, authed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending), s.authed
}
