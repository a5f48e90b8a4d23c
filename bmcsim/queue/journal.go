package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ooblab/ooblab/internal/record"
)

// Journal file: a sequence of entries; a put is fsynced before the write is
// answered, a remove is written at once and reaches the disk with the next
// fsync (see remove). Entries are written under the queue's lock (so their
// order is the queue's), but the fsync a put waits for runs after the lock
// is released, and one fsync serves every put written before it (group
// commit): reads and acks never wait for the disk.
//
//	+-------------+--------------+------+-----------------------------+
//	| len u32 LE  | CRC32 u32 LE | type | payload                     |
//	| (type+body) | IEEE of      |      |                             |
//	|             | type+payload |      |                             |
//	+-------------+--------------+------+-----------------------------+
//	type 1 put:    enqueue time, unix ms i64 LE | record (package record)
//	type 2 remove: msg id u64 LE | fragment index u16 LE
//	type 3 cursor: reader id u32 LE | msg id u64 LE | fragment index u16 LE
//	               (Queue 2: the alert log record that durable follower
//	               acknowledged last, or the zero key when it becomes
//	               durable before acknowledging any; like a remove, fsynced
//	               with the next put. Only durable followers are journalled
//	               (oem.ReadDurable); a journal written before followers
//	               could be short-lived has every follower's, which are
//	               restored as durable, as they were kept before)
//	type 4 owner:  reader id u32 LE | BMC user name (0..maxOwner bytes)
//	               (Queue 2: the reader id was bound to that user; the
//	               records put after it and addressed to that id are the
//	               user's. Written when a binding is made, before any answer
//	               to it, so the answer's fsync carries it)
//
// Replay applies the entries in order. A short or corrupt entry (a crash in
// the middle of a write) ends the journal: it and anything after it are
// truncated away and logged. The keys of the last RecentKeys removals come
// back as the queue's recently removed keys, so a write retried across a
// restart is still recognised as a duplicate. Compaction writes the recent
// keys as remove entries, the queued records as put entries and the
// durable followers' cursors as cursor entries to a
// temporary file, fsyncs it and renames it over the journal (under the
// queue's lock; it runs once every few thousand entries).
const (
	entryPut    = 1
	entryRemove = 2
	entryCursor = 3
	entryOwner  = 4
	maxEntry    = 1 + 8 + record.MaxRecordLen
	// maxOwner bounds a user name in an owner entry: IPMI user names are at
	// most 16 bytes.
	maxOwner = 32
)

type journal struct {
	path    string
	f       *os.File
	entries int   // entries in the file, for compaction
	size    int64 // bytes of whole entries; a failed write is cut back to it
	log     *slog.Logger

	gen atomic.Uint64 // bumped by compaction (which fsyncs everything)

	smu    sync.Mutex // serializes fsyncs; never held with the queue's lock
	synced int64      // bytes of generation syncGen known to be on disk
	sgen   uint64
}

func appendEntry(b []byte, typ byte, payload []byte) []byte {
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(1+len(payload)))
	c := crc32.NewIEEE()
	c.Write([]byte{typ})
	c.Write(payload)
	binary.LittleEndian.PutUint32(hdr[4:], c.Sum32())
	b = append(b, hdr[:]...)
	b = append(b, typ)
	return append(b, payload...)
}

func putPayload(e entry) ([]byte, error) {
	b := binary.LittleEndian.AppendUint64(nil, uint64(e.enq.UnixMilli()))
	return e.rec.AppendBinary(b)
}

// append writes one entry (not yet fsynced). Caller holds the queue's lock.
func (j *journal) append(typ byte, payload []byte) error {
	b := appendEntry(nil, typ, payload)
	if _, err := j.f.Write(b); err != nil {
		j.cutBack()
		return fmt.Errorf("queue: journal %s: %w", j.path, err)
	}
	j.entries++
	j.size += int64(len(b))
	return nil
}

// put writes e and returns the function that makes it durable; call it
// after releasing the queue's lock, before answering the write.
func (j *journal) put(e entry) (func() error, error) {
	p, err := putPayload(e)
	if err != nil {
		return nil, err
	}
	if err := j.append(entryPut, p); err != nil {
		return nil, err
	}
	f, gen, off := j.f, j.gen.Load(), j.size
	return func() error { return j.syncTo(f, gen, off) }, nil
}

// syncTo makes the first off bytes of generation gen (file f) durable. A
// compaction since then rewrote and fsynced everything, so nothing is left
// to do; a concurrent fsync that covered off serves this caller too.
func (j *journal) syncTo(f *os.File, gen uint64, off int64) error {
	j.smu.Lock()
	defer j.smu.Unlock()
	if j.gen.Load() != gen || (j.sgen == gen && j.synced >= off) {
		return nil
	}
	if err := f.Sync(); err != nil {
		if j.gen.Load() != gen { // closed by a compaction, which fsynced it all
			return nil
		}
		return fmt.Errorf("queue: journal %s: fsync: %w", j.path, err)
	}
	j.sgen, j.synced = gen, off
	return nil
}

// cursor records that follower id acknowledged the alert log up to k, so a
// restarted BMC does not show it those alerts again. Not fsynced (see
// remove): a crash first shows it the last alerts again, which is what a
// follower without a cursor saw before.
func (j *journal) cursor(id uint32, k record.Key) error {
	return j.append(entryCursor, cursorPayload(id, k))
}

// owner records that reader id was bound to user name. Not fsynced: the
// put of the first answer to it is, and carries it.
func (j *journal) owner(id uint32, name string) error {
	return j.append(entryOwner, ownerPayload(id, name))
}

func ownerPayload(id uint32, name string) []byte {
	if len(name) > maxOwner {
		name = name[:maxOwner]
	}
	return append(binary.LittleEndian.AppendUint32(nil, id), name...)
}

func cursorPayload(id uint32, k record.Key) []byte {
	p := binary.LittleEndian.AppendUint32(nil, id)
	p = binary.LittleEndian.AppendUint64(p, k.MsgID)
	return binary.LittleEndian.AppendUint16(p, k.Index)
}

func (j *journal) remove(k record.Key) error {
	p := binary.LittleEndian.AppendUint64(nil, k.MsgID)
	p = binary.LittleEndian.AppendUint16(p, k.Index)
	// A removal is not fsynced: the next put's fsync (or close) carries it.
	// If bmcsim dies first, the acknowledged record comes back after the
	// restart and is read again; readers drop it (record reassembly, the
	// seal's replay window, hvagent's request-id journal). Losing a record is
	// never possible; reading one twice is, and is handled. This halves the
	// fsyncs on the read path (measured: ~0.3-1 ms each here).
	return j.append(entryRemove, p)
}

// cutBack drops a partly written entry so later entries stay readable.
func (j *journal) cutBack() {
	if err := j.f.Truncate(j.size); err == nil {
		_, _ = j.f.Seek(j.size, io.SeekStart)
	}
}

func (j *journal) close() error {
	serr := j.f.Sync() // pending removals
	if err := j.f.Close(); err != nil {
		return err
	}
	return serr
}

// replayed is what a journal holds: the records (each addressed one with its
// owner), the keys of the last RecentKeys removals, oldest first, the
// durable followers' alert log cursors and the readers' bindings.
type replayed struct {
	items   []entry
	recent  []record.Key
	cursors map[uint32]record.Key
	owners  map[uint32]string
}

// openJournal opens (creating) path and returns what it holds.
func openJournal(path string, log *slog.Logger) (*journal, replayed, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, replayed{}, fmt.Errorf("queue: state dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, replayed{}, fmt.Errorf("queue: journal: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, replayed{}, fmt.Errorf("queue: journal %s: %w", path, err)
	}
	rp, n, good, perr := replay(data)
	if perr != nil {
		log.Warn("journal ends in a torn or corrupt entry (likely a crash mid-write); dropping it and anything after it",
			"path", path, "offset", good, "dropped_bytes", len(data)-good, "err", perr)
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return nil, replayed{}, fmt.Errorf("queue: journal %s: truncate torn tail: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, replayed{}, fmt.Errorf("queue: journal %s: %w", path, err)
		}
	}
	if _, err := f.Seek(int64(good), io.SeekStart); err != nil {
		f.Close()
		return nil, replayed{}, err
	}
	return &journal{path: path, f: f, entries: n, size: int64(good), log: log}, rp, nil
}

var errTorn = errors.New("torn or corrupt entry")

// replay applies entries; it returns what the journal holds, the number of
// good entries, the length of the good prefix, and why it stopped early.
func replay(data []byte) (rp replayed, n, good int, err error) {
	keys := map[record.Key]int{}
	rp.cursors = map[uint32]record.Key{}
	rp.owners = map[uint32]string{}
	defer func() {
		if len(rp.recent) > RecentKeys {
			rp.recent = rp.recent[len(rp.recent)-RecentKeys:]
		}
	}()
	off := 0
	for off < len(data) {
		if len(data)-off < 8 {
			return rp, n, off, fmt.Errorf("%w: %d-byte header", errTorn, len(data)-off)
		}
		l := int(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if l < 1 || l > maxEntry {
			return rp, n, off, fmt.Errorf("%w: length %d", errTorn, l)
		}
		if len(data)-off-8 < l {
			return rp, n, off, fmt.Errorf("%w: %d of %d bytes", errTorn, len(data)-off-8, l)
		}
		body := data[off+8 : off+8+l]
		if crc32.ChecksumIEEE(body) != sum {
			return rp, n, off, fmt.Errorf("%w: CRC mismatch", errTorn)
		}
		typ, p := body[0], body[1:]
		switch typ {
		case entryPut:
			if len(p) < 8 {
				return rp, n, off, fmt.Errorf("%w: short put", errTorn)
			}
			rec, rerr := record.Parse(p[8:])
			if rerr != nil {
				return rp, n, off, fmt.Errorf("%w: %w", errTorn, rerr)
			}
			if _, dup := keys[rec.Key()]; !dup {
				keys[rec.Key()] = len(rp.items)
				e := entry{rec: rec, enq: time.UnixMilli(int64(binary.LittleEndian.Uint64(p)))}
				if rec.Requester != 0 {
					e.owner = rp.owners[rec.Requester]
				}
				rp.items = append(rp.items, e)
			}
		case entryRemove:
			if len(p) != 10 {
				return rp, n, off, fmt.Errorf("%w: remove of %d bytes", errTorn, len(p))
			}
			k := record.Key{MsgID: binary.LittleEndian.Uint64(p), Index: binary.LittleEndian.Uint16(p[8:])}
			rp.recent = append(rp.recent, k)
			if _, ok := keys[k]; ok {
				for i := range rp.items {
					if rp.items[i].rec.Key() == k {
						rp.items = append(rp.items[:i], rp.items[i+1:]...)
						break
					}
				}
				delete(keys, k)
			}
		case entryCursor:
			if len(p) != 14 {
				return rp, n, off, fmt.Errorf("%w: cursor of %d bytes", errTorn, len(p))
			}
			rp.cursors[binary.LittleEndian.Uint32(p)] = record.Key{MsgID: binary.LittleEndian.Uint64(p[4:]), Index: binary.LittleEndian.Uint16(p[12:])}
		case entryOwner:
			if len(p) < 4 || len(p) > 4+maxOwner {
				return rp, n, off, fmt.Errorf("%w: owner of %d bytes", errTorn, len(p))
			}
			rp.owners[binary.LittleEndian.Uint32(p)] = string(p[4:])
		default:
			return rp, n, off, fmt.Errorf("%w: type %d", errTorn, typ)
		}
		off += 8 + l
		n++
	}
	return rp, n, off, nil
}

// compact replaces the journal with one remove entry per recently removed
// key, then one put entry per queued record (an addressed one preceded by
// an owner entry when its owner is not the one written last for its
// reader), then one owner entry per bound reader and one cursor entry per
// durable follower. Caller holds the queue's lock.
func (j *journal) compact(items []entry, recent []record.Key, cursors map[uint32]record.Key, owners map[uint32]string) error {
	var b []byte
	n := 0
	add := func(typ byte, p []byte) { b = appendEntry(b, typ, p); n++ }
	for _, k := range recent {
		p := binary.LittleEndian.AppendUint64(nil, k.MsgID)
		p = binary.LittleEndian.AppendUint16(p, k.Index)
		add(entryRemove, p)
	}
	written := map[uint32]string{}
	for _, e := range items {
		if id := e.rec.Requester; id != 0 {
			if w, ok := written[id]; !ok || w != e.owner {
				add(entryOwner, ownerPayload(id, e.owner))
				written[id] = e.owner
			}
		}
		p, err := putPayload(e)
		if err != nil {
			return err
		}
		add(entryPut, p)
	}
	for id, o := range owners {
		if w, ok := written[id]; !ok || w != o {
			add(entryOwner, ownerPayload(id, o))
		}
	}
	for id, k := range cursors {
		add(entryCursor, cursorPayload(id, k))
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, j.path); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(j.path)); err == nil {
		d.Sync()
		d.Close()
	}
	j.gen.Add(1) // before closing: a syncTo failing on the closed file sees it
	j.f.Close()
	j.f = f // positioned at the end of what it wrote
	j.entries = n
	j.size = int64(len(b))
	return nil
}
