// Package sol carries the managed system's serial port to IPMI v2.0
// Serial-over-LAN (payload type 1, IPMI v2.0 §15, §24, §26).
//
// go-ipmi v0.9.1's server already runs the SOL data plane: Activate/
// Deactivate Payload, payload status and instance info, the SOL
// configuration parameters, the per-session ordered packet queue, the
// packet sequence/ack/accepted-count state machine with retries on the
// configured interval, the deactivation notice, and session-end teardown
// (pkg/bmc/sol.go, pkg/server/server.go). What it needs from the BMC is a
// [hal.ConsoleHAL]: a non-blocking byte stream to the system's serial port.
// This package is that console for bmcsim:
//
//	QEMU  -chardev socket,host=…,port=P,reconnect=1,logfile=console.log
//	  │   (QEMU dials; the chardev's logfile keeps console.log for the lab)
//	  ▼
//	Serial (TCP listener on P, one QEMU connection at a time, the newest wins)
//	  │  output ──▶ buffer of the attached SOL conn (drained by go-ipmi's pump)
//	  │  input  ◀── keystrokes the remote console sent (SOL character data)
//	  ▼
//	go-ipmi SOLStore ──RMCP+ payload type 1 (encrypted, authenticated)──▶ ipmitool / ipmiconsole / vmsctl
//
// Serial output while no SOL session is attached is not buffered: console.log
// has it. Keystrokes while QEMU is not connected (host powered off) are
// dropped, as a serial line with nothing at the other end drops them.
//
// The SOL payload header is read with go-ipmi's codec
// (types.SOLPayloadPacket) by bmcsim and by vmsctl's console alike;
// codec_test.go pins it to the spec's bytes and fuzzes it, engine_test.go
// drives the state machine (retransmit, ack, partial ack, loss, duplicate
// keystrokes, deactivation notice) over this Serial.
package sol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/hal"
)

// bufferCap bounds serial output kept for the attached SOL session between
// two drains of go-ipmi's pump (every 10 ms). Past it the oldest bytes go;
// the remote console sees the loss flagged (status bit 3) only for bytes
// the pump already took, so the cap is generous.
const bufferCap = 64 << 10

// writeTimeout bounds one keystroke write to QEMU: a guest that stopped
// reading its UART must not stall the SOL session.
const writeTimeout = 2 * time.Second

// ErrAttached is returned by Open while a SOL session holds the port.
var ErrAttached = errors.New("sol: the serial port is attached to another SOL session")

// Serial is the managed system's serial port, served on a TCP listener that
// QEMU's socket chardev connects to. It implements [hal.ConsoleHAL].
type Serial struct {
	log  *slog.Logger
	idle time.Duration
	now  func() time.Time

	mu       sync.Mutex
	peer     net.Conn // current QEMU connection, nil while none
	att      *conn    // attached SOL session, nil while none
	onIdle   func()
	peerConn func(up bool)
}

var _ hal.ConsoleHAL = (*Serial)(nil)

// Options shape a Serial.
type Options struct {
	Logger *slog.Logger
	// IdleTimeout ends an attached SOL session after this long without a
	// byte in either direction (0: never; the RMCP+ session's own
	// inactivity timeout still ends it when the console goes silent).
	IdleTimeout time.Duration
	// OnIdle is called, without any lock of the Serial held, when the
	// attached session went idle; the BMC deactivates the payload there.
	OnIdle func()
	// OnPeer is told when QEMU connects (true) or goes (false).
	OnPeer func(up bool)
}

// NewSerial returns a Serial with no QEMU connected yet.
func NewSerial(o Options) *Serial {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Serial{log: log, idle: o.IdleTimeout, now: time.Now, onIdle: o.OnIdle, peerConn: o.OnPeer}
}

// Serve accepts QEMU's connections on ln until ctx ends; a new connection
// replaces the previous one (QEMU reconnecting after a restart).
func (s *Serial) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	if s.idle > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.watchIdle(ctx) }()
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			s.setPeer(nil)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("sol: serial listener: %w", err)
		}
		s.setPeer(c)
		wg.Add(1)
		go func() { defer wg.Done(); s.readPeer(c) }()
	}
}

// setPeer installs c as the QEMU connection, closing the one before.
func (s *Serial) setPeer(c net.Conn) {
	s.mu.Lock()
	old := s.peer
	s.peer = c
	notify := s.peerConn
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	if c != nil {
		s.log.Info("serial port connected", "peer", c.RemoteAddr().String())
	}
	if notify != nil && (c != nil || old != nil) {
		notify(c != nil)
	}
}

// readPeer copies one QEMU connection's output to the attached session.
func (s *Serial) readPeer(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			s.mu.Lock()
			if s.att != nil {
				s.att.push(buf[:n], s.now())
			}
			s.mu.Unlock()
		}
		if err != nil {
			s.mu.Lock()
			gone := s.peer == c
			if gone {
				s.peer = nil
			}
			notify := s.peerConn
			s.mu.Unlock()
			_ = c.Close()
			if gone {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					s.log.Warn("serial port connection failed", "err", err)
				} else {
					s.log.Info("serial port disconnected")
				}
				if notify != nil {
					notify(false)
				}
			}
			return
		}
	}
}

// Connected reports whether QEMU is connected to the serial port.
func (s *Serial) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer != nil
}

// Attached reports whether a SOL session holds the port.
func (s *Serial) Attached() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.att != nil
}

// Open attaches a SOL session to the port (go-ipmi calls it on Activate
// Payload); one at a time.
func (s *Serial) Open(context.Context) (hal.ConsoleConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.att != nil {
		return nil, ErrAttached
	}
	c := &conn{s: s, last: s.now()}
	s.att = c
	s.log.Info("SOL session attached to the serial port", "qemu_connected", s.peer != nil)
	return c, nil
}

// watchIdle ends an attached session idle for longer than s.idle.
func (s *Serial) watchIdle(ctx context.Context) {
	every := min(s.idle/4, time.Second)
	every = max(every, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		idle := s.att != nil && !s.att.closed && s.now().Sub(s.att.last) >= s.idle
		if idle {
			s.att.last = s.now() // one notice per idle period
		}
		f := s.onIdle
		s.mu.Unlock()
		if idle {
			s.log.Info("SOL session idle; deactivating it", "idle_timeout", s.idle.String())
			if f != nil {
				f()
			}
		}
	}
}

// conn is one attached SOL session's view of the port.
type conn struct {
	s      *Serial
	buf    []byte    // serial output not yet drained; guarded by s.mu
	last   time.Time // last byte either way; guarded by s.mu
	closed bool      // guarded by s.mu
}

// push appends serial output; s.mu is held.
func (c *conn) push(p []byte, now time.Time) {
	c.buf = append(c.buf, p...)
	if over := len(c.buf) - bufferCap; over > 0 {
		c.buf = append(c.buf[:0], c.buf[over:]...)
	}
	c.last = now
}

// ReadAvailable hands go-ipmi's pump the serial output waiting; it never
// blocks.
func (c *conn) ReadAvailable(p []byte) (int, error) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	n := copy(p, c.buf)
	c.buf = append(c.buf[:0], c.buf[n:]...)
	return n, nil
}

// Write types the remote console's characters into the port. Without QEMU
// connected they are dropped (and reported written: a serial line with no
// one at the other end takes them).
func (c *conn) Write(p []byte) (int, error) {
	c.s.mu.Lock()
	if c.closed {
		c.s.mu.Unlock()
		return 0, net.ErrClosed
	}
	peer := c.s.peer
	c.last = c.s.now()
	c.s.mu.Unlock()
	if peer == nil || len(p) == 0 {
		return len(p), nil
	}
	_ = peer.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := peer.Write(p)
	if err != nil {
		// The peer's reader notices a dead connection; a stalled guest
		// loses these keystrokes. Report what went out, never fail the
		// SOL instance (go-ipmi would mark it broken for good).
		c.s.log.Debug("keystrokes not written to the serial port", "err", err, "dropped", len(p)-n)
	}
	return len(p), nil
}

// SendBreak: QEMU's raw socket chardev has no way to signal a BREAK.
func (c *conn) SendBreak(context.Context) error { return hal.ErrNotSupported }

// Close detaches the session from the port.
func (c *conn) Close() error {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.buf = nil
	if c.s.att == c {
		c.s.att = nil
	}
	c.s.log.Info("SOL session detached from the serial port")
	return nil
}
