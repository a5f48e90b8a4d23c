package journal

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultFS is the OS filesystem with faults to inject: a write that tears
// (writes tear bytes, then fails), an fsync, truncate, rename or directory
// sync that fails. Faults hold until cleared. fastSync makes fsync a no-op
// (tests that write thousands of records, and the benchmark).
type faultFS struct {
	mu                    sync.Mutex
	writeErr              error
	tear                  int
	syncErr, truncErr     error
	renameErr, syncDirErr error
	fastSync              bool
}

type faultFile struct {
	File
	fs *faultFS
}

var _ FS = (*faultFS)(nil)

func (fs *faultFS) set(f func(*faultFS)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f(fs)
}

func (fs *faultFS) get() faultFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return faultFS{writeErr: fs.writeErr, tear: fs.tear, syncErr: fs.syncErr, truncErr: fs.truncErr,
		renameErr: fs.renameErr, syncDirErr: fs.syncDirErr, fastSync: fs.fastSync}
}

func (fs *faultFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := OS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return faultFile{f, fs}, nil
}

func (fs *faultFS) Rename(o, n string) error {
	if err := fs.get().renameErr; err != nil {
		return err
	}
	return OS.Rename(o, n)
}

func (fs *faultFS) Remove(name string) error { return OS.Remove(name) }

func (fs *faultFS) SyncDir(name string) error {
	if err := fs.get().syncDirErr; err != nil {
		return err
	}
	if fs.get().fastSync {
		return nil
	}
	return OS.SyncDir(name)
}

func (f faultFile) Write(b []byte) (int, error) {
	if c := f.fs.get(); c.writeErr != nil {
		n, _ := f.File.Write(b[:min(c.tear, len(b))])
		return n, c.writeErr
	}
	return f.File.Write(b)
}

func (f faultFile) Sync() error {
	c := f.fs.get()
	if c.syncErr != nil {
		return c.syncErr
	}
	if c.fastSync {
		return nil
	}
	return f.File.Sync()
}

func (f faultFile) Truncate(n int64) error {
	if err := f.fs.get().truncErr; err != nil {
		return err
	}
	return f.File.Truncate(n)
}

var errIO = errors.New("input/output error (injected)")

// A full disk tears an append (ENOSPC after a few bytes): the journal cuts
// it back, says so, takes records again once there is room, and a reopen
// finds every record whole, nothing cut.
func TestAppendFillsDisk(t *testing.T) {
	for _, tear := range []int{0, 5, recHead + 3, recHead + bodyHead + 1} {
		path := filepath.Join(t.TempDir(), "journal")
		fs := &faultFS{}
		j := open(t, path, Options{FS: fs})
		run(t, j, 1, "first")
		fs.set(func(fs *faultFS) { fs.writeErr, fs.tear = syscall.ENOSPC, tear })
		if _, _, err := j.Begin(context.Background(), 2); !errors.Is(err, ErrUnwritable) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("tear %d: Begin on a full disk = %v, want ErrUnwritable (ENOSPC)", tear, err)
		}
		fs.set(func(fs *faultFS) { fs.writeErr = nil })
		run(t, j, 3, "third")
		j.Close()
		j = open(t, path, Options{})
		if n := j.Recovered(); n != 0 {
			t.Fatalf("tear %d: reopen recovered %d bytes: the torn append was not cut back", tear, n)
		}
		for id, want := range map[uint64]string{1: "first", 3: "third"} {
			if r, ok := j.Get(id); !ok || string(r) != want {
				t.Fatalf("tear %d: Get(%d) = %q, %v", tear, id, r, ok)
			}
		}
		if _, claimed, err := j.Begin(context.Background(), 2); err != nil || !claimed {
			t.Fatalf("tear %d: id 2 never claimed, yet Begin = %v, %v", tear, claimed, err)
		}
		j.Close()
	}
}

// A Put whose fsync fails wakes its waiters (they do not wait out their
// deadline) and leaves the id begun: outcome unknown, never run again, also
// after a restart.
func TestPutFailsReleasesWaiters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	fs := &faultFS{}
	j := open(t, path, Options{FS: fs})
	ctx := context.Background()
	if _, claimed, err := j.Begin(ctx, 7); err != nil || !claimed {
		t.Fatal(err)
	}
	waiter := make(chan error, 1)
	go func() {
		_, _, err := j.Begin(ctx, 7) // no deadline: only Put may wake it
		waiter <- err
	}()
	fs.set(func(fs *faultFS) { fs.syncErr = errIO })
	if err := j.Put(7, []byte("rebooted")); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("Put with a failing fsync = %v, want ErrUnwritable", err)
	}
	select {
	case err := <-waiter:
		if !errors.Is(err, ErrInterrupted) {
			t.Fatalf("waiter got %v, want ErrInterrupted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed Put left its waiter waiting")
	}
	if in := j.Interrupted(); len(in) != 1 || in[0].ID != 7 {
		t.Fatalf("Interrupted = %+v, want id 7", in)
	}
	fs.set(func(fs *faultFS) { fs.syncErr = nil })
	j.Close()
	j = open(t, path, Options{})
	defer j.Close()
	if _, _, err := j.Begin(ctx, 7); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Begin(7) after restart = %v, want ErrInterrupted (never a second run)", err)
	}
}

// If the cut-back fails too, the journal takes no more records (the file's
// end is unknown); a reopen cuts the torn tail and keeps every whole record.
func TestCutBackFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	fs := &faultFS{}
	j := open(t, path, Options{FS: fs})
	run(t, j, 1, "first")
	fs.set(func(fs *faultFS) { fs.writeErr, fs.tear, fs.truncErr = errIO, 11, errIO })
	if _, _, err := j.Begin(context.Background(), 2); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("Begin = %v", err)
	}
	fs.set(func(fs *faultFS) { fs.writeErr, fs.truncErr = nil, nil })
	if _, _, err := j.Begin(context.Background(), 3); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("Begin after a failed cut-back = %v, want ErrUnwritable", err)
	}
	if r, ok := j.Get(1); !ok || string(r) != "first" {
		t.Fatalf("Get(1) = %q %v", r, ok)
	}
	j.Close()
	j = open(t, path, Options{})
	defer j.Close()
	if j.Recovered() != 11 {
		t.Fatalf("Recovered = %d, want the 11 torn bytes", j.Recovered())
	}
	run(t, j, 3, "third")
}

// A compaction that fails after the record's fsync does not fail the write
// that triggered it: the record stands, and the journal goes on in the
// file it has. A directory sync that fails after the rename leaves the
// journal writing the renamed file, not the unlinked old one.
func TestCompactionFailureKeepsRecords(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(fs *faultFS)
	}{
		{"rename fails", func(fs *faultFS) { fs.renameErr = errIO }},
		{"directory sync fails", func(fs *faultFS) { fs.syncDirErr = errIO }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal")
			fs := &faultFS{fastSync: true}
			now := time.Unix(1_700_000_000, 0)
			var logged bytes.Buffer
			j := open(t, path, Options{FS: fs, TTL: time.Minute, Now: func() time.Time { return now },
				Logger: slog.New(slog.NewTextHandler(&logged, nil))})
			fs.set(tt.set)
			const n = 1500
			for id := uint64(1); id <= n; id++ {
				now = now.Add(100 * time.Millisecond)
				run(t, j, id, "r") // fails the test if a Put or Begin fails
			}
			if !strings.Contains(logged.String(), "compaction failed") {
				t.Fatalf("no compaction failed, log: %s", logged.String())
			}
			fs.set(func(fs *faultFS) { fs.renameErr, fs.syncDirErr = nil, nil })
			j.Close()
			now = now.Add(time.Second)
			j = open(t, path, Options{TTL: time.Minute, Now: func() time.Time { return now }})
			defer j.Close()
			if r, ok := j.Get(n); !ok || string(r) != "r" {
				t.Fatalf("after reopen Get(%d) = %q, %v: a record written after the failed compaction is lost", n, r, ok)
			}
		})
	}
}

// Open keeps every whole record: a torn append in the middle of the file
// (one that was not cut back, then more records after it) costs only its
// own bytes, never the records after it.
func TestLoadKeepsRecordsAfterATear(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	var b []byte
	b = append(b, header...)
	b = append(b, encode(kindResult, 1, time.Now(), []byte("first"))...)
	torn := encode(kindResult, 2, time.Now(), []byte("second, torn"))
	b = append(b, torn[:len(torn)-4]...)
	b = append(b, encode(kindResult, 3, time.Now(), []byte("third, ran after the tear"))...)
	b = append(b, encode(kindBegun, 4, time.Now(), []byte("reboot web1"))...)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	j := open(t, path, Options{})
	if j.Recovered() != int64(len(torn)-4) {
		t.Fatalf("Recovered = %d, want %d", j.Recovered(), len(torn)-4)
	}
	if r, ok := j.Get(3); !ok || string(r) != "third, ran after the tear" {
		t.Fatalf("Get(3) = %q, %v: a whole record after a tear was dropped", r, ok)
	}
	if _, _, err := j.Begin(context.Background(), 4); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Begin(4) = %v, want ErrInterrupted", err)
	}
	j.Close()
	j = open(t, path, Options{}) // rewritten clean at the first open
	defer j.Close()
	if j.Recovered() != 0 {
		t.Fatalf("second open recovered %d", j.Recovered())
	}
	if _, ok := j.Get(3); !ok {
		t.Fatal("Get(3) lost on the second open")
	}
}

// An Abort that cannot be written releases the id in this process (it did
// not run: a retry may claim it) and wakes its waiters; after a restart
// the claim reads as interrupted, never as free to run twice.
func TestAbortFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	fs := &faultFS{}
	j := open(t, path, Options{FS: fs})
	ctx := context.Background()
	if _, claimed, err := j.Begin(ctx, 5); err != nil || !claimed {
		t.Fatal(err)
	}
	waiter := make(chan error, 1)
	go func() {
		_, _, err := j.Begin(ctx, 5)
		waiter <- err
	}()
	fs.set(func(fs *faultFS) { fs.writeErr, fs.tear = syscall.ENOSPC, 3 })
	if err := j.Abort(5); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("Abort on a full disk = %v", err)
	}
	fs.set(func(fs *faultFS) { fs.writeErr = nil })
	select {
	case err := <-waiter: // it woke and tried to claim the id (on a disk full or freed again)
		if err != nil && !errors.Is(err, ErrUnwritable) {
			t.Fatalf("waiter after a failed Abort: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed Abort left its waiter waiting")
	}
	j.Close()
	j = open(t, path, Options{})
	defer j.Close()
	if _, _, err := j.Begin(ctx, 5); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("after restart Begin(5) = %v, want ErrInterrupted", err)
	}
}
