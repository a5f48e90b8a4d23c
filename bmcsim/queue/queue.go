// Package queue is the pair of buffer queues inside a simulated BMC:
// Queue 1 carries records from the VMS (written over the LAN) to the host
// (read over the system interface), Queue 2 the other way. See package
// internal/oem for the commands and docs/oob-i.md for the semantics:
//
//   - a write of a (msg id, fragment) already queued, or removed within the
//     last [RecentKeys] removals, succeeds without queueing it twice; the
//     removals are journalled, so this holds across a restart too;
//   - a full queue refuses a write with completion code 0xC4, never drops;
//   - reads are two-phase: a record leaves the queue only when a later read
//     acknowledges it by its (msg id, fragment); a read without an ack, or
//     with a stale one, returns the same record again;
//   - Queue 1 has one reader (the host) and is a plain FIFO;
//   - Queue 2 has many readers, each with a reader id (the requester id of
//     package record). A record addressed to a reader (record version 2) is
//     handed to it alone and removed by its ack; records addressed to 0 form
//     the alert log, read by every follower from its own cursor and removed
//     once every follower has acknowledged it. A reader that stops reading
//     for [Options.ReaderTTL] is forgotten and its records evicted, a
//     follower with its cursor, which then holds the log no more; a
//     durable follower (one that asked with [oem.ReadDurable]) keeps its
//     cursor, journalled, for [Options.FollowerTTL]. The alert log
//     holds at most [Options.AlertLog] records for at most
//     [Options.AlertTTL]; beyond either the oldest alerts are dropped and a
//     marker counting them takes their place (alertlog.go), so an alert is
//     never refused and never lost silently. Every eviction is counted;
//   - a Queue 2 reader id is not a bearer token (it travels in clear in
//     every Queue 1 record): a reader is bound to the BMC user that first
//     named it, by a Queue 1 write carrying it ([Queue.Bind]) or a read
//     ([Queue.ReadAs]), for as long as it is remembered. Another user's
//     session cannot read, acknowledge, or write requests as it
//     ([ErrNotOwner], 0xD4), whatever its privilege. A record addressed to
//     a reader belongs to that reader's user when it is written, and only
//     that user's reads see it, even if the id is later bound again; one
//     written while the id had no binding (its reader gone) is seen by no
//     LAN user and evicted with the others. Reader 0 (the alert log of the
//     version 1 read) is shared and never bound: alerts are for everyone;
//   - with a state directory every change is journalled and a write is
//     fsynced before it is answered, outside the queue's lock (see
//     journal.go), so records survive a restart.
package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// ErrFull is returned by Write when the queue is at capacity (IPMI 0xC4).
var ErrFull = errors.New("queue: full")

// ErrNotOwner is returned by ReadAs and Bind when the reader id is bound to
// another BMC user (IPMI 0xD4).
var ErrNotOwner = errors.New("queue: reader id bound to another BMC user")

// DefaultCapacity is the default number of records per queue.
const DefaultCapacity = 256

// RecentKeys is how many removed (msg id, fragment) keys a queue remembers
// so a late retransmitted write is not queued again.
const RecentKeys = 1024

// Defaults of the Queue 2 bounds.
const (
	DefaultReaderTTL   = time.Minute
	DefaultFollowerTTL = 24 * time.Hour
	DefaultAlertTTL    = 10 * time.Minute
	DefaultMaxReaders  = 256
)

// Options configure Open. Zero values take defaults.
type Options struct {
	Capacity1, Capacity2 int // records; default DefaultCapacity, at most 65535
	// ReaderTTL: a Queue 2 reader that has not read for this long is
	// forgotten, and records addressed to it that are at least this old are
	// evicted (default DefaultReaderTTL).
	ReaderTTL time.Duration
	// FollowerTTL: a durable follower of the alert log (its reads carry
	// oem.ReadDurable: `vmsctl alerts --follower-id`) keeps its cursor
	// (and the log keeps what it has not read) until it has not read for
	// this long (default DefaultFollowerTTL), so it resumes where it was
	// after a pause; the cursor is journalled. Any other follower (a
	// one-shot `vmsctl alerts`, a web page) is forgotten after ReaderTTL,
	// so an abandoned one does not hold the log for a day.
	FollowerTTL time.Duration
	// AlertLog caps the records of the alert log (addressed to 0) in Queue 2,
	// so alerts can never crowd out answers (default a quarter of Capacity2,
	// at least 2). A write beyond it drops the oldest alert message and
	// puts an "alerts dropped" marker in its place; it is never refused.
	AlertLog int
	// AlertTTL is how long an alert log record is kept for followers that
	// have not read it yet (default DefaultAlertTTL); then it is dropped
	// and counted in a marker.
	AlertTTL time.Duration
	// MaxReaders caps the Queue 2 readers remembered; one more forgets the
	// one that read least recently (default DefaultMaxReaders).
	MaxReaders int
	// StateDir, when set, holds queue1.journal and queue2.journal.
	StateDir string
	// Registerer receives the queue metrics (may be nil). To host several
	// BMCs in one process, wrap it with prometheus.WrapRegistererWith.
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnQueue1Change is called, outside any lock, after Queue 1 gained or
	// lost a record, with its new depth; the system interface uses it to
	// raise or clear attention. Calls from concurrent requests may arrive out
	// of order: read Status for the current depth.
	OnQueue1Change func(depth int)
	// OnQueue1Wake is called, outside any lock, after a write landed in
	// Queue 1 while its reader (the host) is idle: its last read found the
	// queue empty (or it has not read yet), so it sleeps until told. The
	// edge is decided under the queue's lock, so no wake is lost however
	// concurrent calls are ordered; the BMC pushes its Queue1Notify on it.
	OnQueue1Wake func()
	// AfterQueue1Write, when set, is called after a VMS's Write Queue 1
	// landed (journalled) and before it is answered: a test's fault hook
	// (the lab's fault_hooks) kills the BMC there.
	AfterQueue1Write func()
	// OnQueue2Write, when set, is called outside any lock once a record
	// is readable in Queue 2, before its journal entry is synced, with the
	// BMC user that owns it ("" for the alert log): the Redfish event that
	// hands a VMS its answer.
	OnQueue2Write func(r record.Record, owner string)
	Logger        *slog.Logger
}

type entry struct {
	rec record.Record
	enq time.Time
	seq uint64 // write order, for the alert log cursors
	// alert: a fragment of a sealed Alert in the alert log, which a full
	// log may drop (alertlog.go); a version 1 answer there is never dropped.
	alert bool
	// owner: Queue 2, a record addressed to a reader: the user that reader
	// was bound to when the record was written ("" when it had none).
	owner string
}

// reader is one Queue 2 reader.
type reader struct {
	cursor   uint64     // alert log: highest seq acknowledged
	at       record.Key // the record at cursor (journalled, as seqs restart)
	follower bool       // has asked for the alert log
	// durable: a follower that asked to be kept (oem.ReadDurable): it is
	// remembered, cursor and binding, for the follower TTL, and its cursor
	// is journalled; any other reader for the reader TTL.
	durable bool
	seen    time.Time
	owner   string // the BMC user it is bound to (see the package doc)
}

// Queue is one bounded queue of records. It is safe for concurrent use.
type Queue struct {
	name     string
	capacity int
	now      func() time.Time
	onChange func(int)
	onWake   func()
	onWrite  func(record.Record, string)
	// idle: the single reader's last read found the queue empty (Queue 1:
	// the host sleeps until woken).
	idle  bool
	multi bool // Queue 2: readers by id, alert log
	// cursor: the seq of the last Queue 1 record handed out by a window
	// read (ReadWindow) since its last rewind; not journalled (a restart
	// is a rewind).
	cursor uint64

	readerTTL, alertTTL  time.Duration
	followerTTL          time.Duration
	logger               *slog.Logger
	opened               time.Time // readers could not read before
	alertCap, maxReaders int

	mu      sync.Mutex
	items   []entry
	keys    map[record.Key]struct{}
	recent  map[record.Key]struct{}
	recentQ []record.Key
	seq     uint64
	readers map[uint32]*reader
	alerts  int // records addressed to 0
	j       *journal

	m *metrics
}

func newQueue(name string, capacity int, o *Options, m *metrics) *Queue {
	return &Queue{
		name: name, capacity: capacity, now: o.Now, m: m,
		readerTTL: o.ReaderTTL, alertTTL: o.AlertTTL, opened: o.Now(), alertCap: o.AlertLog, maxReaders: o.MaxReaders,
		followerTTL: o.FollowerTTL, logger: o.Logger,
		keys: map[record.Key]struct{}{}, recent: map[record.Key]struct{}{}, readers: map[uint32]*reader{},
	}
}

// Write appends r unless its key is already queued (or was just removed).
// It returns ErrFull when the queue is at capacity.
func (q *Queue) Write(r record.Record) error {
	depth, owner, changed, wake, sync, err := q.write(r)
	if wake && q.onWake != nil {
		q.onWake() // before the fsync: the VMS's answer still waits for it
	}
	if err == nil && changed && q.onWrite != nil {
		// Before the fsync too: the record is readable now, and the VMS
		// waiting on this push reads (or, over Redfish, gets) it while the
		// journal syncs. Should the BMC die before the sync, the writer
		// never got its answer and writes the record again after the
		// restart; the VMS drops the copy.
		q.onWrite(r, owner)
	}
	if err == nil && sync != nil {
		err = sync()
	}
	if changed && q.onChange != nil {
		q.onChange(depth)
	}
	return err
}

// write queues r under the lock and returns what makes it durable, to run
// after the lock is released.
func (q *Queue) write(r record.Record) (depth int, owner string, changed, wake bool, sync func() error, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := r.Key()
	if _, ok := q.keys[k]; ok {
		q.m.duplicates.Inc()
		return len(q.items), "", false, false, nil, nil
	}
	if _, ok := q.recent[k]; ok {
		q.m.duplicates.Inc()
		return len(q.items), "", false, false, nil, nil
	}
	now := q.now()
	if q.multi {
		q.sweep(now)
		if r.Requester == 0 && (q.alerts >= q.alertCap || len(q.items) >= q.capacity) && !q.makeRoom(now) {
			q.m.full.Inc()
			return len(q.items), "", false, false, nil, fmt.Errorf("%w: the alert log of %s holds %d records", ErrFull, q.name, q.alertCap)
		}
	}
	if len(q.items) >= q.capacity {
		q.m.full.Inc()
		return len(q.items), "", false, false, nil, fmt.Errorf("%w: %s holds %d records", ErrFull, q.name, q.capacity)
	}
	q.seq++
	e := entry{rec: r, enq: now, seq: q.seq, alert: q.isAlert(r)}
	if rd, ok := q.readers[r.Requester]; ok && q.multi && r.Requester != 0 {
		e.owner = rd.owner
	}
	if q.j != nil {
		s, err := q.j.put(e)
		if err != nil {
			return len(q.items), "", false, false, nil, err
		}
		sync = s
	}
	q.items = append(q.items, e)
	q.keys[k] = struct{}{}
	if r.Requester == 0 {
		q.alerts++
	}
	q.m.writes.Inc()
	if q.j != nil {
		q.maybeCompact()
	}
	wake, q.idle = q.idle, false
	return len(q.items), e.owner, true, wake, sync, nil
}

// Read is the read of the single reader: on Queue 1 the host, on Queue 2
// reader 0 following the alert log (OEM 0x04, the version 1 behaviour). It
// acknowledges ack if it names the head, then returns the head, or ok=false
// when there is none.
func (q *Queue) Read(ack *oem.Ack) (rec record.Record, ok bool, err error) {
	if q.multi {
		return q.ReadFor(0, true, ack)
	}
	rec, ok, depth, changed, err := q.read(ack)
	if changed && q.onChange != nil {
		q.onChange(depth)
	}
	return rec, ok, err
}

func (q *Queue) read(ack *oem.Ack) (record.Record, bool, int, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.m.reads.Inc()
	changed := false
	if ack != nil && len(q.items) > 0 {
		head := q.items[0].rec.Key()
		if head == (record.Key{MsgID: ack.MsgID, Index: ack.Index}) {
			if err := q.removeAt(0); err != nil {
				return record.Record{}, false, len(q.items), false, err
			}
			q.m.acks.Inc()
			changed = true
		}
	}
	if len(q.items) == 0 {
		q.idle = true // the reader sleeps now: the next write wakes it
		return record.Record{}, false, 0, changed, nil
	}
	return q.items[0].rec, true, len(q.items), changed, nil
}

// ReadWindow is the host's windowed read of Queue 1 (OEM 0x07): it
// acknowledges ack wherever that record is in the queue, then returns the
// oldest record not yet handed out since the last rewind (rewind: start
// again at the oldest record), or ok=false when there is none. Records
// stay queued until acknowledged, so several messages can be in flight and
// be acknowledged in any order, and a reader that restarts rewinds and sees
// every record it had not acknowledged again.
func (q *Queue) ReadWindow(rewind bool, ack *oem.Ack) (rec record.Record, ok bool, err error) {
	rec, ok, depth, changed, err := q.readWindow(rewind, ack)
	if changed && q.onChange != nil {
		q.onChange(depth)
	}
	return rec, ok, err
}

func (q *Queue) readWindow(rewind bool, ack *oem.Ack) (record.Record, bool, int, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.m.reads.Inc()
	changed := false
	if ack != nil {
		k := record.Key{MsgID: ack.MsgID, Index: ack.Index}
		for i := range q.items {
			if q.items[i].rec.Key() == k {
				if err := q.removeAt(i); err != nil {
					return record.Record{}, false, len(q.items), false, err
				}
				q.m.acks.Inc()
				changed = true
				break
			}
		}
	}
	if rewind {
		q.cursor = 0
	}
	for _, e := range q.items {
		if e.seq > q.cursor {
			q.cursor = e.seq
			return e.rec, true, len(q.items), changed, nil
		}
	}
	q.idle = true // nothing new for the reader: the next write wakes it
	return record.Record{}, false, len(q.items), changed, nil
}

// ReadFor is ReadAs for the user "": the process's own reads (tests, tools),
// never a LAN session's. With alertLog it reads as a follower that is not
// durable.
func (q *Queue) ReadFor(id uint32, alertLog bool, ack *oem.Ack) (record.Record, bool, error) {
	var f oem.ReadFlags
	if alertLog {
		f = oem.ReadAlertLog
	}
	return q.ReadAs("", id, f, ack)
}

// ReadAs is one read of Queue 2 by reader id on behalf of BMC user owner:
// it acknowledges ack if it names a record this reader may consume (one
// addressed to it and owned by owner, or with oem.ReadAlertLog the alert
// log record at its cursor), then returns the oldest record for it, or
// ok=false when there is none. Another reader's records are neither
// returned nor removed. A reader id bound to another user is refused with
// ErrNotOwner, its state untouched; an unbound one is bound to owner.
// oem.ReadDurable (with oem.ReadAlertLog) makes the reader a durable
// follower from now on; a later read without it does not undo that.
func (q *Queue) ReadAs(owner string, id uint32, flags oem.ReadFlags, ack *oem.Ack) (record.Record, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.m.reads.Inc()
	now := q.now()
	q.sweep(now)
	rd, err := q.bind(owner, id, now)
	if err != nil {
		return record.Record{}, false, err
	}
	alertLog := flags&oem.ReadAlertLog != 0
	rd.follower = rd.follower || alertLog
	if alertLog && flags&oem.ReadDurable != 0 && !rd.durable {
		rd.durable = true
		if q.j != nil { // from now on its cursor survives a restart
			if err := q.j.cursor(id, rd.at); err != nil {
				rd.durable = false
				return record.Record{}, false, err
			}
		}
	}
	if ack != nil {
		k := record.Key{MsgID: ack.MsgID, Index: ack.Index}
		for i := range q.items {
			e := &q.items[i]
			if e.rec.Key() != k {
				continue
			}
			switch {
			case e.rec.Requester == 0 && alertLog && e.seq > rd.cursor:
				rd.cursor, rd.at = e.seq, k
				q.m.acks.Inc()
				if q.j != nil && rd.durable {
					if err := q.j.cursor(id, k); err != nil {
						return record.Record{}, false, err
					}
				}
				if err := q.trimAlerts(); err != nil {
					return record.Record{}, false, err
				}
			case e.rec.Requester != 0 && e.rec.Requester == id && e.owner == owner:
				if err := q.removeAt(i); err != nil {
					return record.Record{}, false, err
				}
				q.m.acks.Inc()
			}
			break
		}
	}
	for _, e := range q.items {
		if (id != 0 && e.rec.Requester == id && e.owner == owner) || (alertLog && e.rec.Requester == 0 && e.seq > rd.cursor) {
			return e.rec, true, nil
		}
	}
	return record.Record{}, false, nil
}

// Bind binds reader id to BMC user owner, as a Queue 1 write carrying id
// as its requester does before the record is queued, so the answer is
// owner's: ErrNotOwner when id is bound to another user. It counts as the
// reader's activity. Id 0 is never bound.
func (q *Queue) Bind(owner string, id uint32) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, err := q.bind(owner, id, q.now())
	return err
}

// ttl is how long rd is remembered without reading: its binding lasts as
// long as its cursor, the follower TTL for a durable follower, else the
// reader TTL.
func (q *Queue) ttl(rd *reader) time.Duration {
	if rd.durable {
		return q.followerTTL
	}
	return q.readerTTL
}

// bind returns reader id's state for owner, creating it bound to owner
// (journalled) and marking it seen at now, or ErrNotOwner. A reader idle
// for as long as sweep keeps it (ttl) that no sweep has forgotten yet is
// forgotten here. Reader 0 is shared. Caller holds q.mu.
func (q *Queue) bind(owner string, id uint32, now time.Time) (*reader, error) {
	if rd, ok := q.readers[id]; ok && id != 0 && rd.owner != owner {
		if now.Sub(rd.seen) < q.ttl(rd) {
			q.m.refused.Inc()
			return nil, fmt.Errorf("%w: reader %#x", ErrNotOwner, id)
		}
		delete(q.readers, id)
		q.m.evicted.WithLabelValues("reader_gone").Inc()
	}
	rd, created := q.reader(id, now)
	if created && id != 0 {
		rd.owner = owner
		if q.j != nil {
			if err := q.j.owner(id, owner); err != nil {
				delete(q.readers, id)
				return nil, err
			}
		}
	}
	return rd, nil
}

// reader returns (creating) reader id's state, marked seen at now, and
// whether it was created. Caller holds q.mu.
func (q *Queue) reader(id uint32, now time.Time) (*reader, bool) {
	rd, ok := q.readers[id]
	if !ok {
		if len(q.readers) >= q.maxReaders {
			// The least recently seen, a command reader before a follower,
			// a follower before a durable one.
			rank := func(r *reader) int {
				switch {
				case r.durable:
					return 2
				case r.follower:
					return 1
				}
				return 0
			}
			var oldID uint32
			var old *reader
			for rid, r := range q.readers {
				if old == nil || rank(r) < rank(old) || (rank(r) == rank(old) && r.seen.Before(old.seen)) {
					oldID, old = rid, r
				}
			}
			delete(q.readers, oldID)
			q.m.evicted.WithLabelValues("readers_full").Inc()
		}
		rd = &reader{}
		q.readers[id] = rd
	}
	rd.seen = now
	return rd, !ok
}

// sweep forgets readers idle for their ttl (a follower with its cursor, so
// it holds the alert log no more), evicts records addressed to a
// reader that has not read them within readerTTL, and alert log records
// older than alertTTL. Caller holds q.mu. A journal error is logged: the
// record stays evicted in memory and may come back after a restart, which
// readers tolerate.
func (q *Queue) sweep(now time.Time) {
	for id, rd := range q.readers {
		if now.Sub(rd.seen) < q.ttl(rd) {
			continue
		}
		delete(q.readers, id)
		if rd.follower {
			q.m.evicted.WithLabelValues("follower_gone").Inc()
		} else {
			q.m.evicted.WithLabelValues("reader_gone").Inc()
		}
	}
	var expired uint32
	var expiredSeq uint64
	for i := 0; i < len(q.items); {
		e := q.items[i]
		var reason string
		if e.rec.Requester != 0 {
			// A reader cannot have read while the BMC was down: count from
			// the restart for records restored from the journal.
			seen := e.enq
			if q.opened.After(seen) {
				seen = q.opened
			}
			if rd, ok := q.readers[e.rec.Requester]; ok && rd.seen.After(seen) {
				seen = rd.seen
			}
			if now.Sub(seen) >= q.readerTTL {
				reason = "reader_gone"
			}
		} else if e.rec.Flags&record.FlagDropped == 0 && now.Sub(e.enq) >= q.alertTTL {
			reason = "alert_expired"
			if e.alert {
				if e.rec.Index == 0 { // one per message
					expired++
				}
				expiredSeq = max(expiredSeq, e.seq)
			}
		}
		if reason == "" {
			i++
			continue
		}
		if err := q.removeAt(i); err != nil && q.j != nil {
			q.j.log.Warn("journal write of an eviction failed; the record may return after a restart", "queue", q.name, "err", err)
		}
		q.m.evicted.WithLabelValues(reason).Inc()
	}
	if expired > 0 {
		q.mark(expired, expiredSeq, now)
	}
	if err := q.trimAlerts(); err != nil && q.j != nil {
		q.j.log.Warn("journal write of an alert log trim failed", "queue", q.name, "err", err)
	}
}

// trimAlerts removes the alert log records every follower has
// acknowledged. With no follower nothing is removed. Caller holds q.mu.
func (q *Queue) trimAlerts() error {
	var low uint64
	first := true
	for _, rd := range q.readers {
		if !rd.follower {
			continue
		}
		if first || rd.cursor < low {
			low, first = rd.cursor, false
		}
	}
	if first {
		return nil
	}
	for i := 0; i < len(q.items); {
		if e := q.items[i]; e.rec.Requester == 0 && e.seq <= low {
			if err := q.removeAt(i); err != nil {
				return err
			}
			continue
		}
		i++
	}
	return nil
}

// removeAt removes items[i], journalling the removal and remembering its
// key. Caller holds q.mu.
func (q *Queue) removeAt(i int) error {
	e := q.items[i]
	k := e.rec.Key()
	if q.j != nil {
		if err := q.j.remove(k); err != nil {
			return err
		}
	}
	q.items = append(q.items[:i], q.items[i+1:]...)
	if len(q.items) == 0 {
		q.items = nil // let the backing array go
	}
	delete(q.keys, k)
	if e.rec.Requester == 0 {
		q.alerts--
	}
	q.remember(k)
	if q.j != nil {
		q.maybeCompact()
	}
	return nil
}

func (q *Queue) remember(k record.Key) {
	if _, ok := q.recent[k]; ok {
		return
	}
	q.recent[k] = struct{}{}
	q.recentQ = append(q.recentQ, k)
	if len(q.recentQ) > RecentKeys {
		delete(q.recent, q.recentQ[0])
		q.recentQ = q.recentQ[1:]
	}
}

// Status reports depth, capacity and the age of the oldest record.
func (q *Queue) Status() oem.QueueStatus {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := oem.QueueStatus{Depth: uint16(len(q.items)), Capacity: uint16(q.capacity)}
	if len(q.items) > 0 {
		s.OldestAge = max(0, q.now().Sub(q.items[0].enq))
	}
	return s
}

// Len is the number of queued records.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Readers is the number of Queue 2 readers remembered.
func (q *Queue) Readers() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.readers)
}

// Queues is the BMC's pair of queues.
type Queues struct {
	q1, q2     *Queue
	log        *slog.Logger
	afterWrite func()
}

// Open creates the queues, replaying journals from o.StateDir if set.
func Open(o Options) (*Queues, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	caps := [2]int{o.Capacity1, o.Capacity2}
	for i, c := range caps {
		if c <= 0 {
			caps[i] = DefaultCapacity
		}
		if c > 0xFFFF {
			return nil, fmt.Errorf("queue: capacity %d exceeds 65535", c)
		}
	}
	if o.ReaderTTL <= 0 {
		o.ReaderTTL = DefaultReaderTTL
	}
	if o.AlertTTL <= 0 {
		o.AlertTTL = DefaultAlertTTL
	}
	if o.FollowerTTL <= 0 {
		o.FollowerTTL = DefaultFollowerTTL
	}
	if o.AlertLog <= 0 {
		o.AlertLog = max(2, caps[1]/4)
	}
	if o.MaxReaders <= 0 {
		o.MaxReaders = DefaultMaxReaders
	}
	qs := &Queues{log: o.Logger, afterWrite: o.AfterQueue1Write}
	m1, m2 := newMetrics("1"), newMetrics("2")
	qs.q1 = newQueue("queue 1", caps[0], &o, m1)
	qs.q2 = newQueue("queue 2", caps[1], &o, m2)
	qs.q2.multi = true
	qs.q1.onChange = o.OnQueue1Change
	qs.q1.onWake = o.OnQueue1Wake
	qs.q2.onWrite = o.OnQueue2Write
	qs.q1.idle = true // the host has not read yet
	if o.StateDir != "" {
		for i, q := range []*Queue{qs.q1, qs.q2} {
			path := filepath.Join(o.StateDir, fmt.Sprintf("queue%d.journal", i+1))
			j, rp, err := openJournal(path, o.Logger)
			if err != nil {
				qs.Close()
				return nil, err
			}
			q.j = j
			for _, k := range rp.recent {
				q.remember(k)
			}
			for _, e := range rp.items {
				q.seq++
				e.seq = q.seq
				e.alert = q.multi && q.isAlert(e.rec)
				q.items = append(q.items, e)
				q.keys[e.rec.Key()] = struct{}{}
				if e.rec.Requester == 0 {
					q.alerts++
				}
			}
			if q.multi {
				q.restoreReaders(rp.cursors, rp.owners)
			}
			if len(q.items) > q.capacity {
				o.Logger.Warn("journal holds more records than the queue's capacity; keeping them all, writes refused until drained",
					"queue", q.name, "records", len(q.items), "capacity", q.capacity)
			}
			q.maybeCompact()
		}
	}
	if o.Registerer != nil {
		for _, c := range append(m1.collectors(qs.q1), m2.collectors(qs.q2)...) {
			if err := o.Registerer.Register(c); err != nil {
				qs.Close()
				return nil, fmt.Errorf("queue: register metrics: %w", err)
			}
		}
	}
	return qs, nil
}

// Queue1 is VMS→host, Queue2 host→VMS.
func (qs *Queues) Queue1() *Queue { return qs.q1 }
func (qs *Queues) Queue2() *Queue { return qs.q2 }

// Status reports both queues.
func (qs *Queues) Status() (q1, q2 oem.QueueStatus) { return qs.q1.Status(), qs.q2.Status() }

// Close closes the journals. Metrics stay registered.
func (qs *Queues) Close() error {
	var errs []error
	for _, q := range []*Queue{qs.q1, qs.q2} {
		if q == nil {
			continue
		}
		q.mu.Lock()
		if q.j != nil {
			errs = append(errs, q.j.close())
			q.j = nil
		}
		q.mu.Unlock()
	}
	return errors.Join(errs...)
}

// maybeCompact rewrites the journal when it holds many more entries than
// records. Caller holds q.mu. A failed compaction is logged and the old
// journal kept: it is still correct, only longer.
func (q *Queue) maybeCompact() {
	if q.j.entries < 2*(len(q.items)+len(q.recentQ))+256 {
		return
	}
	if err := q.j.compact(q.items, q.recentQ, q.cursors(), q.owners()); err != nil {
		q.j.log.Warn("journal compaction failed; continuing with the uncompacted journal", "path", q.j.path, "err", err)
	}
}

// cursors are the durable followers' alert log cursors, by the key they
// name (the zero key: none acknowledged yet), for the journal. Other
// followers are not journalled: after a restart they start again at the
// oldest alert kept, as a new follower does. Caller holds q.mu.
func (q *Queue) cursors() map[uint32]record.Key {
	if !q.multi {
		return nil
	}
	m := map[uint32]record.Key{}
	for id, rd := range q.readers {
		if rd.durable {
			m[id] = rd.at
		}
	}
	return m
}

// owners are the bound readers' users, for the journal. Caller holds q.mu.
func (q *Queue) owners() map[uint32]string {
	if !q.multi {
		return nil
	}
	m := map[uint32]string{}
	for id, rd := range q.readers {
		if id != 0 {
			m[id] = rd.owner
		}
	}
	return m
}

// restoreReaders brings back the readers of a journal: each bound reader
// with its user, and each durable follower with its cursor: the alert log
// record it acknowledged last, or, when that record is gone (every
// follower had passed it, or it expired) or it had acknowledged none (the
// zero key), before every alert left, which are all newer. The journal
// holds only durable followers' cursors (one written before followers
// could be short-lived holds every follower's, kept as before). They count
// as seen at the restart, so one that does not come back is forgotten
// after ReaderTTL (a durable follower after FollowerTTL). Caller holds q.mu
// (or the queue is not shared yet).
func (q *Queue) restoreReaders(cursors map[uint32]record.Key, owners map[uint32]string) {
	get := func(id uint32) *reader {
		if rd, ok := q.readers[id]; ok {
			return rd
		}
		if len(q.readers) >= q.maxReaders {
			return nil
		}
		rd := &reader{seen: q.opened}
		q.readers[id] = rd
		return rd
	}
	// Followers first: the journal also holds the bindings of every
	// command reader bound since its last compaction (most long gone),
	// which must not crowd out a follower's cursor at MaxReaders.
	for id, k := range cursors {
		rd := get(id)
		if rd == nil {
			break
		}
		rd.follower, rd.durable = true, true
		if k == (record.Key{}) {
			continue
		}
		for _, e := range q.items {
			if e.rec.Requester == 0 && e.rec.Key() == k {
				rd.cursor, rd.at = e.seq, k
				break
			}
		}
	}
	for id, o := range owners {
		if id == 0 {
			continue
		}
		if rd := get(id); rd != nil {
			rd.owner = o
		}
	}
}
