package lab_test

import (
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/vmsctl/client"
)

// What vmsctl says is what happened (issue 21): a reboot delivered to the
// BMC's queue 1 while the agent is paused past --timeout is "outcome
// unknown" (exit 7) with its request id, never "unreachable"; once the
// agent goes on, `vmsctl result` gives the one outcome, and the VM
// rebooted once — the operator had no reason to reboot it again.
var _ = Describe("Truth at the edges", Lab, Truth, Serial, Ordered, func() {
	const host = "h1"

	AfterAll(func(ctx SpecContext) {
		_, _ = RunLab(ctx, "signal", host, "hvagent", "CONT")
	})

	It("reports a delivered reboot whose agent is paused past --timeout as outcome unknown, with its request id, and runs it once", func(ctx SpecContext) {
		Eventually(VM(ctx, client.ViaOOB, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))
		since, err := ConsoleSince(host)
		Expect(err).NotTo(HaveOccurred())

		MustLab(ctx, "signal", host, "hvagent", "STOP")
		t0 := time.Now()
		out, code := Vmsctl(ctx, "vm", "reboot", host, "web1", "--via", "oob", "--timeout", "5s")
		GinkgoWriter.Printf("vmsctl after %v, exit %d:\n%s\n", time.Since(t0).Round(time.Millisecond), code, out)
		Expect(code).To(Equal(7), "delivered to queue 1, no answer: outcome unknown, not unreachable:\n%s", out)
		m := regexp.MustCompile(`request ([0-9a-f]{16})`).FindStringSubmatch(out)
		Expect(m).NotTo(BeNil(), "the error line names the request id:\n%s", out)
		id := m[1]
		Expect(out).To(ContainSubstring("vmsctl result " + host + " " + id))
		MustLab(ctx, "signal", host, "hvagent", "CONT")

		out, code = Vmsctl(ctx, "result", host, id, "--wait", "--timeout", "90s")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("reboot web1"))

		// hvagent's own account: one run of that request id, one reboot.
		Eventually(func(g Gomega) {
			log, err := since()
			g.Expect(err).NotTo(HaveOccurred())
			lines := AgentLines(log, id)
			g.Expect(Executions(lines)).To(Equal(1), strings.Join(lines, "\n"))
			g.Expect(CountLines(lines, `msg="action begun"`)).To(Equal(1), strings.Join(lines, "\n"))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		// Asked again, the answer is the same and nothing runs again.
		out, code = Vmsctl(ctx, "result", host, id)
		Expect(code).To(Equal(0), out)
		Consistently(func(g Gomega) {
			log, err := since()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(CountLines(AgentLines(log, id), `msg="action begun"`)).To(Equal(1))
		}).WithContext(ctx).WithTimeout(3 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
		Eventually(VM(ctx, client.ViaOOB, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))
	}, SpecTimeout(5*time.Minute))
})
