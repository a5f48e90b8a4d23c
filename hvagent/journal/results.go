package journal

import "time"

// Result is one recorded result, as Results lists it.
type Result struct {
	ID   uint64
	At   time.Time // when the result was written
	Data []byte
}

// Results returns the recorded results still within the TTL, oldest
// first: what the agent executed (its audit trail). The data are copies.
func (j *Journal) Results() []Result {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.collect(func(_ uint64, e *entry) bool { return e.kind == kindResult })
}

// Interrupted returns the ids begun and never finished whose outcome the
// journal does not know: begun before this journal was opened (a crash cut
// them) or whose result could not be written. Oldest first, with the note
// each was begun with and the time it was begun.
func (j *Journal) Interrupted() []Result {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.collect(func(id uint64, e *entry) bool {
		_, busy := j.inflight[id]
		return e.kind == kindBegun && !busy
	})
}

// Running returns the ids claimed in this process and not yet finished
// (the actions under way), oldest first, with their notes.
func (j *Journal) Running() []Result {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.collect(func(id uint64, e *entry) bool {
		_, busy := j.inflight[id]
		return e.kind == kindBegun && busy
	})
}

// Begun reports whether id was begun and has no result: running (claimed
// in this process, under way) or, when not running, interrupted (see
// Interrupted), with the note it was begun with. Running and Interrupted
// for one id, without walking the journal.
func (j *Journal) Begun(id uint64) (note []byte, at time.Time, running, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e, found := j.entries[id]
	if !found || e.kind != kindBegun || e.exp <= j.opt.Mono() {
		return nil, time.Time{}, false, false
	}
	_, running = j.inflight[id]
	return append([]byte(nil), e.data...), e.at, running, true
}

// collect walks the entries in first-record order and returns a copy of
// each one still within the TTL that keep accepts, once per id. The caller
// holds j.mu.
func (j *Journal) collect(keep func(id uint64, e *entry) bool) []Result {
	now := j.opt.Mono()
	seen := make(map[uint64]bool, len(j.entries))
	var out []Result
	for _, id := range j.order {
		e, ok := j.entries[id]
		if !ok || seen[id] || e.exp <= now || !keep(id, e) {
			continue
		}
		seen[id] = true
		out = append(out, Result{ID: id, At: e.at, Data: append([]byte(nil), e.data...)})
	}
	return out
}
