package cmd

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestIsSimCmdline(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"/w/bin/lab", "--dir", "/w/.lab", "sim", "--hosts", "3"}, true},
		{[]string{"lab", "--dir", "/w/.lab", "sim"}, true},
		{[]string{"/w/bin/lab", "--dir", "/other", "sim"}, false}, // another lab's fleet
		{[]string{"/w/bin/lab", "--dir", "/w/.lab", "up"}, false},
		{[]string{"/usr/bin/sleep", "--dir", "/w/.lab", "sim"}, false},
		{[]string{"lab"}, false},
	} {
		if got := isSimCmdline(tt.args, "/w/.lab"); got != tt.want {
			t.Errorf("%q: %v, want %v", tt.args, got, tt.want)
		}
	}
}

// A pid file naming a live process that is not `lab sim` (here: this test)
// is stale: lab down must not signal it.
func TestStalePidFileIgnored(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sim"), 0o700)
	if err := os.WriteFile(simPidFile(dir), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	if pid, ok := simRunning(dir); ok {
		t.Fatalf("pid %d (the test itself) taken for a lab sim", pid)
	}
}
