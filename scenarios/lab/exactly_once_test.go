package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/lab/ctl"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// HvagentLog is what host's serial console (hvagent's log among it) holds
// so far.
func HvagentLog(host string) (string, error) {
	path, err := ctl.ConsolePath(labDir, host)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	return string(b), err
}

// SELEntries is the number of entries in host's BMC event log.
func SELEntries(ctx context.Context, host string) int {
	GinkgoHelper()
	m := regexp.MustCompile(`Entries\s*:\s*(\d+)`).FindStringSubmatch(MustIpmitool(ctx, host, "sel", "info"))
	Expect(m).NotTo(BeNil(), "ipmitool sel info without an entry count")
	n, err := strconv.Atoi(m[1])
	Expect(err).NotTo(HaveOccurred())
	return n
}

var _ = Describe("Exactly once", Lab, ExactlyOnce, Failover, Serial, Ordered, func() {
	const host = "h1"
	opKey := func() string { return filepath.Join(labDir, "operator.key") }

	AfterAll(func(ctx SpecContext) { MustLab(ctx, "plug", host, "vmmi") })

	It("answers a protected start whose VMM-I is cut while libvirt runs it with its true outcome: one run, no alert", func(ctx SpecContext) {
		// db1 shut off, the VMM-I answering, so auto mode sends over it first.
		out, code := Vmsctl(ctx, "vm", "destroy", host, "db1", "--via", "oob", "--otp-secret-file", opKey())
		Expect(code).To(Equal(0), out)
		Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdPing, "")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
		sel := SELEntries(ctx, host)
		before, err := HvagentLog(host)
		Expect(err).NotTo(HaveOccurred())
		logStart := len(before)
		since := func() (string, error) {
			s, err := HvagentLog(host)
			if err != nil || len(s) < logStart {
				return "", fmt.Errorf("console log shrank or unreadable: %v", err)
			}
			return s[logStart:], nil
		}

		// The operator's protected start, in auto mode, as the tour runs it.
		cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", "vmsctl"), "--inventory", filepath.Join(labDir, "inventory.json"),
			"vm", "start", host, "db1", "--otp-secret-file", opKey(), "-o", "json", "--timeout", "2m")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		Expect(cmd.Start()).To(Succeed())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()

		// The answered request reached hvagent over the VMM-I and libvirt is
		// starting db1: pull the management network cable now.
		Eventually(since).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).
			Should(ContainSubstring(`msg="challenge answered by the registered user" via=vmm-i`))
		MustLab(ctx, "unplug", host, "vmmi")

		Eventually(done).WithTimeout(2*time.Minute).Should(Receive(&err), "vmsctl still running")
		Expect(err).NotTo(HaveOccurred(), "vmsctl: %s\n%s", stdout.String(), stderr.String())
		var res struct {
			OK        bool           `json:"ok"`
			Via       string         `json:"via"`
			RequestID string         `json:"request_id"`
			VMs       []vmsg.VMState `json:"vms"`
		}
		Expect(json.Unmarshal([]byte(stdout.String()), &res)).To(Succeed(), stdout.String())
		Expect(res.OK).To(BeTrue())
		Expect(res.VMs).NotTo(BeEmpty())
		Expect(res.VMs[0].State).To(Equal("running"))

		// hvagent's own account of this request id: one run, no refusal.
		id, err := strconv.ParseUint(res.RequestID, 16, 64)
		Expect(err).NotTo(HaveOccurred())
		log, err := since()
		Expect(err).NotTo(HaveOccurred())
		idAttr := fmt.Sprintf("request_id=%d ", id)
		var mine []string
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l+" ", idAttr) {
				mine = append(mine, strings.TrimSpace(l))
			}
		}
		count := func(s string) int {
			n := 0
			for _, l := range mine {
				if strings.Contains(l, s) {
					n++
				}
			}
			return n
		}
		all := strings.Join(mine, "\n")
		GinkgoWriter.Printf("vmsctl: %s\nhvagent on request %s:\n%s\n", strings.TrimSpace(stdout.String()), res.RequestID, all)
		Expect(count(`msg="request done"`)+count("request failed on the hypervisor")).To(Equal(1), "executions:\n%s", all)
		Expect(count("request refused")).To(BeZero(), all)
		Expect(strings.Count(log, "alerting registered users")).To(BeZero(), log)
		Expect(VM(ctx, client.ViaOOB, host, "db1")()).To(BeInState("running"))
		Expect(SELEntries(ctx, host)).To(Equal(sel), "no SEL entry for a request that ran")

		MustLab(ctx, "plug", host, "vmmi")
		out, code = Vmsctl(ctx, "vm", "destroy", host, "db1", "--via", "oob", "--otp-secret-file", opKey())
		Expect(code).To(Equal(0), out)
	}, SpecTimeout(6*time.Minute))
})
