package lab_test

import (
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

// HvagentLog is what hvagent has logged so far on host's serial console.
func HvagentLog(host string) string {
	path, err := ctl.ConsolePath(labDir, host)
	Expect(err).NotTo(HaveOccurred())
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// SELEntries is the number of entries in host's BMC event log.
func SELEntries(host string) int {
	m := regexp.MustCompile(`Entries\s*:\s*(\d+)`).FindStringSubmatch(Ipmitool(host, "sel", "info"))
	Expect(m).NotTo(BeNil(), "ipmitool sel info without an entry count")
	n, err := strconv.Atoi(m[1])
	Expect(err).NotTo(HaveOccurred())
	return n
}

var _ = Describe("Exactly once", Lab, ExactlyOnce, Failover, Serial, Ordered, func() {
	const host = "h1"
	opKey := func() string { return filepath.Join(labDir, "operator.key") }

	AfterAll(func() { RunLab("plug", host, "vmmi") })

	It("answers a protected start whose VMM-I is cut while libvirt runs it with its true outcome: one run, no alert", func(ctx SpecContext) {
		// db1 shut off, the VMM-I answering, so auto mode sends over it first.
		out, code := Vmsctl("vm", "destroy", host, "db1", "--via", "oob", "--otp-secret-file", opKey())
		Expect(code).To(Equal(0), out)
		Eventually(func() (string, error) {
			res, err := Do(client.ViaAuto, host, vmsg.CmdPing, "")
			if err != nil {
				return "", err
			}
			return res.Via, nil
		}).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
		sel := SELEntries(host)
		logStart := len(HvagentLog(host))

		// The operator's protected start, in auto mode, as the tour runs it.
		cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", "vmsctl"), "--inventory", filepath.Join(labDir, "inventory.json"),
			"vm", "start", host, "db1", "--otp-secret-file", opKey(), "-o", "json", "--timeout", "2m")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		Expect(cmd.Start()).To(Succeed())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()

		// The answered request reached hvagent over the VMM-I and libvirt
		// is starting db1: pull the management network cable now.
		Eventually(func() string { return HvagentLog(host)[logStart:] }).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).
			Should(ContainSubstring(`msg="challenge answered by the registered user" via=vmm-i`))
		RunLab("unplug", host, "vmmi")

		var err error
		Eventually(done).WithTimeout(2 * time.Minute).Should(Receive(&err))
		Expect(err).NotTo(HaveOccurred(), "vmsctl: %s\n%s", stdout.String(), stderr.String())
		var res struct {
			OK        bool   `json:"ok"`
			RequestID string `json:"request_id"`
			VMs       []vmsg.VMState
		}
		Expect(json.Unmarshal([]byte(stdout.String()), &res)).To(Succeed(), stdout.String())
		Expect(res.OK).To(BeTrue())
		Expect(res.VMs).NotTo(BeEmpty())
		Expect(res.VMs[0].State).To(Equal("running"))

		id, err := strconv.ParseUint(res.RequestID, 16, 64)
		Expect(err).NotTo(HaveOccurred())
		idAttr := fmt.Sprintf("request_id=%d ", id)
		var mine []string
		for _, l := range strings.Split(HvagentLog(host)[logStart:], "\n") {
			if strings.Contains(l+" ", idAttr) {
				mine = append(mine, l)
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
		Expect(count(`msg="request done"`)+count("request failed on the hypervisor")).To(Equal(1), "executions of the request:\n%s", strings.Join(mine, "\n"))
		Expect(count("alerting registered users")).To(BeZero(), strings.Join(mine, "\n"))
		Expect(count("request refused")).To(BeZero(), strings.Join(mine, "\n"))
		Expect(VM(client.ViaOOB, host, "db1")()).To(BeInState("running"))
		Expect(SELEntries(host)).To(Equal(sel), "no SEL entry for a request that ran")

		RunLab("plug", host, "vmmi")
		out, code = Vmsctl("vm", "destroy", host, "db1", "--otp-secret-file", opKey())
		Expect(code).To(Equal(0), out)
	})
})
