package queue

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// alertRec is a one-record sealed Alert message id for the alert log.
func alertRec(t *testing.T, id uint64) record.Record {
	t.Helper()
	key, err := seal.Enroll("hv1")
	if err != nil {
		t.Fatal(err)
	}
	env, err := seal.NewSealer(key).Seal(vmsg.KindAlert, id, []byte("alert"), time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := record.Fragment(id, env)
	if err != nil || len(recs) != 1 {
		t.Fatalf("%d records: %v", len(recs), err)
	}
	return recs[0]
}

// durable are the flags of a durable follower's read (vmsctl alerts
// --follower-id).
const durable = oem.ReadAlertLog | oem.ReadDurable

// readLog reads queue 2 as follower id (not durable) until empty,
// acknowledging each record, and returns the message ids read, a marker as
// "dropped:N".
func readLog(t *testing.T, q *Queue, id uint32) []string {
	t.Helper()
	return readLogAs(t, q, id, oem.ReadAlertLog)
}

// readDurable is readLog as a durable follower.
func readDurable(t *testing.T, q *Queue, id uint32) []string {
	t.Helper()
	return readLogAs(t, q, id, durable)
}

func readLogAs(t *testing.T, q *Queue, id uint32, flags oem.ReadFlags) []string {
	t.Helper()
	var got []string
	var ack *oem.Ack
	for range 1000 {
		r, ok, err := q.ReadAs("", id, flags, ack)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return got
		}
		if n, ok, err := record.DroppedMarker(r); ok {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("dropped:%d", n))
		} else {
			got = append(got, fmt.Sprint(r.MsgID))
		}
		ack = ackOf(r)
	}
	t.Fatal("follower never saw the end of the log")
	return nil
}

// A full alert log (nobody following) never refuses an alert: the oldest
// are dropped, and one marker where they were counts them for the
// followers that come. Answers are never pushed out by alerts.
func TestAlertLogDropsOldestWithMarker(t *testing.T) {
	b := newBench(t, Options{Capacity2: 8, AlertLog: 4, AlertTTL: time.Hour})
	q := b.qs.Queue2()
	for i := range 10 {
		if err := q.Write(alertRec(t, uint64(i+1))); err != nil {
			t.Fatalf("alert %d into a full alert log: %v", i+1, err)
		}
	}
	if n := counter(t, q.m.evicted.WithLabelValues("alert_dropped")); n != 7 {
		t.Fatalf("alert_dropped %v, want 7", n)
	}
	if got := fmt.Sprint(readLog(t, q, 1)); got != "[dropped:7 8 9 10]" {
		t.Fatalf("alert log %s", got)
	}
	// Answers fill the rest; alerts still go in, answers stay.
	for i := range 4 {
		if err := q.Write(to(9, uint64(100+i), "answer")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if err := q.Write(alertRec(t, uint64(20+i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(readAll(t, q, 9, false)); got != "[100 101 102 103]" {
		t.Fatalf("answers %s", got)
	}
	if got := fmt.Sprint(readLog(t, q, 1)); got != "[20 21 22]" {
		t.Fatalf("follower after reading everything: %s", got)
	}
	// Answers to version 1 requests in the log are never dropped: a write
	// beyond the cap they hold is refused until their reader drains them.
	for i := range 4 {
		if err := q.Write(to(0, uint64(40+i), "v1 answer")); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Write(to(0, 44, "v1 answer")); !errors.Is(err, ErrFull) {
		t.Fatalf("a v1 answer beyond the cap: %v", err)
	}
	if got := fmt.Sprint(readLog(t, q, 1)); got != "[40 41 42 43]" {
		t.Fatalf("v1 answers %s", got)
	}
	// Alerts that outlive AlertTTL unread are dropped and counted too.
	q.Write(alertRec(t, 30))
	q.Write(alertRec(t, 31))
	b.clk.Add(2 * time.Hour)
	q.ReadFor(9, false, nil)
	if n := counter(t, q.m.evicted.WithLabelValues("alert_expired")); n != 2 {
		t.Fatalf("alert_expired %v", n)
	}
	if got := fmt.Sprint(readLog(t, q, 2)); got != "[dropped:2]" {
		t.Fatalf("a new follower after the expiry: %s", got)
	}
}

// A durable follower that pauses for two minutes (longer than the reader
// TTL, one minute) keeps its cursor: while another follower reads and
// acknowledges on, nothing it has not read is trimmed, and when it comes
// back it gets exactly what it had not read — also across a BMC restart.
func TestFollowerSurvivesPause(t *testing.T) {
	dir := t.TempDir()
	b := newBench(t, Options{StateDir: dir})
	q := b.qs.Queue2()
	const live, paused = 0xA, 0xB
	q.Write(to(0, 1, "alert"))
	if got := fmt.Sprint(readDurable(t, q, paused)); got != "[1]" {
		t.Fatalf("paused follower before its pause: %s", got)
	}
	next := uint64(2)
	for range 12 { // two minutes, ten seconds apart
		b.clk.Add(10 * time.Second)
		q.Write(to(0, next, "alert"))
		next++
		readDurable(t, q, live)
	}
	if got := fmt.Sprint(readDurable(t, q, paused)); got != "[2 3 4 5 6 7 8 9 10 11 12 13]" {
		t.Fatalf("paused follower after 2 min: %s", got)
	}
	// Pause again, across a restart.
	for range 3 {
		b.clk.Add(40 * time.Second)
		q.Write(to(0, next, "alert"))
		next++
		readDurable(t, q, live)
	}
	if err := b.qs.Close(); err != nil {
		t.Fatal(err)
	}
	qs, err := Open(Options{StateDir: dir, Now: b.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qs.Close() })
	b.clk.Add(2 * time.Minute)
	q = qs.Queue2()
	q.ReadAs("", live, durable, nil)
	if got := fmt.Sprint(readDurable(t, q, paused)); got != "[14 15 16]" {
		t.Fatalf("paused follower after a restart: %s", got)
	}
	// Retention forgets a follower gone for FollowerTTL, and counts it.
	b.clk.Add(DefaultFollowerTTL - time.Minute)
	q.ReadAs("", live, durable, nil)
	b.clk.Add(2 * time.Minute)
	q.ReadAs("", live, durable, nil)
	if n := counter(t, q.m.evicted.WithLabelValues("follower_gone")); n != 1 {
		t.Fatalf("follower_gone %v", n)
	}
}

// Only the BMC puts markers: the host cannot write one into Queue 2 (it
// would tell followers alerts were dropped that were not).
func TestHostCannotWriteMarker(t *testing.T) {
	b := newBench(t, Options{})
	if cc := b.write(sys(), oem.CmdWriteQueue2, record.NewDroppedMarker(5, 1)); cc != oem.CCInvalidDataField {
		t.Fatalf("marker written by the host: %v", cc)
	}
	if n := b.qs.Queue2().Len(); n != 0 {
		t.Fatalf("queue 2 holds %d records", n)
	}
}

// The marker sits where the dropped alerts were, before alerts written
// earlier than it; a restart must keep that order. A follower that read
// the marker but not the alert after it resumes at that alert after a BMC
// restart (the journal put the marker after it, so the follower's cursor,
// at the marker, passed the alert: lost for it).
func TestMarkerOrderSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	o := Options{StateDir: dir, AlertLog: 3, AlertTTL: time.Hour}
	b := newBench(t, o)
	q := b.qs.Queue2()
	const f, slow = 0xF, 0x5
	for _, id := range []uint32{f, slow} { // durable followers from the start; slow keeps the marker in the log
		if _, ok, err := q.ReadAs("", id, durable, nil); err != nil || ok {
			t.Fatalf("empty log: %v %v", ok, err)
		}
	}
	for i := range 4 {
		if err := q.Write(alertRec(t, uint64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	r, ok, err := q.ReadAs("", f, durable, nil)
	if n, isMarker, _ := record.DroppedMarker(r); err != nil || !ok || !isMarker || n != 2 {
		t.Fatalf("follower's first read: %v %v %v, want the marker of 2", r, ok, err)
	}
	if _, _, err := q.ReadAs("", f, durable, ackOf(r)); err != nil { // acknowledged; alert 3 not read yet
		t.Fatal(err)
	}
	b.qs.Close()
	b = newBench(t, o)
	if got := fmt.Sprint(readDurable(t, b.qs.Queue2(), f)); got != "[3 4]" {
		t.Fatalf("follower after the restart: %s, want [3 4]", got)
	}
}

// BenchmarkFullAlertLogWrite is one alert written to a full alert log with
// a journal: the oldest alert dropped, the marker put and the journal
// rewritten in the queue's order (TestMarkerOrderSurvivesRestart).
func BenchmarkFullAlertLogWrite(b *testing.B) {
	bb := newBench(b, Options{StateDir: b.TempDir(), AlertTTL: time.Hour})
	q := bb.qs.Queue2()
	key, err := seal.Enroll("hv1")
	if err != nil {
		b.Fatal(err)
	}
	s := seal.NewSealer(key)
	recs := make([]record.Record, 0, 64+b.N)
	for i := range 64 + b.N {
		env, err := s.Seal(vmsg.KindAlert, uint64(i+1), []byte("alert"), time.Unix(1_700_000_000, 0))
		if err != nil {
			b.Fatal(err)
		}
		r, err := record.Fragment(uint64(i+1), env)
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, r[0])
	}
	for _, r := range recs[:64] { // the log's cap (a quarter of 256)
		if err := q.Write(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, r := range recs[64:] {
		if err := q.Write(r); err != nil {
			b.Fatal(err)
		}
	}
}
