package queue

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// These tests drive reads over the wire with raw flags bytes (0x01 alert
// log, 0x03 alert log + durable), as a VMS does.

// readForRaw is one OEM 0x06 read of reader id with flags byte flags.
func readForRaw(b *bench, hctx *handlers.HandlerContext, id uint32, flags byte, ack *oem.Ack) (oem.ReadQueueResponse, oem.CompletionCode) {
	b.t.Helper()
	data := []byte{0xd9, 0x7e, 0x00}
	data = binary.LittleEndian.AppendUint32(data, id)
	data = append(data, flags)
	if ack != nil {
		data = binary.LittleEndian.AppendUint64(data, ack.MsgID)
		data = binary.LittleEndian.AppendUint16(data, ack.Index)
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

// followWire reads the alert log over the wire as follower id with flags
// until empty, acknowledging each record; it returns what it read, a
// marker as "dropped:N".
func followWire(b *bench, hctx *handlers.HandlerContext, id uint32, flags byte) []string {
	b.t.Helper()
	var got []string
	var ack *oem.Ack
	for range 1000 {
		r, cc := readForRaw(b, hctx, id, flags, ack)
		if cc != oem.CCOK {
			b.t.Fatalf("follower %#x flags %#02x: completion code %v", id, flags, cc)
		}
		if r.Empty {
			return got
		}
		if n, ok, _ := record.DroppedMarker(r.Record); ok {
			got = append(got, fmt.Sprintf("dropped:%d", n))
		} else {
			got = append(got, fmt.Sprint(r.Record.MsgID))
		}
		ack = ackOf(r.Record)
	}
	b.t.Fatal("follower never saw the end of the log")
	return nil
}

// readV1 reads the alert log as the version 1 reader (OEM 0x04, reader 0)
// until empty.
func readV1(b *bench) []string {
	b.t.Helper()
	var got []string
	var ack *oem.Ack
	for range 1000 {
		r, cc := b.read(lan(bmc.PrivilegeLevelOperator), oem.CmdReadQueue2, ack)
		if cc != oem.CCOK {
			b.t.Fatalf("version 1 read: %v", cc)
		}
		if r.Empty {
			return got
		}
		got = append(got, fmt.Sprint(r.Record.MsgID))
		ack = ackOf(r.Record)
	}
	b.t.Fatal("version 1 reader never saw the end of the log")
	return nil
}

// TestOneShotFollowersDoNotHoldTheLog: 50 one-shot `vmsctl alerts` runs
// (each a new random reader id that reads the log once and goes), and a
// version 1 reader, are forgotten after the reader TTL, cursor and all, so
// they stop holding the alert log: a follower that keeps reading keeps it
// trimmed, no later alert is dropped, and nobody is shown "alerts
// dropped". Before, each one-shot follower kept its cursor for the
// follower TTL (24 h): no record after it was trimmed, the log stayed
// full and every new alert dropped the oldest. A durable follower paused
// for two minutes meanwhile still gets every alert it had not read.
func TestOneShotFollowersDoNotHoldTheLog(t *testing.T) {
	const logCap = 8
	b := newBench(t, Options{Capacity2: 64, AlertLog: logCap, AlertTTL: time.Hour, StateDir: t.TempDir()})
	q := b.qs.Queue2()
	vms := lan(bmc.PrivilegeLevelOperator)
	const pageID, paused = 0xAAAA, 0xD0 // the lab's web page (one id, reads every 5 s); vmsctl alerts --follower-id
	next := uint64(1)
	alert := func() string {
		t.Helper()
		if err := q.Write(alertRec(t, next)); err != nil {
			t.Fatalf("alert %d: %v", next, err)
		}
		next++
		return fmt.Sprint(next - 1)
	}
	if got := followWire(b, vms, paused, 0x03); len(got) != 0 { // keeps the first alerts for the others
		t.Fatalf("durable follower: %v", got)
	}
	var want []string
	for range 4 {
		want = append(want, alert())
	}
	for i := range 50 {
		if got := followWire(b, vms, uint32(0x1000+i), 0x01); len(got) != 4 {
			t.Fatalf("one-shot follower %d read %v", i, got)
		}
	}
	if got := readV1(b); len(got) != 4 {
		t.Fatalf("version 1 reader read %v", got)
	}
	if got := fmt.Sprint(followWire(b, vms, paused, 0x03)); got != fmt.Sprint(want) {
		t.Fatalf("durable follower: %s", got)
	}
	// page reads every alert as it comes.
	page := func() {
		t.Helper()
		for _, s := range followWire(b, vms, pageID, 0x01) {
			if strings.HasPrefix(s, "dropped") {
				t.Fatalf("the page was shown %s after alert %d: abandoned followers hold the log", s, next-1)
			}
		}
	}
	// The durable follower pauses 2 minutes, the page reads on.
	want = nil
	for range logCap - 2 {
		b.clk.Add(20 * time.Second)
		want = append(want, alert())
		page()
	}
	if got := fmt.Sprint(followWire(b, vms, paused, 0x03)); got != fmt.Sprint(want) {
		t.Fatalf("durable follower after a 2-minute pause: %s, want %v", got, want)
	}
	// Three log caps of alerts, both reading on.
	for range 3 * logCap {
		b.clk.Add(5 * time.Second)
		want = append(want, alert())
		page()
		followWire(b, vms, paused, 0x03)
	}
	if n := counter(t, q.m.evicted.WithLabelValues("alert_dropped")); n != 0 {
		t.Fatalf("%v alerts dropped", n)
	}
	if got := fmt.Sprint(followWire(b, vms, 0x2000, 0x01)); got != "[]" {
		t.Fatalf("a new one-shot follower was shown %s, want nothing (the page and the durable follower read it all)", got)
	}
	// The journal holds the durable follower's cursor only.
	data, err := os.ReadFile(filepath.Join(b.qs.q2.j.path))
	if err != nil {
		t.Fatal(err)
	}
	rp, _, _, err := replay(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(rp.cursors) != 1 {
		t.Fatalf("journal holds %d followers' cursors, want 1 (the durable one)", len(rp.cursors))
	}
}

// TestFollowerBindingLastsAsLongAsItsCursor: a follower that did not ask
// to be durable is forgotten after the reader TTL, binding and all: its id
// is free for another user then, as a command reader's is, and it starts
// again at the oldest alert kept. A durable follower's binding lasts the
// follower TTL (TestFollowerKeepsItsBinding).
func TestFollowerBindingLastsAsLongAsItsCursor(t *testing.T) {
	b := newBench(t, Options{ReaderTTL: time.Minute})
	q := b.qs.Queue2()
	vms, mallory := lan(bmc.PrivilegeLevelOperator), lanAs("mallory", bmc.PrivilegeLevelOperator)
	const id = 0xF0
	q.Write(to(0, 1, "alert"))
	if got := fmt.Sprint(followWire(b, vms, id, 0x01)); got != "[1]" {
		t.Fatalf("follower: %s", got)
	}
	b.clk.Add(59 * time.Second)
	if _, cc := readForRaw(b, mallory, id, 0x01, nil); cc != oem.CCInsufficientPrivilege {
		t.Fatalf("mallory names a follower idle 59 s: %v, want 0xD4", cc)
	}
	b.clk.Add(2 * time.Minute)
	if _, cc := readForRaw(b, mallory, id, 0x01, nil); cc != oem.CCOK {
		t.Fatalf("mallory names a follower idle past the reader TTL: %v, want its id free", cc)
	}
	if n := counter(t, q.m.evicted.WithLabelValues("follower_gone")); n != 1 {
		t.Fatalf("follower_gone %v", n)
	}
}

// TestReadFlagsOnTheWire: the reads of older VMS software work as before
// (OEM 0x04; 0x06 with flag 0x01 or none), a durable follower's (0x03)
// too; the durable bit without the alert log, or a reserved bit, is
// refused with 0xCC and changes nothing.
func TestReadFlagsOnTheWire(t *testing.T) {
	b := newBench(t, Options{})
	q := b.qs.Queue2()
	vms := lan(bmc.PrivilegeLevelOperator)
	for _, flags := range []byte{0x02, 0x04, 0x06, 0x80} {
		if _, cc := readForRaw(b, vms, 0x10, flags, nil); cc != oem.CCInvalidDataField {
			t.Fatalf("flags %#02x: %v, want 0xCC", flags, cc)
		}
	}
	if q.Readers() != 0 {
		t.Fatalf("a refused read made %d readers", q.Readers())
	}
	// Every reader reads once first, so each alert is kept for all.
	followWire(b, vms, 0x10, 0x00) // the VMS's command reader
	followWire(b, vms, 0x11, 0x01)
	followWire(b, vms, 0x12, 0x03)
	readV1(b)
	q.Write(to(0, 1, "alert"))
	q.Write(to(0x10, 2, "answer"))
	if got := fmt.Sprint(followWire(b, vms, 0x10, 0x00)); got != "[2]" {
		t.Fatalf("command reader: %s", got)
	}
	if got := fmt.Sprint(followWire(b, vms, 0x11, 0x01)); got != "[1]" {
		t.Fatalf("follower (older vmsctl): %s", got)
	}
	if got := fmt.Sprint(followWire(b, vms, 0x12, 0x03)); got != "[1]" {
		t.Fatalf("durable follower: %s", got)
	}
	if got := fmt.Sprint(readV1(b)); got != "[1]" {
		t.Fatalf("version 1 reader: %s", got)
	}
	if q.Len() != 0 {
		t.Fatalf("%d records left", q.Len())
	}
}

// TestDurableFollowerKeptAcrossRestartBeforeAnyAck: a follower that
// becomes durable before it has acknowledged anything (an empty log) is
// journalled at once, so after a BMC restart it still holds what it has
// not read while another follower reads and acknowledges on.
func TestDurableFollowerKeptAcrossRestartBeforeAnyAck(t *testing.T) {
	dir := t.TempDir()
	b := newBench(t, Options{StateDir: dir})
	vms := lan(bmc.PrivilegeLevelOperator)
	const paused, live = 0xD1, 0xD2
	if got := followWire(b, vms, paused, 0x03); len(got) != 0 {
		t.Fatalf("empty log: %v", got)
	}
	b.qs.Close()
	b = newBench(t, Options{StateDir: dir})
	q := b.qs.Queue2()
	q.Write(to(0, 1, "alert"))
	q.Write(to(0, 2, "alert"))
	b.clk.Add(2 * time.Minute)
	if got := fmt.Sprint(followWire(b, vms, live, 0x01)); got != "[1 2]" {
		t.Fatalf("live follower: %s", got)
	}
	if got := fmt.Sprint(followWire(b, vms, paused, 0x03)); got != "[1 2]" {
		t.Fatalf("durable follower after a restart: %s, want [1 2]", got)
	}
}
