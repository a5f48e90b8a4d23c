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
// The journal keeps at most MaxEntries ids and forgets ids older than TTL,
// oldest first, and rewrites the file (write, fsync, rename) once it holds
// twice as many records as live ids.
package journal

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Sentinel errors.
var (
	ErrInProgress  = errors.New("journal: request in progress")
	ErrInterrupted = errors.New("journal: request was begun before a restart and its outcome is unknown")
	ErrConflict    = errors.New("journal: a different result is already recorded")
	ErrNotBegun    = errors.New("journal: request not begun")
	ErrClosed      = errors.New("journal: closed")
)

const (
	header    = "OOBJRNL1"
	recHead   = 8  // length + crc
	bodyHead  = 17 // kind + id + time
	maxRecord = 1 << 20
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
	MaxEntries int              // default 10000
	TTL        time.Duration    // default 24 h
	Now        func() time.Time // default time.Now
}

type entry struct {
	kind kind // kindBegun or kindResult
	data []byte
	at   time.Time
}

// Journal is safe for concurrent use.
type Journal struct {
	path string
	opt  Options

	mu        sync.Mutex
	f         *os.File
	entries   map[uint64]*entry
	order     []uint64 // ids by first record, oldest first (may hold dropped ids)
	inflight  map[uint64]chan struct{}
	records   int // records in the file
	recovered int64
}

// Open opens (creating if needed) the journal at path with default options.
func Open(path string) (*Journal, error) { return OpenWith(path, Options{}) }

// OpenWith opens the journal at path. The file is locked (flock) against a
// second agent.
func OpenWith(path string, opt Options) (*Journal, error) {
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = 10000
	}
	if opt.TTL <= 0 {
		opt.TTL = 24 * time.Hour
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: locked by another process: %w", path, err)
	}
	j := &Journal{path: path, opt: opt, f: f,
		entries: map[uint64]*entry{}, inflight: map[uint64]chan struct{}{}}
	if err := j.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	j.prune()
	if j.records > 2*len(j.entries)+16 {
		if err := j.compact(); err != nil {
			f.Close()
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
	}
	return j, nil
}

// load reads every record, cuts a torn tail, and leaves f at the end.
func (j *Journal) load() error {
	st, err := j.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		if _, err := j.f.Write([]byte(header)); err != nil {
			return err
		}
		if err := j.f.Sync(); err != nil {
			return err
		}
		return syncDir(j.path)
	}
	r := bufio.NewReader(j.f)
	h := make([]byte, len(header))
	if _, err := io.ReadFull(r, h); err != nil || string(h) != header {
		return fmt.Errorf("not a journal (header %q)", h)
	}
	good := int64(len(header))
	for {
		body, err := readRecord(r)
		if err != nil {
			break // EOF, or a torn/corrupt record: the journal ends here
		}
		j.apply(body)
		j.records++
		good += recHead + int64(len(body))
	}
	if good < st.Size() {
		j.recovered = st.Size() - good
		if err := j.f.Truncate(good); err != nil {
			return err
		}
		if err := j.f.Sync(); err != nil {
			return err
		}
	}
	_, err = j.f.Seek(good, io.SeekStart)
	return err
}

func readRecord(r io.Reader) ([]byte, error) {
	var h [recHead]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n < bodyHead || n > maxRecord {
		return nil, fmt.Errorf("bad record length %d", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(h[4:8]) {
		return nil, errors.New("bad CRC")
	}
	if k := kind(body[0]); k != kindBegun && k != kindResult && k != kindAborted {
		return nil, fmt.Errorf("bad record kind %d", k)
	}
	return body, nil
}

func (j *Journal) apply(body []byte) {
	k := kind(body[0])
	id := binary.BigEndian.Uint64(body[1:9])
	at := time.Unix(0, int64(binary.BigEndian.Uint64(body[9:17])))
	if k == kindAborted {
		delete(j.entries, id)
		return
	}
	e, ok := j.entries[id]
	if !ok {
		e = &entry{at: at}
		j.entries[id] = e
		j.order = append(j.order, id)
	}
	e.kind = k
	if k == kindResult || k == kindBegun {
		e.data = append([]byte(nil), body[bodyHead:]...)
	}
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

// write appends one record and fsyncs it, then applies it. Caller holds mu.
func (j *Journal) write(k kind, id uint64, data []byte) error {
	if j.f == nil {
		return ErrClosed
	}
	if len(data) > maxRecord-bodyHead {
		return fmt.Errorf("journal: result of %d bytes is too large", len(data))
	}
	rec := encode(k, id, j.opt.Now(), data)
	if _, err := j.f.Write(rec); err != nil {
		return fmt.Errorf("journal: write: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal: fsync: %w", err)
	}
	j.apply(rec[recHead:])
	j.records++
	j.prune()
	if j.records > 2*j.opt.MaxEntries {
		return j.compact()
	}
	return nil
}

// prune drops the oldest ids beyond MaxEntries or older than TTL (never one
// in flight). Caller holds mu.
func (j *Journal) prune() {
	cut := j.opt.Now().Add(-j.opt.TTL)
	i := 0
	for ; i < len(j.order); i++ {
		id := j.order[i]
		e, ok := j.entries[id]
		if !ok {
			continue // aborted or already dropped
		}
		if len(j.entries) <= j.opt.MaxEntries && !e.at.Before(cut) {
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
func (j *Journal) compact() error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: compact: %w", err)
	}
	w := bufio.NewWriter(f)
	w.WriteString(header)
	n := 0
	var order []uint64
	for _, id := range j.order {
		e, ok := j.entries[id]
		if !ok {
			continue
		}
		order = append(order, id)
		// Keep the first-seen time so TTL still counts from it.
		w.Write(encodeAt(e, id))
		n++
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err == nil {
		err = syncDir(j.path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("journal: compact: %w", err)
	}
	j.f.Close()
	j.f = f
	j.records = n
	j.order = order
	return nil
}

func encodeAt(e *entry, id uint64) []byte {
	return encode(e.kind, id, e.at, e.data)
}

func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Recovered is how many bytes of torn or corrupt tail Open cut off.
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

// Get returns the recorded result of id.
func (j *Journal) Get(id uint64) ([]byte, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.entries[id]
	if !ok || e.kind != kindResult || e.at.Before(j.opt.Now().Add(-j.opt.TTL)) {
		return nil, false
	}
	return append([]byte(nil), e.data...), true
}

// Begin claims id for execution. It returns the recorded result and
// claimed=false if id was done before; claimed=true if the caller must now
// run it and then Put (or Abort). If another caller holds id, Begin waits
// for its result until ctx ends, then returns ErrInProgress. For an id
// begun before a restart and never finished it returns ErrInterrupted.
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
			if e.kind == kindResult {
				return append([]byte(nil), e.data...), false, nil
			}
			return nil, false, fmt.Errorf("%w: id %d", ErrInterrupted, id)
		}
		if err := ctx.Err(); err != nil {
			return nil, false, err
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
// ErrConflict.
func (j *Journal) Put(id uint64, result []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e, ok := j.entries[id]; ok && e.kind == kindResult {
		if string(e.data) == string(result) {
			return nil
		}
		return fmt.Errorf("%w: id %d", ErrConflict, id)
	}
	if err := j.write(kindResult, id, result); err != nil {
		return err
	}
	j.release(id)
	return nil
}

// Abort releases a claimed id without a result: the request did not run
// and may be tried again.
func (j *Journal) Abort(id uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, busy := j.inflight[id]; !busy {
		return fmt.Errorf("%w: id %d", ErrNotBegun, id)
	}
	if err := j.write(kindAborted, id, nil); err != nil {
		return err
	}
	j.release(id)
	return nil
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
