package kcs

import (
	"context"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/hal/mock"

	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmcodec"
)

func newBMC() *bmc.BMC {
	return bmc.New(bmc.DeviceInfo{DeviceID: 0x20, IPMIVersion: 0x02, ManufacturerID: 32473, ProductID: 0x0001}, [16]byte{1}, mock.New())
}

// startServer runs a Server on a loopback listener for the test's lifetime.
func startServer(t *testing.T, opts ...Option) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(newBMC(), nil, testutil.Logger(t), opts...)
	testutil.Serve(t, "Serve", func(ctx context.Context) error { return s.Serve(ctx, ln) })
	return s, ln.Addr().String()
}

// rawQEMU is a byte-level stand-in for QEMU: it writes hex and reads frames.
type rawQEMU struct {
	t  *testing.T
	nc net.Conn
	d  vmcodec.Decoder
	q  []vmcodec.Frame
}

func dialRaw(t *testing.T, addr string) *rawQEMU {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawQEMU{t: t, nc: nc}
}

func (r *rawQEMU) send(h string) {
	r.t.Helper()
	if _, err := r.nc.Write(testutil.Unhex(r.t, h)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawQEMU) next() vmcodec.Frame {
	r.t.Helper()
	buf := make([]byte, 512)
	for len(r.q) == 0 {
		r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := r.nc.Read(buf)
		r.d.Feed(buf[:n], func(f vmcodec.Frame) { r.q = append(r.q, f) })
		if err != nil && len(r.q) == 0 {
			r.t.Fatalf("read: %v", err)
		}
	}
	f := r.q[0]
	r.q = r.q[1:]
	if f.Err != nil {
		r.t.Fatalf("bad frame from BMC: %v % x", f.Err, f.Raw)
	}
	return f
}

// expect reads one frame and compares its unescaped bytes (without the end byte).
func (r *rawQEMU) expect(what, want string) {
	r.t.Helper()
	if got := testutil.Hex(r.next().Raw); got != want {
		r.t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

func TestServerWire(t *testing.T) {
	var mu sync.Mutex
	var replies []string
	s, addr := startServer(t, WithOnHostReply(func(netfn, cmd uint8, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		replies = append(replies, hex.EncodeToString([]byte{netfn, cmd})+" "+testutil.Hex(data))
	}))
	q := dialRaw(t, addr)
	q.expect("hello", "ff 01")
	q.send("ff 01 a1 08 3f a1")

	// Get Device ID with the bytes QEMU 7.2 was seen to send.
	q.send("00 18 01 e7 a0")
	f := q.next()
	if f.Seq() != 0 || f.NetFn() != 0x07 || f.Cmd() != 0x01 || f.Data()[0] != 0 || f.Data()[1] != 0x20 {
		t.Fatalf("Get Device ID response %s", testutil.Hex(f.Raw))
	}

	// Set BMC Global Enables bit 0: ENABLE_IRQ first, then the response.
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 1, 0x06<<2, 0x2e, []byte{0x01})))
	q.expect("enable irq", "05")
	q.expect("set enables rsp", "01 1c 2e 00 b5")
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 2, 0x06<<2, 0x2f, nil)))
	q.expect("get enables rsp", "02 1c 2f 00 01 b2")

	// Push: ATTN_IRQ (interrupts are on).
	if err := s.Push(0x2e, 0x10, []byte{0xd9, 0x7e, 0x00, 0xaa}); err != nil {
		t.Fatal(err)
	}
	q.expect("attn", "02")
	// A second push re-arms: NOATTN then ATTN_IRQ.
	if err := s.Push(0x2e, 0x11, nil); err != nil {
		t.Fatal(err)
	}
	q.expect("rearm off", "00")
	q.expect("rearm on", "02")

	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 3, 0x06<<2, 0x31, nil)))
	q.expect("flags", "03 1c 31 00 01 af")
	// Get Message: chan 0, netfn 2e<<2=b8, sum1 -(20+b8)=28, rqSA 81, seq 1<<2, cmd 10, data, sum2.
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 4, 0x06<<2, 0x33, nil)))
	f = q.next()
	if got, want := testutil.Hex(f.Data()), "00 00 b8 28 81 04 10 d9 7e 00 aa 6a"; got != want {
		t.Fatalf("Get Message body %s, want %s", got, want)
	}
	// Last message: the queue empties, so NOATTN comes before the response.
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 5, 0x06<<2, 0x33, nil)))
	q.expect("attn off", "00")
	if f = q.next(); testutil.Hex(f.Data()) != "00 00 b8 28 81 08 11 66" {
		t.Fatalf("second Get Message %s", testutil.Hex(f.Data()))
	}
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 6, 0x06<<2, 0x33, nil)))
	if f = q.next(); f.Data()[0] != 0x80 {
		t.Fatalf("empty queue answered %s", testutil.Hex(f.Raw))
	}
	// Read Event Message Buffer: this BMC has no events for the host.
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 6, 0x06<<2, 0x35, nil)))
	if f = q.next(); f.Cmd() != 0x35 || f.NetFn() != 0x07 || len(f.Data()) != 1 || f.Data()[0] != 0x80 {
		t.Fatalf("Read Event Message Buffer answered %s, want cc 0x80 (empty)", testutil.Hex(f.Raw))
	}

	// The host's reply, as Linux formats it: Send Message, channel 0, rsSA 81,
	// netfn 2f, sum1, rqSA 20, seq 1, cmd 10, cc 00, data 01 02, sum2.
	ipmb := []byte{0x00, 0x81, 0x2f << 2, 0, 0x20, 1 << 2, 0x10, 0x00, 0x01, 0x02, 0}
	ipmb[3] = -(ipmb[1] + ipmb[2])
	ipmb[10] = -vmcodec.Checksum(ipmb[4:10])
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 7, 0x06<<2, 0x34, ipmb)))
	if f = q.next(); f.Data()[0] != 0 {
		t.Fatalf("Send Message answered %s", testutil.Hex(f.Raw))
	}
	mu.Lock()
	if len(replies) != 1 || replies[0] != "2f10 00 01 02" {
		t.Fatalf("host replies %q", replies)
	}
	mu.Unlock()
	// A corrupt one is refused with 0xCC.
	ipmb[10]++
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 8, 0x06<<2, 0x34, ipmb)))
	if f = q.next(); f.Data()[0] != 0xcc {
		t.Fatalf("corrupt Send Message answered %s", testutil.Hex(f.Raw))
	}

	// Garbage and a bad checksum are dropped; the stream carries on.
	q.send("12 34 a0 00 18 01 e6 a0 aa a0 09 18 01 de a0")
	if f = q.next(); f.Seq() != 9 {
		t.Fatalf("after garbage got %s", testutil.Hex(f.Raw))
	}

	// Power controls.
	for _, c := range []struct {
		fn   func() error
		want string
	}{{s.PowerOff, "03"}, {s.Reset, "04"}, {s.GracefulShutdown, "09"}, {s.SendNMI, "07"}} {
		if err := c.fn(); err != nil {
			t.Fatal(err)
		}
		q.expect("power control", c.want)
	}
}

func TestServerAttentionAck(t *testing.T) {
	s, addr := startServer(t)
	q := dialRaw(t, addr)
	q.expect("hello", "ff 01")
	s.SetAttention(true)
	q.expect("attn without irq", "01")
	s.SetAttention(true)
	q.expect("rearm off", "00")
	q.expect("rearm on", "01")
	// The host reads the flags (nothing queued): attention is acknowledged.
	q.send(testutil.Hex(vmcodec.AppendMessage(nil, 1, 0x06<<2, 0x31, nil)))
	q.expect("attn cleared", "00")
	q.expect("flags", "01 1c 31 00 00 b2")
}

func TestServerReconnect(t *testing.T) {
	var mu sync.Mutex
	var states []bool
	s, addr := startServer(t, WithOnConnState(func(up bool) {
		mu.Lock()
		states = append(states, up)
		mu.Unlock()
	}))
	if err := s.PowerOff(); err == nil {
		t.Fatal("PowerOff without QEMU succeeded")
	}
	q1 := dialRaw(t, addr)
	q1.expect("hello", "ff 01")
	q1.send(testutil.Hex(vmcodec.AppendMessage(nil, 1, 0x06<<2, 0x2e, []byte{0x01})))
	q1.expect("enable irq", "05")
	q1.next()
	if err := s.Push(0x2e, 0x10, nil); err != nil {
		t.Fatal(err)
	}
	q1.expect("attn", "02")

	// QEMU restarts: the new connection replaces the old one and gets the
	// whole state again.
	q2 := dialRaw(t, addr)
	q2.expect("hello", "ff 01")
	q2.expect("irq again", "05")
	q2.expect("attn again", "02")
	q1.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := q1.nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("old connection still open")
	}
	if !s.Connected() {
		t.Fatal("not connected after reconnect")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) != 3 || !states[0] || states[1] || !states[2] {
		t.Fatalf("connection states %v, want [true false true]", states)
	}
}

func TestServerQueueBound(t *testing.T) {
	s, _ := startServer(t, WithQueueLimit(2))
	for i := 0; i < 2; i++ {
		if err := s.Push(0x2e, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Push(0x2e, 1, nil); err == nil {
		t.Fatal("third push into a queue of 2 succeeded")
	}
	if err := s.Push(0x2e, 1, make([]byte, MaxPushData+1)); err == nil {
		t.Fatal("oversized push succeeded")
	}
}
