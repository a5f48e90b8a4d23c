package kcsguest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/testutil"
)

// need skips (or, under CI, fails) when the host cannot boot a guest.
func need(t *testing.T) Env {
	t.Helper()
	testutil.Integration(t, "qemu-system-x86_64")
	env, err := FindEnv()
	testutil.Need(t, err)
	return env
}

// TestEchoThroughKCS boots a TCG guest whose program reads Queue 1 through
// /dev/ipmi0 (devipmi) and echoes each record into Queue 2. It checks Get
// Device ID against bmcsim's identity, that records written from the LAN
// side come back byte for byte, and that the guest reads them because the
// BMC pushed a notification (Notify), not by polling; it logs the time from
// LAN write to the guest's read.
func TestEchoThroughKCS(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest under TCG (~15 s)")
	}
	env := need(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 85*time.Second)
	defer cancel()

	initrd, err := BuildInitrd(ctx, dir, env, "-mode", "echo", "-poll", "3s")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	sw := &syncWriter{w: &logs}
	logsString := func() string { sw.mu.Lock(); defer sw.mu.Unlock(); return logs.String() }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(sw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	bctx, bcancel := context.WithCancel(ctx)
	b, err := StartBMC(bctx, log) // before QEMU: ipmi_si gives up on a silent BMC
	if err != nil {
		t.Fatal(err)
	}
	defer func() { bcancel(); b.Wait() }()

	g, err := Boot(ctx, env, dir, initrd, b.Port)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		g.Stop()
		if t.Failed() {
			con, _ := os.ReadFile(dir + "/console.log")
			t.Logf("QEMU: %s\nconsole:\n%s\nBMC log:\n%s", g.QEMUOutput(), con, logsString())
		}
	}()

	expect := func(prefix string, within time.Duration) string {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		l, err := g.Expect(c, prefix)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	devid := ParseFields(expect("KCSGUEST-DEVID", 40*time.Second))
	if devid["mfr"] != "32473" || devid["ipmi"] != "0x02" {
		t.Fatalf("guest's Get Device ID: %v, want mfr=32473 ipmi=0x02", devid)
	}
	expect("KCSGUEST-READY", 10*time.Second)
	t.Logf("guest ready %v after QEMU start; IRQ enabled by the driver: %v", time.Since(g.Started).Round(time.Millisecond), b.KCS.IRQEnabled())
	// Drain the events of the start-up (none expected: the guest waits).
	for len(b.Events) > 0 {
		<-b.Events
	}

	// waitEvent waits for the guest's first cmd that carries the record key.
	waitEvent := func(cmd oem.Cmd, key record.Key, within time.Duration) (Event, int) {
		t.Helper()
		empties := 0
		deadline := time.NewTimer(within)
		defer deadline.Stop()
		for {
			select {
			case ev := <-b.Events:
				if ev.Cmd == oem.CmdReadQueue1 && ev.Empty {
					empties++
				}
				if ev.Cmd == cmd && !ev.Empty && ev.Rec.Key() == key {
					return ev, empties
				}
			case <-g.Exited():
				t.Fatalf("guest exited while waiting for %v of %v", cmd, key)
			case <-deadline.C:
				t.Fatalf("no %v of record %v within %v", cmd, key, within)
			}
		}
	}

	waitEmpty := func(within time.Duration) {
		t.Helper()
		deadline := time.NewTimer(within)
		defer deadline.Stop()
		for {
			select {
			case ev := <-b.Events:
				if ev.Cmd == oem.CmdReadQueue1 && ev.Empty {
					return
				}
			case <-deadline.C:
				t.Fatalf("the guest did not come back to an empty Queue 1 within %v", within)
			}
		}
	}

	// 1. Single records, one at a time: latency from the LAN write to the
	//    guest's read, woken by the pushed notification.
	rng := rand.New(rand.NewPCG(1, 2))
	var sent []record.Record
	var lat []time.Duration
	for i := range 10 {
		p := make([]byte, 1+rng.IntN(record.MaxPayload))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		rec := record.Record{MsgID: uint64(100 + i), Index: 0, Count: 1, Payload: p}
		t0 := time.Now()
		if err := b.WriteQueue1(ctx, rec); err != nil {
			t.Fatal(err)
		}
		// The poll fallback is 3 s: a read within 2 s was woken by Notify.
		ev, _ := waitEvent(oem.CmdReadQueue1, rec.Key(), 2*time.Second)
		lat = append(lat, ev.At.Sub(t0))
		waitEvent(oem.CmdWriteQueue2, rec.Key(), 2*time.Second)
		line := expect("KCSGUEST-ECHO", 5*time.Second)
		if f := ParseFields(line); f["id"] != fmt.Sprint(rec.MsgID) || f["wake"] != "notify" {
			t.Fatalf("guest: %q, want id=%d woken by notify", line, rec.MsgID)
		}
		sent = append(sent, rec)
		// The guest prints ECHO before its acknowledging read; wait for that
		// read to find Queue 1 empty, so the next write finds the guest
		// asleep and the next latency is a real wake-up.
		waitEmpty(2 * time.Second)
	}

	// 2. A burst: a multi-fragment message written at once.
	msg := make([]byte, 20*record.MaxPayload+17)
	for j := range msg {
		msg[j] = byte(rng.Uint32())
	}
	frags, err := record.Fragment(7777, msg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for _, r := range frags {
		if err := b.WriteQueue1(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	sent = append(sent, frags...)
	last, _ := waitEvent(oem.CmdWriteQueue2, frags[len(frags)-1].Key(), 20*time.Second)
	burst := last.At.Sub(t0)

	// 3. Stop.
	stop := record.Record{MsgID: StopID, Count: 1, Payload: []byte("stop")}
	if err := b.WriteQueue1(ctx, stop); err != nil {
		t.Fatal(err)
	}
	sent = append(sent, stop)
	expect("KCSGUEST-DONE", 20*time.Second)
	expect("KCSGUEST-EXIT 0", 10*time.Second)

	// Queue 2 holds every record, in order, byte for byte.
	var ack *oem.Ack
	for i, want := range sent {
		r, err := b.ReadQueue2(ctx, ack)
		if err != nil {
			t.Fatal(err)
		}
		if r.Empty {
			t.Fatalf("Queue 2 empty after %d of %d records", i, len(sent))
		}
		wb, _ := want.MarshalBinary()
		gb, _ := r.Record.MarshalBinary()
		if !bytes.Equal(wb, gb) {
			t.Fatalf("record %d: got %v, want %v", i, r.Record, want)
		}
		ack = &oem.Ack{MsgID: r.Record.MsgID, Index: r.Record.Index}
	}
	if r, err := b.ReadQueue2(ctx, ack); err != nil || !r.Empty {
		t.Fatalf("Queue 2 not empty after the echo: %+v %v", r, err)
	}
	if s1, _ := b.Queues.Status(); s1.Depth != 0 {
		t.Fatalf("Queue 1 depth %d after the guest acknowledged everything", s1.Depth)
	}

	slices.Sort(lat)
	t.Logf("LAN write → guest read (push, ATTN, Get Message, Notify, OEM read; TCG): min %v median %v max %v (n=%d)",
		lat[0].Round(time.Microsecond), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), len(lat))
	t.Logf("burst of %d fragments (%d bytes) echoed in %v (%.0f bytes/s through read+write); notifications pushed: %d",
		len(frags), len(msg), burst.Round(time.Millisecond), float64(len(msg))/burst.Seconds(), b.Pushes())
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
