// Package qmptest runs a CPU-less QEMU with a QMP socket for tests of QMP
// clients (internal/qmp, bmcsim's power driver).
package qmptest

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
)

// QEMU is a running qemu-system-x86_64 -machine none with a user netdev
// "vmmi" and QMP at Sock. It is killed when the test ends.
type QEMU struct {
	Cmd    *exec.Cmd
	Sock   string
	exited chan struct{}
}

// Start starts one, or skips the test (fails under CI) without QEMU; an
// integration test (skipped by -short).
func Start(t testing.TB) *QEMU {
	t.Helper()
	testutil.Integration(t, "qemu-system-x86_64")
	bin, _ := exec.LookPath("qemu-system-x86_64")
	q := &QEMU{Sock: filepath.Join(t.TempDir(), "qmp.sock"), exited: make(chan struct{})}
	q.Cmd = exec.Command(bin, "-nodefaults", "-no-user-config", "-machine", "none", "-display", "none",
		"-netdev", "user,id=vmmi", "-qmp", "unix:"+q.Sock+",server=on,wait=off")
	q.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := q.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { q.Cmd.Wait(); close(q.exited) }()
	t.Cleanup(func() {
		q.Cmd.Process.Signal(syscall.SIGCONT)
		q.Cmd.Process.Kill()
		<-q.exited
	})
	return q
}

// Exited is closed once the process has exited.
func (q *QEMU) Exited() <-chan struct{} { return q.exited }

// Stop and Cont send SIGSTOP and SIGCONT: a QEMU that does not answer.
func (q *QEMU) Stop(t testing.TB) { q.signal(t, syscall.SIGSTOP) }
func (q *QEMU) Cont(t testing.TB) { q.signal(t, syscall.SIGCONT) }

// Kill kills it and waits for the exit.
func (q *QEMU) Kill() {
	q.Cmd.Process.Signal(syscall.SIGCONT)
	q.Cmd.Process.Kill()
	<-q.exited
}

func (q *QEMU) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := q.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}
