package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// readFor sends Read Queue 2 For (0x06) for reader id as hctx.
func (b *bench) readFor(hctx *handlers.HandlerContext, id uint32, ack *oem.Ack) (oem.ReadQueueResponse, oem.CompletionCode) {
	b.t.Helper()
	data, err := (&oem.ReadQueue2ForRequest{IANA: oem.DefaultIANA, Reader: id, Ack: ack}).Pack()
	if err != nil {
		b.t.Fatal(err)
	}
	resp, cc := b.do(hctx, oem.CmdReadQueue2For, data)
	var r oem.ReadQueueResponse
	if cc == oem.CCOK {
		if err := r.Unpack(resp); err != nil {
			b.t.Fatalf("read response % x: %v", resp, err)
		}
	}
	return r, cc
}

// TestReaderBoundToItsUser: the VMS's Queue 1 write binds its requester id
// to its BMC user; another user's session that names that id (it travels in
// clear in every Queue 1 record) cannot read the answer, acknowledge it by
// key, nor write requests as that id: 0xD4, at operator and at
// administrator privilege alike. The VMS still reads and acknowledges it.
func TestReaderBoundToItsUser(t *testing.T) {
	b := newBench(t, Options{})
	const id = 0x51C0FFEE
	vms := lan(bmc.PrivilegeLevelOperator)
	if cc := b.write(vms, oem.CmdWriteQueue1, record.Record{Requester: id, MsgID: 1, Count: 1, Payload: []byte("req")}); cc != oem.CCOK {
		t.Fatalf("VMS writes its request: cc %#02x", uint8(cc))
	}
	if cc := b.write(sys(), oem.CmdWriteQueue2, to(id, 2, "answer")); cc != oem.CCOK {
		t.Fatalf("host writes the answer: cc %#02x", uint8(cc))
	}
	for _, other := range []*handlers.HandlerContext{
		lanAs("mallory", bmc.PrivilegeLevelOperator),
		lanAs("admin", bmc.PrivilegeLevelAdministrator),
	} {
		who := other.Session.User.Name
		if r, cc := b.readFor(other, id, nil); cc != oem.CCInsufficientPrivilege {
			t.Errorf("%s reads the VMS's reader id: cc %#02x, record %v", who, uint8(cc), r.Record)
		}
		if _, cc := b.readFor(other, id, &oem.Ack{MsgID: 2}); cc != oem.CCInsufficientPrivilege {
			t.Errorf("%s acknowledges the VMS's answer: cc %#02x", who, uint8(cc))
		}
		if cc := b.write(other, oem.CmdWriteQueue1, record.Record{Requester: id, MsgID: 3, Count: 1, Payload: []byte("x")}); cc != oem.CCInsufficientPrivilege {
			t.Errorf("%s writes a request as the VMS's reader id: cc %#02x", who, uint8(cc))
		}
	}
	if b.qs.Queue2().Len() != 1 || b.qs.Queue1().Len() != 1 {
		t.Fatalf("refused requests changed the queues: queue 1 %d, queue 2 %d", b.qs.Queue1().Len(), b.qs.Queue2().Len())
	}
	r, cc := b.readFor(vms, id, nil)
	if cc != oem.CCOK || r.Empty || r.Record.MsgID != 2 {
		t.Fatalf("VMS reads its answer: cc %#02x %+v", uint8(cc), r)
	}
	if r, cc := b.readFor(vms, id, ackOf(r.Record)); cc != oem.CCOK || !r.Empty {
		t.Fatalf("VMS acknowledges its answer: cc %#02x %+v", uint8(cc), r)
	}
	if got := counter(t, b.qs.Queue2().m.refused); got != 6 {
		t.Errorf("not_owner_total %v, want 6", got)
	}
}

// TestOwnerOutlivesTheBinding: an answer belongs to the user its reader was
// bound to when it was written. An answer written to an id nobody had bound
// is no LAN user's; and across a restart (journal, and a compaction) the
// binding and the answer's owner come back.
func TestOwnerOutlivesTheBinding(t *testing.T) {
	dir := t.TempDir()
	b := newBench(t, Options{StateDir: dir})
	q := b.qs.Queue2()
	vms, mallory := lan(bmc.PrivilegeLevelOperator), lanAs("mallory", bmc.PrivilegeLevelOperator)
	// Orphan: written before any binding; mallory binds the id and sees nothing.
	q.Write(to(7, 1, "orphan"))
	if r, cc := b.readFor(mallory, 7, nil); cc != oem.CCOK || !r.Empty {
		t.Fatalf("an unbound id's answer reached the first to name it: cc %#02x %+v", uint8(cc), r)
	}
	if err := q.Bind("vms", 9); err != nil {
		t.Fatal(err)
	}
	q.Write(to(9, 2, "answer"))
	for round := range 2 {
		if round == 1 {
			q.mu.Lock()
			err := q.j.compact(q.items, q.recentQ, q.cursors(), q.owners())
			q.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
		}
		b.qs.Close()
		b = newBench(t, Options{StateDir: dir})
		q = b.qs.Queue2()
		if _, cc := b.readFor(mallory, 9, nil); cc != oem.CCInsufficientPrivilege {
			t.Fatalf("round %d: mallory names the VMS's id after a restart: cc %#02x", round, uint8(cc))
		}
	}
	r, cc := b.readFor(vms, 9, nil)
	if cc != oem.CCOK || r.Empty || r.Record.MsgID != 2 {
		t.Fatalf("VMS after the restarts: cc %#02x %+v", uint8(cc), r)
	}
	if _, err := os.Stat(filepath.Join(dir, "queue2.journal")); err != nil {
		t.Fatal(err)
	}
}

// FuzzReplay feeds arbitrary bytes to the journal replay: it never panics,
// and what it accepts it accepts whole (the good prefix is the input).
func FuzzReplay(f *testing.F) {
	var seed []byte
	seed = appendEntry(seed, entryOwner, ownerPayload(9, "vms"))
	p, _ := putPayload(entry{rec: to(9, 2, "answer")})
	seed = appendEntry(seed, entryPut, p)
	seed = appendEntry(seed, entryCursor, cursorPayload(3, record.Key{MsgID: 1}))
	seed = appendEntry(seed, entryRemove, []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(seed)
	f.Add(appendEntry(nil, entryOwner, ownerPayload(1, "")))
	f.Add(seed[:len(seed)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		rp, n, good, err := replay(data)
		if good > len(data) || (err == nil && good != len(data)) || n < 0 {
			t.Fatalf("good %d of %d, n %d, err %v", good, len(data), n, err)
		}
		for id, o := range rp.owners {
			if len(o) > maxOwner {
				t.Fatalf("owner of %d: %d bytes", id, len(o))
			}
		}
		_ = fmt.Sprint(len(rp.items), len(rp.recent), len(rp.cursors))
	})
}

// TestRebindAfterTTL: once its reader has been idle for the reader TTL,
// another user may bind the id, but an answer written while the first user
// held it stays that user's: the newcomer never sees it.
func TestRebindAfterTTL(t *testing.T) {
	b := newBench(t, Options{ReaderTTL: time.Minute})
	q := b.qs.Queue2()
	vms, mallory := lan(bmc.PrivilegeLevelOperator), lanAs("mallory", bmc.PrivilegeLevelOperator)
	if _, cc := b.readFor(vms, 5, nil); cc != oem.CCOK {
		t.Fatalf("vms binds: cc %#02x", uint8(cc))
	}
	b.clk.Add(50 * time.Second)
	q.Write(to(5, 1, "late answer"))
	if _, cc := b.readFor(mallory, 5, nil); cc != oem.CCInsufficientPrivilege {
		t.Fatalf("mallory while vms's reader is live: cc %#02x", uint8(cc))
	}
	b.clk.Add(15 * time.Second) // vms idle 65 s; the answer is 15 s old
	if r, cc := b.readFor(mallory, 5, nil); cc != oem.CCOK || !r.Empty {
		t.Fatalf("mallory after vms's reader was forgotten: cc %#02x %+v", uint8(cc), r)
	}
	if q.Len() != 1 {
		t.Fatalf("the answer is gone (len %d); it should wait out its TTL unread", q.Len())
	}
}

// BenchmarkRoundTripBound is one request and answer through the handlers
// with reader binding: the VMS's Queue 1 write (binds), the host's read and
// ack, its Queue 2 answer, the VMS's read and ack, with 64 other readers
// bound.
func BenchmarkRoundTripBound(b *testing.B) {
	bb := newBench(b, Options{})
	q2 := bb.qs.Queue2()
	for i := range 64 {
		if err := q2.Bind(fmt.Sprintf("user%d", i), uint32(1000+i)); err != nil {
			b.Fatal(err)
		}
	}
	vms := lan(bmc.PrivilegeLevelOperator)
	const id = 7
	b.ReportAllocs()
	for i := range b.N {
		msg := uint64(2 * (i + 1))
		if cc := bb.write(vms, oem.CmdWriteQueue1, record.Record{Requester: id, MsgID: msg, Count: 1, Payload: []byte("req")}); cc != oem.CCOK {
			b.Fatalf("write 1: %#02x", uint8(cc))
		}
		r, _ := bb.read(sys(), oem.CmdReadQueue1, nil)
		bb.read(sys(), oem.CmdReadQueue1, ackOf(r.Record))
		if cc := bb.write(sys(), oem.CmdWriteQueue2, to(id, msg+1, "answer")); cc != oem.CCOK {
			b.Fatalf("write 2: %#02x", uint8(cc))
		}
		a, cc := bb.readFor(vms, id, nil)
		if cc != oem.CCOK || a.Empty {
			b.Fatalf("read 2: %#02x %+v", uint8(cc), a)
		}
		bb.readFor(vms, id, ackOf(a.Record))
	}
}

// TestFollowerKeepsItsBinding: a follower of the alert log keeps its
// cursor for FollowerTTL (24 h), and its binding with it: another user
// naming the id of a follower paused past the reader TTL is refused
// (0xD4); it neither takes the cursor over nor acknowledges alerts the
// paused follower has not read. The follower resumes where it was.
func TestFollowerKeepsItsBinding(t *testing.T) {
	b := newBench(t, Options{ReaderTTL: time.Minute})
	q := b.qs.Queue2()
	const id = 0xF0
	q.Write(to(0, 1, "alert"))
	q.Write(to(0, 2, "alert"))
	r, ok, err := q.ReadAs("vms", id, durable, nil)
	if err != nil || !ok || r.MsgID != 1 {
		t.Fatalf("vms follows: %v %v %v", r, ok, err)
	}
	if _, _, err := q.ReadAs("vms", id, durable, ackOf(r)); err != nil {
		t.Fatal(err)
	}
	b.clk.Add(2 * time.Minute) // paused past the reader TTL, well within the follower TTL
	if r, ok, err := q.ReadAs("mallory", id, durable, nil); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("mallory names the paused follower's id: %v %v %v", r, ok, err)
	}
	if _, _, err := q.ReadAs("mallory", id, durable, &oem.Ack{MsgID: 2}); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("mallory acknowledges as the paused follower: %v", err)
	}
	r, ok, err = q.ReadAs("vms", id, durable, nil)
	if err != nil || !ok || r.MsgID != 2 {
		t.Fatalf("vms resumes: %v %v %v, want alert 2", r, ok, err)
	}
	// Past the follower TTL the id is free again.
	b.clk.Add(DefaultFollowerTTL)
	if _, _, err := q.ReadAs("mallory", id, durable, nil); err != nil {
		t.Fatalf("mallory after the follower TTL: %v", err)
	}
}

// TestRestartKeepsFollowersOverStaleBindings: a journal holds the bindings
// of every reader bound since its last compaction (each vmsctl run binds a
// new random id), more than MaxReaders. A restart restores the followers
// (cursor and binding) first: the follower is not forgotten in favour of
// readers long gone, so it resumes where it was and its id stays its
// user's.
func TestRestartKeepsFollowersOverStaleBindings(t *testing.T) {
	dir := t.TempDir()
	o := Options{StateDir: dir, MaxReaders: 4}
	b := newBench(t, o)
	q := b.qs.Queue2()
	const follower, other = 0xF0, 0xF1
	q.Write(to(0, 1, "alert"))
	q.Write(to(0, 2, "alert"))
	if _, _, err := q.ReadAs("ops", other, durable, nil); err != nil { // a follower that keeps alert 1 in the log
		t.Fatal(err)
	}
	r, _, err := q.ReadAs("vms", follower, durable, nil)
	if err != nil || r.MsgID != 1 {
		t.Fatalf("follower: %v %v", r, err)
	}
	if _, _, err := q.ReadAs("vms", follower, durable, ackOf(r)); err != nil {
		t.Fatal(err)
	}
	for i := range 60 { // command readers of runs since gone
		if err := q.Bind("vms", uint32(0x1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		b.qs.Close()
		b = newBench(t, o)
		q = b.qs.Queue2()
		if _, _, err := q.ReadAs("mallory", follower, durable, nil); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("after a restart mallory names the follower's id: %v", err)
		}
	}
	r, ok, err := q.ReadAs("vms", follower, durable, nil)
	if err != nil || !ok || r.MsgID != 2 {
		t.Fatalf("follower after the restarts: %v %v %v, want alert 2", r, ok, err)
	}
}
