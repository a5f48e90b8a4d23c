package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/lab/kcsguest"
)

// The KCS path proven with a minimal guest (lab/kcsguest): QEMU's
// isa-ipmi-kcs + ipmi-bmc-extern, the Debian kernel's ipmi_si, /dev/ipmi0,
// and an in-process bmcsim built by the program's own constructor
// (bmcsimtest). No lab needed.
var _ = Describe("The KCS path in a real guest", KCSGuest, Serial, func() {
	It("echoes records written on the LAN side through /dev/ipmi0, woken by the BMC's pushed notification", func(ctx SpecContext) {
		env, err := kcsguest.FindEnv()
		need(err)
		dir := GinkgoT().TempDir()
		initrd, err := kcsguest.BuildInitrd(ctx, dir, env, "-mode", "echo", "-poll", "3s")
		Expect(err).NotTo(HaveOccurred())

		bctx, bcancel := context.WithCancel(ctx)
		b, err := kcsguest.StartBMC(bctx, slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: slog.LevelInfo})))
		Expect(err).NotTo(HaveOccurred()) // before QEMU: ipmi_si gives up on a silent BMC
		DeferCleanup(func() { bcancel(); _ = b.Wait() })

		g, err := kcsguest.Boot(ctx, env, dir, initrd, b.Port)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			g.Stop()
			if CurrentSpecReport().Failed() {
				con, _ := os.ReadFile(filepath.Join(dir, "console.log"))
				_ = os.MkdirAll(filepath.Join(root, "artifacts", "kcs-guest"), 0o755)
				_ = os.WriteFile(filepath.Join(root, "artifacts", "kcs-guest", "console.log"), con, 0o644)
				GinkgoWriter.Printf("QEMU: %s\nconsole:\n%s\n", g.QEMUOutput(), con)
			}
		})
		expect := func(prefix string, within time.Duration) string {
			GinkgoHelper()
			c, cancel := context.WithTimeout(ctx, within)
			defer cancel()
			l, err := g.Expect(c, prefix)
			Expect(err).NotTo(HaveOccurred())
			return l
		}
		devid := kcsguest.ParseFields(expect("KCSGUEST-DEVID", 2*time.Minute))
		Expect(devid).To(HaveKeyWithValue("mfr", "49622"), "guest's Get Device ID")
		Expect(devid).To(HaveKeyWithValue("ipmi", "0x02"), "guest's Get Device ID")
		expect("KCSGUEST-READY", 30*time.Second)
		GinkgoWriter.Printf("guest ready %v after QEMU start; IRQ enabled by the driver: %v\n", time.Since(g.Started).Round(time.Millisecond), b.KCS.IRQEnabled())
		for len(b.Events) > 0 { // the start-up's events (none expected: the guest waits)
			<-b.Events
		}

		// waitEvent waits for the guest's first cmd that carries the record key.
		waitEvent := func(cmd oem.Cmd, key record.Key, within time.Duration) kcsguest.Event {
			GinkgoHelper()
			deadline := time.NewTimer(within)
			defer deadline.Stop()
			for {
				select {
				case ev := <-b.Events:
					if ev.Cmd == cmd && !ev.Empty && ev.Rec.Key() == key {
						return ev
					}
				case <-g.Exited():
					Fail(fmt.Sprintf("guest exited while waiting for %v of %v", cmd, key))
				case <-deadline.C:
					Fail(fmt.Sprintf("no %v of record %v within %v", cmd, key, within))
				}
			}
		}
		waitEmpty := func(within time.Duration) {
			GinkgoHelper()
			deadline := time.NewTimer(within)
			defer deadline.Stop()
			for {
				select {
				case ev := <-b.Events:
					if ev.Cmd == oem.CmdReadQueue1 && ev.Empty {
						return
					}
				case <-deadline.C:
					Fail(fmt.Sprintf("the guest did not come back to an empty Queue 1 within %v", within))
				}
			}
		}

		// 1. Single records, one at a time. The guest says what woke it:
		//    "notify" (the BMC's pushed Queue1Notify), not its 3 s poll.
		//    The deadlines are generous: a loaded TCG guest is slow, and the
		//    wake reason, not the latency, is the assertion.
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
			Expect(b.WriteQueue1(ctx, rec)).To(Succeed())
			ev := waitEvent(oem.CmdReadQueue1, rec.Key(), 20*time.Second)
			lat = append(lat, ev.At.Sub(t0))
			waitEvent(oem.CmdWriteQueue2, rec.Key(), 20*time.Second)
			f := kcsguest.ParseFields(expect("KCSGUEST-ECHO", 20*time.Second))
			Expect(f).To(HaveKeyWithValue("id", fmt.Sprint(rec.MsgID)))
			Expect(f).To(HaveKeyWithValue("wake", "notify"), "record %d was read because the BMC pushed a notification", rec.MsgID)
			sent = append(sent, rec)
			// The guest prints ECHO before its acknowledging read; wait for
			// that read to find Queue 1 empty, so the next write finds the
			// guest asleep and the next latency is a real wake-up.
			waitEmpty(20 * time.Second)
		}

		// 2. A burst: a multi-fragment message written at once.
		msg := make([]byte, 20*record.MaxPayload+17)
		for j := range msg {
			msg[j] = byte(rng.Uint32())
		}
		frags, err := record.Fragment(7777, msg)
		Expect(err).NotTo(HaveOccurred())
		t0 := time.Now()
		for _, r := range frags {
			Expect(b.WriteQueue1(ctx, r)).To(Succeed())
		}
		sent = append(sent, frags...)
		last := waitEvent(oem.CmdWriteQueue2, frags[len(frags)-1].Key(), time.Minute)
		burst := last.At.Sub(t0)

		// 3. Stop.
		stop := record.Record{MsgID: kcsguest.StopID, Count: 1, Payload: []byte("stop")}
		Expect(b.WriteQueue1(ctx, stop)).To(Succeed())
		sent = append(sent, stop)
		expect("KCSGUEST-DONE", time.Minute)
		expect("KCSGUEST-EXIT 0", 30*time.Second)

		// Queue 2 holds every record, in order, byte for byte.
		var ack *oem.Ack
		for i, want := range sent {
			r, err := b.ReadQueue2(ctx, ack)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.Empty).To(BeFalse(), "Queue 2 empty after %d of %d records", i, len(sent))
			wb, _ := want.MarshalBinary()
			gb, _ := r.Record.MarshalBinary()
			Expect(bytes.Equal(wb, gb)).To(BeTrue(), "record %d: got %v, want %v", i, r.Record, want)
			ack = &oem.Ack{MsgID: r.Record.MsgID, Index: r.Record.Index}
		}
		r, err := b.ReadQueue2(ctx, ack)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Empty).To(BeTrue(), "Queue 2 not empty after the echo")
		s1, _ := b.Queues.Status()
		Expect(s1.Depth).To(BeZero(), "Queue 1 after the guest acknowledged everything")

		slices.Sort(lat)
		AddReportEntry("LAN write → guest read (push, ATTN, Get Message, Notify, OEM read; TCG)",
			fmt.Sprintf("min %v median %v max %v (n=%d)", lat[0].Round(time.Microsecond), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), len(lat)))
		AddReportEntry("burst", fmt.Sprintf("%d fragments (%d bytes) echoed in %v (%.0f bytes/s through read+write); notifications pushed: %d",
			len(frags), len(msg), burst.Round(time.Millisecond), float64(len(msg))/burst.Seconds(), b.Pushes()))
	}, SpecTimeout(6*time.Minute))
})
