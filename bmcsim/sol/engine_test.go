package sol_test

// The SOL session state machine that bmcsim runs (go-ipmi's SOLStore over
// this package's Serial), driven at its seams: a fake QEMU on the serial
// socket, console packets handed to ProcessPacket, and the BMC's packets
// caught by the sender go-ipmi's server would install.

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/sol"
	"github.com/ooblab/ooblab/internal/testutil"
)

type engine struct {
	store *bmc.SOLStore
	sent  chan types.SOLPayloadPacket
	qemu  net.Conn
	typed chan []byte
}

func startEngine(t *testing.T, retries, interval10ms uint8) *engine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serial := sol.NewSerial(sol.Options{Logger: testutil.Logger(t)})
	done := make(chan struct{})
	go func() { _ = serial.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	qemu, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qemu.Close() })
	waitFor(t, 10*time.Second, "QEMU connected", serial.Connected)
	e := &engine{sent: make(chan types.SOLPayloadPacket, 64), qemu: qemu, typed: make(chan []byte, 64)}
	go func() {
		for {
			b := make([]byte, 256)
			n, err := qemu.Read(b)
			if n > 0 {
				e.typed <- b[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	h := mock.New()
	h.SetConsole(serial)
	e.store = bmc.NewSOLStore(h, clock.Real)
	if cc := e.store.Config().SetParam(4, []byte{retries, interval10ms}); cc != types.CodeOK {
		t.Fatalf("retry parameters: %v", cc)
	}
	e.store.SetSenderFactory(func(*bmc.Session, *bmc.SOLInstance) bmc.SOLSendFunc {
		return func(p *types.SOLPayloadPacket) error {
			c := *p
			c.CharacterData = bytes.Clone(p.CharacterData)
			e.sent <- c
			return nil
		}
	})
	sess := &bmc.Session{BMCID: 0x1234, PrivilegeLevel: bmc.PrivilegeLevelAdministrator, Channel: 1} // go-ipmi's default SOL privilege
	sess.SetAddr(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 623})
	if _, err := e.store.Activate(ctx, sess, false, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.store.CloseAll)
	return e
}

// next is the BMC's next packet to the console.
func (e *engine) next(t *testing.T) types.SOLPayloadPacket {
	t.Helper()
	select {
	case p := <-e.sent:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("the BMC sent no SOL packet")
	}
	return types.SOLPayloadPacket{}
}

// typedNext is the next bytes the host's serial port received.
func (e *engine) typedNext(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-e.typed:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("the host received nothing")
	}
	return nil
}

func (e *engine) host(t *testing.T, s string) {
	t.Helper()
	if _, err := e.qemu.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (e *engine) console(p types.SOLPayloadPacket) *types.SOLPayloadPacket {
	return e.store.ProcessPacket(context.Background(), 0x1234, &p)
}

func TestEngineOutputRetransmitAndAck(t *testing.T) {
	e := startEngine(t, 3, 5) // 3 retries, 50 ms apart
	e.host(t, "hello")
	p := e.next(t)
	if p.SequenceNumber == 0 || string(p.CharacterData) != "hello" {
		t.Fatalf("first packet %+v", p)
	}
	seq := p.SequenceNumber
	// The console's ack is lost: the same packet again, same sequence.
	r := e.next(t)
	if r.SequenceNumber != seq || string(r.CharacterData) != "hello" {
		t.Fatalf("retransmit %+v, want seq %d hello", r, seq)
	}
	// Completion ack: no more resends; the next output takes a new number.
	e.console(types.SOLPayloadPacket{AckedSequenceNumber: seq, AcceptedCharacterCount: 5})
	e.host(t, "world")
	for {
		p = e.next(t)
		if string(p.CharacterData) != "hello" { // a resend may have been under way
			break
		}
	}
	if p.SequenceNumber == seq || string(p.CharacterData) != "world" {
		t.Fatalf("after the ack: %+v", p)
	}
	// A partial ack (2 of 5): the rest goes as a fresh packet.
	e.console(types.SOLPayloadPacket{AckedSequenceNumber: p.SequenceNumber, AcceptedCharacterCount: 2})
	for {
		r = e.next(t)
		if string(r.CharacterData) != "world" {
			break
		}
	}
	if string(r.CharacterData) != "rld" || r.SequenceNumber == p.SequenceNumber {
		t.Fatalf("after a partial ack of 2: %+v", r)
	}
}

func TestEngineRetriesExhaustedFlagLoss(t *testing.T) {
	e := startEngine(t, 1, 2) // 1 retry, 20 ms apart
	e.host(t, "lost")
	first := e.next(t)
	again := e.next(t)
	if again.SequenceNumber != first.SequenceNumber {
		t.Fatalf("retry %+v after %+v", again, first)
	}
	// Never acked: dropped after the retry; the next packet says so.
	e.host(t, "next")
	for {
		p := e.next(t)
		if string(p.CharacterData) == "lost" {
			continue
		}
		if string(p.CharacterData) != "next" || p.ControlByte&0x08 == 0 {
			t.Fatalf("packet after a dropped one: %+v, want 'next' with status bit 3 (overrun)", p)
		}
		return
	}
}

func TestEngineInputAckAndDuplicate(t *testing.T) {
	e := startEngine(t, 3, 5)
	resp := e.console(types.SOLPayloadPacket{SequenceNumber: 1, CharacterData: []byte("ls\r")})
	if resp == nil || resp.AckedSequenceNumber != 1 || resp.AcceptedCharacterCount != 3 || resp.NACK {
		t.Fatalf("ack of keystrokes: %+v", resp)
	}
	if got := e.typedNext(t); string(got) != "ls\r" {
		t.Fatalf("host got %q", got)
	}
	// The console's retry of the same packet (our ack was lost): acked
	// again, not typed twice.
	resp = e.console(types.SOLPayloadPacket{SequenceNumber: 1, CharacterData: []byte("ls\r")})
	if resp.AckedSequenceNumber != 1 || resp.AcceptedCharacterCount != 3 {
		t.Fatalf("ack of a retry: %+v", resp)
	}
	resp = e.console(types.SOLPayloadPacket{SequenceNumber: 2, CharacterData: []byte("x")})
	if resp.AckedSequenceNumber != 2 {
		t.Fatalf("ack of packet 2: %+v", resp)
	}
	if got := e.typedNext(t); string(got) != "x" {
		t.Fatalf("after a duplicate the host got %q, want only x", got)
	}
	// Deactivation sends the notice (status bit 4).
	e.store.CloseAll()
	for {
		p := e.next(t)
		if p.ControlByte&0x10 != 0 {
			return
		}
	}
}
