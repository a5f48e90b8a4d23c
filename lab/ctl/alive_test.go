package ctl

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

// TestProcessAlive: a running process is alive; a single-threaded child
// that has exited but is not reaped yet (a zombie alone in its thread
// group) is gone, as is a reaped one.
func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Fatal("this test's own process is not alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	testutil.WaitFor(t, 10*time.Second, "the exited child reads as gone (zombie, not reaped)", func() bool { return !processAlive(pid) })
	cmd.Wait()
	if processAlive(pid) {
		t.Fatal("a reaped child reads as alive")
	}
}
