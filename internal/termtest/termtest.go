// Package termtest drives an interactive program (ipmitool sol activate,
// ipmiconsole, vmsctl host console) on a pseudo-terminal, as an operator's
// terminal would: the program sees a tty (raw mode, escape sequences work),
// the test reads what it prints and types into it. Functions return errors
// so Ginkgo helpers and go tests can both use them.
//
// It uses github.com/creack/pty: opening a pty pair and making it the
// child's controlling terminal (setsid, TIOCSCTTY) by hand is easy to get
// subtly wrong, and creack/pty is the library Go terminal tools use.
package termtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/creack/pty"
)

// Term is a program running on a pseudo-terminal.
type Term struct {
	cmd *exec.Cmd
	pty *os.File

	mu      sync.Mutex
	out     bytes.Buffer
	changed chan struct{} // closed and replaced on every write to out
	readErr error
	exited  chan struct{}
	waitErr error
}

// Start runs cmd on a new pseudo-terminal of 24x80.
func Start(cmd *exec.Cmd) (*Term, error) {
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		return nil, fmt.Errorf("termtest: start %s: %w", cmd.Path, err)
	}
	t := &Term{cmd: cmd, pty: f, changed: make(chan struct{}), exited: make(chan struct{})}
	go t.read()
	go func() {
		err := cmd.Wait()
		t.mu.Lock()
		t.waitErr = err
		t.mu.Unlock()
		close(t.exited)
	}()
	return t, nil
}

func (t *Term) read() {
	buf := make([]byte, 4096)
	for {
		n, err := t.pty.Read(buf)
		t.mu.Lock()
		t.out.Write(buf[:n])
		if err != nil {
			t.readErr = err
		}
		close(t.changed)
		t.changed = make(chan struct{})
		t.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Output is everything the program printed so far.
func (t *Term) Output() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.out.String()
}

// Expect waits until the output after offset from contains want, and
// returns the offset just past it (for the next Expect). It fails when ctx
// ends or the program's terminal closes first, quoting the output's tail.
func (t *Term) Expect(ctx context.Context, from int, want string) (int, error) {
	for {
		t.mu.Lock()
		s := t.out.String()
		ch, rerr := t.changed, t.readErr
		t.mu.Unlock()
		if from > len(s) {
			from = len(s)
		}
		if i := strings.Index(s[from:], want); i >= 0 {
			return from + i + len(want), nil
		}
		if rerr != nil {
			return from, fmt.Errorf("termtest: %q not printed before the terminal closed (%v); output ends:\n%s", want, rerr, tail(s))
		}
		select {
		case <-ctx.Done():
			return from, fmt.Errorf("termtest: %q not printed: %w; output ends:\n%s", want, ctx.Err(), tail(s))
		case <-ch:
		}
	}
}

// Len is the length of the output so far (an offset for Expect).
func (t *Term) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.out.Len()
}

// Type writes s to the program's terminal, as typed keys.
func (t *Term) Type(s string) error {
	_, err := io.WriteString(t.pty, s)
	return err
}

// Wait waits for the program to exit and returns its exit error.
func (t *Term) Wait(ctx context.Context) error {
	select {
	case <-t.exited:
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.waitErr
	case <-ctx.Done():
		return fmt.Errorf("termtest: %s still running: %w; output ends:\n%s", t.cmd.Path, ctx.Err(), tail(t.Output()))
	}
}

// Exited reports whether the program has exited.
func (t *Term) Exited() bool {
	select {
	case <-t.exited:
		return true
	default:
		return false
	}
}

// Close kills the program if it still runs and closes the terminal.
func (t *Term) Close() error {
	if !t.Exited() && t.cmd.Process != nil {
		_ = t.cmd.Process.Kill()
		<-t.exited
	}
	err := t.pty.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

func tail(s string) string {
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}
