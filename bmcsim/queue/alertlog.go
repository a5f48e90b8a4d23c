package queue

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// The alert log never refuses an alert and never loses one silently: at its
// cap (or with Queue 2 full) a new alert drops the oldest alert message,
// and alerts that outlive AlertTTL unread are dropped too; either way the
// BMC puts one "alerts dropped" marker (record.NewDroppedMarker) in the log
// where they were, counting them. A new marker takes in the count of every
// older one, so the log holds at most one. Followers read it like any alert
// record; vmsctl shows it as "N alerts dropped". A follower whose cursor was
// among the dropped records is told up to N.
//
// The log also carries the answers to version 1 requests (an older VMS
// reads them there): only sealed Alerts are dropped, told by the clear seal
// header of their first fragment (kind 4). At a cap held by answers a write
// is refused (0xC4) as before, and the reader that drains them makes room.

// isAlert reports whether r, written to Queue 2, is a fragment of a sealed
// Alert message in the alert log: its first fragment's clear seal header
// says so. Caller holds q.mu (or the queue is not shared yet).
func (q *Queue) isAlert(r record.Record) bool {
	if r.Requester != 0 || r.Flags&record.FlagDropped != 0 {
		return false
	}
	if r.Index == 0 {
		h, _, err := seal.ParseHeader(r.Payload)
		return err == nil && h.Kind == vmsg.KindAlert
	}
	for _, e := range q.items {
		if e.rec.Requester == 0 && e.rec.MsgID == r.MsgID && e.rec.Index == 0 {
			return e.alert
		}
	}
	return false
}

// makeRoom drops the oldest alert messages until the log and the queue have
// room for one more record and a marker, then puts the marker. It reports
// whether there is room now. Caller holds q.mu.
func (q *Queue) makeRoom(now time.Time) bool {
	// The new marker takes the place of the old ones: room for the new
	// record and one marker, not counting the markers there now.
	markers := 0
	for _, e := range q.items {
		if e.rec.Requester == 0 && e.rec.Flags&record.FlagDropped != 0 {
			markers++
		}
	}
	full := func() bool { return q.alerts-markers+2 > q.alertCap || len(q.items)-markers+2 > q.capacity }
	var n uint32
	var seq uint64
	for full() {
		m, s, ok := q.dropOldestAlert()
		if !ok {
			break
		}
		n += m
		seq = max(seq, s)
		q.m.evicted.WithLabelValues("alert_dropped").Add(float64(m))
	}
	if n > 0 {
		q.mark(n, seq, now)
	}
	return q.alerts < q.alertCap && len(q.items) < q.capacity
}

// dropOldestAlert removes every record of the oldest alert message that is
// not a marker and returns 1 and the highest seq removed, or ok=false when
// there is none. Caller holds q.mu.
func (q *Queue) dropOldestAlert() (n uint32, seq uint64, ok bool) {
	var id uint64
	found := false
	for _, e := range q.items {
		if e.alert {
			id, found = e.rec.MsgID, true
			break
		}
	}
	if !found {
		return 0, 0, false
	}
	for i := 0; i < len(q.items); {
		e := q.items[i]
		if !e.alert || e.rec.MsgID != id {
			i++
			continue
		}
		seq = max(seq, e.seq)
		q.drop(i)
	}
	return 1, seq, true
}

// drop removes items[i]; a journal error is logged (the record may come
// back after a restart, which readers tolerate). Caller holds q.mu.
func (q *Queue) drop(i int) {
	if err := q.removeAt(i); err != nil && q.j != nil {
		q.j.log.Warn("journal write of a dropped alert failed; it may return after a restart", "queue", q.name, "err", err)
	}
}

// mark puts a marker for n dropped alert messages, the last of which had
// seq, where they were in the log, taking in every older marker. Caller
// holds q.mu.
func (q *Queue) mark(n uint32, seq uint64, now time.Time) {
	for i := 0; i < len(q.items); {
		e := q.items[i]
		if c, ok, _ := record.DroppedMarker(e.rec); ok && e.seq < seq {
			n += c
			q.drop(i)
			continue
		}
		i++
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	e := entry{rec: record.NewDroppedMarker(binary.LittleEndian.Uint64(b[:]), n), enq: now, seq: seq}
	defer q.journalMarker(e)
	at := len(q.items)
	for i, x := range q.items {
		if x.seq > seq {
			at = i
			break
		}
	}
	q.items = append(q.items, entry{})
	copy(q.items[at+1:], q.items[at:])
	q.items[at] = e
	q.keys[e.rec.Key()] = struct{}{}
	q.alerts++
	q.logger.Warn("alert log: alerts dropped before any follower read them; followers are shown the count",
		"queue", q.name, "dropped", n, "alert_log_cap", q.alertCap)
}

// journalMarker journals marker e, now in q.items. The journal only
// appends, and replay restores records in journal order, but the marker
// sits before records written earlier (where the dropped alerts were): a
// follower whose cursor is at the marker would, after a restart, have
// passed them. So the journal is rewritten in the queue's order (a
// compaction, which also makes it durable); markers are rare (a full or
// expired log). If that fails the marker is appended: a marker out of
// place after a restart is still better than none. Caller holds q.mu.
func (q *Queue) journalMarker(e entry) {
	if q.j == nil {
		return
	}
	err := q.j.compact(q.items, q.recentQ, q.cursors(), q.owners())
	if err == nil {
		return
	}
	q.j.log.Warn("journal rewrite for an alerts-dropped marker failed; appending it", "queue", q.name, "err", err)
	// Durable with the next fsync; a marker lost in a crash loses only the
	// count.
	if _, err := q.j.put(e); err != nil {
		q.j.log.Warn("journal write of an alerts-dropped marker failed", "queue", q.name, "err", err)
	}
}
