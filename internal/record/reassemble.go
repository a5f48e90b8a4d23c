package record

import (
	"fmt"
	"time"
)

// ReassemblerConfig bounds a Reassembler. Zero fields take the defaults.
type ReassemblerConfig struct {
	// MaxMessages in flight (default 64).
	MaxMessages int
	// MaxBytes of payload held across all messages in flight (default 4 MiB).
	// A single message whose fragment count implies more is refused.
	MaxBytes int
	// TTL after the first fragment of a message; it is dropped once expired
	// (default 2 min). Completed message ids are remembered for TTL too, so a
	// late duplicate fragment does not deliver the message a second time.
	TTL time.Duration
	// MaxDone caps the remembered completed ids (default 4096).
	MaxDone int
}

type partial struct {
	req   uint32 // requester id of the first fragment
	count uint16
	have  int
	bytes int
	frags [][]byte
	first time.Time
}

// Reassembler collects fragments in any order and returns each complete
// message exactly once. It is not safe for concurrent use.
type Reassembler struct {
	cfg     ReassemblerConfig
	inFl    map[uint64]*partial
	bytes   int
	done    map[uint64]time.Time
	doneSeq []uint64 // insertion order of done, for trimming
}

// NewReassembler returns a Reassembler with cfg's bounds.
func NewReassembler(cfg ReassemblerConfig) *Reassembler {
	if cfg.MaxMessages <= 0 {
		cfg.MaxMessages = 64
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 4 << 20
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 2 * time.Minute
	}
	if cfg.MaxDone <= 0 {
		cfg.MaxDone = 4096
	}
	return &Reassembler{cfg: cfg, inFl: map[uint64]*partial{}, done: map[uint64]time.Time{}}
}

// InFlight reports messages and payload bytes held.
func (r *Reassembler) InFlight() (messages, bytes int) { return len(r.inFl), r.bytes }

// Expire drops partial messages and remembered ids older than TTL at now.
func (r *Reassembler) Expire(now time.Time) {
	for id, p := range r.inFl {
		if now.Sub(p.first) >= r.cfg.TTL {
			r.drop(id)
		}
	}
	// doneSeq is in completion order: expire from the front and stop at
	// the first id still fresh (Expire runs on every empty read; walking
	// all MaxDone ids each time was a fifth of a pipelined VMS's CPU).
	n := 0
	for _, id := range r.doneSeq {
		t, ok := r.done[id]
		if ok && now.Sub(t) < r.cfg.TTL {
			break
		}
		if ok {
			delete(r.done, id)
		}
		n++
	}
	r.doneSeq = r.doneSeq[n:]
}

func (r *Reassembler) drop(id uint64) {
	if p, ok := r.inFl[id]; ok {
		r.bytes -= p.bytes
		delete(r.inFl, id)
	}
}

func (r *Reassembler) markDone(id uint64, now time.Time) {
	r.done[id] = now
	r.doneSeq = append(r.doneSeq, id)
	for len(r.done) > r.cfg.MaxDone && len(r.doneSeq) > 0 {
		delete(r.done, r.doneSeq[0])
		r.doneSeq = r.doneSeq[1:]
	}
}

// evictOldest drops the oldest partial message; it reports false if none.
func (r *Reassembler) evictOldest() bool {
	var oldID uint64
	var old *partial
	for id, p := range r.inFl {
		if old == nil || p.first.Before(old.first) {
			oldID, old = id, p
		}
	}
	if old == nil {
		return false
	}
	r.drop(oldID)
	return true
}

// Add takes one fragment received at now. When it completes a message, Add
// returns the message and true; duplicates, fragments of an already delivered
// message and fragments of an incomplete message return nil, false, nil.
//
// A fragment whose count or requester id differs from earlier fragments of the same message,
// or whose payload differs from an already received copy, is rejected with
// ErrInconsistent and the partial message is kept. When the bounds are reached
// the oldest partial message is evicted to make room; a message that could
// never fit (count×MaxPayload > MaxBytes) is refused with ErrTooLarge.
func (r *Reassembler) Add(rec Record, now time.Time) ([]byte, bool, error) {
	if err := rec.validate(); err != nil {
		return nil, false, err
	}
	r.Expire(now)
	if _, ok := r.done[rec.MsgID]; ok {
		return nil, false, nil
	}
	p, ok := r.inFl[rec.MsgID]
	if !ok {
		if int(rec.Count)*MaxPayload > r.cfg.MaxBytes && int(rec.Count) > 1 {
			return nil, false, fmt.Errorf("%w: %d fragments exceed %d bytes in flight", ErrTooLarge, rec.Count, r.cfg.MaxBytes)
		}
		if rec.Count == 1 {
			r.markDone(rec.MsgID, now)
			return append([]byte{}, rec.Payload...), true, nil
		}
		for len(r.inFl) >= r.cfg.MaxMessages {
			r.evictOldest()
		}
		p = &partial{req: rec.Requester, count: rec.Count, frags: make([][]byte, rec.Count), first: now}
		r.inFl[rec.MsgID] = p
	}
	if rec.Requester != p.req {
		return nil, false, fmt.Errorf("%w: msg %#x requester %#x, earlier %#x", ErrInconsistent, rec.MsgID, rec.Requester, p.req)
	}
	if rec.Count != p.count {
		return nil, false, fmt.Errorf("%w: msg %#x count %d, earlier %d", ErrInconsistent, rec.MsgID, rec.Count, p.count)
	}
	if f := p.frags[rec.Index]; f != nil {
		if string(f) != string(rec.Payload) {
			return nil, false, fmt.Errorf("%w: msg %#x fragment %d differs from earlier copy", ErrInconsistent, rec.MsgID, rec.Index)
		}
		return nil, false, nil
	}
	for r.bytes+len(rec.Payload) > r.cfg.MaxBytes {
		// Evict others first; never the message being added.
		var oldID uint64
		var old *partial
		for id, q := range r.inFl {
			if id != rec.MsgID && (old == nil || q.first.Before(old.first)) {
				oldID, old = id, q
			}
		}
		if old == nil {
			r.drop(rec.MsgID)
			return nil, false, fmt.Errorf("%w: msg %#x exceeds %d bytes in flight", ErrBusy, rec.MsgID, r.cfg.MaxBytes)
		}
		r.drop(oldID)
	}
	p.frags[rec.Index] = append(make([]byte, 0, len(rec.Payload)), rec.Payload...)
	p.have++
	p.bytes += len(rec.Payload)
	r.bytes += len(rec.Payload)
	if p.have < int(p.count) {
		return nil, false, nil
	}
	msg := make([]byte, 0, p.bytes)
	for _, f := range p.frags {
		msg = append(msg, f...)
	}
	r.drop(rec.MsgID)
	r.markDone(rec.MsgID, now)
	return msg, true, nil
}
