// Package journal makes hvagent answer a request id it has already
// executed from the recorded result, never running it twice, across an
// agent restart too.
//
// The journal is one append-only file:
//
//	header  "OOBJRNL1"                     8 bytes
//	record  length   u32 big-endian        bytes in body
//	        crc      u32 big-endian        CRC-32C (Castagnoli) of body
//	        body     kind u8               1 begun, 2 result, 3 aborted
//	                 id   u64 big-endian   request id
//	                 time i64 big-endian   unix nanoseconds when written
//	                 data                  result bytes (kind 2); kind 1 may
//	                                       carry a note saying what was begun
//	                                       (the agent: "start app1"); else empty
//
// Every record is fsynced before the call that wrote it returns. On Open a
// record that is short or fails its CRC ends the journal: the file is cut
// there (a crash tears at most the last record; see [Journal.Recovered]).
//
// The protocol for one request:
//
//	res, claimed, err := j.Begin(ctx, id)
//	switch {
//	case errors.Is(err, ErrInProgress):  // a duplicate is running now
//	case errors.Is(err, ErrInterrupted): // begun before a crash: the outcome is unknown
//	case !claimed:                       // done before: send res again
//	default:                             // run it, then j.Put(id, result) (or j.Abort(id))
//	}
//
// A request begun but never finished before a crash is not run again: Begin
// answers ErrInterrupted until a result is Put for it (say, an error reply
// telling the VMS to check the VM's state). [Journal.Interrupted] lists
// them with the note they were begun with ([Journal.BeginNote]), so a
// restarted agent knows what may still be under way on the hypervisor.
//
// Ids are remembered by time, not by count: each id for Options.TTL
// (default 24 h) after its first record, measured on the monotonic clock
// (Options.Mono), so stepping the wall clock neither forgets ids nor keeps
// them longer; across a restart an id's age is read from the wall time in
// its record. MaxEntries only bounds memory: at it, Begin refuses new ids
// (ErrFull) rather than forget one inside its window. The file is rewritten
// (write, fsync, rename) once it holds twice as many records as live ids.
//
// Write errors never make the journal lie. A record is applied only after
// its fsync returned; an append that fails (short write, ENOSPC, EIO, a
// failed fsync) is cut back to the last whole record and reported
// (ErrUnwritable), and the next write tries again; if even the cut-back
// fails the file's end is unknown and every later write fails until a
// reopen. A failure after a record reached the disk (compaction) is logged,
// never returned: the record stands. A Put that fails releases its waiters,
// and the id stays "begun": its outcome is unknown, answered like an id
// interrupted by a crash, never run again. On Open every whole record is
// kept: a corrupt span inside the file is skipped (and the file rewritten
// without it), a torn tail is cut.
package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Sentinel errors.
var (
	ErrInProgress  = errors.New("journal: request in progress")
	ErrInterrupted = errors.New("journal: request was begun before a restart and its outcome is unknown")
	ErrConflict    = errors.New("journal: a different result is already recorded")
	ErrNotBegun    = errors.New("journal: request not begun")
	ErrClosed      = errors.New("journal: closed")
	// ErrUnwritable: a record could not be written (disk full, I/O error);
	// nothing of it stands. The request must not run.
	ErrUnwritable = errors.New("journal: cannot write")
	// ErrFull: MaxEntries ids are inside their retention; a new one is
	// refused rather than an old one forgotten.
	ErrFull = errors.New("journal: full (every remembered id is inside its retention)")
)

const (
	header    = "OOBJRNL1"
	recHead   = 8  // length + crc
	bodyHead  = 17 // kind + id + time
	maxRecord = 1 << 20
	// compactSlack: records beyond twice the live ids before a rewrite.
	compactSlack = 1024
)

type kind byte

const (
	kindBegun   kind = 1
	kindResult  kind = 2
	kindAborted kind = 3
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options bound the journal.
type Options struct {
	// TTL is how long an id is remembered after its first record (default
	// 24 h). Keep it at least the VMS's issue-time window plus the longest
	// time a VMS retries one request id.
	TTL time.Duration
	// MaxEntries bounds the ids held in memory (default 1,000,000); at it,
	// Begin refuses new ids with ErrFull.
	MaxEntries int
	// Now is the wall clock, written into records (default time.Now).
	Now func() time.Time
	// Mono is a monotonic clock, the time since any fixed origin: retention
	// is measured on it. Default: the monotonic reading of time.Now, or,
	// when only Now is given (tests), Now's readings.
	Mono func() time.Duration
	// FS is the filesystem (default OS).
	FS FS
	// Logger gets what the journal cannot return: a failed compaction
	// (default: discard).
	Logger *slog.Logger
}

type entry struct {
	kind kind // kindBegun or kindResult
	data []byte
	at   time.Time     // wall time of the id's first record
	exp  time.Duration // Mono time the id is forgotten at
}

// Journal is safe for concurrent use.
type Journal struct {
	path string
	opt  Options
	fs   FS

	mu        sync.Mutex
	f         File
	size      int64 // end of the last whole record in f
	broken    error // an append could not be cut back: the file's end is unknown
	entries   map[uint64]*entry
	order     []uint64 // ids by first record, oldest first (may hold dropped ids)
	inflight  map[uint64]chan struct{}
	records   int // records in the file
	recovered int64
	next      int // compact when records reach it (after a failed compaction)
	written   Stats
}

// Stats counts what a journal wrote since it was opened (compactions
// included) and what it holds.
type Stats struct {
	Records    int64 // records appended
	Bytes      int64 // bytes appended
	Compaction int64 // rewrites
	FileBytes  int64 // file size now
	IDs        int   // ids remembered now
}

// Open opens (creating if needed) the journal at path with default options.
func Open(path string) (*Journal, error) { return OpenWith(path, Options{}) }

// OpenWith opens the journal at path. The file is locked (flock) against a
// second agent.
func OpenWith(path string, opt Options) (*Journal, error) {
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = 1_000_000
	}
	if opt.TTL <= 0 {
		opt.TTL = 24 * time.Hour
	}
	if opt.Mono == nil {
		now := opt.Now
		if now == nil {
			now = time.Now
		}
		origin := now()
		opt.Mono = func() time.Duration { return now().Sub(origin) }
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.FS == nil {
		opt.FS = OS
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	f, err := opt.FS.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := f.Lock(); err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: locked by another process: %w", path, err)
	}
	j := &Journal{path: path, opt: opt, fs: opt.FS, f: f,
		entries: map[uint64]*entry{}, inflight: map[uint64]chan struct{}{}}
	skipped, err := j.load()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	j.prune()
	if skipped || j.records > 2*len(j.entries)+16 {
		// A corrupt span inside the file is rewritten away now: it must
		// not be read again, nor records appended after it be in doubt.
		if err := j.compact(); err != nil {
			j.f.Close()
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
	}
	return j, nil
}

// load reads every record and leaves f at the end of the last whole one.
// A span that is not a whole record is skipped when a whole record follows
// it (skipped reports one), and cut when it is the file's tail (a torn
// append).
func (j *Journal) load() (skipped bool, err error) {
	data, err := io.ReadAll(j.f)
	if err != nil {
		return false, err
	}
	if len(data) == 0 {
		if _, err := j.f.Write([]byte(header)); err != nil {
			return false, err
		}
		if err := j.f.Sync(); err != nil {
			return false, err
		}
		j.size = int64(len(header))
		return false, j.fs.SyncDir(j.path)
	}
	if !bytes.HasPrefix(data, []byte(header)) {
		return false, fmt.Errorf("not a journal (header %q)", data[:min(len(data), len(header))])
	}
	wall, mono := j.opt.Now(), j.opt.Mono()
	off, good := len(header), len(header)
	var lost int
	for off < len(data) {
		if body, err := parseRecord(data[off:]); err == nil {
			j.applyLoaded(body, wall, mono)
			j.records++
			off += recHead + len(body)
			good = off
			continue
		}
		next := resync(data, off+1)
		if next < 0 {
			break // the rest is a torn tail
		}
		lost += next - off
		off = next
	}
	tail := len(data) - good
	j.recovered = int64(lost + tail)
	if tail > 0 {
		if err := j.f.Truncate(int64(good)); err != nil {
			return false, err
		}
		if err := j.f.Sync(); err != nil {
			return false, err
		}
	}
	j.size = int64(good)
	_, err = j.f.Seek(int64(good), io.SeekStart)
	return lost > 0, err
}

// resync finds the next whole record in data at or after from (-1: none).
func resync(data []byte, from int) int {
	for i := from; i+recHead+bodyHead <= len(data); i++ {
		if _, err := parseRecord(data[i:]); err == nil {
			return i
		}
	}
	return -1
}

// parseRecord reads the record at the start of b and returns its body.
func parseRecord(b []byte) ([]byte, error) {
	if len(b) < recHead {
		return nil, io.ErrUnexpectedEOF
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n < bodyHead || n > maxRecord {
		return nil, fmt.Errorf("bad record length %d", n)
	}
	if uint64(len(b)-recHead) < uint64(n) {
		return nil, io.ErrUnexpectedEOF
	}
	body := b[recHead : recHead+int(n)]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[4:8]) {
		return nil, errors.New("bad CRC")
	}
	if k := kind(body[0]); k != kindBegun && k != kindResult && k != kindAborted {
		return nil, fmt.Errorf("bad record kind %d", k)
	}
	return body, nil
}

// applyLoaded applies a record read from the file: its age is its wall
// time's distance from now (never negative, so a clock stepped back cannot
// make an id older).
func (j *Journal) applyLoaded(body []byte, wall time.Time, mono time.Duration) {
	at := time.Unix(0, int64(binary.BigEndian.Uint64(body[9:17])))
	age := max(wall.Sub(at), 0)
	j.apply(body, mono+j.opt.TTL-age)
}

// apply applies one record body; exp is when a new id is forgotten.
func (j *Journal) apply(body []byte, exp time.Duration) {
	k := kind(body[0])
	id := binary.BigEndian.Uint64(body[1:9])
	at := time.Unix(0, int64(binary.BigEndian.Uint64(body[9:17])))
	if k == kindAborted {
		delete(j.entries, id)
		return
	}
	e, ok := j.entries[id]
	if !ok {
		e = &entry{at: at, exp: exp}
		j.entries[id] = e
		j.order = append(j.order, id)
	}
	e.kind = k
	e.data = append([]byte(nil), body[bodyHead:]...)
}

func encode(k kind, id uint64, at time.Time, data []byte) []byte {
	b := make([]byte, recHead+bodyHead+len(data))
	binary.BigEndian.PutUint32(b[0:4], uint32(bodyHead+len(data)))
	body := b[recHead:]
	body[0] = byte(k)
	binary.BigEndian.PutUint64(body[1:9], id)
	binary.BigEndian.PutUint64(body[9:17], uint64(at.UnixNano()))
	copy(body[bodyHead:], data)
	binary.BigEndian.PutUint32(b[4:8], crc32.Checksum(body, castagnoli))
	return b
}

// write appends one record and fsyncs it, then applies it. An append that
// fails is cut back and reported (ErrUnwritable); nothing after the fsync
// fails the write. Caller holds mu.
func (j *Journal) write(k kind, id uint64, data []byte) error {
	if j.f == nil {
		return ErrClosed
	}
	if j.broken != nil {
		return fmt.Errorf("%w: an earlier failed write could not be cut back (%w); restart the agent to recover the file", ErrUnwritable, j.broken)
	}
	if len(data) > maxRecord-bodyHead {
		return fmt.Errorf("journal: result of %d bytes is too large", len(data))
	}
	rec := encode(k, id, j.opt.Now(), data)
	if _, err := j.f.Write(rec); err != nil {
		return j.cutBack("write", err)
	}
	if err := j.f.Sync(); err != nil {
		return j.cutBack("fsync", err)
	}
	// The record is on disk: from here nothing undoes it.
	j.size += int64(len(rec))
	j.written.Records++
	j.written.Bytes += int64(len(rec))
	j.apply(rec[recHead:], j.opt.Mono()+j.opt.TTL)
	j.records++
	j.prune()
	j.maybeCompact()
	return nil
}

// cutBack drops a failed append so the file ends at its last whole record
// (as bmcsim's queue journal does), and returns the error to report. If
// the file cannot be cut back, the journal takes no more writes.
func (j *Journal) cutBack(op string, cause error) error {
	err := j.f.Truncate(j.size)
	if err == nil {
		_, err = j.f.Seek(j.size, io.SeekStart)
	}
	if err == nil {
		err = j.f.Sync()
	}
	if err != nil {
		j.broken = fmt.Errorf("%s failed (%w), then cutting it back failed: %w", op, cause, err)
		j.opt.Logger.Error("journal: a failed append could not be cut back; no more writes until a restart (which cuts the torn tail)",
			"file", j.path, "err", j.broken)
		return fmt.Errorf("%w: %w", ErrUnwritable, j.broken)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnwritable, op, cause)
}

// maybeCompact rewrites the file once it holds twice as many records as
// live ids. A failure is logged and retried later: the records written
// stand. Caller holds mu.
func (j *Journal) maybeCompact() {
	if j.records <= 2*len(j.entries)+compactSlack || j.records < j.next {
		return
	}
	if err := j.compact(); err != nil {
		j.next = j.records + max(compactSlack, j.records/2)
		j.opt.Logger.Error("journal compaction failed; the journal stays as it is and grows until a later compaction succeeds",
			"file", j.path, "records", j.records, "err", err)
	}
}

// prune drops the ids past their retention, oldest first (never one in
// flight). Caller holds mu.
func (j *Journal) prune() {
	now := j.opt.Mono()
	i := 0
	for ; i < len(j.order); i++ {
		id := j.order[i]
		e, ok := j.entries[id]
		if !ok {
			continue // aborted or already dropped
		}
		if e.exp > now {
			break
		}
		if _, busy := j.inflight[id]; busy {
			break
		}
		delete(j.entries, id)
	}
	j.order = j.order[i:]
}

// compact rewrites the file with the live entries only. Caller holds mu.
// Once the new file is renamed into place it is the journal, whatever
// fails after.
func (j *Journal) compact() error {
	tmp := j.path + ".tmp"
	f, err := j.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: compact: %w", err)
	}
	buf := bytes.NewBufferString(header)
	var order []uint64
	for _, id := range j.order {
		e, ok := j.entries[id]
		if !ok {
			continue
		}
		order = append(order, id)
		// Keep the first-seen time so the retention still counts from it.
		buf.Write(encode(e.kind, id, e.at, e.data))
	}
	size := int64(buf.Len())
	_, err = f.Write(buf.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Lock()
	}
	if err == nil {
		err = j.fs.Rename(tmp, j.path)
	}
	if err != nil {
		f.Close()
		j.fs.Remove(tmp)
		return fmt.Errorf("journal: compact: %w", err)
	}
	j.f.Close()
	j.f, j.size, j.records, j.order, j.next = f, size, len(order), order, 0
	j.written.Compaction++
	if err := j.fs.SyncDir(j.path); err != nil {
		return fmt.Errorf("journal: compact: the rewritten file is in use, but its directory entry is not yet durable: %w", err)
	}
	return nil
}

// Recovered is how many bytes of torn or corrupt records Open dropped.
func (j *Journal) Recovered() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.recovered
}

// Len is the number of ids remembered (results, in flight and interrupted).
func (j *Journal) Len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.entries)
}

// Stats reports what the journal wrote and holds.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.written
	s.FileBytes, s.IDs = j.size, len(j.entries)
	return s
}

// Get returns the recorded result of id.
func (j *Journal) Get(id uint64) ([]byte, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.entries[id]
	if !ok || e.kind != kindResult || e.exp <= j.opt.Mono() {
		return nil, false
	}
	return append([]byte(nil), e.data...), true
}

// Begin claims id for execution. It returns the recorded result and
// claimed=false if id was done before; claimed=true if the caller must now
// run it and then Put (or Abort). If another caller holds id, Begin waits
// for its result until ctx ends, then returns ErrInProgress. For an id
// begun before a restart (or whose result could not be written) and never
// finished it returns ErrInterrupted.
func (j *Journal) Begin(ctx context.Context, id uint64) (result []byte, claimed bool, err error) {
	return j.BeginNote(ctx, id, nil)
}

// BeginNote is Begin, recording note with the claim (see Interrupted).
func (j *Journal) BeginNote(ctx context.Context, id uint64, note []byte) (result []byte, claimed bool, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		if j.f == nil {
			return nil, false, ErrClosed
		}
		if ch, busy := j.inflight[id]; busy {
			j.mu.Unlock()
			select {
			case <-ch:
				j.mu.Lock()
				continue
			case <-ctx.Done():
				j.mu.Lock()
				return nil, false, fmt.Errorf("%w: id %d: %w", ErrInProgress, id, ctx.Err())
			}
		}
		if e, ok := j.entries[id]; ok {
			if e.exp <= j.opt.Mono() {
				delete(j.entries, id) // past its retention: a new request
			} else if e.kind == kindResult {
				return append([]byte(nil), e.data...), false, nil
			} else {
				return nil, false, fmt.Errorf("%w: id %d", ErrInterrupted, id)
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		if len(j.entries) >= j.opt.MaxEntries {
			j.prune()
			if len(j.entries) >= j.opt.MaxEntries {
				return nil, false, fmt.Errorf("%w: %d ids", ErrFull, len(j.entries))
			}
		}
		if err := j.write(kindBegun, id, note); err != nil {
			return nil, false, err
		}
		j.inflight[id] = make(chan struct{})
		return nil, true, nil
	}
}

// Put records the result of id, durably, and wakes duplicates waiting in
// Begin. Putting the same result again is a no-op; a different one is
// ErrConflict. If it fails (ErrUnwritable) the waiters are woken all the
// same and the id stays begun: its outcome is unknown to the journal
// (ErrInterrupted), and it is never run again.
func (j *Journal) Put(id uint64, result []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e, ok := j.entries[id]; ok && e.kind == kindResult {
		if string(e.data) == string(result) {
			return nil
		}
		return fmt.Errorf("%w: id %d", ErrConflict, id)
	}
	err := j.write(kindResult, id, result)
	j.release(id)
	return err
}

// Abort releases a claimed id without a result: the request did not run
// and may be tried again. If the abort record cannot be written the id is
// released all the same (in this process it did not run); after a restart
// it reads as interrupted.
func (j *Journal) Abort(id uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, busy := j.inflight[id]; !busy {
		return fmt.Errorf("%w: id %d", ErrNotBegun, id)
	}
	err := j.write(kindAborted, id, nil)
	if err != nil {
		delete(j.entries, id)
	}
	j.release(id)
	return err
}

func (j *Journal) release(id uint64) {
	if ch, ok := j.inflight[id]; ok {
		close(ch)
		delete(j.inflight, id)
	}
}

// Close closes the file. Claims still in flight become "interrupted" for
// the next Open.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	for id := range j.inflight {
		j.release(id)
	}
	return err
}
