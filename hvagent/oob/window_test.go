package oob

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/hvagent/sysif"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// gated echoes every envelope once release is closed, counting how many
// are inside at once.
type gated struct {
	release chan struct{}
	entered chan struct{}
	in, max atomic.Int32
	n       atomic.Int32
}

func newGated() *gated { return &gated{release: make(chan struct{}), entered: make(chan struct{}, 64)} }

func (g *gated) HandleEnvelope(ctx context.Context, env []byte, _ string) ([][]byte, error) {
	n := g.in.Add(1)
	defer g.in.Add(-1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			break
		}
	}
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	g.n.Add(1)
	return [][]byte{bytes.Clone(env)}, nil
}

func (g *gated) waitEntered(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.entered:
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d messages reached the handler at once, want %d", g.in.Load(), n)
		}
	}
}

// writeInterleaved writes the messages' records to Queue 1 round-robin
// (record 0 of each, then record 1 of each…), as several VMS requests in
// flight do.
func writeInterleaved(t *testing.T, ctx context.Context, vms *lanVMS, req uint32, msgs map[uint64][]byte) {
	t.Helper()
	var all [][]record.Record
	for id, m := range msgs {
		recs, err := record.FragmentFor(req, id, m)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs)
	}
	for i := 0; ; i++ {
		wrote := false
		for _, recs := range all {
			if i >= len(recs) {
				continue
			}
			data, _ := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: recs[i]}).Pack()
			if _, cc, err := vms.raw(ctx, oem.CmdWriteQueue1, data); err != nil || cc != oem.CCOK {
				t.Fatalf("write %v: %v %v", recs[i], cc, err)
			}
			wrote = true
		}
		if !wrote {
			return
		}
	}
}

// readAll reads Queue 2 as reader req until n messages are complete.
func readAll(t *testing.T, ctx context.Context, vms *lanVMS, req uint32, n int) map[uint64][]byte {
	t.Helper()
	ra := record.NewReassembler(record.ReassemblerConfig{})
	got := map[uint64][]byte{}
	var ack *oem.Ack
	for len(got) < n {
		data, _ := (&oem.ReadQueue2ForRequest{IANA: oem.DefaultIANA, Reader: req, Ack: ack}).Pack()
		resp, cc, err := vms.raw(ctx, oem.CmdReadQueue2For, data)
		if err != nil || cc != oem.CCOK {
			t.Fatalf("read-for: %v %v", cc, err)
		}
		var r oem.ReadQueueResponse
		if err := r.Unpack(resp); err != nil {
			t.Fatal(err)
		}
		if r.Empty {
			ack = nil
			if err := pause(ctx, 2*time.Millisecond); err != nil {
				t.Fatalf("%d of %d answers: %v", len(got), n, err)
			}
			continue
		}
		ack = &oem.Ack{MsgID: r.Record.MsgID, Index: r.Record.Index}
		m, done, err := ra.Add(r.Record, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if done {
			got[r.Record.MsgID] = m
		}
	}
	data, _ := (&oem.ReadQueue2ForRequest{IANA: oem.DefaultIANA, Reader: req, Ack: ack}).Pack()
	vms.raw(ctx, oem.CmdReadQueue2For, data)
	return got
}

// TestWindow: messages whose records are interleaved in Queue 1 are served
// at once, at most Window of them; the rest wait in Queue 1 (read and
// acknowledged later), each completing record stays in Queue 1 until its
// answer is in Queue 2, and every answer comes back whole to its requester.
func TestWindow(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	g := newGated()
	l := runLoop(t, Config{Conn: lab.host, Handler: g, Window: 4, PollInterval: 10 * time.Millisecond})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const req = 0x7007
	msgs := map[uint64][]byte{}
	for i := range 6 {
		msgs[uint64(100+i)] = randBytes(300 + 50*i) // two records each
	}
	writeInterleaved(t, ctx, vms, req, msgs)
	g.waitEntered(t, 4)
	// The window is full: the second records of the last two messages wait
	// unread (their first ones were read and acknowledged), and the four
	// being served keep their completing record.
	if n := lab.Queues.Queue1().Len(); n != 4+2 {
		t.Fatalf("queue 1 holds %d records with the window full, want 6", n)
	}
	close(g.release)
	got := readAll(t, ctx, vms, req, len(msgs))
	sameSet(t, msgs, got)
	if m := g.max.Load(); m != 4 {
		t.Fatalf("%d served at once, want the window, 4", m)
	}
	if st := l.Stats(); st.PeakInFlight != 4 || st.Messages != 6 || st.RecordsBad != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Every record acknowledged once its answer is out.
	for lab.Queues.Queue1().Len() != 0 {
		if err := pause(ctx, 2*time.Millisecond); err != nil {
			t.Fatalf("queue 1 keeps %d records", lab.Queues.Queue1().Len())
		}
	}
}

// sameSet checks every message came back (answers carry their own message
// ids).
func sameSet(t *testing.T, sent, got map[uint64][]byte) {
	t.Helper()
	have := map[string]bool{}
	for _, m := range got {
		have[string(m)] = true
	}
	for id, m := range sent {
		if !have[string(m)] {
			t.Fatalf("no answer for message %d", id)
		}
	}
}

// noWindow is a system interface of a BMC without OEM 0x07.
type noWindow struct {
	sysif.Conn
	refused atomic.Int32
}

func (c *noWindow) Do(ctx context.Context, netfn, cmd uint8, data []byte) ([]byte, uint8, error) {
	if cmd == uint8(oem.CmdReadQueue1Win) {
		c.refused.Add(1)
		return nil, uint8(oem.CCInvalidCommand), nil
	}
	return c.Conn.Do(ctx, netfn, cmd, data)
}

// TestWindowOldBMC: a BMC that answers 0x07 with 0xC1 is read one message
// at a time with 0x02, as before.
func TestWindowOldBMC(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	conn := &noWindow{Conn: lab.host}
	h := &echo{}
	l := runLoop(t, Config{Conn: conn, Handler: h, PollInterval: 10 * time.Millisecond})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs := map[uint64][]byte{1: randBytes(400), 2: randBytes(10)}
	writeInterleaved(t, ctx, vms, 0x51, msgs)
	got := readAll(t, ctx, vms, 0x51, 2)
	sameSet(t, msgs, got)
	if conn.refused.Load() != 1 || l.Stats().PeakInFlight != 0 {
		t.Fatalf("0x07 tried %d times, peak %d", conn.refused.Load(), l.Stats().PeakInFlight)
	}
}

// TestWindowQueue1Full: with the window full and Queue 1 full, the VMS is
// refused (0xC4) and nothing is lost once the host catches up.
func TestWindowQueue1Full(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{Queue1Capacity: 3})
	g := newGated()
	runLoop(t, Config{Conn: lab.host, Handler: g, Window: 2, PollInterval: 10 * time.Millisecond})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const req = 0x99
	write := func(id uint64) oem.CompletionCode {
		recs, _ := record.FragmentFor(req, id, randBytes(20))
		data, _ := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: recs[0]}).Pack()
		_, cc, err := vms.raw(ctx, oem.CmdWriteQueue1, data)
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}
	for id := uint64(1); id <= 3; id++ {
		if cc := write(id); cc != oem.CCOK {
			t.Fatalf("write %d: %v", id, cc)
		}
	}
	g.waitEntered(t, 2)
	if cc := write(4); cc != oem.CCOutOfSpace {
		t.Fatalf("write into a full queue 1: %v", cc)
	}
	close(g.release)
	readAll(t, ctx, vms, req, 3)
	for write(4) != oem.CCOK {
		if err := pause(ctx, 5*time.Millisecond); err != nil {
			t.Fatal("queue 1 never drained")
		}
	}
	readAll(t, ctx, vms, req, 1)
}
