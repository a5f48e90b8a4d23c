package kcs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/vmcodec"
)

// IPMI constants this package answers itself (App NetFn, IPMI v2.0 §22).
const (
	netFnApp = vmcodec.NetFnApp

	cmdSetBMCGlobalEnables = 0x2E
	cmdGetBMCGlobalEnables = 0x2F
	cmdClearMessageFlags   = 0x30
	cmdGetMessageFlags     = vmcodec.CmdGetMessageFlags
	cmdGetMessage          = vmcodec.CmdGetMessage
	cmdSendMessage         = vmcodec.CmdSendMessage
	cmdReadEventMsgBuffer  = 0x35

	enableRcvMsgIntr  = 0x01 // receive message queue interrupt
	enableEvtMsgIntr  = 0x02 // event message buffer full interrupt
	supportedEnables  = 0x0F // bits 0..3; OEM bits 5..7 are not kept
	flagRcvMsgAvail   = 0x01
	ccQueueEmpty      = 0x80 // Get Message, Read Event Message Buffer: data not available
	ccSendNAK         = 0x83 // Send Message: NAK on write (no such IPMB device)
	systemIfChannel   = 0x0F
	defaultQueueLimit = 64
	writeTimeout      = 5 * time.Second
)

// MaxPushData is the largest data Push accepts: Linux keeps a whole Get
// Message response (netfn, cmd, cc, channel, 6 header bytes, data, checksum)
// in IPMI_MAX_MSG_LENGTH (272) bytes.
const MaxPushData = 272 - 11

// Errors returned by the Server.
var (
	ErrNotConnected = errors.New("kcs: no QEMU connected")
	ErrNotSupported = errors.New("kcs: QEMU did not announce this capability")
	ErrQueueFull    = errors.New("kcs: receive message queue full")
	ErrTooBig       = errors.New("kcs: message data too long for the receive message queue")
)

// Server serves one BMC's system interface to one QEMU at a time.
type Server struct {
	b   *bmc.BMC
	reg *handlers.Registry
	log *slog.Logger

	queueLimit  int
	pushChannel uint8
	requester   uint8
	onHostReply func(netfn, cmd uint8, data []byte)
	onConn      func(connected bool)
	onReset     func()
	onRequest   func(netfn, cmd uint8, cc uint8)
	admin       bool // WithAdminCommands: AdminCommand allowed

	mu        sync.Mutex
	cur       *conn
	enables   uint8
	onEnables func(uint8)
	queue     []pushed
	kick      bool // SetAttention(true) not yet seen by a Get Message Flags
	attnOn    bool // SMS_ATN as last sent to QEMU
	seq       uint8
	caps      uint8
	capsSeen  bool
}

type pushed struct {
	netfn, cmd, seq uint8
	data            []byte
}

type conn struct {
	nc   net.Conn
	done chan struct{} // closed when the reader ends
	// out carries frames to the writer goroutine in the order they were
	// queued, so nothing writes to the network under the Server's mutex.
	out  chan []byte
	quit chan struct{} // closed when the reader ends: the writer stops
}

// outBacklog bounds the frames waiting for QEMU; a peer that stops reading
// for that long is dropped (QEMU reconnects and gets the state again).
const outBacklog = 256

var errBacklog = errors.New("kcs: QEMU is not reading; connection dropped")

func newConn(nc net.Conn) *conn {
	return &conn{nc: nc, done: make(chan struct{}), out: make(chan []byte, outBacklog), quit: make(chan struct{})}
}

// send queues b for the writer. It never blocks.
func (c *conn) send(b []byte) error {
	select {
	case <-c.quit:
		return net.ErrClosed
	default:
	}
	select {
	case c.out <- b:
		return nil
	default:
		c.nc.Close()
		return errBacklog
	}
}

// writeLoop writes queued frames until the reader ends; a failed write
// closes the connection (the reader then ends too).
func (c *conn) writeLoop(log *slog.Logger) {
	for {
		select {
		case <-c.quit:
			return
		case b := <-c.out:
			c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := c.nc.Write(b); err != nil {
				log.Warn("could not write to QEMU; dropping the connection", "err", err)
				c.nc.Close()
			}
		}
	}
}

// Option configures a Server.
type Option func(*Server)

// WithQueueLimit bounds the receive message queue (default 64).
func WithQueueLimit(n int) Option { return func(s *Server) { s.queueLimit = n } }

// WithOnHostReply sets the callback for the host's answers to pushed
// messages: a Send Message from the host carrying an IPMB response. data[0]
// is the host's completion code. It runs on the connection's goroutine.
func WithOnHostReply(fn func(netfn, cmd uint8, data []byte)) Option {
	return func(s *Server) { s.onHostReply = fn }
}

// WithOnConnState sets a callback run when QEMU connects (true) or its
// connection ends (false); chassis power can follow it (connected = on).
func WithOnConnState(fn func(connected bool)) Option {
	return func(s *Server) { s.onConn = fn }
}

// WithOnGuestReset sets a callback run when QEMU reports a guest reset.
func WithOnGuestReset(fn func()) Option { return func(s *Server) { s.onReset = fn } }

// WithOnRequest sets a callback run after each request from the host is
// answered, with its netfn, cmd and completion code.
func WithOnRequest(fn func(netfn, cmd, cc uint8)) Option {
	return func(s *Server) { s.onRequest = fn }
}

// WithRequester sets the IPMB requester address pushed messages claim to
// come from (default 0x81, a software ID); the host's reply is addressed to it.
func WithRequester(addr uint8) Option { return func(s *Server) { s.requester = addr } }

// WithEnables starts the server with BMC Global Enables already set, as a
// restarted BMC must: the host's driver set them once at load time and will
// not again, so without them the guest never gets an interrupt.
func WithEnables(e uint8) Option { return func(s *Server) { s.enables = e & supportedEnables } }

// WithOnEnables is called (under the server's lock; keep it short) whenever
// the host changes BMC Global Enables, so they can be kept across restarts.
func WithOnEnables(fn func(uint8)) Option { return func(s *Server) { s.onEnables = fn } }

// New returns a Server for b that dispatches through reg (nil: go-ipmi's
// standard handlers). It adds an IPMB channel 0 to b when b has none, since
// Linux only delivers pushed messages from an IPMB channel.
func New(b *bmc.BMC, reg *handlers.Registry, log *slog.Logger, opts ...Option) *Server {
	if reg == nil {
		reg = handlers.NewRegistry()
		handlers.RegisterAllHandlers(reg)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{b: b, reg: reg, log: log, queueLimit: defaultQueueLimit, requester: 0x81}
	for _, o := range opts {
		o(s)
	}
	if _, err := b.Channels.Get(s.pushChannel); err != nil {
		b.Channels.Set(&bmc.Channel{
			Number:       s.pushChannel,
			Medium:       bmc.ChannelMediumIPMBv10,
			AccessMode:   bmc.ChannelAccessAlways,
			MaxPrivilege: bmc.PrivilegeLevelAdministrator,
		})
	}
	return s
}

// Serve accepts QEMU connections on ln until ctx ends. A new connection
// replaces the current one (QEMU restarted or reconnected): the old one is
// closed, then the new one gets VERSION and the current IRQ and attention
// state. Serve returns nil when ctx ends, or the Accept error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// AfterFunc, not a goroutine parked on ctx.Done: a fleet of 1000 BMCs
	// paid 8 KiB of stack each for it.
	context.AfterFunc(ctx, func() { ln.Close() })
	defer s.drop()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kcs: accept QEMU connection: %w", err)
		}
		s.drop()
		s.attach(ctx, nc)
	}
}

// drop closes the current connection and waits for its reader to finish.
func (s *Server) drop() {
	s.mu.Lock()
	c := s.cur
	s.cur = nil
	s.mu.Unlock()
	if c != nil {
		c.nc.Close()
		<-c.done
	}
}

func (s *Server) attach(ctx context.Context, nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c := newConn(nc)
	go c.writeLoop(s.log)
	s.mu.Lock()
	s.capsSeen, s.caps = false, 0
	s.attnOn = false
	err := c.send(vmcodec.AppendControl(nil, vmcodec.OpVersion, vmcodec.ProtocolVersion))
	if err == nil && s.enables&(enableRcvMsgIntr|enableEvtMsgIntr) != 0 {
		err = c.send(vmcodec.AppendControl(nil, vmcodec.OpEnableIRQ))
	}
	if err == nil {
		err = s.syncAttnLocked(c, false)
	}
	s.cur = c
	s.mu.Unlock()
	s.log.Info("QEMU connected to the system interface", "peer", nc.RemoteAddr().String())
	if err != nil {
		s.log.Warn("could not send state to QEMU; waiting for it to reconnect", "err", err)
	}
	if s.onConn != nil {
		s.onConn(true)
	}
	go s.readLoop(ctx, c)
}

func (s *Server) readLoop(ctx context.Context, c *conn) {
	defer func() {
		c.nc.Close()
		s.mu.Lock()
		if s.cur == c {
			s.cur = nil
		}
		s.mu.Unlock()
		close(c.quit)
		s.log.Info("QEMU disconnected from the system interface; the guest is off or QEMU will reconnect")
		if s.onConn != nil {
			s.onConn(false)
		}
		close(c.done)
	}()
	var d vmcodec.Decoder
	buf := make([]byte, 4096)
	for {
		n, err := c.nc.Read(buf)
		d.Feed(buf[:n], func(f vmcodec.Frame) { s.handleFrame(ctx, c, f) })
		if err != nil {
			return
		}
	}
}

func (s *Server) handleFrame(ctx context.Context, c *conn, f vmcodec.Frame) {
	if f.Err != nil {
		s.log.Warn("dropped a malformed frame from QEMU", "err", f.Err, "bytes", hex.EncodeToString(f.Raw))
		return
	}
	if f.Kind == vmcodec.KindControl {
		s.handleControl(f)
		return
	}
	netfn, cmd := f.NetFn(), f.Cmd()
	var (
		resp []byte
		cc   uint8
	)
	switch {
	case owned(netfn, cmd):
		resp, cc = s.handleApp(c, cmd, f.Data())
	case !s.admin && AdminCommand(netfn, cmd):
		cc = uint8(types.CodeInsufficientPrivilege)
		s.log.Warn("refused a command from the host's system interface: it changes LAN users, access or the SEL (system_interface_admin is off)",
			"netfn", fmt.Sprintf("%#02x", netfn), "cmd", fmt.Sprintf("%#02x", cmd))
	default:
		sysCh, _ := s.b.Channels.Get(systemIfChannel)
		hctx := &handlers.HandlerContext{BMC: s.b, Channel: sysCh}
		var rc types.CompletionCode
		var err error
		resp, rc, err = s.reg.Dispatch(ctx, hctx, netfn, cmd, f.Data())
		cc = uint8(rc)
		if err != nil {
			s.log.Warn("handler failed", "netfn", netfn, "cmd", cmd, "cc", cc, "err", err)
		}
	}
	body := make([]byte, 0, 1+len(resp))
	body = append(append(body, cc), resp...)
	if cmd == cmdSetBMCGlobalEnables && netfn == netFnApp && cc == 0 && s.onEnables != nil {
		s.onEnables(s.Enables()) // may touch disk: outside the mutex
	}
	if err := c.send(vmcodec.AppendMessage(nil, f.Seq(), (netfn|1)<<2|f.LUN(), cmd, body)); err != nil {
		s.log.Warn("could not answer QEMU", "netfn", netfn, "cmd", cmd, "err", err)
	}
	if s.onRequest != nil {
		s.onRequest(netfn, cmd, cc)
	}
}

func owned(netfn, cmd uint8) bool {
	if netfn != netFnApp {
		return false
	}
	switch cmd {
	case cmdSetBMCGlobalEnables, cmdGetBMCGlobalEnables, cmdClearMessageFlags,
		cmdGetMessageFlags, cmdGetMessage, cmdSendMessage, cmdReadEventMsgBuffer:
		return true
	}
	return false
}

func (s *Server) handleControl(f vmcodec.Frame) {
	switch op := f.Op(); op {
	case vmcodec.OpVersion:
		if a := f.Args(); len(a) > 0 && a[0] != vmcodec.ProtocolVersion {
			s.log.Warn("QEMU speaks another chardev protocol version", "version", a[0])
		}
	case vmcodec.OpCapabilities:
		if a := f.Args(); len(a) > 0 {
			s.mu.Lock()
			s.caps, s.capsSeen = a[0], true
			s.mu.Unlock()
			s.log.Debug("QEMU capabilities", "caps", fmt.Sprintf("%#02x", a[0]))
		}
	case vmcodec.OpReset:
		s.log.Info("QEMU reports a guest reset")
		if s.onReset != nil {
			s.onReset()
		}
	default:
		s.log.Warn("ignored an unexpected control command from QEMU", "op", op.String())
	}
}

// handleApp answers the App commands that touch state QEMU must see.
func (s *Server) handleApp(c *conn, cmd uint8, data []byte) ([]byte, uint8) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch cmd {
	case cmdSetBMCGlobalEnables:
		if len(data) < 1 {
			return nil, uint8(types.CodeRequestDataLengthInvalid)
		}
		const irqBits = enableRcvMsgIntr | enableEvtMsgIntr
		was := s.enables&irqBits != 0
		s.enables = data[0] & supportedEnables // handleFrame reports it to onEnables
		if now := s.enables&irqBits != 0; now != was && s.cur == c {
			op := vmcodec.OpDisableIRQ
			if now {
				op = vmcodec.OpEnableIRQ
			}
			if err := c.send(vmcodec.AppendControl(nil, op)); err != nil {
				s.log.Warn("could not send IRQ state to QEMU", "op", op.String(), "err", err)
			} else {
				s.log.Info("host driver changed the KCS interrupt", "enabled", now)
			}
		}
		return nil, 0
	case cmdGetBMCGlobalEnables:
		return []byte{s.enables}, 0
	case cmdClearMessageFlags:
		if len(data) < 1 {
			return nil, uint8(types.CodeRequestDataLengthInvalid)
		}
		if data[0]&flagRcvMsgAvail != 0 && len(s.queue) > 0 {
			s.log.Info("host flushed the receive message queue", "dropped", len(s.queue))
			s.queue = nil
		}
		s.syncAttnLocked(c, false)
		return nil, 0
	case cmdGetMessageFlags:
		var flags uint8
		if len(s.queue) > 0 {
			flags |= flagRcvMsgAvail
		}
		s.kick = false // the host has looked: attention acknowledged
		s.syncAttnLocked(c, false)
		return []byte{flags}, 0
	case cmdGetMessage:
		if len(s.queue) == 0 {
			s.syncAttnLocked(c, false)
			return nil, ccQueueEmpty
		}
		m := s.queue[0]
		s.queue[0] = pushed{}
		s.queue = s.queue[1:]
		s.syncAttnLocked(c, false)
		return s.getMessageBody(m), 0
	case cmdSendMessage:
		return nil, s.sendMessage(data)
	case cmdReadEventMsgBuffer:
		// This BMC puts no events in the event message buffer (Get Message
		// Flags never reports it full): always empty, as the spec answers
		// an empty buffer (§22.8). Linux's ipmi_si reads it once as it
		// starts; 0xC1 made the BMC log a failed handler per guest boot.
		return nil, ccQueueEmpty
	}
	return nil, uint8(types.CodeInvalidCommand)
}

// getMessageBody lays out a Get Message response after the completion code.
func (s *Server) getMessageBody(m pushed) []byte {
	return vmcodec.AppendGetMessage(make([]byte, 0, 7+len(m.data)), vmcodec.IPMBMsg{
		Channel: s.pushChannel, NetFn: m.netfn, RqSA: s.requester, Seq: m.seq, Cmd: m.cmd, Data: m.data})
}

// sendMessage takes a Send Message request from the host: a channel and a
// complete IPMB frame (vmcodec.ParseSendMessage).
func (s *Server) sendMessage(data []byte) uint8 {
	m, err := vmcodec.ParseSendMessage(data)
	switch {
	case errors.Is(err, vmcodec.ErrIPMBShort):
		return uint8(types.CodeRequestDataLengthInvalid)
	case err != nil:
		s.log.Warn("host sent a Send Message with a bad IPMB checksum", "bytes", hex.EncodeToString(data))
		return uint8(types.CodeRequestDataFieldInvalid)
	}
	if !m.IsResponse() {
		s.log.Info("host sent a request to an IPMB device that does not exist", "rsSA", m.RsSA, "netfn", m.NetFn, "cmd", m.Cmd)
		return ccSendNAK
	}
	if m.RsSA != s.requester {
		s.log.Info("host answered an unknown requester", "rsSA", m.RsSA, "netfn", m.NetFn, "cmd", m.Cmd)
	}
	if s.onHostReply != nil {
		s.onHostReply(m.NetFn, m.Cmd, m.Data)
	}
	return 0
}

// syncAttnLocked brings QEMU's SMS_ATN in line with the state: on while a
// message is queued or an attention kick is unacknowledged. rearm forces a
// fresh 0→1 edge when it is already on.
func (s *Server) syncAttnLocked(c *conn, rearm bool) error {
	want := s.kick || len(s.queue) > 0
	if c == nil || s.cur != c && s.cur != nil {
		return nil
	}
	var b []byte
	switch {
	case want && s.attnOn && rearm:
		b = vmcodec.AppendControl(b, vmcodec.OpNoAttn)
		b = vmcodec.AppendControl(b, s.attnOp())
	case want && !s.attnOn:
		b = vmcodec.AppendControl(b, s.attnOp())
	case !want && s.attnOn:
		b = vmcodec.AppendControl(b, vmcodec.OpNoAttn)
	default:
		return nil
	}
	s.attnOn = want
	if err := c.send(b); err != nil {
		s.log.Warn("could not send attention to QEMU", "err", err)
		return err
	}
	return nil
}

func (s *Server) attnOp() vmcodec.Op {
	if s.enables&enableRcvMsgIntr != 0 {
		return vmcodec.OpAttnIRQ
	}
	return vmcodec.OpAttn
}

// SetAttention raises (a fresh edge every time) or clears SMS_ATN for the
// host. A raised attention stays up until the host reads the message flags.
func (s *Server) SetAttention(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kick = on
	s.syncAttnLocked(s.cur, on)
}

// Push puts a request into the receive message queue, as if it came from
// the IPMB requester on channel 0, and raises attention. It is queued even
// while no QEMU is connected.
func (s *Server) Push(netfn, cmd uint8, data []byte) error {
	if len(data) > MaxPushData {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooBig, len(data), MaxPushData)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= s.queueLimit {
		return fmt.Errorf("%w (%d messages)", ErrQueueFull, len(s.queue))
	}
	s.seq = (s.seq + 1) & 0x3F
	s.queue = append(s.queue, pushed{netfn: netfn, cmd: cmd, seq: s.seq, data: append([]byte(nil), data...)})
	s.syncAttnLocked(s.cur, true)
	return nil
}

// QueueLen reports how many pushed messages the host has not fetched.
func (s *Server) QueueLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Enables reports the host's BMC Global Enables.
func (s *Server) Enables() uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enables
}

// IRQEnabled reports whether the host enabled the receive message interrupt.
func (s *Server) IRQEnabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enables&enableRcvMsgIntr != 0
}

// Connected reports whether a QEMU is connected (the guest is powered).
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur != nil
}

// PowerOff asks QEMU to power the guest off.
func (s *Server) PowerOff() error { return s.hwOp(vmcodec.OpPowerOff, vmcodec.CapPower) }

// Reset asks QEMU to reset the guest.
func (s *Server) Reset() error { return s.hwOp(vmcodec.OpReset, vmcodec.CapReset) }

// GracefulShutdown asks QEMU to press the guest's ACPI power button.
func (s *Server) GracefulShutdown() error {
	return s.hwOp(vmcodec.OpGracefulShutdown, vmcodec.CapGracefulShutdown)
}

// SendNMI asks QEMU to inject an NMI into the guest.
func (s *Server) SendNMI() error { return s.hwOp(vmcodec.OpSendNMI, vmcodec.CapNMI) }

func (s *Server) hwOp(op vmcodec.Op, capBit uint8) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return fmt.Errorf("%s: %w", op, ErrNotConnected)
	}
	if s.capsSeen && s.caps&capBit == 0 {
		return fmt.Errorf("%s: %w (capabilities %#02x)", op, ErrNotSupported, s.caps)
	}
	if err := s.cur.send(vmcodec.AppendControl(nil, op)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s.log.Info("sent a power control to QEMU", "op", op.String())
	return nil
}
