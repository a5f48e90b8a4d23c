// Package devipmi implements sysif.Conn over the Linux IPMI device
// (/dev/ipmi0, drivers ipmi_msghandler + ipmi_devintf + ipmi_si) with its
// own ioctl wrapper: no cgo, so it runs in a static binary inside a guest.
//
// Requests go to the system interface address (BMC channel 0x0F, LUN 0)
// with IPMICTL_SEND_COMMAND; one goroutine per Conn waits for the device
// to poll readable (POLLIN, through Go's runtime poller: see fileDevice)
// and takes every message with IPMICTL_RECEIVE_MSG_TRUNC:
//
//	recv_type 1 (response)      → the Do waiting for that msgid; a response
//	                              nobody waits for (its Do gave up) is dropped
//	recv_type 3 (command)       → a request the BMC pushed through its receive
//	                              message queue (Get Message), delivered
//	                              because RegisterForCmd asked for it: Notify
//	                              fires, and it is answered (IPMICTL_SEND_COMMAND
//	                              with the received msgid, to the address it
//	                              came from, NetFn|1, completion code first)
//	                              right after the next Do's request, or
//	                              within answerDelay
//	recv_type 4 (resp-response) → the kernel's confirmation that such an
//	                              answer went out: ignored (logged if it failed)
//	recv_type 2, 5              → ignored
//
// Message data of a response starts with the completion code; the kernel
// never hands back more than IPMI_MAX_MSG_LENGTH (272) bytes.
//
// Cost: handing each response from the receive goroutine to the Do that
// waits for it costs ~150-230 µs per request in a one-vCPU TCG guest over
// a blocking ioctl/poll(2) in the caller (bench/kcs, rows with and without
// "-raw"). A Do that receives for itself while no other is in flight would
// remove it; not done yet.
package devipmi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ooblab/ooblab/hvagent/sysif"
)

// DefaultPath is the first IPMI interface's device node.
const DefaultPath = "/dev/ipmi0"

// Errors.
var (
	// ErrTruncated: the kernel had more data than the receive buffer held.
	ErrTruncated = errors.New("devipmi: response truncated")
	// ErrTooLong: request data longer than the kernel accepts.
	ErrTooLong = errors.New("devipmi: request data too long")
)

// Command is a request the BMC pushed to this process.
type Command struct {
	NetFn, Cmd uint8
	Channel    int16 // channel it arrived on (0 for bmcsim's pushes)
	Data       []byte
}

// CommandHandler answers a pushed command with a completion code and data.
// It runs on the receive goroutine: keep it short and non-blocking.
type CommandHandler func(Command) (cc uint8, resp []byte)

// Option configures Open.
type Option func(*Conn)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *Conn) { c.log = l } }

// WithCommandHandler sets how pushed commands are answered (default:
// completion code 0, no data) and observed.
func WithCommandHandler(h CommandHandler) Option { return func(c *Conn) { c.onCmd = h } }

// Conn is an open /dev/ipmi0. Do may be called from several goroutines.
type Conn struct {
	dev   device
	log   *slog.Logger
	onCmd CommandHandler
	si    []byte // system interface address

	notify chan struct{}
	done   chan struct{} // closed when the receive goroutine ends
	closed atomic.Bool

	// owed: answers to pushed commands not sent yet (see answer).
	owedMu    sync.Mutex
	owed      []func()
	owedArmed bool

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan result
	fatal   error // set when the receive goroutine died
	once    sync.Once
}

type result struct {
	data []byte // completion code first
	err  error
}

var _ sysif.Conn = (*Conn)(nil)

// Open opens the IPMI device at path (DefaultPath when empty).
func Open(path string, opts ...Option) (*Conn, error) {
	if path == "" {
		path = DefaultPath
	}
	dev, err := openFile(path)
	if err != nil {
		return nil, fmt.Errorf("devipmi: open %s: %w (are ipmi_devintf and ipmi_si loaded?)", path, err)
	}
	return newConn(dev, opts...), nil
}

func newConn(dev device, opts ...Option) *Conn {
	c := &Conn{
		dev:     dev,
		log:     slog.New(slog.DiscardHandler),
		si:      systemInterfaceAddr(),
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		pending: map[int64]chan result{},
	}
	for _, o := range opts {
		o(c)
	}
	go c.receiveLoop()
	return c
}

// Notify yields a value (coalesced) after the BMC pushed a command this
// Conn registered for.
func (c *Conn) Notify() <-chan struct{} { return c.notify }

// RegisterForCmd asks the kernel to deliver requests with netfn/cmd that
// arrive from the BMC's receive message queue (on any channel) to this
// Conn. Only one process on the machine may hold a netfn/cmd: EBUSY.
func (c *Conn) RegisterForCmd(netfn, cmd uint8) error {
	return c.cmdspec(ioctlRegisterForCmd, "register for", netfn, cmd)
}

// UnregisterForCmd undoes RegisterForCmd.
func (c *Conn) UnregisterForCmd(netfn, cmd uint8) error {
	return c.cmdspec(ioctlUnregisterCmd, "unregister from", netfn, cmd)
}

func (c *Conn) cmdspec(req uintptr, what string, netfn, cmd uint8) error {
	if c.closed.Load() {
		return sysif.ErrClosed
	}
	spec := ipmiCmdspec{netfn: netfn, cmd: cmd}
	err := c.ioctl(req, unsafe.Pointer(&spec))
	runtime.KeepAlive(&spec)
	if err != nil {
		return fmt.Errorf("devipmi: %s netfn %#02x cmd %#02x: %w", what, netfn, cmd, err)
	}
	return nil
}

// Do sends one request to the BMC and waits for the response or ctx. The
// response's completion code is returned apart from its data.
func (c *Conn) Do(ctx context.Context, netfn, cmd uint8, data []byte) ([]byte, uint8, error) {
	if c.closed.Load() {
		return nil, 0, sysif.ErrClosed
	}
	if len(data) > maxMsgLen-2 {
		return nil, 0, fmt.Errorf("%w: %d bytes", ErrTooLong, len(data))
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.fatal != nil {
		err := c.fatal
		c.mu.Unlock()
		return nil, 0, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() { c.mu.Lock(); delete(c.pending, id); c.mu.Unlock() }

	if err := c.send(c.si, id, netfn, cmd, data); err != nil {
		forget()
		return nil, 0, fmt.Errorf("devipmi: send netfn %#02x cmd %#02x: %w", netfn, cmd, err)
	}
	c.payOwed() // behind this request: see answer
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, 0, r.err
		}
		if len(r.data) == 0 {
			return nil, 0, fmt.Errorf("devipmi: netfn %#02x cmd %#02x: response without completion code", netfn, cmd)
		}
		return r.data[1:], r.data[0], nil
	case <-ctx.Done():
		forget()
		return nil, 0, fmt.Errorf("devipmi: netfn %#02x cmd %#02x: %w", netfn, cmd, ctx.Err())
	}
}

// send issues IPMICTL_SEND_COMMAND.
func (c *Conn) send(addr []byte, msgid int64, netfn, cmd uint8, data []byte) error {
	req := ipmiReq{
		addr: &addr[0], addrLen: uint32(len(addr)), msgid: msgid,
		msg: ipmiMsg{netfn: netfn, cmd: cmd, dataLen: uint16(len(data))},
	}
	if len(data) > 0 {
		req.msg.data = &data[0]
	}
	err := c.ioctl(ioctlSendCommand, unsafe.Pointer(&req))
	runtime.KeepAlive(&req)
	runtime.KeepAlive(addr)
	runtime.KeepAlive(data)
	return err
}

// ioctl retries on EINTR.
func (c *Conn) ioctl(req uintptr, arg unsafe.Pointer) error {
	for {
		err := c.dev.ioctl(req, arg)
		if err != unix.EINTR {
			return err
		}
	}
}

// Close stops the receive goroutine, fails waiting Do calls with
// sysif.ErrClosed and closes the device.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		c.closed.Store(true)
		err = c.dev.close() // ends readLoop
		<-c.done
		c.failAll(sysif.ErrClosed)
	})
	return err
}

func (c *Conn) failAll(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatal == nil {
		c.fatal = err
	}
	for id, ch := range c.pending {
		ch <- result{err: err}
		delete(c.pending, id)
	}
}

// receiveLoop waits for the device to be readable and drains it.
func (c *Conn) receiveLoop() {
	defer close(c.done)
	var fatal error
	err := c.dev.readLoop(func() bool {
		if c.closed.Load() {
			return true
		}
		fatal = c.drain()
		return fatal != nil // false: drained, wait for more
	})
	if c.closed.Load() {
		return
	}
	if fatal == nil {
		fatal = fmt.Errorf("devipmi: wait for the device: %w", err)
	}
	c.die(fatal)
}

func (c *Conn) die(err error) {
	c.log.Error("IPMI receive loop stopped; reopen the device", "err", err)
	c.failAll(err)
}

// drain receives until the kernel's queue for this file is empty.
func (c *Conn) drain() error {
	var addr [maxAddrLen]byte
	var buf [maxMsgLen + 8]byte
	for {
		r := ipmiRecv{
			addr: &addr[0], addrLen: uint32(len(addr)),
			msg: ipmiMsg{dataLen: uint16(len(buf)), data: &buf[0]},
		}
		err := c.ioctl(ioctlReceiveMsgTrunc, unsafe.Pointer(&r))
		runtime.KeepAlive(&r)
		runtime.KeepAlive(&addr)
		runtime.KeepAlive(&buf)
		truncated := false
		switch err {
		case nil:
		case unix.EAGAIN:
			return nil
		case unix.EMSGSIZE: // _TRUNC: the message is consumed, its head copied
			truncated = true
		default:
			return fmt.Errorf("devipmi: receive: %w", err)
		}
		n := min(int(r.msg.dataLen), len(buf))
		al := min(int(r.addrLen), len(addr))
		c.dispatch(r.recvType, addr[:al], r.msgid, r.msg.netfn, r.msg.cmd, append([]byte(nil), buf[:n]...), truncated)
	}
}

func (c *Conn) dispatch(typ int32, addr []byte, msgid int64, netfn, cmd uint8, data []byte, truncated bool) {
	switch typ {
	case recvResponse:
		c.mu.Lock()
		ch, ok := c.pending[msgid]
		delete(c.pending, msgid)
		c.mu.Unlock()
		if !ok {
			c.log.Debug("dropped a response nobody waits for (its request timed out)",
				"msgid", msgid, "netfn", netfn, "cmd", cmd)
			return
		}
		r := result{data: data}
		if truncated {
			r = result{err: fmt.Errorf("%w: netfn %#02x cmd %#02x", ErrTruncated, netfn, cmd)}
		}
		ch <- r
	case recvCommand:
		c.answer(addr, msgid, netfn, cmd, data, truncated)
	case recvResponseResponse:
		if len(data) > 0 && data[0] != 0 {
			c.log.Warn("the kernel could not deliver our answer to a pushed command",
				"netfn", netfn, "cmd", cmd, "cc", fmt.Sprintf("%#02x", data[0]))
		}
	default:
		c.log.Debug("ignored a message", "recv_type", typ, "netfn", netfn, "cmd", cmd)
	}
}

// answer replies to a pushed command and fires Notify.
func (c *Conn) answer(addr []byte, msgid int64, netfn, cmd uint8, data []byte, truncated bool) {
	select {
	case c.notify <- struct{}{}:
	default:
	}
	typ, ch := addrHeader(addr)
	cc, resp := uint8(0), []byte(nil)
	switch {
	case truncated:
		cc = 0xC7 // request data length invalid
	case c.onCmd != nil:
		cc, resp = c.onCmd(Command{NetFn: netfn, Cmd: cmd, Channel: ch, Data: data})
	}
	if typ != addrTypeIPMB && typ != addrTypeLAN {
		c.log.Warn("pushed command from an address type we cannot answer", "addr_type", typ)
		return
	}
	out := append([]byte{cc}, resp...)
	if len(out) > maxMsgLen-2 {
		out = []byte{0xFF}
	}
	addr = append([]byte(nil), addr...)
	c.owe(func() {
		if err := c.send(addr, msgid, netfn|1, cmd, out); err != nil && !c.closed.Load() {
			c.log.Warn("could not answer a pushed command", "netfn", netfn, "cmd", cmd, "err", err)
		}
	})
}

// answerDelay is how long the answer to a pushed command waits for the
// request that Notify wakes: the kernel hands the system interface one
// message at a time in the order they were sent, so the woken reader's
// request (the read of Queue 1 the push announced) goes first and the
// courtesy answer after it, instead of the reader waiting one KCS
// transaction for it (~0.5 ms in a TCG guest). Nothing waits for the
// answer: bmcsim only counts it.
const answerDelay = 5 * time.Millisecond

// owe queues an answer to send after the next request (Do), or after
// answerDelay if no request comes.
func (c *Conn) owe(f func()) {
	c.owedMu.Lock()
	c.owed = append(c.owed, f)
	arm := !c.owedArmed
	c.owedArmed = true
	c.owedMu.Unlock()
	if arm {
		time.AfterFunc(answerDelay, c.payOwed)
	}
}

// payOwed sends the answers owed, in the order their commands came.
func (c *Conn) payOwed() {
	c.owedMu.Lock()
	fs := c.owed
	c.owed, c.owedArmed = nil, false
	c.owedMu.Unlock()
	for _, f := range fs {
		f()
	}
}
