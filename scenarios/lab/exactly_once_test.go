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

// ConsoleSince snapshots host's console log and returns a getter of what
// was written to it since (hvagent's log lines among the kernel's).
func ConsoleSince(host string) (func() (string, error), error) {
	before, err := HvagentLog(host)
	if err != nil {
		return nil, err
	}
	start := len(before)
	return func() (string, error) {
		s, err := HvagentLog(host)
		if err != nil || len(s) < start {
			return "", fmt.Errorf("console log shrank or unreadable: %v", err)
		}
		return s[start:], nil
	}, nil
}

// AgentLines are hvagent's log lines about one request id (hex, as vmsctl
// prints it).
func AgentLines(log, requestID string) []string {
	GinkgoHelper()
	id, err := strconv.ParseUint(requestID, 16, 64)
	Expect(err).NotTo(HaveOccurred(), "request id %q", requestID)
	attr := fmt.Sprintf("request_id=%d ", id)
	var mine []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l+" ", attr) {
			mine = append(mine, strings.TrimSpace(l))
		}
	}
	return mine
}

// CountLines is how many of lines contain s.
func CountLines(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// Executions is how many times hvagent ran a request on the hypervisor,
// from its own log: each run ends in exactly one "request done" or
// "request failed on the hypervisor" line.
func Executions(lines []string) int {
	return CountLines(lines, `msg="request done"`) + CountLines(lines, "request failed on the hypervisor")
}

// Begun is a getter of whether hvagent logged "action begun" for command
// on vm (over via, "" for any) in the log since.
func Begun(since func() (string, error), command, vm, via string) func() (bool, error) {
	return func() (bool, error) {
		log, err := since()
		if err != nil {
			return false, err
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, `msg="action begun"`) && strings.Contains(l, "command="+command+" ") &&
				strings.Contains(l+" ", "vm="+vm+" ") && (via == "" || strings.Contains(l, "via="+via+" ")) {
				return true, nil
			}
		}
		return false, nil
	}
}

// Background runs the vmsctl binary with args and returns a channel that
// gets its exit once it ends, with its stdout and stderr.
type Run struct {
	Code           int
	Stdout, Stderr string
}

func Background(ctx context.Context, args ...string) <-chan Run {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", "vmsctl"), append([]string{"--inventory", filepath.Join(labDir, "inventory.json")}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan Run, 1)
	if err := cmd.Start(); err != nil {
		done <- Run{Code: -1, Stderr: err.Error()}
		return done
	}
	go func() {
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
		}
		done <- Run{Code: code, Stdout: stdout.String(), Stderr: stderr.String()}
	}()
	return done
}

// VMResult is `vmsctl vm ... -o json`.
type VMResult struct {
	OK          bool           `json:"ok"`
	Via         string         `json:"via"`
	ExecutedVia string         `json:"executed_via"`
	SentVia     []string       `json:"sent_via"`
	RequestID   string         `json:"request_id"`
	VMs         []vmsg.VMState `json:"vms"`
}

// NoAlertsFor asserts that, for d from now, hvagent logs no alert in the
// console since a point and the BMC's event log keeps sel entries: read
// over a window, not once, because the console lags the answers and the
// watcher holds an unpause alert for 2 s.
func NoAlertsFor(ctx context.Context, host string, since func() (string, error), sel int, d time.Duration) {
	GinkgoHelper()
	Consistently(func(g Gomega) {
		log, err := since()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(log).NotTo(ContainSubstring("alerting registered users"))
		g.Expect(SELEntries(ctx, host)).To(Equal(sel), "no SEL entry for a request that ran")
	}).WithContext(ctx).WithTimeout(d).WithPolling(500 * time.Millisecond).Should(Succeed())
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

	It("answers a protected start whose VMM-I is cut while libvirt runs it with its true outcome over the OOB-I: one run, no alert", func(ctx SpecContext) {
		// The cut must land while libvirt runs the start, so that the
		// answer comes over the OOB-I; if it came too late (the answer came
		// over the VMM-I before the cut) the attempt is run again.
		var res VMResult
		for attempt := 1; ; attempt++ {
			Expect(attempt).To(BeNumerically("<=", 3), "the VMM-I cut never landed while the start ran")
			MustLab(ctx, "plug", host, "vmmi")
			// db1 shut off, the VMM-I answering, so auto mode sends over it first.
			out, code := Vmsctl(ctx, "vm", "destroy", host, "db1", "--via", "oob", "--otp-secret-file", opKey())
			Expect(code).To(Equal(0), out)
			Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdPing, "")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
			sel := SELEntries(ctx, host)
			since, err := ConsoleSince(host)
			Expect(err).NotTo(HaveOccurred())

			// The operator's protected start, in auto mode, as the tour runs it.
			start := Background(ctx, "vm", "start", host, "db1", "--otp-secret-file", opKey(), "-o", "json", "--timeout", "2m")

			// The answered request reached hvagent over the VMM-I and libvirt is
			// starting db1: pull the management network cable now.
			Eventually(since).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).
				Should(ContainSubstring(`msg="challenge answered by the registered user" via=vmm-i`))
			MustLab(ctx, "unplug", host, "vmmi")

			var r Run
			Eventually(start).WithTimeout(2*time.Minute).Should(Receive(&r), "vmsctl still running")
			Expect(r.Code).To(Equal(0), "vmsctl: %s\n%s", r.Stdout, r.Stderr)
			Expect(json.Unmarshal([]byte(r.Stdout), &res)).To(Succeed(), r.Stdout)
			Expect(res.OK).To(BeTrue())
			Expect(res.VMs).NotTo(BeEmpty())
			Expect(res.VMs[0].State).To(Equal("running"))

			// hvagent's own account of this request id: one run, no refusal,
			// and no alert nor SEL entry for a while after (the console lags
			// the answers; the watcher holds some alerts 2 s).
			log, err := since()
			Expect(err).NotTo(HaveOccurred())
			all := AgentLines(log, res.RequestID)
			GinkgoWriter.Printf("attempt %d: vmsctl: %s\nhvagent on request %s:\n%s\n", attempt, strings.TrimSpace(r.Stdout), res.RequestID, strings.Join(all, "\n"))
			Expect(Executions(all)).To(Equal(1), "executions:\n%s", strings.Join(all, "\n"))
			Expect(CountLines(all, "request refused")).To(BeZero())
			NoAlertsFor(ctx, host, since, sel, 5*time.Second)
			Expect(VM(ctx, client.ViaOOB, host, "db1")()).To(BeInState("running"))
			if res.Via == client.ViaOOB {
				break
			}
			GinkgoWriter.Printf("attempt %d: the answer came over the VMM-I before the cut; again\n", attempt)
		}
		// The cut came while libvirt ran it: the answer was carried by the
		// OOB-I, same request id, from the run the VMM-I carried.
		Expect(res.SentVia).To(Equal([]string{client.ViaVMMI, client.ViaOOB}))
		Expect(res.ExecutedVia).To(Equal(client.ViaVMMI))

		MustLab(ctx, "plug", host, "vmmi")
		out, code := Vmsctl(ctx, "vm", "destroy", host, "db1", "--via", "oob", "--otp-secret-file", opKey())
		Expect(code).To(Equal(0), out)
	}, SpecTimeout(10*time.Minute))

	It("answers an unprotected reboot whose VMM-I is cut while the agent runs it: exit 0, executed once, no alert", func(ctx SpecContext) {
		// The reboot must still be running on the host when the cable is
		// pulled. A reboot itself returns at once (libvirt asks the guest),
		// so it is sent while app1's start (seconds under TCG) holds app1:
		// the agent has begun the reboot and waits for the VM, and answers
		// it only after the start. If the cut still came too late (the
		// answer came over the VMM-I), the attempt is run again.
		var res VMResult
		var all []string
		var readLog func() (string, error) // the last attempt's console since its start
		for attempt := 1; ; attempt++ {
			Expect(attempt).To(BeNumerically("<=", 3), "the VMM-I cut never landed while the reboot ran")
			MustLab(ctx, "plug", host, "vmmi")
			_, err := Do(ctx, client.ViaOOB, host, vmsg.CmdDestroy, "app1")
			Expect(err).NotTo(HaveOccurred())
			Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdPing, "")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
			sel := SELEntries(ctx, host)
			since, err := ConsoleSince(host)
			Expect(err).NotTo(HaveOccurred())
			readLog = since

			started := make(chan error, 1)
			go func() {
				defer GinkgoRecover()
				_, err := Do(ctx, client.ViaOOB, host, vmsg.CmdStart, "app1")
				started <- err
			}()
			Eventually(Begun(since, "start", "app1", "")).WithTimeout(time.Minute).WithPolling(10 * time.Millisecond).Should(BeTrue())
			reboot := Background(ctx, "vm", "reboot", host, "app1", "-o", "json", "--timeout", "2m")
			Eventually(Begun(since, "reboot", "app1", "vmm-i")).WithTimeout(time.Minute).WithPolling(10 * time.Millisecond).Should(BeTrue())
			MustLab(ctx, "unplug", host, "vmmi")

			var r Run
			Eventually(reboot).WithTimeout(2*time.Minute).Should(Receive(&r), "vmsctl still running")
			Expect(r.Code).To(Equal(0), "vmsctl: %s\n%s", r.Stdout, r.Stderr)
			Eventually(started).WithTimeout(time.Minute).Should(Receive(BeNil()))
			Expect(json.Unmarshal([]byte(r.Stdout), &res)).To(Succeed(), r.Stdout)
			Expect(res.OK).To(BeTrue())
			Expect(res.VMs).NotTo(BeEmpty())
			Expect(res.VMs[0].State).To(Equal("running"))

			log, err := since()
			Expect(err).NotTo(HaveOccurred())
			all = AgentLines(log, res.RequestID)
			GinkgoWriter.Printf("attempt %d: vmsctl: %s\nhvagent on request %s:\n%s\n", attempt, strings.TrimSpace(r.Stdout), res.RequestID, strings.Join(all, "\n"))
			// Whether or not the cut came in time: one execution, no
			// refusal, no alert, no SEL entry.
			Expect(Executions(all)).To(Equal(1), "executions:\n%s", strings.Join(all, "\n"))
			Expect(CountLines(all, `msg="action begun"`)).To(Equal(1))
			Expect(CountLines(all, "request refused")).To(BeZero())
			NoAlertsFor(ctx, host, since, sel, 5*time.Second)
			if res.Via == client.ViaOOB {
				break
			}
			GinkgoWriter.Printf("attempt %d: the answer came over the VMM-I before the cut; again\n", attempt)
		}
		// The cut came while it ran: the answer was fetched again, same id,
		// over the OOB-I, from the journal of the run the VMM-I carried.
		Expect(res.SentVia).To(Equal([]string{client.ViaVMMI, client.ViaOOB}))
		Expect(res.ExecutedVia).To(Equal(client.ViaVMMI))
		// The agent logs that line before it answers, but the log reaches
		// the spec over the guest's serial console, which can lag behind
		// the answer over the KCS: read it again until it shows (bounded).
		Eventually(func(g Gomega) {
			log, err := readLog()
			g.Expect(err).NotTo(HaveOccurred())
			all = AgentLines(log, res.RequestID)
			g.Expect(CountLines(all, "answered from the journal")+CountLines(all, "duplicate")).To(BeNumerically(">=", 1), strings.Join(all, "\n"))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		Expect(Executions(all)).To(Equal(1), "executions:\n%s", strings.Join(all, "\n"))

		// The journal's account (vmsctl history) agrees: one run, via the VMM-I.
		out, code := Vmsctl(ctx, "history", host, "--via", "oob", "-o", "json")
		Expect(code).To(Equal(0), out)
		var hist struct {
			Requests []struct {
				RequestID string `json:"request_id"`
				Via       string `json:"via"`
				OK        bool   `json:"ok"`
			} `json:"requests"`
		}
		Expect(json.Unmarshal([]byte(out), &hist)).To(Succeed(), out)
		n := 0
		for _, h := range hist.Requests {
			if h.RequestID == res.RequestID {
				n++
				Expect(h.Via).To(Equal(client.ViaVMMI))
				Expect(h.OK).To(BeTrue())
			}
		}
		Expect(n).To(Equal(1), out)

		MustLab(ctx, "plug", host, "vmmi")
		_, err := Do(ctx, client.ViaOOB, host, vmsg.CmdDestroy, "app1")
		Expect(err).NotTo(HaveOccurred())
	}, SpecTimeout(8*time.Minute))
})
