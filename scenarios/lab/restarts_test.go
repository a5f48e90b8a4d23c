package lab_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// AgentBack waits until host's agent, restarted by the guest's init after
// it exited, answers on both channels again.
func AgentBack(ctx SpecContext, host string, since func() (string, error)) {
	GinkgoHelper()
	Eventually(func() (string, error) { return since() }).WithTimeout(3*time.Minute).WithPolling(100*time.Millisecond).
		Should(MatchRegexp(`ooblab: hvagent exited rc=\d+[^\n]*\n(?s:.*)ooblab: hvagent started`), "the guest's init did not restart hvagent")
	Eventually(Answers(ctx, client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
	Eventually(Answers(ctx, client.ViaVMMI, host)).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
}

var _ = Describe("Exactly once across restarts", Lab, ExactlyOnce, Serial, Ordered, func() {
	const host = "h1"

	AfterAll(func(ctx SpecContext) { MustLab(ctx, "plug", host, "vmmi") })
	// Whatever a spec left behind, the next one (in any order) finds the
	// agent back and both channels answering.
	AfterEach(func(ctx SpecContext) {
		Eventually(Answers(ctx, client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
		Eventually(Answers(ctx, client.ViaVMMI, host)).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	}, NodeTimeout(5*time.Minute))

	// hvagent is signalled while libvirt starts app1 for a `vmsctl vm
	// start` (auto mode, over the VMM-I); vmsctl asks again with the same
	// request id over the OOB-I and must get the truth from the agent that
	// comes back.
	for _, sig := range []string{"TERM", "KILL"} {
		It("tells the truth about a start whose agent got SIG"+sig+" while it ran", func(ctx SpecContext) {
			_, err := Do(ctx, client.ViaOOB, host, vmsg.CmdDestroy, "app1")
			Expect(err).NotTo(HaveOccurred())
			Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdPing, "")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
			since, err := ConsoleSince(host)
			Expect(err).NotTo(HaveOccurred())

			start := Background(ctx, "vm", "start", host, "app1", "--timeout", "4m")
			Eventually(Begun(since, "start", "app1", "vmm-i")).WithTimeout(time.Minute).WithPolling(10 * time.Millisecond).Should(BeTrue())
			out := MustLab(ctx, "signal", host, "hvagent", sig)
			GinkgoWriter.Print(out)

			var r Run
			Eventually(start).WithTimeout(4*time.Minute).Should(Receive(&r), "vmsctl still running")
			GinkgoWriter.Printf("vmsctl exit %d\nstdout: %s\nstderr: %s\n", r.Code, r.Stdout, r.Stderr)
			AgentBack(ctx, host, since)
			log, err := since()
			Expect(err).NotTo(HaveOccurred())
			state, err := VM(ctx, client.ViaOOB, host, "app1")()
			Expect(err).NotTo(HaveOccurred())

			// Never "failed" nor "refused": neither is what happened.
			Expect(r.Stdout + r.Stderr).NotTo(ContainSubstring("failed on the host"))
			Expect(r.Stdout + r.Stderr).NotTo(ContainSubstring("refused"))
			switch sig {
			case "TERM":
				// The stopping agent finished the start and journalled it;
				// the retry got that outcome.
				Expect(r.Code).To(Equal(0), "vmsctl: %s\n%s", r.Stdout, r.Stderr)
				Expect(r.Stdout).To(MatchRegexp(`start app1 on h1: ok .*run once, via vmm-i`))
				Expect(state).To(BeInState("running"))
				Expect(log).To(ContainSubstring("ooblab: hvagent exited rc=0"))
			case "KILL":
				// Killed mid-action: the outcome is unknown to the agent;
				// it says so, with the VM's state, and never runs it again.
				Expect(r.Code).To(Equal(7), "vmsctl exit 7 (interrupted): %s\n%s", r.Stdout, r.Stderr)
				m := regexp.MustCompile(`h1: request [0-9a-f]{16}: start was interrupted by an agent restart; app1 is now ([a-z ()]+)\n`).FindStringSubmatch(r.Stderr)
				Expect(m).NotTo(BeNil(), r.Stderr)
				Expect(log).To(ContainSubstring("ooblab: hvagent exited rc=137"))
				Expect(log).To(ContainSubstring("not run again, answered interrupted"))
				// libvirtd finished the start on its own, and the agent that
				// came back takes that for the killed agent's doing, not a
				// change behind its back.
				Eventually(VM(ctx, client.ViaOOB, host, "app1")).WithTimeout(time.Minute).Should(BeInState("running"))
				Consistently(since).WithTimeout(3 * time.Second).ShouldNot(ContainSubstring("alerting registered users"))
				log, err = since()
				Expect(err).NotTo(HaveOccurred())
				Expect(log).To(ContainSubstring("may still be under way"))
			}
			Expect(strings.Count(log, `msg="action begun" `)).To(Equal(1), "the start ran once:\n%s", log)
			Expect(log).NotTo(ContainSubstring("request failed on the hypervisor"))
			// No alert for a while, not just now: the console lags.
			Consistently(since).WithTimeout(3 * time.Second).WithPolling(200 * time.Millisecond).ShouldNot(ContainSubstring("alerting registered users"))

			_, err = Do(ctx, client.ViaOOB, host, vmsg.CmdDestroy, "app1")
			Expect(err).NotTo(HaveOccurred())
		}, SpecTimeout(10*time.Minute))
	}

	It("answers every OOB-I command while bmcsim is killed and restarted mid-write, with no false replay alert", func(ctx SpecContext) {
		Eventually(Answers(ctx, client.ViaOOB, host)).WithTimeout(time.Minute).Should(Succeed())
		since, err := ConsoleSince(host)
		Expect(err).NotTo(HaveOccurred())

		// A stream of OOB-I commands, one after the other, from a fresh
		// client: the BMC dies in the middle of one of them. Each request
		// carries 2 KB of metadata, ~10 records, so a good share of each
		// exchange is writes to queue 1.
		c, err := client.New(inv, client.Options{Via: client.ViaOOB, Metadata: map[string]string{"note": strings.Repeat("x", 2000)}})
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		const n = 24
		kills := map[int]bool{3: true, 12: true} // after that many answers
		var (
			mu       sync.Mutex
			answered int
			errs     []string
		)
		at := make(chan int, len(kills))
		done := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(done)
			for i := range n {
				cmd, vm := vmsg.CmdStatus, "web1"
				if i%3 == 2 {
					cmd, vm = vmsg.CmdList, ""
				}
				cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				_, err := c.Do(cctx, host, cmd, vm)
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Sprintf("#%d %s: %v", i, cmd, err))
				} else {
					answered++
				}
				if k := answered + len(errs); kills[k] {
					at <- k
				}
				mu.Unlock()
			}
		}()
		// The BMC dies while the next command is on its way, twice: first
		// wherever the SIGKILL lands (a write to queue 1, the agent's write
		// to queue 2, or a read), then surely inside a VMS's write: its
		// fault hook kills it after the queue 1 record is journalled and
		// before the VMS has its answer.
		for i := range len(kills) {
			var k int
			Eventually(at).WithTimeout(3 * time.Minute).Should(Receive(&k))
			args := []string{"restart", "bmcsim", "--signal", "KILL"}
			if i == 1 {
				args = append(args, "--in", "queue1-write")
			}
			out := MustLab(ctx, args...)
			GinkgoWriter.Printf("after %d commands (%v): %s", k, args[3:], out)
		}
		Eventually(done).WithTimeout(8 * time.Minute).Should(BeClosed())

		mu.Lock()
		defer mu.Unlock()
		Expect(errs).To(BeEmpty())
		Expect(answered).To(Equal(n))
		st := c.Channel().(*client.OOB).Stats()
		GinkgoWriter.Printf("oob-i client: %+v\n", st)
		Expect(st.Reconnects).To(BeNumerically(">=", 2), "the kills did not cut the client's session: %+v", st)
		log, err := since()
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("hvagent held %d queue 2 writes while the BMC was away\n", strings.Count(log, "the BMC is busy or not connected"))
		Expect(log).NotTo(ContainSubstring("replayed envelope"))
		Expect(log).NotTo(ContainSubstring("answer dropped"))
		Consistently(since).WithTimeout(3 * time.Second).WithPolling(200 * time.Millisecond).ShouldNot(ContainSubstring("alerting registered users"))
		al, code := Vmsctl(ctx, "alerts", host, "--via", "oob", "-o", "json")
		Expect(code).To(Equal(0), al)
		Expect(al).NotTo(ContainSubstring("replayed"))
		Eventually(Answers(ctx, client.ViaVMMI, host)).WithTimeout(time.Minute).Should(Succeed())
	}, SpecTimeout(10*time.Minute))
})
