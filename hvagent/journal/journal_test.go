package journal

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T, path string, opt Options) *Journal {
	t.Helper()
	j, err := OpenWith(path, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return j
}

func run(t *testing.T, j *Journal, id uint64, result string) {
	t.Helper()
	_, claimed, err := j.Begin(context.Background(), id)
	if err != nil || !claimed {
		t.Fatalf("Begin(%d) = %v, %v", id, claimed, err)
	}
	if err := j.Put(id, []byte(result)); err != nil {
		t.Fatalf("Put(%d): %v", id, err)
	}
}

func TestRecordFormat(t *testing.T) {
	at := time.Unix(0, 0x0102030405060708)
	got := hex.EncodeToString(encode(kindResult, 0x1122334455667788, at, []byte("ok")))
	// length 19, CRC-32C (checked with an independent bitwise CRC-32C in
	// Python), kind 2, id, time, "ok"
	want := strings.ReplaceAll("00000013 73990081 02 1122334455667788 0102030405060708 6f6b", " ", "")
	if got != want {
		t.Fatalf("record = %s, want %s", got, want)
	}
	if _, err := parseRecord(encode(kindResult, 1, at, []byte("ok"))); err != nil {
		t.Fatalf("readRecord: %v", err)
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := open(t, path, Options{})
	run(t, j, 1, "started web1")
	run(t, j, 2, "")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, path, Options{})
	defer j.Close()
	if r, ok := j.Get(1); !ok || string(r) != "started web1" {
		t.Fatalf("Get(1) = %q, %v", r, ok)
	}
	if r, ok := j.Get(2); !ok || len(r) != 0 {
		t.Fatalf("Get(2) = %q, %v", r, ok)
	}
	// A duplicate after the restart is answered, not run.
	r, claimed, err := j.Begin(context.Background(), 1)
	if err != nil || claimed || string(r) != "started web1" {
		t.Fatalf("Begin(dup) = %q, %v, %v", r, claimed, err)
	}
	if _, ok := j.Get(3); ok {
		t.Fatal("Get(3) found")
	}
}

func TestTornTail(t *testing.T) {
	for _, tt := range []struct {
		name      string
		tear      func(path string, size int64) error
		keepThird bool
	}{
		{"cut mid record", func(p string, n int64) error { return os.Truncate(p, n-3) }, false},
		{"cut mid header", func(p string, n int64) error { return os.Truncate(p, n-int64(len("third"))-bodyHead-5) }, false},
		{"garbage appended", func(p string, n int64) error {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte{0, 0, 0, 30, 1, 2, 3, 4, 9})
			return err
		}, true},
		{"flipped bit in last record", func(p string, n int64) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte{'X'}, n-1)
			return err
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal")
			j := open(t, path, Options{})
			run(t, j, 1, "first")
			run(t, j, 2, "second")
			if _, _, err := j.Begin(context.Background(), 3); err != nil {
				t.Fatal(err)
			}
			if err := j.Put(3, []byte("third")); err != nil {
				t.Fatal(err)
			}
			j.Close()
			st, _ := os.Stat(path)
			if err := tt.tear(path, st.Size()); err != nil {
				t.Fatal(err)
			}
			j = open(t, path, Options{})
			if j.Recovered() == 0 {
				t.Fatal("Recovered() = 0 after a torn tail")
			}
			for id, want := range map[uint64]string{1: "first", 2: "second"} {
				if r, ok := j.Get(id); !ok || string(r) != want {
					t.Fatalf("Get(%d) = %q, %v", id, r, ok)
				}
			}
			if _, ok := j.Get(3); ok != tt.keepThird {
				t.Fatalf("Get(3) found = %v, want %v", ok, tt.keepThird)
			}
			// The journal keeps working after the cut, and the cut is durable.
			run(t, j, 4, "fourth")
			j.Close()
			j = open(t, path, Options{})
			defer j.Close()
			if j.Recovered() != 0 {
				t.Fatalf("Recovered() = %d on a clean reopen", j.Recovered())
			}
			if r, ok := j.Get(4); !ok || string(r) != "fourth" {
				t.Fatalf("Get(4) = %q, %v", r, ok)
			}
		})
	}
}

func TestNotAJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	os.WriteFile(path, []byte("hello world"), 0o600)
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "not a journal") {
		t.Fatalf("Open = %v", err)
	}
}

func TestInterruptedAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := open(t, path, Options{})
	if _, claimed, err := j.Begin(context.Background(), 7); err != nil || !claimed {
		t.Fatal(err)
	}
	j.Close() // crash while running 7
	j = open(t, path, Options{})
	defer j.Close()
	if _, _, err := j.Begin(context.Background(), 7); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Begin(7) after restart: %v, want ErrInterrupted", err)
	}
	// What was begun before the crash is listed with its note; ids this
	// process claims are not.
	if _, _, err := j.BeginNote(context.Background(), 8, []byte("start app1")); err != nil {
		t.Fatal(err)
	}
	if in := j.Interrupted(); len(in) != 1 || in[0].ID != 7 || len(in[0].Data) != 0 {
		t.Fatalf("Interrupted = %+v", in)
	}
	j.Close() // crash while running 8
	j = open(t, path, Options{})
	defer j.Close()
	if in := j.Interrupted(); len(in) != 2 || in[1].ID != 8 || string(in[1].Data) != "start app1" {
		t.Fatalf("Interrupted after a second crash = %+v", in)
	}
	// The agent records an answer for it; duplicates then get that.
	if err := j.Put(7, []byte("outcome unknown")); err != nil {
		t.Fatal(err)
	}
	if r, claimed, err := j.Begin(context.Background(), 7); err != nil || claimed || string(r) != "outcome unknown" {
		t.Fatalf("Begin(7) = %q %v %v", r, claimed, err)
	}
	if in := j.Interrupted(); len(in) != 1 || in[0].ID != 8 {
		t.Fatalf("Interrupted after 7 got an outcome = %+v", in)
	}
}

func TestConcurrentDuplicateWaits(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "journal"), Options{})
	defer j.Close()
	ctx := context.Background()
	if _, claimed, err := j.Begin(ctx, 9); err != nil || !claimed {
		t.Fatal(err)
	}
	// A duplicate with a short deadline is told "in progress".
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, _, err := j.Begin(short, 9); !errors.Is(err, ErrInProgress) {
		t.Fatalf("Begin(short) = %v, want ErrInProgress", err)
	}
	// Duplicates that wait get the result once it is Put.
	var wg sync.WaitGroup
	results := make(chan string, 8)
	started := make(chan struct{}, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			r, claimed, err := j.Begin(ctx, 9)
			if err != nil || claimed {
				results <- "error"
				return
			}
			results <- string(r)
		}()
	}
	for i := 0; i < 8; i++ {
		<-started
	}
	if err := j.Put(9, []byte("done")); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r != "done" {
			t.Fatalf("duplicate got %q", r)
		}
	}
}

func TestAbortAndConflict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := open(t, path, Options{})
	ctx := context.Background()
	if _, claimed, _ := j.Begin(ctx, 5); !claimed {
		t.Fatal("not claimed")
	}
	if err := j.Abort(5); err != nil {
		t.Fatal(err)
	}
	if err := j.Abort(5); !errors.Is(err, ErrNotBegun) {
		t.Fatalf("second Abort = %v", err)
	}
	j.Close()
	j = open(t, path, Options{})
	defer j.Close()
	if _, claimed, err := j.Begin(ctx, 5); err != nil || !claimed {
		t.Fatalf("Begin after abort+restart = %v, %v", claimed, err)
	}
	if err := j.Put(5, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := j.Put(5, []byte("a")); err != nil {
		t.Fatalf("same Put again: %v", err)
	}
	if err := j.Put(5, []byte("b")); !errors.Is(err, ErrConflict) {
		t.Fatalf("different Put = %v", err)
	}
}

// MaxEntries bounds memory by refusing new ids, never by forgetting one
// inside its retention; the TTL forgets them.
func TestBoundsAndTTL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	now := time.Unix(1_700_000_000, 0)
	opt := Options{MaxEntries: 10, TTL: time.Hour, Now: func() time.Time { return now }}
	j := open(t, path, opt)
	for id := uint64(1); id <= 10; id++ {
		run(t, j, id, "r")
	}
	if _, _, err := j.Begin(context.Background(), 11); !errors.Is(err, ErrFull) {
		t.Fatalf("Begin(11) at MaxEntries = %v, want ErrFull", err)
	}
	if _, ok := j.Get(1); !ok {
		t.Fatal("id 1 forgotten inside its retention")
	}
	j.Close()
	j = open(t, path, opt)
	if n := j.Len(); n != 10 {
		t.Fatalf("Len after reopen = %d", n)
	}
	now = now.Add(2 * time.Hour)
	if _, ok := j.Get(10); ok {
		t.Fatal("id 10 kept beyond TTL")
	}
	run(t, j, 11, "r")
	if n := j.Len(); n != 1 {
		t.Fatalf("Len after TTL = %d, want 1", n)
	}
	j.Close()
}

// The file is rewritten once it holds twice the live ids (plus slack).
func TestCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	now := time.Unix(1_700_000_000, 0)
	opt := Options{TTL: time.Minute, Now: func() time.Time { return now }, FS: &faultFS{fastSync: true}}
	j := open(t, path, opt)
	defer j.Close()
	for id := uint64(1); id <= 2000; id++ {
		now = now.Add(100 * time.Millisecond)
		run(t, j, id, "r")
	}
	st := j.Stats()
	if st.Compaction == 0 {
		t.Fatalf("no compaction: %+v", st)
	}
	fi, _ := os.Stat(path)
	if fi.Size() != st.FileBytes || st.FileBytes > int64(2*st.IDs+compactSlack+1)*int64(recHead+bodyHead+1)+int64(len(header)) {
		t.Fatalf("file %d bytes, stats %+v: not compacted", fi.Size(), st)
	}
}

// Retention runs on the monotonic clock: a wall clock stepped 24 h forward
// forgets nothing (and stepping it back keeps nothing longer).
func TestClockStepDoesNotPrune(t *testing.T) {
	wall := time.Unix(1_700_000_000, 0)
	var mono time.Duration
	opt := Options{Now: func() time.Time { return wall }, Mono: func() time.Duration { return mono }}
	j := open(t, filepath.Join(t.TempDir(), "journal"), opt)
	defer j.Close()
	run(t, j, 1, "reboot web1")
	wall = wall.Add(24*time.Hour + time.Minute) // NTP steps the clock
	mono += time.Second
	run(t, j, 2, "r")
	if r, ok := j.Get(1); !ok || string(r) != "reboot web1" {
		t.Fatalf("after a forward clock step Get(1) = %q, %v", r, ok)
	}
	if r, claimed, err := j.Begin(context.Background(), 1); err != nil || claimed || string(r) != "reboot web1" {
		t.Fatalf("retry after a clock step: %q %v %v (would run again)", r, claimed, err)
	}
	wall = wall.Add(-48 * time.Hour) // and back
	mono += 24 * time.Hour
	if _, ok := j.Get(1); ok {
		t.Fatal("a clock stepped back kept id 1 past 24 h of monotonic time")
	}
}

func TestSecondOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := open(t, path, Options{})
	defer j.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open = %v", err)
	}
}

func TestClosed(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "journal"), Options{})
	j.Close()
	if _, _, err := j.Begin(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Begin after Close = %v", err)
	}
	if err := j.Put(1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(header + string(encode(kindResult, 1, time.Unix(1, 0), []byte("x")))))
	f.Add([]byte(header + string(encode(kindBegun, 2, time.Unix(1, 0), nil))))
	f.Add([]byte(header + "\x00\x00\x00\x11"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "journal")
		if err := os.WriteFile(path, append([]byte(header), b...), 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		run(t, j, 1<<63, "after")
		j.Close()
		j, err = Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		if j.Recovered() != 0 {
			t.Fatalf("second open recovered %d", j.Recovered())
		}
		if r, ok := j.Get(1 << 63); !ok || string(r) != "after" {
			t.Fatalf("Get = %q %v", r, ok)
		}
	})
}
