// Package queue is the pair of buffer queues inside a simulated BMC:
// Queue 1 carries records from the VMS (written over the LAN) to the host
// (read over the system interface), Queue 2 the other way. See package
// internal/oem for the commands and DESIGN.md for the semantics:
//
//   - a write of a (msg id, fragment) already queued, or removed within the
//     last [RecentKeys] acknowledgements, succeeds without queueing it twice;
//   - a full queue refuses a write with completion code 0xC4, never drops;
//   - reads are two-phase: the head leaves the queue only when the next read
//     acknowledges it; a read without an ack, or with a stale one, returns the
//     same head again;
//   - with a state directory every change is journalled and fsynced before it
//     is answered (see journal.go), so records survive a restart.
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

// DefaultCapacity is the default number of records per queue.
const DefaultCapacity = 256

// RecentKeys is how many acknowledged (msg id, fragment) keys a queue
// remembers so a late retransmitted write is not queued again.
const RecentKeys = 1024

// Options configure Open. Zero values take defaults.
type Options struct {
	Capacity1, Capacity2 int // records; default DefaultCapacity, at most 65535
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
	Logger         *slog.Logger
}

type entry struct {
	rec record.Record
	enq time.Time
}

// Queue is one bounded FIFO of records. It is safe for concurrent use.
type Queue struct {
	name     string
	capacity int
	now      func() time.Time
	onChange func(int)

	mu      sync.Mutex
	items   []entry
	keys    map[record.Key]struct{}
	recent  map[record.Key]struct{}
	recentQ []record.Key
	j       *journal

	m *metrics
}

func newQueue(name string, capacity int, o *Options, m *metrics) *Queue {
	return &Queue{
		name: name, capacity: capacity, now: o.Now, m: m,
		keys: map[record.Key]struct{}{}, recent: map[record.Key]struct{}{},
	}
}

// Write appends r unless its key is already queued (or was just removed).
// It returns ErrFull when the queue is at capacity.
func (q *Queue) Write(r record.Record) error {
	depth, changed, err := q.write(r)
	if changed && q.onChange != nil {
		q.onChange(depth)
	}
	return err
}

func (q *Queue) write(r record.Record) (int, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := r.Key()
	if _, ok := q.keys[k]; ok {
		q.m.duplicates.Inc()
		return len(q.items), false, nil
	}
	if _, ok := q.recent[k]; ok {
		q.m.duplicates.Inc()
		return len(q.items), false, nil
	}
	if len(q.items) >= q.capacity {
		q.m.full.Inc()
		return len(q.items), false, fmt.Errorf("%w: %s holds %d records", ErrFull, q.name, q.capacity)
	}
	e := entry{rec: r, enq: q.now()}
	if q.j != nil {
		if err := q.j.put(e); err != nil {
			return len(q.items), false, err
		}
	}
	q.items = append(q.items, e)
	q.keys[k] = struct{}{}
	q.m.writes.Inc()
	if q.j != nil {
		q.maybeCompact()
	}
	return len(q.items), true, nil
}

// Read acknowledges ack if it names the head, then returns the head, or
// ok=false when the queue is empty.
func (q *Queue) Read(ack *oem.Ack) (rec record.Record, ok bool, err error) {
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
			if q.j != nil {
				if err := q.j.remove(head); err != nil {
					return record.Record{}, false, len(q.items), false, err
				}
			}
			q.items[0] = entry{}
			q.items = q.items[1:]
			delete(q.keys, head)
			q.remember(head)
			q.m.acks.Inc()
			changed = true
			if q.j != nil {
				q.maybeCompact()
			}
		}
	}
	if len(q.items) == 0 {
		q.items = nil // let the backing array go
		return record.Record{}, false, 0, changed, nil
	}
	return q.items[0].rec, true, len(q.items), changed, nil
}

func (q *Queue) remember(k record.Key) {
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

// Queues is the BMC's pair of queues.
type Queues struct {
	q1, q2 *Queue
	log    *slog.Logger
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
	qs := &Queues{log: o.Logger}
	m1, m2 := newMetrics("1"), newMetrics("2")
	qs.q1 = newQueue("queue 1", caps[0], &o, m1)
	qs.q2 = newQueue("queue 2", caps[1], &o, m2)
	qs.q1.onChange = o.OnQueue1Change
	if o.StateDir != "" {
		for i, q := range []*Queue{qs.q1, qs.q2} {
			path := filepath.Join(o.StateDir, fmt.Sprintf("queue%d.journal", i+1))
			j, items, err := openJournal(path, o.Logger)
			if err != nil {
				qs.Close()
				return nil, err
			}
			q.j = j
			for _, e := range items {
				q.items = append(q.items, e)
				q.keys[e.rec.Key()] = struct{}{}
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
	if q.j.entries < 2*len(q.items)+256 {
		return
	}
	if err := q.j.compact(q.items); err != nil {
		q.j.log.Warn("journal compaction failed; continuing with the uncompacted journal", "path", q.j.path, "err", err)
	}
}
