package lvirt

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestQEMUProcessStart(t *testing.T) {
	dir := t.TempDir()
	run, proc := filepath.Join(dir, "run"), filepath.Join(dir, "proc")
	os.MkdirAll(filepath.Join(proc, "4242"), 0o755)
	os.MkdirAll(run, 0o755)
	os.WriteFile(filepath.Join(run, "web1.pid"), []byte("4242\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "stat"), []byte("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), 0o644)
	// comm with a space and a ')' in it; starttime (field 22) = 12345 ticks.
	os.WriteFile(filepath.Join(proc, "4242", "stat"),
		[]byte("4242 (qemu-system) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 3 0 12345 1000 10\n"), 0o644)
	got, ok := qemuProcessStart(run, proc, "web1")
	want := time.Unix(1700000000, 0).Add(123450 * time.Millisecond)
	if !ok || !got.Equal(want) {
		t.Fatalf("start = %v, %v; want %v", got, ok, want)
	}
	for _, name := range []string{"nope", "../web1", ""} {
		if _, ok := qemuProcessStart(run, proc, name); ok {
			t.Errorf("%q: found a start time", name)
		}
	}
	// This very process, through the real /proc.
	self := filepath.Join(dir, "self")
	os.MkdirAll(self, 0o755)
	os.WriteFile(filepath.Join(self, "me.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	st, ok := qemuProcessStart(self, "/proc", "me")
	if !ok || time.Since(st) < 0 || time.Since(st) > time.Hour {
		t.Fatalf("own start = %v, %v", st, ok)
	}
}
