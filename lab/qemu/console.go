package qemu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// WaitConsole waits until a line of the serial console contains one of
// markers and returns that line (pass "ooblab: FAILED" too to stop early on
// a guest-side failure). It reads the console from its start, so a marker
// printed before the call is found, and waits on inotify (no polling) for
// more. It fails when ctx ends or QEMU exits first, quoting the console's
// last lines.
func (m *Machine) WaitConsole(ctx context.Context, markers ...string) (string, error) {
	return followFile(ctx, m.Console, m.exited, func(line string) bool {
		for _, mk := range markers {
			if strings.Contains(line, mk) {
				return true
			}
		}
		return false
	})
}

// followFile scans path line by line from its start, waiting for growth,
// until match accepts a line, ctx ends, or stop closes.
func followFile(ctx context.Context, path string, stop <-chan struct{}, match func(string) bool) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("qemu: console: %w", err)
	}
	defer f.Close()
	grew, closeWatch := watch(path)
	defer closeWatch()

	var pending []byte
	var last []string // the latest lines, for error messages
	buf := make([]byte, 64<<10)
	scan := func() (string, bool) {
		for {
			n, err := f.Read(buf)
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				line := strings.TrimRight(string(pending[:i]), "\r")
				pending = pending[i+1:]
				if match(line) {
					return line, true
				}
				last = append(last, line)
				if len(last) > 15 {
					last = last[1:]
				}
			}
			if err == io.EOF || n == 0 {
				return "", false
			}
		}
	}
	for {
		if line, ok := scan(); ok {
			return line, nil
		}
		select {
		case <-grew:
		case <-stop:
			if line, ok := scan(); ok {
				return line, nil
			}
			return "", fmt.Errorf("qemu: exited before the console showed it; console ends:\n%s", strings.Join(last, "\n"))
		case <-ctx.Done():
			return "", fmt.Errorf("qemu: console wait: %w; console ends:\n%s", ctx.Err(), strings.Join(last, "\n"))
		}
	}
}

// watch reports writes to path on the returned channel (coalesced). It uses
// inotify; should inotify be unavailable it falls back to a 50 ms ticker.
func watch(path string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	notify := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err == nil {
		_, err = syscall.InotifyAddWatch(fd, path, syscall.IN_MODIFY|syscall.IN_CLOSE_WRITE)
		if err != nil {
			syscall.Close(fd)
		}
	}
	if err != nil {
		t := time.NewTicker(50 * time.Millisecond)
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-t.C:
					notify()
				case <-done:
					return
				}
			}
		}()
		return ch, func() { t.Stop(); close(done) }
	}
	// A non-blocking fd in an *os.File goes through Go's poller, so Close
	// wakes the reader below.
	inf := os.NewFile(uintptr(fd), "inotify")
	go func() {
		b := make([]byte, 4096)
		for {
			if _, err := inf.Read(b); err != nil {
				return
			}
			notify()
		}
	}()
	return ch, func() { inf.Close() }
}
