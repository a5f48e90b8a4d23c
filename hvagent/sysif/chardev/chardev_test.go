package chardev_test

// These tests run the client against the real BMC side, bmcsim/kcs, over
// loopback TCP. Only the test imports bmcsim; the hvagent binary does not.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/ooblab/ooblab/bmcsim/kcs"
	"github.com/ooblab/ooblab/hvagent/sysif"
	"github.com/ooblab/ooblab/hvagent/sysif/chardev"

	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmcodec"
)

type hostReply struct {
	netfn, cmd uint8
	data       []byte
}

type bmcSim struct {
	srv     *kcs.Server
	addr    string
	replies chan hostReply
	conns   chan bool
}

func startBMC(t *testing.T) *bmcSim {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := bmc.New(bmc.DeviceInfo{DeviceID: 0x20, IPMIVersion: 0x20, ManufacturerID: 32473}, [16]byte{1}, mock.New())
	sim := &bmcSim{addr: ln.Addr().String(), replies: make(chan hostReply, 8), conns: make(chan bool, 8)}
	sim.srv = kcs.New(b, nil, slog.New(slog.DiscardHandler),
		kcs.WithOnHostReply(func(netfn, cmd uint8, data []byte) { sim.replies <- hostReply{netfn, cmd, data} }),
		kcs.WithOnConnState(func(up bool) { sim.conns <- up }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return sim
}

func dial(t *testing.T, addr string) *chardev.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := chardev.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestGetDeviceID(t *testing.T) {
	sim := startBMC(t)
	c := dial(t, sim.addr)
	ctx := context.Background()
	resp, cc, err := c.Do(ctx, 0x06, 0x01, nil)
	if err != nil || cc != 0 {
		t.Fatalf("Get Device ID: cc %#x err %v", cc, err)
	}
	if len(resp) < 11 || resp[0] != 0x20 || resp[4] != 0x20 {
		t.Fatalf("Get Device ID response % x", resp)
	}
	// An unknown OEM command is a completion code, not an error.
	if _, err := sysif.Call(ctx, c, 0x2e, 0x7f, []byte{0xd9, 0x7e, 0}); !errors.As(err, new(*sysif.CCError)) {
		t.Fatalf("unknown OEM command: %v", err)
	}
}

func TestIRQAndPushReply(t *testing.T) {
	sim := startBMC(t)
	c := dial(t, sim.addr)
	ctx := context.Background()
	// As Linux does when it has an interrupt: set BMC Global Enables bit 0.
	if _, err := sysif.Call(ctx, c, 0x06, 0x2e, []byte{0x01}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "ENABLE_IRQ", c.IRQEnabled)

	payload := []byte{0xd9, 0x7e, 0x00, 0xa0, 0xa1, 0xaa} // framing bytes survive escaping
	if err := sim.srv.Push(0x2e, 0x10, payload); err != nil {
		t.Fatal(err)
	}
	wait(t, "notify", c.Notify())
	m := wait(t, "pushed message", c.Messages())
	if m.NetFn != 0x2e || m.Cmd != 0x10 || !slices.Equal(m.Data, payload) || m.Channel != 0 {
		t.Fatalf("pushed message %+v", m)
	}
	if !slices.Contains(c.ControlLog(), vmcodec.OpAttnIRQ) {
		t.Fatalf("controls %v lack ATTN_IRQ", c.ControlLog())
	}
	testutil.WaitFor(t, 10*time.Second, "queue drained and NOATTN", func() bool { return sim.srv.QueueLen() == 0 && !c.Attention() })

	if err := c.Reply(ctx, m, 0x00, []byte{0xd9, 0x7e, 0x00, 0x42}); err != nil {
		t.Fatal(err)
	}
	r := wait(t, "host reply", sim.replies)
	if r.netfn != 0x2f || r.cmd != 0x10 || !slices.Equal(r.data, []byte{0x00, 0xd9, 0x7e, 0x00, 0x42}) {
		t.Fatalf("host reply %+v", r)
	}
}

func TestAttentionRearm(t *testing.T) {
	sim := startBMC(t)
	c := dial(t, sim.addr)
	wait(t, "connect", sim.conns)
	for i := 0; i < 3; i++ {
		sim.srv.SetAttention(true)
		wait(t, "notify", c.Notify())
		// The client reads the flags, which acknowledges attention.
		testutil.WaitFor(t, 10*time.Second, "attention acknowledged", func() bool { return !c.Attention() })
	}
	log := c.ControlLog()
	n := 0
	for _, op := range log {
		if op == vmcodec.OpAttn {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("want 3 ATTN edges, control log %v", log)
	}
}

func TestReconnectAndPower(t *testing.T) {
	sim := startBMC(t)
	c1 := dial(t, sim.addr)
	wait(t, "connect 1", sim.conns)
	if _, err := sysif.Call(context.Background(), c1, 0x06, 0x2e, []byte{0x01}); err != nil {
		t.Fatal(err)
	}
	if err := sim.srv.PowerOff(); err != nil {
		t.Fatal(err)
	}
	if op := wait(t, "power off", c1.Controls()); op != vmcodec.OpPowerOff {
		t.Fatalf("got %v", op)
	}

	// QEMU restart: a second connection replaces the first, gets the IRQ state.
	c2 := dial(t, sim.addr)
	if up := wait(t, "disconnect 1", sim.conns); up {
		t.Fatal("want disconnect first")
	}
	if up := wait(t, "connect 2", sim.conns); !up {
		t.Fatal("want connect")
	}
	testutil.WaitFor(t, 10*time.Second, "IRQ state re-sent", c2.IRQEnabled)
	for _, f := range []func() error{sim.srv.Reset, sim.srv.GracefulShutdown, sim.srv.SendNMI} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []vmcodec.Op{vmcodec.OpReset, vmcodec.OpGracefulShutdown, vmcodec.OpSendNMI} {
		if op := wait(t, want.String(), c2.Controls()); op != want {
			t.Fatalf("got %v want %v", op, want)
		}
	}

	// The old client sees a clear error, then redials on demand (and in
	// turn replaces c2).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c1.Do(ctx, 0x06, 0x01, nil)
	if err != nil && !errors.Is(err, chardev.ErrPeerGone) {
		t.Fatalf("first call after replacement: %v", err)
	}
	if _, _, err := c1.Do(ctx, 0x06, 0x01, nil); err != nil {
		t.Fatalf("redial: %v", err)
	}
}

// readMessage reads r up to the end of one extern-protocol message (its
// unescaped 0xA0: escaped bytes never read as 0xA0).
func readMessage(r io.Reader) {
	b := make([]byte, 1)
	for {
		if _, err := r.Read(b); err != nil || b[0] == 0xA0 {
			return
		}
	}
}

func TestDeadPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A peer that accepts and never answers; once the first request has
	// timed out, it reads the second request and closes while that one
	// waits. (Not after a fixed time: on a loaded machine the request may
	// be sent after a timed hold ran out. Nor at once on the release: a
	// close the client sees before its second request makes it redial,
	// as designed, and the listener's backlog completes that dial with
	// nobody reading it.)
	hold := make(chan struct{})
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			defer nc.Close()
			readMessage(nc)
			<-hold
			readMessage(nc)
		}
	}()
	defer ln.Close()
	c := dial(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := c.Do(ctx, 0x06, 0x01, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent peer: %v", err)
	}
	close(hold)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, _, err := c.Do(ctx2, 0x06, 0x01, nil); !errors.Is(err, chardev.ErrPeerGone) {
		t.Fatalf("closing peer: %v", err)
	}
	c.Close()
	if _, _, err := c.Do(ctx2, 0x06, 0x01, nil); !errors.Is(err, sysif.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
