// Package qmp drives one QEMU through its QMP socket with deadlines.
//
// It wraps go-qemu's qmp.SocketMonitor, which has three traps this package
// closes:
//
//   - SocketMonitor.Run (and Connect) block forever when QEMU stops answering
//     (stopped process, stuck main loop). Here every call takes a ctx; when
//     the ctx ends first, the call returns ctx.Err() and the connection is
//     dropped (a late answer can then not be mistaken for the next command's),
//     so the next call dials again.
//   - SocketMonitor reads with a bufio.Scanner of the default 64 KiB token
//     size: one longer answer (query-qmp-schema is ~150 KiB) ends its reader
//     goroutine, and every later Run fails. Here such a call returns
//     ErrAnswerTooLarge and the connection is replaced, so the Monitor stays
//     usable.
//   - After QEMU closes the socket (quit, crash), SocketMonitor.Run reads a
//     zero answer from a closed channel and reports a JSON error. Here it is
//     ErrClosed and the next call redials.
//
// QMP allows one client per socket at a time, so one Monitor per QEMU. Events
// are not exposed: go-qemu's event channel blocks its reader when nobody
// drains it.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"
)

// MaxAnswer is the longest QMP answer line go-qemu's SocketMonitor can read
// (bufio.MaxScanTokenSize).
const MaxAnswer = bufio.MaxScanTokenSize

var (
	// ErrAnswerTooLarge: QEMU's answer was longer than MaxAnswer bytes. The
	// connection was replaced; ask for less (e.g. a narrower query).
	ErrAnswerTooLarge = errors.New("qmp: answer longer than 64 KiB (go-qemu limit)")
	// ErrClosed: QEMU closed the QMP connection (it quit or crashed).
	ErrClosed = errors.New("qmp: connection closed by QEMU")
)

// CommandError is QEMU's error answer to a command.
type CommandError struct {
	Command string
	Desc    string
}

func (e *CommandError) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Command, e.Desc) }

// Monitor is a QMP client with deadlines. Its methods may be called from
// several goroutines; commands run one at a time.
type Monitor struct {
	network, addr string
	log           *slog.Logger
	sem           chan struct{} // held while a command runs or a connection is made
	mon           *goqmp.SocketMonitor
	version       string
}

// Dial connects to QEMU's QMP socket (network "unix" or "tcp") and does the
// capabilities handshake. While the socket does not exist yet or refuses
// (QEMU still starting) it retries until ctx ends.
func Dial(ctx context.Context, network, addr string, log *slog.Logger) (*Monitor, error) {
	m := New(network, addr, log)
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	if err := m.connect(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// New returns a Monitor that is not connected yet: its first command dials
// (and waits while the socket does not exist or refuses, until that
// command's ctx ends), as every command does after the connection was
// dropped. For a long-lived client of a QEMU that may come and go.
func New(network, addr string, log *slog.Logger) *Monitor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Monitor{network: network, addr: addr, log: log, sem: make(chan struct{}, 1)}
}

// Version is the QEMU version reported at the last handshake.
func (m *Monitor) Version() string { return m.version }

// connect (re)establishes m.mon; m.sem must be held.
func (m *Monitor) connect(ctx context.Context) error {
	backoff := 5 * time.Millisecond
	for {
		mon, err := m.dialOnce(ctx)
		if err == nil {
			m.mon = mon
			m.version = mon.Version.String()
			return nil
		}
		if ctx.Err() != nil || !(errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) {
			return fmt.Errorf("qmp: connect %s: %w", m.addr, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			// Both wrapped: a caller can tell "QEMU is not there" (ENOENT,
			// ECONNREFUSED) from a slow handshake.
			return fmt.Errorf("qmp: connect %s: %w (last error: %w)", m.addr, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

func (m *Monitor) dialOnce(ctx context.Context) (*goqmp.SocketMonitor, error) {
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
		if timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	mon, err := goqmp.NewSocketMonitor(m.network, m.addr, timeout)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- mon.Connect() }()
	select {
	case err := <-done:
		if err != nil {
			mon.Disconnect()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		return mon, nil
	case <-ctx.Done():
		// Closing the connection unblocks Connect's decoder.
		mon.Disconnect()
		<-done
		return nil, fmt.Errorf("handshake: %w", ctx.Err())
	}
}

// drop forgets the current connection; m.sem must be held. Disconnect runs
// in the background because it drains go-qemu's reader, which may still be
// delivering to an abandoned Run.
func (m *Monitor) drop(why string) {
	if m.mon == nil {
		return
	}
	m.log.Warn("dropping QMP connection; the next command reconnects", "socket", m.addr, "why", why)
	mon := m.mon
	m.mon = nil
	go mon.Disconnect()
}

// Run sends one raw QMP command (a JSON object) and returns QEMU's raw
// answer line. It returns when ctx ends, whatever QEMU does.
func (m *Monitor) Run(ctx context.Context, cmd []byte) ([]byte, error) {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("qmp: waiting for the previous command: %w", ctx.Err())
	}
	defer func() { <-m.sem }()
	name := commandName(cmd)
	if m.mon == nil {
		if err := m.connect(ctx); err != nil {
			return nil, err
		}
	}
	mon := m.mon
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := mon.Run(cmd)
		// go-qemu hands out its scanner's buffer, which its reader reuses.
		done <- result{append([]byte(nil), out...), err}
	}()
	select {
	case r := <-done:
		switch {
		case r.err == nil:
			return r.out, nil
		case errors.Is(r.err, bufio.ErrTooLong):
			m.drop("answer too large")
			return nil, fmt.Errorf("qmp: %s: %w", name, ErrAnswerTooLarge)
		case isClosed(r.err):
			m.drop("closed by QEMU")
			return nil, fmt.Errorf("qmp: %s: %w (%v)", name, ErrClosed, r.err)
		}
		var se *json.SyntaxError
		if errors.As(r.err, &se) {
			return nil, fmt.Errorf("qmp: %s: bad answer: %w", name, r.err)
		}
		return nil, &CommandError{Command: name, Desc: r.err.Error()}
	case <-ctx.Done():
		m.drop(fmt.Sprintf("%s got no answer before the deadline", name))
		return nil, fmt.Errorf("qmp: %s: %w", name, ctx.Err())
	}
}

// isClosed tells errors that mean the connection is gone, including
// go-qemu's zero answer from its closed channel ("unexpected end of JSON
// input").
func isClosed(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "unexpected end of JSON input") ||
		strings.Contains(err.Error(), "EOF")
}

func commandName(cmd []byte) string {
	var c struct {
		Execute string `json:"execute"`
	}
	if json.Unmarshal(cmd, &c) != nil || c.Execute == "" {
		return "command"
	}
	return c.Execute
}

// Execute runs the named command with args (nil for none) and decodes the
// "return" member into ret (nil to ignore it).
func (m *Monitor) Execute(ctx context.Context, name string, args, ret any) error {
	cmd, err := json.Marshal(goqmp.Command{Execute: name, Args: args})
	if err != nil {
		return fmt.Errorf("qmp: %s: %w", name, err)
	}
	out, err := m.Run(ctx, cmd)
	if err != nil {
		return err
	}
	if ret == nil {
		return nil
	}
	var r struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("qmp: %s: bad answer: %w", name, err)
	}
	if err := json.Unmarshal(r.Return, ret); err != nil {
		return fmt.Errorf("qmp: %s: bad return: %w", name, err)
	}
	return nil
}

// SetLink sets a NIC's link up or down (QMP set_link). name is a netdev id
// (e.g. "vmmi") or a device id (e.g. "vmmi-nic"); the guest sees carrier
// loss either way.
func (m *Monitor) SetLink(ctx context.Context, name string, up bool) error {
	return m.Execute(ctx, "set_link", map[string]any{"name": name, "up": up}, nil)
}

// Status is QMP query-status's answer.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "paused", "shutdown", "prelaunch", …
}

// QueryStatus asks whether the guest's CPUs run.
func (m *Monitor) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := m.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// SystemPowerdown presses the ACPI power button (the guest may ignore it).
func (m *Monitor) SystemPowerdown(ctx context.Context) error {
	return m.Execute(ctx, "system_powerdown", nil, nil)
}

// SystemReset resets the guest at once.
func (m *Monitor) SystemReset(ctx context.Context) error {
	return m.Execute(ctx, "system_reset", nil, nil)
}

// Quit makes QEMU exit. A connection closed before the answer arrived
// counts as success: QEMU is on its way out.
func (m *Monitor) Quit(ctx context.Context) error {
	err := m.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// Close closes the connection. Close does not stop QEMU.
func (m *Monitor) Close() error {
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	if m.mon == nil {
		return nil
	}
	mon := m.mon
	m.mon = nil
	go mon.Disconnect()
	return nil
}
