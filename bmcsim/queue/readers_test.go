package queue

import (
	"fmt"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/testutil"
)

func to(reader uint32, id uint64, payload string) record.Record {
	return record.Record{Requester: reader, MsgID: id, Count: 1, Payload: []byte(payload)}
}

// readAll reads queue 2 as reader id until empty, acknowledging each record,
// and returns the message ids in the order read.
func readAll(t *testing.T, q *Queue, id uint32, alertLog bool) []uint64 {
	t.Helper()
	var got []uint64
	var ack *oem.Ack
	for range 1000 {
		r, ok, err := q.ReadFor(id, alertLog, ack)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return got
		}
		got = append(got, r.MsgID)
		ack = ackOf(r)
	}
	t.Fatal("reader never saw the end of its records")
	return nil
}

func TestReadersSeeOnlyTheirOwn(t *testing.T) {
	b := newBench(t, Options{})
	q := b.qs.Queue2()
	for i := range 6 {
		reader := uint32(0xA)
		if i%2 == 1 {
			reader = 0xB
		}
		if err := q.Write(to(reader, uint64(100+i), "answer")); err != nil {
			t.Fatal(err)
		}
	}
	// B acknowledges A's records by key: nothing happens to them.
	for _, id := range []uint64{100, 102, 104} {
		if r, ok, _ := q.ReadFor(0xB, true, &oem.Ack{MsgID: id}); !ok || r.Requester != 0xB {
			t.Fatalf("B read %v %v", r, ok)
		}
	}
	if q.Len() != 6 {
		t.Fatalf("B's acks of A's records removed some: len %d", q.Len())
	}
	// The legacy reader (0x04) does not see addressed records at all.
	if r, ok, _ := q.Read(nil); ok {
		t.Fatalf("legacy reader got %v", r)
	}
	if got := fmt.Sprint(readAll(t, q, 0xA, false)); got != "[100 102 104]" {
		t.Fatalf("A read %s", got)
	}
	if got := fmt.Sprint(readAll(t, q, 0xB, true)); got != "[101 103 105]" {
		t.Fatalf("B read %s", got)
	}
	if q.Len() != 0 {
		t.Fatalf("len %d after both read", q.Len())
	}
}

func TestAlertLogReachesEveryFollower(t *testing.T) {
	b := newBench(t, Options{})
	q := b.qs.Queue2()
	// Two followers known before the alerts, a command reader that does
	// not follow, and one follower that comes later.
	q.ReadFor(1, true, nil)
	q.ReadFor(2, true, nil)
	q.Write(to(0, 7, "alert 1"))
	q.Write(to(3, 8, "answer for 3"))
	q.Write(to(0, 9, "alert 2"))
	if got := fmt.Sprint(readAll(t, q, 3, false)); got != "[8]" {
		t.Fatalf("command reader read %s", got)
	}
	if got := fmt.Sprint(readAll(t, q, 1, true)); got != "[7 9]" {
		t.Fatalf("follower 1 read %s", got)
	}
	if q.Len() != 2 {
		t.Fatalf("alerts removed before follower 2 read them: len %d", q.Len())
	}
	if got := fmt.Sprint(readAll(t, q, 4, true)); got != "[7 9]" {
		t.Fatalf("late follower read %s", got)
	}
	if got := fmt.Sprint(readAll(t, q, 2, true)); got != "[7 9]" {
		t.Fatalf("follower 2 read %s", got)
	}
	if q.Len() != 0 {
		t.Fatalf("alerts kept after every follower acknowledged them: len %d", q.Len())
	}
	// The legacy reader (0x04 is reader 0 with the alert log) still gets
	// alerts, and its ack removes them when it is the only follower left.
	b.clk.Add(DefaultFollowerTTL) // followers 1, 2, 4 are gone
	q.Write(to(0, 10, "alert 3"))
	r, ok, _ := q.Read(nil)
	if !ok || r.MsgID != 10 {
		t.Fatalf("legacy reader: %v %v", r, ok)
	}
	if _, ok, _ := q.Read(ackOf(r)); ok || q.Len() != 0 {
		t.Fatalf("legacy ack: ok %v len %d", ok, q.Len())
	}
}

func TestVanishedReaderEvicted(t *testing.T) {
	b := newBench(t, Options{Capacity2: 4, ReaderTTL: time.Minute})
	q := b.qs.Queue2()
	q.ReadFor(0xDEAD, false, nil) // reads once, then vanishes
	for i := range 4 {
		if err := q.Write(to(0xDEAD, uint64(i+1), "x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Write(to(0xA, 50, "y")); err == nil {
		t.Fatal("write to a full queue accepted")
	}
	// A live reader keeps its records: reading refreshes it.
	b.clk.Add(59 * time.Second)
	if err := q.Write(to(0xA, 51, "y")); err == nil {
		t.Fatal("evicted before the TTL")
	}
	b.clk.Add(time.Second)
	if err := q.Write(to(0xA, 52, "y")); err != nil {
		t.Fatalf("vanished reader's records still fill the queue: %v", err)
	}
	if q.Len() != 1 || q.Readers() != 0 {
		t.Fatalf("len %d readers %d", q.Len(), q.Readers())
	}
	if n := counter(t, q.m.evicted.WithLabelValues("reader_gone")); n != 5 { // 4 records + the reader
		t.Fatalf("evictions counted %v, want 5", n)
	}
	// A late retransmit of an evicted record is not queued again.
	q.Write(to(0xDEAD, 1, "x"))
	if q.Len() != 1 {
		t.Fatal("evicted record queued again")
	}
	// A reader that keeps reading keeps its records past the TTL.
	for range 3 {
		b.clk.Add(40 * time.Second)
		if r, ok, _ := q.ReadFor(0xA, false, nil); !ok || r.MsgID != 52 {
			t.Fatalf("live reader lost its record: %v %v", r, ok)
		}
	}
}

func TestReadForWire(t *testing.T) {
	b := newBench(t, Options{})
	if err := b.qs.Queue2().Bind("vms", 0x01020304); err != nil { // as its Queue 1 write does
		t.Fatal(err)
	}
	b.qs.Queue2().Write(to(0x01020304, 5, "hi"))
	l := lan(bmc.PrivilegeLevelOperator)
	resp, cc := b.do(l, oem.CmdReadQueue2For, testutil.Unhex(t, "d9 7e 00 04 03 02 01 00"))
	if want := "d9 7e 00 00 02 00 04 03 02 01 05 00 00 00 00 00 00 00 00 00 01 00 68 69"; cc != 0 || fmt.Sprintf("% x", resp) != want {
		t.Fatalf("read-for: cc %#02x resp % x", uint8(cc), resp)
	}
	// Another reader id sees nothing; the system interface may not read.
	if resp, cc := b.do(l, oem.CmdReadQueue2For, testutil.Unhex(t, "d9 7e 00 09 00 00 00 01")); cc != 0 || fmt.Sprintf("% x", resp) != "d9 7e 00 01" {
		t.Fatalf("other reader: cc %#02x resp % x", uint8(cc), resp)
	}
	if _, cc := b.do(sys(), oem.CmdReadQueue2For, testutil.Unhex(t, "d9 7e 00 04 03 02 01 00")); cc != oem.CCNotSupportedInState {
		t.Fatalf("system interface: cc %#02x", uint8(cc))
	}
	if _, cc := b.do(lan(bmc.PrivilegeLevelUser), oem.CmdReadQueue2For, testutil.Unhex(t, "d9 7e 00 04 03 02 01 00")); cc != oem.CCInsufficientPrivilege {
		t.Fatalf("user privilege: cc %#02x", uint8(cc))
	}
	if _, cc := b.do(l, oem.CmdReadQueue2For, testutil.Unhex(t, "d9 7e 00 00 00 00 00 00")); cc != oem.CCInvalidDataField {
		t.Fatalf("reader 0: cc %#02x", uint8(cc))
	}
	// Acknowledged by key: gone.
	if resp, cc := b.do(l, oem.CmdReadQueue2For, testutil.Unhex(t, "d9 7e 00 04 03 02 01 00 05 00 00 00 00 00 00 00 00 00")); cc != 0 || fmt.Sprintf("% x", resp) != "d9 7e 00 01" {
		t.Fatalf("after ack: cc %#02x resp % x", uint8(cc), resp)
	}
}

// TestRestartKeepsAckedKeys: bmcsim is killed (no Close, so nothing is
// flushed beyond what was written) after the host acknowledged a record; the
// VMS's retransmitted write of that record must not queue it again, or the
// agent would read it twice and alert on a replayed envelope.
func TestRestartKeepsAckedKeys(t *testing.T) {
	dir := t.TempDir()
	qs, err := Open(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	q1 := qs.Queue1()
	r := to(0xA, 77, "request")
	q1.Write(r)
	q1.Read(nil)
	q1.Read(ackOf(r))
	qs.Queue2().Write(to(0xA, 78, "answer"))
	qs.Queue2().ReadFor(0xA, false, nil)
	qs.Queue2().ReadFor(0xA, false, &oem.Ack{MsgID: 78})
	// SIGKILL: the old file handles stay open, unflushed; a new process opens
	// the journals.
	b2 := newBench(t, Options{StateDir: dir})
	b2.qs.Queue1().Write(r)
	b2.qs.Queue2().Write(to(0xA, 78, "answer"))
	if b2.qs.Queue1().Len() != 0 || b2.qs.Queue2().Len() != 0 {
		t.Fatalf("acknowledged records queued again after restart: %d %d", b2.qs.Queue1().Len(), b2.qs.Queue2().Len())
	}
	if n := counter(t, b2.qs.q1.m.duplicates); n != 1 {
		t.Fatalf("duplicates %v", n)
	}
	// Through a compaction too.
	q := b2.qs.Queue1()
	var last record.Record
	for i := range 3000 {
		last = to(0, uint64(1000+i), "x")
		q.Write(last)
		q.Read(nil)
		q.Read(ackOf(last))
	}
	b2.qs.Close()
	b3 := newBench(t, Options{StateDir: dir})
	b3.qs.Queue1().Write(last)
	if b3.qs.Queue1().Len() != 0 {
		t.Fatal("acknowledged key lost by compaction")
	}
	qs.Close()
}

// readForSeeds exercise addressed records and ReadQueue2For (FuzzHandlers).
var readForSeeds = []struct {
	cmd uint8
	lan bool
	hex string
}{
	{3, false, "d9 7e 00 02 00 05 00 00 00 01 00 00 00 00 00 00 00 00 00 01 00 61"},
	{6, true, "d9 7e 00 05 00 00 00 00"},
	{6, true, "d9 7e 00 05 00 00 00 01 01 00 00 00 00 00 00 00 00 00"},
	{3, false, "d9 7e 00 01 00 02 00 00 00 00 00 00 00 00 00 01 00 62"},
	{6, true, "d9 7e 00 06 00 00 00 03"}, // a durable follower
	{6, true, "d9 7e 00 06 00 00 00 03 01 00 00 00 00 00 00 00 00 00"},
}

// TestRestartGivesReadersTime: records restored from the journal are not
// evicted for their age alone: their reader could not read while bmcsim was
// down.
func TestRestartGivesReadersTime(t *testing.T) {
	dir := t.TempDir()
	clk := testutil.NewClock(time.Unix(1_700_000_000, 0))
	qs, err := Open(Options{StateDir: dir, Now: clk.Now, ReaderTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	qs.Queue2().Write(to(7, 1, "answer"))
	qs.Close()
	clk.Add(10 * time.Minute) // bmcsim was down
	qs2, err := Open(Options{StateDir: dir, Now: clk.Now, ReaderTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer qs2.Close()
	if r, ok, _ := qs2.Queue2().ReadFor(7, false, nil); !ok || r.MsgID != 1 {
		t.Fatalf("restored answer evicted at once: %v %v", r, ok)
	}
	clk.Add(2 * time.Minute)
	qs2.Queue2().ReadFor(8, false, nil)
	if qs2.Queue2().Len() != 0 {
		t.Fatal("answer of a reader gone since the restart kept")
	}
}

// A durable follower's alert log cursor survives a bmcsim restart (SIGKILL)
// and a journal compaction: after the restart it is not shown alerts it already
// acknowledged, while another follower still gets the ones it had not.
func TestRestartKeepsCursors(t *testing.T) {
	dir := t.TempDir()
	b := newBench(t, Options{StateDir: dir})
	q := b.qs.Queue2()
	q.ReadAs("", 1, durable, nil)
	q.ReadAs("", 2, durable, nil)
	q.Write(to(0, 7, "alert 1"))
	q.Write(to(0, 9, "alert 2"))
	if got := fmt.Sprint(readDurable(t, q, 1)); got != "[7 9]" {
		t.Fatalf("follower 1 read %s", got)
	}
	// Follower 2 acknowledges alert 1 only.
	if r, ok, _ := q.ReadAs("", 2, durable, nil); !ok || r.MsgID != 7 {
		t.Fatalf("follower 2: %v %v", r, ok)
	}
	if r, ok, _ := q.ReadAs("", 2, durable, &oem.Ack{MsgID: 7}); !ok || r.MsgID != 9 {
		t.Fatalf("follower 2: %v %v", r, ok)
	}

	// SIGKILL: the old handles stay open, unflushed; a new process opens
	// the journals.
	b2 := newBench(t, Options{StateDir: dir})
	q = b2.qs.Queue2()
	if got := fmt.Sprint(readDurable(t, q, 1)); got != "[]" {
		t.Fatalf("follower 1 shown alerts again after a restart: %s", got)
	}
	q.Write(to(0, 11, "alert 3"))
	if got := fmt.Sprint(readDurable(t, q, 2)); got != "[9 11]" {
		t.Fatalf("follower 2 read %s after the restart", got)
	}

	// Through a compaction too.
	q.mu.Lock()
	err := q.j.compact(q.items, q.recentQ, q.cursors(), q.owners())
	q.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	b2.qs.Close()
	b3 := newBench(t, Options{StateDir: dir})
	q = b3.qs.Queue2()
	q.Write(to(0, 13, "alert 4"))
	for _, id := range []uint32{1, 2} {
		want := "[13]"
		if id == 1 {
			want = "[11 13]" // it had not read alert 3 yet
		}
		if got := fmt.Sprint(readDurable(t, q, id)); got != want {
			t.Fatalf("follower %d read %s after a compaction and restart, want %s", id, got, want)
		}
	}
	b.qs.Close()
}
