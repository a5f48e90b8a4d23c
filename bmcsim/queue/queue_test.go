package queue

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/testutil"
)

var (
	lanCh = &bmc.Channel{Number: 1, Medium: bmc.ChannelMediumLAN}
	sysCh = &bmc.Channel{Number: 0x0f, Medium: bmc.ChannelMediumSystemIF}
)

// lan is a LAN request in a session of user "vms" at privilege p.
func lan(p bmc.PrivilegeLevel) *handlers.HandlerContext { return lanAs("vms", p) }

// lanAs is a LAN request in a session of user at privilege p.
func lanAs(user string, p bmc.PrivilegeLevel) *handlers.HandlerContext {
	return &handlers.HandlerContext{Session: &bmc.Session{PrivilegeLevel: p, User: &bmc.User{Name: user}}, Channel: lanCh}
}

func sys() *handlers.HandlerContext { return &handlers.HandlerContext{Channel: sysCh} }

type bench struct {
	t   testing.TB
	qs  *Queues
	reg *handlers.Registry
	clk *testutil.Clock
}

func newBench(t testing.TB, o Options) *bench {
	t.Helper()
	clk := testutil.NewClock(time.Unix(1_700_000_000, 0))
	if o.Now == nil {
		o.Now = clk.Now
	}
	qs, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qs.Close() })
	reg := handlers.NewRegistry()
	qs.Register(reg, uint32(oem.DefaultIANA))
	return &bench{t: t, qs: qs, reg: reg, clk: clk}
}

func (b *bench) do(hctx *handlers.HandlerContext, cmd oem.Cmd, data []byte) ([]byte, oem.CompletionCode) {
	b.t.Helper()
	resp, cc, _ := b.reg.Dispatch(context.Background(), hctx, uint8(oem.NetFnOEMGroupRequest), uint8(cmd), data)
	return resp, oem.CompletionCode(cc)
}

func rec(id uint64, idx, n uint16, payload string) record.Record {
	return record.Record{MsgID: id, Index: idx, Count: n, Payload: []byte(payload)}
}

func (b *bench) write(hctx *handlers.HandlerContext, cmd oem.Cmd, r record.Record) oem.CompletionCode {
	b.t.Helper()
	data, err := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: r}).Pack()
	if err != nil {
		b.t.Fatal(err)
	}
	_, cc := b.do(hctx, cmd, data)
	return cc
}

func (b *bench) read(hctx *handlers.HandlerContext, cmd oem.Cmd, ack *oem.Ack) (oem.ReadQueueResponse, oem.CompletionCode) {
	b.t.Helper()
	data, _ := (&oem.ReadQueueRequest{IANA: oem.DefaultIANA, Ack: ack}).Pack()
	resp, cc := b.do(hctx, cmd, data)
	var r oem.ReadQueueResponse
	if cc == oem.CCOK {
		if err := r.Unpack(resp); err != nil {
			b.t.Fatalf("read response % x: %v", resp, err)
		}
	}
	return r, cc
}

func ackOf(r record.Record) *oem.Ack { return &oem.Ack{MsgID: r.MsgID, Index: r.Index} }

func TestSides(t *testing.T) {
	v15 := &handlers.HandlerContext{V15Session: &bmc.V15Session{State: bmc.V15SessionStateActive, PrivilegeLevel: bmc.PrivilegeLevelOperator, User: &bmc.User{Name: "vms"}}, Channel: lanCh}
	v15pending := &handlers.HandlerContext{V15Session: &bmc.V15Session{State: bmc.V15SessionStatePending, PrivilegeLevel: bmc.PrivilegeLevelAdministrator}, Channel: lanCh}
	sessionOnSys := &handlers.HandlerContext{Session: &bmc.Session{PrivilegeLevel: bmc.PrivilegeLevelUser}, Channel: sysCh}
	ctxs := []struct {
		name string
		hctx *handlers.HandlerContext
		want [5]oem.CompletionCode // for cmds 1..5
	}{
		{"lan operator", lan(bmc.PrivilegeLevelOperator), [5]oem.CompletionCode{0, 0xD5, 0xD5, 0, 0}},
		{"lan admin", lan(bmc.PrivilegeLevelAdministrator), [5]oem.CompletionCode{0, 0xD5, 0xD5, 0, 0}},
		{"lan user", lan(bmc.PrivilegeLevelUser), [5]oem.CompletionCode{0xD4, 0xD4, 0xD4, 0xD4, 0xD4}},
		{"lan v1.5 operator", v15, [5]oem.CompletionCode{0, 0xD5, 0xD5, 0, 0}},
		{"lan v1.5 pending", v15pending, [5]oem.CompletionCode{0xD4, 0xD4, 0xD4, 0xD4, 0xD4}},
		{"session on system channel", sessionOnSys, [5]oem.CompletionCode{0xD4, 0xD4, 0xD4, 0xD4, 0xD4}},
		{"system interface", sys(), [5]oem.CompletionCode{0xD5, 0, 0, 0xD5, 0}},
		{"pre-session lan", &handlers.HandlerContext{Channel: lanCh}, [5]oem.CompletionCode{0xD4, 0xD4, 0xD4, 0xD4, 0xD4}},
		{"no channel", &handlers.HandlerContext{}, [5]oem.CompletionCode{0xD4, 0xD4, 0xD4, 0xD4, 0xD4}},
		{"nil context", nil, [5]oem.CompletionCode{0xD4, 0xD4, 0xD4, 0xD4, 0xD4}},
	}
	for _, tt := range ctxs {
		t.Run(tt.name, func(t *testing.T) {
			b := newBench(t, Options{})
			for i, want := range tt.want {
				cmd := oem.Cmd(i + 1)
				var data []byte
				switch cmd {
				case oem.CmdWriteQueue1, oem.CmdWriteQueue2:
					data, _ = (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: rec(1, 0, 1, "x")}).Pack()
				default:
					data = testutil.Unhex(t, "d9 7e 00")
				}
				// Both through the registry and the bare handler (no registry check).
				// go-ipmi v0.9.1's registry dereferences a nil context
				// (privilege.go sessionPrivilege); the server never passes nil.
				if tt.hctx != nil {
					if _, cc := b.do(tt.hctx, cmd, data); cc != want {
						t.Errorf("registry %s: cc %#02x, want %#02x", cmd, uint8(cc), uint8(want))
					}
				}
				_, cc, _ := b.qs.Handler(cmd, oem.DefaultIANA).Handle(context.Background(), tt.hctx, data)
				if oem.CompletionCode(cc) != want {
					t.Errorf("handler %s: cc %#02x, want %#02x", cmd, uint8(cc), uint8(want))
				}
			}
		})
	}
}

var wireTests = []struct {
	name string
	side string // "lan" or "sys"
	cmd  oem.Cmd
	req  string
	cc   oem.CompletionCode
	resp string
}{
	{"write q1", "lan", oem.CmdWriteQueue1, "d9 7e 00 01 00 01 00 00 00 00 00 00 00 00 00 01 00 61", 0, "d9 7e 00"},
	{"read q2 empty", "lan", oem.CmdReadQueue2, "d9 7e 00", 0, "d9 7e 00 01"},
	{"read q1 empty", "sys", oem.CmdReadQueue1, "d9 7e 00", 0, "d9 7e 00 01"},
	{"status empty", "sys", oem.CmdGetQueueStatus, "d9 7e 00", 0, "d9 7e 00 00 00 04 00 00 00 00 00 00 00 04 00 00 00 00 00"},
	{"wrong iana", "lan", oem.CmdWriteQueue1, "da 7e 00 01 00 01 00 00 00 00 00 00 00 00 00 01 00 61", 0xCC, ""},
	{"short iana", "sys", oem.CmdReadQueue1, "d9 7e", 0xC7, ""},
	{"bad ack length", "sys", oem.CmdReadQueue1, "d9 7e 00 01", 0xC7, ""},
	{"bad record version", "sys", oem.CmdWriteQueue2, "d9 7e 00 09 00 01 00 00 00 00 00 00 00 00 00 01 00", 0xCC, ""},
	{"short record", "sys", oem.CmdWriteQueue2, "d9 7e 00 01 00", 0xCC, ""},
	{"status trailing", "lan", oem.CmdGetQueueStatus, "d9 7e 00 00", 0xC7, ""},
}

func TestWire(t *testing.T) {
	for _, tt := range wireTests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBench(t, Options{Capacity1: 4, Capacity2: 4})
			h := sys()
			if tt.side == "lan" {
				h = lan(bmc.PrivilegeLevelOperator)
			}
			resp, cc := b.do(h, tt.cmd, testutil.Unhex(t, tt.req))
			if cc != tt.cc || !bytes.Equal(resp, testutil.Unhex(t, tt.resp)) {
				t.Fatalf("got cc %#02x % x, want %#02x %s", uint8(cc), resp, uint8(tt.cc), tt.resp)
			}
		})
	}
}

func TestMessageBothWays(t *testing.T) {
	b := newBench(t, Options{})
	msg := bytes.Repeat([]byte("0123456789"), 100)
	for _, dir := range []struct {
		w, r       *handlers.HandlerContext
		wcmd, rcmd oem.Cmd
	}{
		{lan(bmc.PrivilegeLevelOperator), sys(), oem.CmdWriteQueue1, oem.CmdReadQueue1},
		{sys(), lan(bmc.PrivilegeLevelAdministrator), oem.CmdWriteQueue2, oem.CmdReadQueue2},
	} {
		recs, _ := record.Fragment(77, msg)
		for _, r := range recs {
			if cc := b.write(dir.w, dir.wcmd, r); cc != 0 {
				t.Fatalf("write cc %#02x", uint8(cc))
			}
			// A retransmitted write is answered OK and not queued twice.
			if cc := b.write(dir.w, dir.wcmd, r); cc != 0 {
				t.Fatalf("dup write cc %#02x", uint8(cc))
			}
		}
		ra := record.NewReassembler(record.ReassemblerConfig{})
		var ack *oem.Ack
		var got []byte
		for reads := 0; ; reads++ {
			r, cc := b.read(dir.r, dir.rcmd, ack)
			if cc != 0 {
				t.Fatalf("read cc %#02x", uint8(cc))
			}
			if r.Empty {
				break
			}
			if reads > 2*len(recs) {
				t.Fatal("queue never drains")
			}
			m, done, err := ra.Add(r.Record, b.clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			if done {
				got = m
			}
			ack = ackOf(r.Record)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("reassembled %d bytes", len(got))
		}
	}
}

func TestTwoPhaseRead(t *testing.T) {
	b := newBench(t, Options{})
	q := b.qs.Queue1()
	r1, r2 := rec(1, 0, 1, "a"), rec(2, 0, 1, "b")
	q.Write(r1)
	q.Write(r2)
	for i, ack := range []*oem.Ack{nil, nil, {MsgID: 2}, {MsgID: 1, Index: 5}} {
		got, ok, err := q.Read(ack)
		if err != nil || !ok || got.MsgID != 1 {
			t.Fatalf("read %d: %v %v %v", i, got, ok, err)
		}
	}
	got, ok, _ := q.Read(ackOf(r1))
	if !ok || got.MsgID != 2 {
		t.Fatalf("after ack: %v", got)
	}
	// The same ack again (a retransmitted read) is stale: head stays.
	if got, _, _ := q.Read(ackOf(r1)); got.MsgID != 2 {
		t.Fatalf("stale ack removed %v", got)
	}
	// A late retransmit of the acknowledged write is not queued again.
	q.Write(r1)
	if _, ok, _ := q.Read(ackOf(r2)); ok {
		t.Fatal("acknowledged record queued again")
	}
}

func TestFullAndStatus(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	b := newBench(t, Options{Capacity1: 2, Capacity2: 3, Registerer: reg})
	l := lan(bmc.PrivilegeLevelOperator)
	b.write(l, oem.CmdWriteQueue1, rec(1, 0, 1, "a"))
	b.clk.Add(1500 * time.Millisecond)
	b.write(l, oem.CmdWriteQueue1, rec(2, 0, 1, "b"))
	b.write(l, oem.CmdWriteQueue1, rec(2, 0, 1, "b"))
	if cc := b.write(l, oem.CmdWriteQueue1, rec(3, 0, 1, "c")); cc != oem.CCOutOfSpace {
		t.Fatalf("full: cc %#02x", uint8(cc))
	}
	resp, cc := b.do(l, oem.CmdGetQueueStatus, testutil.Unhex(t, "d9 7e 00"))
	if want := testutil.Unhex(t, "d9 7e 00 02 00 02 00 dc 05 00 00 00 00 03 00 00 00 00 00"); cc != 0 || !bytes.Equal(resp, want) {
		t.Fatalf("status % x", resp)
	}
	m := b.qs.q1.m
	if counter(t, m.writes) != 2 || counter(t, m.duplicates) != 1 || counter(t, m.full) != 1 {
		t.Fatal("counters")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gauges := map[string]float64{}
	n := 0
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			n++
			if mm.GetGauge() != nil {
				gauges[mf.GetName()+"/"+mm.GetLabel()[0].GetValue()] = mm.GetGauge().GetValue()
			}
		}
	}
	if n != 18 {
		t.Fatalf("gathered %d metrics, want 18", n)
	}
	want := map[string]float64{
		"ooblab_bmc_queue_depth/1": 2, "ooblab_bmc_queue_depth/2": 0,
		"ooblab_bmc_queue_capacity/1": 2, "ooblab_bmc_queue_capacity/2": 3,
		"ooblab_bmc_queue_oldest_age_seconds/1": 1.5, "ooblab_bmc_queue_oldest_age_seconds/2": 0,
	}
	for k, v := range want {
		if gauges[k] != v {
			t.Errorf("%s = %v, want %v", k, gauges[k], v)
		}
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestQueue1Hook(t *testing.T) {
	var mu sync.Mutex
	var depths []int
	b := newBench(t, Options{OnQueue1Change: func(d int) { mu.Lock(); depths = append(depths, d); mu.Unlock() }})
	q := b.qs.Queue1()
	r := rec(1, 0, 1, "a")
	q.Write(r)
	q.Write(r) // duplicate: no change
	q.Read(nil)
	q.Read(ackOf(r))
	b.qs.Queue2().Write(r) // other queue: no call
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(depths) != "[1 0]" {
		t.Fatalf("hook depths %v", depths)
	}
}

func TestJournalRestart(t *testing.T) {
	dir := t.TempDir()
	b := newBench(t, Options{StateDir: dir})
	q1 := b.qs.Queue1()
	for i := range 3 {
		if err := q1.Write(rec(uint64(i+1), 0, 1, fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	b.qs.Queue2().Write(rec(9, 0, 1, "up"))
	head, _, _ := q1.Read(nil)
	q1.Read(ackOf(head)) // removes msg 1
	q1.Read(nil)         // reads msg 2, never acknowledged
	b.qs.Close()

	b2 := newBench(t, Options{StateDir: dir})
	if b2.qs.Queue1().Len() != 2 || b2.qs.Queue2().Len() != 1 {
		t.Fatalf("after restart: %d %d", b2.qs.Queue1().Len(), b2.qs.Queue2().Len())
	}
	got, _, _ := b2.qs.Queue1().Read(nil)
	if got.MsgID != 2 || string(got.Payload) != "1" {
		t.Fatalf("head after restart %v", got)
	}
	if s := b2.qs.Queue1().Status(); s.OldestAge != 0 {
		t.Fatalf("enqueue time not kept: %v", s.OldestAge)
	}
	// Duplicate detection survives the restart too.
	b2.qs.Queue1().Write(rec(3, 0, 1, "2"))
	if b2.qs.Queue1().Len() != 2 {
		t.Fatal("duplicate queued after restart")
	}
}

func TestJournalTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		harm func(t *testing.T, path string)
	}{
		{"cut mid entry", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			os.Truncate(path, fi.Size()-3)
		}},
		{"cut mid header", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0x20, 0x00, 0x00})
			f.Close()
		}},
		{"bad crc", func(t *testing.T, path string) {
			data, _ := os.ReadFile(path)
			data[len(data)-1] ^= 0xff
			os.WriteFile(path, data, 0o600)
		}},
		{"garbage length", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 1})
			f.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := newBench(t, Options{StateDir: dir})
			for i := range 3 {
				b.qs.Queue1().Write(rec(uint64(i+1), 0, 1, "payload"))
			}
			b.qs.Close()
			path := filepath.Join(dir, "queue1.journal")
			tc.harm(t, path)
			b2 := newBench(t, Options{StateDir: dir})
			n := b2.qs.Queue1().Len()
			if tc.name == "cut mid header" || tc.name == "garbage length" {
				if n != 3 {
					t.Fatalf("lost good records: %d", n)
				}
			} else if n != 2 {
				t.Fatalf("records after torn tail: %d, want 2", n)
			}
			// The journal is usable after the repair.
			b2.qs.Queue1().Write(rec(10, 0, 1, "after"))
			b2.qs.Close()
			b3 := newBench(t, Options{StateDir: dir})
			if b3.qs.Queue1().Len() != n+1 {
				t.Fatalf("after repair and reopen: %d", b3.qs.Queue1().Len())
			}
		})
	}
}

func TestJournalCompaction(t *testing.T) {
	dir := t.TempDir()
	b := newBench(t, Options{StateDir: dir})
	q := b.qs.Queue2()
	q.Write(rec(1_000_000, 0, 1, "stays"))
	for i := range 2000 {
		r := rec(uint64(i+1), 0, 1, strings.Repeat("x", 200))
		q.Write(r)
	}
	// Drain all but the first record by acknowledging in order.
	head, _, _ := q.Read(nil)
	for q.Len() > 0 {
		head, _, _ = q.Read(ackOf(head))
	}
	q.Write(rec(5_000_000, 0, 1, "last"))
	fi, err := os.Stat(filepath.Join(dir, "queue2.journal"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 200*1024 {
		t.Fatalf("journal not compacted: %d bytes", fi.Size())
	}
	b.qs.Close()
	b2 := newBench(t, Options{StateDir: dir})
	got, ok, _ := b2.qs.Queue2().Read(nil)
	if !ok || got.MsgID != 5_000_000 || b2.qs.Queue2().Len() != 1 {
		t.Fatalf("after compaction and reopen: %v len %d", got, b2.qs.Queue2().Len())
	}
}

func TestConcurrent(t *testing.T) {
	b := newBench(t, Options{StateDir: t.TempDir(), Capacity1: 64})
	var wg sync.WaitGroup
	const writers, per = 4, 100
	var full atomic.Int64
	for w := range writers {
		wg.Go(func() {
			h := lan(bmc.PrivilegeLevelOperator)
			for i := range per {
				r := rec(uint64(w*1000+i), 0, 1, "x")
				for {
					cc := b.write(h, oem.CmdWriteQueue1, r)
					if cc == 0 {
						break
					}
					if cc != oem.CCOutOfSpace {
						t.Errorf("cc %#02x", uint8(cc))
						return
					}
					full.Add(1)
					runtime.Gosched() // let the reader drain
				}
			}
		})
	}
	seen := map[uint64]bool{}
	var ack *oem.Ack
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < writers*per {
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d records", len(seen), writers*per)
		}
		r, cc := b.read(sys(), oem.CmdReadQueue1, ack)
		if cc != 0 {
			t.Fatalf("read cc %#02x", uint8(cc))
		}
		b.do(lan(bmc.PrivilegeLevelOperator), oem.CmdGetQueueStatus, testutil.Unhex(t, "d9 7e 00"))
		if r.Empty {
			ack = nil
			continue
		}
		seen[r.Record.MsgID] = true
		ack = ackOf(r.Record)
	}
	wg.Wait()
}

// FuzzHandlers drives random OEM requests from either side through the
// go-ipmi registry against a small journalled pair of queues.
func FuzzHandlers(f *testing.F) {
	for _, tt := range wireTests {
		f.Add(uint8(tt.cmd), tt.side == "lan", testutil.Unhex(f, tt.req))
	}
	f.Add(uint8(2), false, testutil.Unhex(f, "d9 7e 00 01 00 00 00 00 00 00 00 00 00"))
	for _, s := range readForSeeds {
		f.Add(s.cmd, s.lan, testutil.Unhex(f, s.hex))
	}
	b := newBench(f, Options{Capacity1: 3, Capacity2: 3, StateDir: f.TempDir()})
	f.Fuzz(func(t *testing.T, cmd uint8, fromLAN bool, data []byte) {
		h := sys()
		if fromLAN {
			h = lan(bmc.PrivilegeLevelOperator)
		}
		resp, cc, err := b.reg.Dispatch(context.Background(), h, 0x2e, cmd, data)
		if err != nil && cc == types.CodeOK {
			t.Fatalf("error with cc 0: %v", err)
		}
		if cc != types.CodeOK {
			return
		}
		switch oem.Cmd(cmd) {
		case oem.CmdReadQueue1, oem.CmdReadQueue2, oem.CmdReadQueue2For:
			var r oem.ReadQueueResponse
			if err := r.Unpack(resp); err != nil {
				t.Fatalf("bad read response % x: %v", resp, err)
			}
		case oem.CmdGetQueueStatus:
			var s oem.GetQueueStatusResponse
			if err := s.Unpack(resp); err != nil || s.Queue1.Depth > 3 || s.Queue2.Depth > 3 {
				t.Fatalf("status % x: %v", resp, err)
			}
		}
	})
}

// TestQueue1WakeEdge: a write wakes the host only when its last read found
// Queue 1 empty (or it never read), decided under the queue's lock, so the
// BMC pushes one notification per burst and never misses one.
func TestQueue1WakeEdge(t *testing.T) {
	var wakes atomic.Int32
	qs, err := Open(Options{OnQueue1Wake: func() { wakes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer qs.Close()
	q := qs.Queue1()
	want := func(n int32, when string) {
		t.Helper()
		if got := wakes.Load(); got != n {
			t.Fatalf("%s: %d wakes, want %d", when, got, n)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(q.Write(rec(1, 0, 1, "a")))
	want(1, "first write, host never read")
	must(q.Write(rec(2, 0, 1, "b")))
	want(1, "second write of the burst")
	r, ok, err := q.Read(nil)
	must(err)
	if !ok {
		t.Fatal("queue 1 empty after two writes")
	}
	must(q.Write(rec(3, 0, 1, "c")))
	want(1, "write while the host drains")
	ack := &oem.Ack{MsgID: r.MsgID, Index: r.Index}
	for {
		r, ok, err = q.Read(ack)
		must(err)
		if !ok {
			break
		}
		ack = &oem.Ack{MsgID: r.MsgID, Index: r.Index}
	}
	want(1, "drained")
	must(q.Write(rec(4, 0, 1, "d")))
	want(2, "write after the host found the queue empty")
	must(q.Write(rec(4, 0, 1, "d")))
	want(2, "a duplicate write")

	// Concurrent writes and empty reads: after each empty read some write
	// must wake the host, whatever the order the goroutines run in.
	for i := range 200 {
		for {
			r, ok, err := q.Read(ack)
			must(err)
			if !ok {
				break
			}
			ack = &oem.Ack{MsgID: r.MsgID, Index: r.Index}
		}
		before := wakes.Load()
		var wg sync.WaitGroup
		for j := range 4 {
			wg.Go(func() { must(q.Write(rec(uint64(1000+i*4+j), 0, 1, "x"))) })
		}
		wg.Wait()
		if wakes.Load() != before+1 {
			t.Fatalf("round %d: %d wakes for a burst after an empty read, want 1", i, wakes.Load()-before)
		}
	}
}

// TestReadWindow: Queue 1 read with a window hands out each record once
// until a rewind, acknowledges by key anywhere, and wakes the idle reader.
func TestReadWindow(t *testing.T) {
	var wakes atomic.Int32
	b := newBench(t, Options{OnQueue1Wake: func() { wakes.Add(1) }})
	q := b.qs.Queue1()
	r1, r2, r3 := rec(1, 0, 1, "a"), rec(2, 0, 1, "b"), rec(3, 0, 1, "c")
	for _, r := range []record.Record{r1, r2, r3} {
		if err := q.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []uint64{1, 2, 3} {
		got, ok, err := q.ReadWindow(false, nil)
		if err != nil || !ok || got.MsgID != want {
			t.Fatalf("read: %v %v %v, want msg %d", got, ok, err, want)
		}
	}
	if _, ok, _ := q.ReadWindow(false, nil); ok {
		t.Fatal("window read past the last record")
	}
	// Acknowledge the middle one: out of order.
	if _, ok, _ := q.ReadWindow(false, ackOf(r2)); ok || q.Len() != 2 {
		t.Fatalf("ack by key: ok %v len %d", ok, q.Len())
	}
	// A rewind shows the unacknowledged ones again, in order.
	got, ok, _ := q.ReadWindow(true, nil)
	if !ok || got.MsgID != 1 {
		t.Fatalf("rewind: %v %v", got, ok)
	}
	got, ok, _ = q.ReadWindow(false, ackOf(r1))
	if !ok || got.MsgID != 3 {
		t.Fatalf("after rewind: %v %v", got, ok)
	}
	// The reader found nothing new: the next write wakes it.
	w := wakes.Load()
	if _, ok, _ := q.ReadWindow(false, ackOf(r3)); ok || q.Len() != 0 {
		t.Fatalf("drained: ok %v len %d", ok, q.Len())
	}
	if err := q.Write(rec(4, 0, 1, "d")); err != nil {
		t.Fatal(err)
	}
	if wakes.Load() != w+1 {
		t.Fatalf("wakes %d, want %d", wakes.Load(), w+1)
	}
	// A late retransmit of an acknowledged write is not queued again.
	if err := q.Write(r2); err != nil || q.Len() != 1 {
		t.Fatalf("retransmit: %v len %d", err, q.Len())
	}
	// On the wire: system interface only, flags checked.
	data, _ := (&oem.ReadQueue1WindowRequest{IANA: oem.DefaultIANA}).Pack()
	if _, cc := b.do(lan(bmc.PrivilegeLevelAdministrator), oem.CmdReadQueue1Win, data); cc != oem.CCNotSupportedInState {
		t.Fatalf("lan window read cc %#02x", uint8(cc))
	}
	resp, cc := b.do(sys(), oem.CmdReadQueue1Win, data)
	var rr oem.ReadQueueResponse
	if cc != 0 || rr.Unpack(resp) != nil || rr.Empty || rr.Record.MsgID != 4 {
		t.Fatalf("sys window read cc %#02x % x", uint8(cc), resp)
	}
	if _, cc := b.do(sys(), oem.CmdReadQueue1Win, testutil.Unhex(t, "d9 7e 00 80")); cc != oem.CCInvalidDataField {
		t.Fatalf("reserved flag cc %#02x", uint8(cc))
	}
}
