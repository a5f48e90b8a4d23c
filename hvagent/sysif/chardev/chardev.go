// Package chardev is a system-interface client that speaks QEMU's side of
// the ipmi-bmc-extern chardev protocol over TCP, talking straight to a BMC
// (bmcsim) as QEMU 7.2 would, and doing for pushed messages what the Linux
// ipmi_si driver does. It lets hvagent and tests use the system interface
// without a guest. See bmcsim/kcs for the wire format.
//
// Like KCS, one request is in flight at a time. Attention (ATTN/ATTN_IRQ
// from the BMC) wakes Notify and, as Linux does, runs Get Message Flags and
// Get Message until the queue is empty; each fetched message goes to
// Messages, and Reply answers it with a Send Message.
package chardev

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ooblab/ooblab/hvagent/sysif"

	"github.com/ooblab/ooblab/internal/vmcodec"
)

var _ sysif.Conn = (*Client)(nil)

// ErrPeerGone is returned when the BMC closed the connection or it broke
// while a request waited; the next call redials.
var ErrPeerGone = errors.New("chardev: BMC connection lost")

const (
	defaultTimeout  = 5 * time.Second
	messagesBacklog = 64
)

// Message is a request the BMC pushed through its receive message queue,
// as Linux hands it to a process registered for netfn/cmd.
type Message struct {
	Channel uint8 // IPMB channel it arrived on
	NetFn   uint8
	Cmd     uint8
	Seq     uint8 // rqSeq, echoed in the reply
	ReqAddr uint8 // requester slave address, the reply goes there
	ReqLUN  uint8
	Data    []byte
}

// Client is one QEMU-side connection to a BMC. It redials on demand.
type Client struct {
	addr    string
	log     *slog.Logger
	caps    uint8
	timeout time.Duration
	driver  bool

	reqMu sync.Mutex // one request in flight, as on KCS

	mu       sync.Mutex
	nc       net.Conn
	closed   bool
	seq      uint8
	pend     *pending
	irq      bool
	attn     bool
	ctrlSeen []vmcodec.Op

	notify   chan struct{}
	attnCh   chan struct{}
	messages chan Message
	controls chan vmcodec.Op
	done     chan struct{}
	wg       sync.WaitGroup
}

type pending struct {
	seq, netfn, cmd uint8
	ch              chan []byte
	gone            chan struct{}
}

// Option configures a Client.
type Option func(*Client)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithCapabilities sets the CAPABILITIES byte sent on connect (default 0x3f).
func WithCapabilities(caps uint8) Option { return func(c *Client) { c.caps = caps } }

// WithTimeout bounds a request whose ctx has no deadline (default 5 s;
// QEMU gives up on the BMC after 4 s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithoutDriver turns off the Linux-like fetching of pushed messages on
// attention; Notify still fires.
func WithoutDriver() Option { return func(c *Client) { c.driver = false } }

// Dial connects to the BMC's chardev listener at addr ("host:port") and
// opens the protocol as QEMU does (VERSION 1, CAPABILITIES).
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	c := &Client{
		addr: addr, log: slog.New(slog.DiscardHandler), caps: QEMU72Caps,
		timeout: defaultTimeout, driver: true,
		notify:   make(chan struct{}, 1),
		attnCh:   make(chan struct{}, 1),
		messages: make(chan Message, messagesBacklog),
		controls: make(chan vmcodec.Op, 64),
		done:     make(chan struct{}),
	}
	for _, o := range opts {
		o(c)
	}
	c.mu.Lock()
	_, err := c.connLocked(ctx)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	c.wg.Add(1)
	go c.attnWorker()
	return c, nil
}

// connLocked returns the live connection, dialling one if there is none.
func (c *Client) connLocked(ctx context.Context) (net.Conn, error) {
	if c.closed {
		return nil, sysif.ErrClosed
	}
	if c.nc != nil {
		return c.nc, nil
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("chardev: dial BMC %s: %w", c.addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	hello := vmcodec.AppendControl(nil, vmcodec.OpVersion, 1)
	hello = vmcodec.AppendControl(hello, vmcodec.OpCapabilities, c.caps)
	nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := nc.Write(hello); err != nil {
		nc.Close()
		return nil, fmt.Errorf("chardev: greet BMC %s: %w", c.addr, err)
	}
	c.nc, c.irq, c.attn = nc, false, false
	c.wg.Add(1)
	go c.readLoop(nc)
	return nc, nil
}

func (c *Client) readLoop(nc net.Conn) {
	defer c.wg.Done()
	var d vmcodec.Decoder
	buf := make([]byte, 4096)
	for {
		n, err := nc.Read(buf)
		d.Feed(buf[:n], c.handleFrame)
		if err != nil {
			c.mu.Lock()
			if c.nc == nc {
				c.nc = nil
				if c.pend != nil {
					close(c.pend.gone)
					c.pend = nil
				}
			}
			closed := c.closed
			c.mu.Unlock()
			if !closed && !errors.Is(err, net.ErrClosed) {
				c.log.Info("BMC closed the chardev connection; the next request redials", "addr", c.addr, "err", err)
			}
			nc.Close()
			return
		}
	}
}

func (c *Client) handleFrame(f vmcodec.Frame) {
	if f.Err == nil && f.Kind == vmcodec.KindMessage && len(f.Raw) < minResponse {
		f.Err = fmt.Errorf("%w for a response", vmcodec.ErrShort)
	}
	if f.Err != nil {
		c.log.Warn("dropped a malformed frame from the BMC", "why", f.Err.Error(), "bytes", hex.EncodeToString(f.Raw))
		return
	}
	if f.Kind == vmcodec.KindControl {
		op := f.Op()
		c.mu.Lock()
		c.ctrlSeen = append(c.ctrlSeen, op)
		switch op {
		case vmcodec.OpEnableIRQ:
			c.irq = true
		case vmcodec.OpDisableIRQ:
			c.irq = false
		case vmcodec.OpNoAttn:
			c.attn = false
		case vmcodec.OpAttn, vmcodec.OpAttnIRQ:
			c.attn = true
		}
		c.mu.Unlock()
		switch op {
		case vmcodec.OpAttn, vmcodec.OpAttnIRQ:
			signal(c.notify)
			signal(c.attnCh)
		case vmcodec.OpPowerOff, vmcodec.OpReset, vmcodec.OpSendNMI, vmcodec.OpGracefulShutdown:
			select {
			case c.controls <- op:
			default:
				c.log.Warn("control backlog full; dropped", "op", op.String())
			}
		}
		return
	}
	c.mu.Lock()
	p := c.pend
	if p != nil && p.seq == f.Seq() {
		c.pend = nil
	} else {
		p = nil
	}
	c.mu.Unlock()
	if p == nil {
		c.log.Warn("dropped a response nobody waits for (late or unknown seq)", "bytes", hex.EncodeToString(f.Raw))
		return
	}
	p.ch <- f.Raw
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Do sends one request and waits for the response (see sysif.Conn).
func (c *Client) Do(ctx context.Context, netfn, cmd uint8, data []byte) ([]byte, uint8, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	c.reqMu.Lock()
	defer c.reqMu.Unlock()

	c.mu.Lock()
	nc, err := c.connLocked(ctx)
	if err != nil {
		c.mu.Unlock()
		return nil, 0, err
	}
	c.seq++
	p := &pending{seq: c.seq, netfn: netfn, cmd: cmd, ch: make(chan []byte, 1), gone: make(chan struct{})}
	c.pend = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.pend == p {
			c.pend = nil
		}
		c.mu.Unlock()
	}()

	dl, _ := ctx.Deadline()
	nc.SetWriteDeadline(dl)
	if _, err := nc.Write(vmcodec.AppendMessage(nil, p.seq, netfn<<2, cmd, data)); err != nil {
		nc.Close()
		return nil, 0, fmt.Errorf("chardev: send netfn %#02x cmd %#02x: %w: %w", netfn, cmd, ErrPeerGone, err)
	}
	select {
	case raw := <-p.ch:
		if raw[1]>>2 != netfn|1 || raw[2] != cmd {
			return nil, 0, fmt.Errorf("chardev: response netfn %#02x cmd %#02x does not match request netfn %#02x cmd %#02x",
				raw[1]>>2, raw[2], netfn, cmd)
		}
		return raw[4 : len(raw)-1], raw[3], nil
	case <-p.gone:
		return nil, 0, fmt.Errorf("chardev: netfn %#02x cmd %#02x: %w", netfn, cmd, ErrPeerGone)
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("chardev: netfn %#02x cmd %#02x: no response: %w", netfn, cmd, ctx.Err())
	case <-c.done:
		return nil, 0, sysif.ErrClosed
	}
}

// Notify fires after the BMC raised attention and after each message it
// pushed was fetched (as a reader of /dev/ipmi0 wakes on the message).
func (c *Client) Notify() <-chan struct{} { return c.notify }

// Messages yields the pushed messages fetched on attention.
func (c *Client) Messages() <-chan Message { return c.messages }

// Controls yields the power controls the BMC sent (POWEROFF, RESET,
// SEND_NMI, GRACEFUL_SHUTDOWN), as QEMU would act on them.
func (c *Client) Controls() <-chan vmcodec.Op { return c.controls }

// IRQEnabled reports whether the BMC enabled the interrupt (ENABLE_IRQ).
func (c *Client) IRQEnabled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.irq
}

// Attention reports whether SMS_ATN is set as last told by the BMC.
func (c *Client) Attention() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attn
}

// ControlLog returns every control op received so far, in order.
func (c *Client) ControlLog() []vmcodec.Op {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]vmcodec.Op(nil), c.ctrlSeen...)
}

// Reply answers a pushed message with completion code cc and data, as a
// process on /dev/ipmi0 would: a Send Message carrying the IPMB response.
func (c *Client) Reply(ctx context.Context, m Message, cc uint8, data []byte) error {
	b := vmcodec.AppendSendMessage(nil, vmcodec.IPMBMsg{Channel: m.Channel, RsSA: m.ReqAddr, NetFn: m.NetFn | 1,
		RsLUN: m.ReqLUN, RqSA: vmcodec.BMCSlaveAddr, Seq: m.Seq, Cmd: m.Cmd, Data: append([]byte{cc}, data...)})
	_, rcc, err := c.Do(ctx, vmcodec.NetFnApp, vmcodec.CmdSendMessage, b)
	if err != nil {
		return err
	}
	if rcc != 0 {
		return &sysif.CCError{NetFn: vmcodec.NetFnApp, Cmd: vmcodec.CmdSendMessage, CC: rcc}
	}
	return nil
}

// attnWorker does what ipmi_si does on SMS_ATN: Get Message Flags, then Get
// Message while the receive-message bit is set, until the BMC says empty.
func (c *Client) attnWorker() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case <-c.attnCh:
		}
		if !c.driver {
			continue
		}
		if err := c.drain(); err != nil && !errors.Is(err, sysif.ErrClosed) {
			c.log.Warn("could not fetch pushed messages after attention", "err", err)
		}
	}
}

func (c *Client) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	flags, cc, err := c.Do(ctx, vmcodec.NetFnApp, vmcodec.CmdGetMessageFlags, nil)
	if err != nil {
		return err
	}
	if cc != 0 || len(flags) < 1 || flags[0]&1 == 0 {
		return nil
	}
	for {
		r, cc, err := c.Do(ctx, vmcodec.NetFnApp, vmcodec.CmdGetMessage, nil)
		if err != nil {
			return err
		}
		if cc != 0 {
			return nil // 0x80: queue empty
		}
		m, ok := parseGetMessage(r)
		if !ok {
			c.log.Warn("dropped a Get Message response Linux would drop too", "bytes", hex.EncodeToString(r))
			continue
		}
		select {
		case c.messages <- m:
		default:
			c.log.Warn("message backlog full; Linux would answer 0xC1 for an unregistered command", "netfn", m.NetFn, "cmd", m.Cmd)
		}
		// A process on /dev/ipmi0 wakes when a pushed message reaches it,
		// not only on the attention edge: the BMC pushes no second
		// notification while one waits to be fetched, so the fetch itself
		// must wake the reader (else a write that found the old
		// notification still queued is never noticed).
		signal(c.notify)
	}
}

// parseGetMessage reads a Get Message response (after the completion code)
// the way Linux handle_ipmb_get_msg_cmd does; responses go elsewhere.
func parseGetMessage(r []byte) (Message, bool) {
	m, err := vmcodec.ParseGetMessage(r)
	if err != nil || m.IsResponse() {
		return Message{}, false
	}
	return Message{Channel: m.Channel, NetFn: m.NetFn, ReqAddr: m.RqSA, Seq: m.Seq, ReqLUN: m.RqLUN, Cmd: m.Cmd, Data: m.Data}, true
}

// Close ends the connection and the worker.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	nc := c.nc
	c.nc = nil
	c.mu.Unlock()
	close(c.done)
	var err error
	if nc != nil {
		err = nc.Close()
	}
	c.wg.Wait()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}
