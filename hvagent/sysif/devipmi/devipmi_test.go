package devipmi

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ooblab/ooblab/hvagent/sysif"
	"github.com/ooblab/ooblab/internal/testutil"
)

// Kernel values from include/uapi/linux/ipmi.h on amd64.
func TestKernelABI(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct ipmi_msg)", unsafe.Sizeof(ipmiMsg{}), 16},
		{"sizeof(struct ipmi_req)", unsafe.Sizeof(ipmiReq{}), 40},
		{"sizeof(struct ipmi_recv)", unsafe.Sizeof(ipmiRecv{}), 48},
		{"offsetof(ipmi_recv, msgid)", unsafe.Offsetof(ipmiRecv{}.msgid), 24},
		{"offsetof(ipmi_req, msg)", unsafe.Offsetof(ipmiReq{}.msg), 24},
		{"IPMICTL_RECEIVE_MSG_TRUNC", ioctlReceiveMsgTrunc, 0xc030690b},
		{"IPMICTL_SEND_COMMAND", ioctlSendCommand, 0x8028690d},
		{"IPMICTL_REGISTER_FOR_CMD", ioctlRegisterForCmd, 0x8002690e},
		{"IPMICTL_UNREGISTER_FOR_CMD", ioctlUnregisterCmd, 0x8002690f},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
	if got := hex.EncodeToString(systemInterfaceAddr()); got != "0c0000000f000000" {
		t.Errorf("system interface address %s", got)
	}
}

// msg is one message the fake kernel hands to RECEIVE_MSG_TRUNC.
type msg struct {
	typ        int32
	addr       []byte
	msgid      int64
	netfn, cmd uint8
	data       []byte
}

// sent is one IPMICTL_SEND_COMMAND as the fake kernel saw it.
type sent struct {
	addr       []byte
	msgid      int64
	netfn, cmd uint8
	data       []byte
}

// fakeKernel stands in for ipmi_devintf: a per-file receive queue, poll
// readiness, and scripted errno.
type fakeKernel struct {
	mu     sync.Mutex
	cond   *sync.Cond
	inbox  []msg
	woken  bool
	sends  []sent
	cmds   [][2]uint8
	errs   map[uintptr][]error         // next errno per ioctl request, consumed in order
	onSend func(k *fakeKernel, s sent) // called with mu held
	trunc  bool                        // report EMSGSIZE on the next receive
}

func newFake() *fakeKernel {
	k := &fakeKernel{errs: map[uintptr][]error{}}
	k.cond = sync.NewCond(&k.mu)
	return k
}

func (k *fakeKernel) close() error {
	k.mu.Lock()
	k.woken = true
	k.cond.Broadcast()
	k.mu.Unlock()
	return nil
}

func (k *fakeKernel) deliverLocked(m msg) { k.inbox = append(k.inbox, m); k.cond.Broadcast() }

func (k *fakeKernel) push(m msg) { k.mu.Lock(); k.deliverLocked(m); k.mu.Unlock() }

// readLoop is the runtime poller: try, and wait for POLLIN while it says so.
func (k *fakeKernel) readLoop(try func() bool) error {
	for {
		if try() {
			return nil
		}
		k.mu.Lock()
		for len(k.inbox) == 0 && !k.woken {
			k.cond.Wait()
		}
		closed := k.woken
		k.mu.Unlock()
		if closed {
			return errors.New("file already closed")
		}
	}
}

func bytesAt(p *byte, n int) []byte {
	if p == nil || n == 0 {
		return nil
	}
	return append([]byte(nil), unsafe.Slice(p, n)...)
}

func (k *fakeKernel) ioctl(req uintptr, arg unsafe.Pointer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.woken {
		return unix.EBADF
	}
	if q := k.errs[req]; len(q) > 0 {
		k.errs[req] = q[1:]
		if q[0] != nil {
			return q[0]
		}
	}
	switch req {
	case ioctlSendCommand:
		r := (*ipmiReq)(arg)
		s := sent{addr: bytesAt(r.addr, int(r.addrLen)), msgid: r.msgid, netfn: r.msg.netfn, cmd: r.msg.cmd,
			data: bytesAt(r.msg.data, int(r.msg.dataLen))}
		k.sends = append(k.sends, s)
		if k.onSend != nil {
			k.onSend(k, s)
		}
		return nil
	case ioctlReceiveMsgTrunc:
		if len(k.inbox) == 0 {
			return unix.EAGAIN
		}
		m := k.inbox[0]
		k.inbox = k.inbox[1:]
		r := (*ipmiRecv)(arg)
		if int(r.addrLen) < len(m.addr) {
			return unix.EINVAL
		}
		copy(unsafe.Slice(r.addr, r.addrLen), m.addr)
		r.addrLen = uint32(len(m.addr))
		r.recvType, r.msgid, r.msg.netfn, r.msg.cmd = m.typ, m.msgid, m.netfn, m.cmd
		n := copy(unsafe.Slice(r.msg.data, r.msg.dataLen), m.data)
		r.msg.dataLen = uint16(n)
		if k.trunc {
			k.trunc = false
			return unix.EMSGSIZE
		}
		return nil
	case ioctlRegisterForCmd:
		s := (*ipmiCmdspec)(arg)
		k.cmds = append(k.cmds, [2]uint8{s.netfn, s.cmd})
		return nil
	case ioctlUnregisterCmd:
		return nil
	}
	return unix.ENOTTY
}

// answerAll makes the BMC answer every request to the system interface
// with cc 0 and resp.
func answerAll(resp ...byte) func(*fakeKernel, sent) {
	return func(k *fakeKernel, s sent) {
		if s.netfn&1 == 0 {
			k.deliverLocked(msg{typ: recvResponse, addr: s.addr, msgid: s.msgid, netfn: s.netfn | 1, cmd: s.cmd,
				data: append([]byte{0}, resp...)})
		}
	}
}

func openFake(t *testing.T, k *fakeKernel, opts ...Option) *Conn {
	t.Helper()
	c := newConn(k, opts...)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDo(t *testing.T) {
	for _, tt := range []struct {
		name     string
		setup    func(k *fakeKernel)
		wantResp string
		wantCC   uint8
		wantErr  error
	}{
		{name: "ok", setup: func(k *fakeKernel) { k.onSend = answerAll(0x20, 0x01) }, wantResp: "2001"},
		{name: "EINTR on send and receive is retried", setup: func(k *fakeKernel) {
			k.onSend = answerAll(0xaa)
			k.errs[ioctlSendCommand] = []error{unix.EINTR, unix.EINTR}
			k.errs[ioctlReceiveMsgTrunc] = []error{unix.EINTR}
		}, wantResp: "aa"},
		{name: "send errno", setup: func(k *fakeKernel) {
			k.errs[ioctlSendCommand] = []error{unix.EINVAL}
		}, wantErr: unix.EINVAL},
		{name: "completion code is not an error", setup: func(k *fakeKernel) {
			k.onSend = func(k *fakeKernel, s sent) {
				k.deliverLocked(msg{typ: recvResponse, addr: s.addr, msgid: s.msgid, netfn: 0x2f, cmd: s.cmd, data: []byte{0xc1}})
			}
		}, wantCC: 0xc1, wantResp: ""},
		{name: "wrong msgid is not our answer", setup: func(k *fakeKernel) {
			k.onSend = func(k *fakeKernel, s sent) {
				k.deliverLocked(msg{typ: recvResponse, addr: s.addr, msgid: s.msgid + 100, netfn: 0x2f, cmd: s.cmd, data: []byte{0, 0xee}})
				k.deliverLocked(msg{typ: recvResponseResponse, addr: s.addr, msgid: s.msgid, netfn: 0x2f, cmd: s.cmd, data: []byte{0}})
				k.deliverLocked(msg{typ: recvResponse, addr: s.addr, msgid: s.msgid, netfn: 0x2f, cmd: s.cmd, data: []byte{0, 0x11}})
			}
		}, wantResp: "11"},
		{name: "truncated", setup: func(k *fakeKernel) {
			k.onSend = answerAll(1, 2, 3)
			k.trunc = true
		}, wantErr: ErrTruncated},
		{name: "deadline without an answer", setup: func(k *fakeKernel) {}, wantErr: context.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := newFake()
			tt.setup(k)
			c := openFake(t, k)
			resp, cc, err := c.Do(testutil.Context(t, 200*time.Millisecond), 0x2e, 0x02, []byte{0xd9, 0x7e, 0x00})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(resp); got != tt.wantResp || cc != tt.wantCC {
				t.Fatalf("resp %q cc %#x, want %q cc %#x", got, cc, tt.wantResp, tt.wantCC)
			}
			k.mu.Lock()
			defer k.mu.Unlock()
			s := k.sends[0]
			if hex.EncodeToString(s.addr) != "0c0000000f000000" || s.netfn != 0x2e || s.cmd != 0x02 ||
				hex.EncodeToString(s.data) != "d97e00" {
				t.Fatalf("sent %+v", s)
			}
		})
	}
}

// A response that arrives after its Do gave up must not be taken by the
// next Do.
func TestLateResponseDropped(t *testing.T) {
	k := newFake()
	c := openFake(t, k)
	if _, _, err := c.Do(testutil.Context(t, 50*time.Millisecond), 6, 1, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	k.mu.Lock()
	late := k.sends[0]
	k.onSend = answerAll(0x42)
	k.deliverLocked(msg{typ: recvResponse, addr: late.addr, msgid: late.msgid, netfn: 7, cmd: 1, data: []byte{0, 0xde, 0xad}})
	k.mu.Unlock()
	resp, _, err := c.Do(testutil.Context(t, time.Second), 6, 1, nil)
	if err != nil || !bytes.Equal(resp, []byte{0x42}) {
		t.Fatalf("resp % x err %v, want 42", resp, err)
	}
}

func TestConcurrentDo(t *testing.T) {
	k := newFake()
	// Answer in reverse order of sending, per pair.
	var held []sent
	k.onSend = func(k *fakeKernel, s sent) {
		held = append(held, s)
		if len(held) == 2 {
			for i := 1; i >= 0; i-- {
				h := held[i]
				k.deliverLocked(msg{typ: recvResponse, addr: h.addr, msgid: h.msgid, netfn: h.netfn | 1, cmd: h.cmd, data: []byte{0, h.data[0]}})
			}
			held = nil
		}
	}
	c := openFake(t, k)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _, err := c.Do(testutil.Context(t, 2*time.Second), 0x2e, 3, []byte{byte(i)})
			if err != nil || len(resp) != 1 || resp[0] != byte(i) {
				t.Errorf("Do %d: resp % x err %v", i, resp, err)
			}
		}()
	}
	wg.Wait()
}

func TestPushedCommand(t *testing.T) {
	k := newFake()
	var got []Command
	c := openFake(t, k, WithCommandHandler(func(cmd Command) (uint8, []byte) {
		got = append(got, cmd)
		return 0, []byte{0xd9, 0x7e, 0x00}
	}))
	if err := c.RegisterForCmd(0x2e, 0x06); err != nil {
		t.Fatal(err)
	}
	// struct ipmi_ipmb_addr: type 1, channel 0, slave 0x81, lun 0.
	ipmb := []byte{1, 0, 0, 0, 0, 0, 0x81, 0}
	k.push(msg{typ: recvCommand, addr: ipmb, msgid: 0x17, netfn: 0x2e, cmd: 0x06, data: []byte{0xd9, 0x7e, 0x00}})
	select {
	case <-c.Notify():
	case <-time.After(2 * time.Second):
		t.Fatal("Notify did not fire")
	}
	// The confirmation of our answer: ignored, no second Notify.
	k.push(msg{typ: recvResponseResponse, addr: ipmb, msgid: 0x17, netfn: 0x2f, cmd: 0x06, data: []byte{0}})
	// A Do after it proves the loop went past both messages.
	k.mu.Lock()
	k.onSend = answerAll()
	k.mu.Unlock()
	if _, _, err := c.Do(testutil.Context(t, time.Second), 6, 1, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Notify():
		t.Fatal("a type-4 confirmation fired Notify")
	default:
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.cmds) != 1 || k.cmds[0] != [2]uint8{0x2e, 0x06} {
		t.Fatalf("registered %v", k.cmds)
	}
	if len(got) != 1 || got[0].NetFn != 0x2e || got[0].Cmd != 0x06 || got[0].Channel != 0 {
		t.Fatalf("handler saw %+v", got)
	}
	// Notify fires before the answer goes out: find it among the sends.
	var a sent
	for _, s := range k.sends {
		if s.netfn == 0x2f {
			a = s
		}
	}
	if !bytes.Equal(a.addr, ipmb) || a.msgid != 0x17 || a.netfn != 0x2f || a.cmd != 0x06 ||
		hex.EncodeToString(a.data) != "00d97e00" {
		t.Fatalf("answer %+v", a)
	}
	if len(k.sends) != 2 {
		t.Fatalf("want the answer and one request, got %d sends", len(k.sends))
	}
}

func TestRegisterErrno(t *testing.T) {
	k := newFake()
	k.errs[ioctlRegisterForCmd] = []error{unix.EINTR, unix.EBUSY}
	c := openFake(t, k)
	err := c.RegisterForCmd(0x2e, 6)
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "0x2e") {
		t.Fatalf("err = %v", err)
	}
}

func TestReceiveErrorFailsWaiters(t *testing.T) {
	k := newFake()
	k.errs[ioctlReceiveMsgTrunc] = []error{unix.EFAULT}
	k.onSend = answerAll()
	c := openFake(t, k)
	if _, _, err := c.Do(testutil.Context(t, time.Second), 6, 1, nil); !errors.Is(err, unix.EFAULT) {
		t.Fatalf("err = %v, want EFAULT", err)
	}
	if _, _, err := c.Do(testutil.Context(t, time.Second), 6, 1, nil); !errors.Is(err, unix.EFAULT) {
		t.Fatalf("after the loop died: err = %v, want EFAULT", err)
	}
}

func TestClose(t *testing.T) {
	k := newFake()
	c := openFake(t, k)
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Do(context.Background(), 6, 1, nil)
		errc <- err
	}()
	// Wait until the request is in the kernel.
	for {
		k.mu.Lock()
		n := len(k.sends)
		k.mu.Unlock()
		if n > 0 {
			break
		}
		runtime.Gosched()
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, sysif.ErrClosed) {
		t.Fatalf("pending Do: %v", err)
	}
	if _, _, err := c.Do(context.Background(), 6, 1, nil); !errors.Is(err, sysif.ErrClosed) {
		t.Fatalf("Do after Close: %v", err)
	}
	if err := c.RegisterForCmd(1, 2); !errors.Is(err, sysif.ErrClosed) {
		t.Fatalf("RegisterForCmd after Close: %v", err)
	}
}

func TestTooLong(t *testing.T) {
	c := openFake(t, newFake())
	if _, _, err := c.Do(context.Background(), 0x2e, 3, make([]byte, 300)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("err = %v", err)
	}
}

// TestPushedCommandAnsweredAfterWokenRequest: the request the push wakes
// (the reader's read of Queue 1) reaches the kernel before the courtesy
// answer to the push, so it does not wait one KCS transaction behind it;
// with no request the answer still goes out, within answerDelay.
func TestPushedCommandAnsweredAfterWokenRequest(t *testing.T) {
	k := newFake()
	k.onSend = answerAll()
	c := openFake(t, k)
	ipmb := []byte{1, 0, 0, 0, 0, 0, 0x81, 0}
	k.push(msg{typ: recvCommand, addr: ipmb, msgid: 0x21, netfn: 0x2e, cmd: 0x06, data: []byte{0xd9, 0x7e, 0x00}})
	select {
	case <-c.Notify():
	case <-time.After(2 * time.Second):
		t.Fatal("Notify did not fire")
	}
	if _, _, err := c.Do(testutil.Context(t, time.Second), 0x2e, 0x07, []byte{0xd9, 0x7e, 0x00, 0}); err != nil {
		t.Fatal(err)
	}
	sends := func() []sent {
		k.mu.Lock()
		defer k.mu.Unlock()
		return append([]sent(nil), k.sends...)
	}
	testutil.WaitFor(t, 2*time.Second, "two sends", func() bool { return len(sends()) == 2 })
	if s := sends(); s[0].netfn != 0x2e || s[0].cmd != 0x07 || s[1].netfn != 0x2f || s[1].msgid != 0x21 {
		t.Fatalf("sends %+v: want the woken request first, then the answer to the push", s)
	}
	// No request this time: the answer goes out on its own.
	k.push(msg{typ: recvCommand, addr: ipmb, msgid: 0x22, netfn: 0x2e, cmd: 0x06, data: []byte{0xd9, 0x7e, 0x00}})
	testutil.WaitFor(t, 2*time.Second, "the answer without a request", func() bool {
		s := sends()
		return len(s) == 3 && s[2].netfn == 0x2f && s[2].msgid == 0x22
	})
}
