package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/lab/ctl"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// InHost runs a shell script as root inside host, as an administrator
// logged in there would (the lab's own shell on the guest's second serial
// port, `bin/lab exec`), and returns its output; a non-zero exit is an error.
func InHost(ctx context.Context, host, script string) (string, error) {
	var out strings.Builder
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rc, err := ctl.Exec(ctx, labDir, host, script, &out)
	if err == nil && rc != 0 {
		err = fmt.Errorf("in %s: %q exited %d:\n%s", host, script, rc, out.String())
	}
	return out.String(), err
}

// alertOut is one alert as `vmsctl alerts -o json` prints it.
type alertOut struct {
	Time      time.Time `json:"time"`
	Host      string    `json:"host"`
	Principal string    `json:"principal"`
	VM        string    `json:"vm"`
	Action    string    `json:"action"`
	Reason    string    `json:"reason"`
}

// AlertsSince returns a getter of host's alerts newer than since, as the
// vmsctl binary reports them. Reading alerts is a follower's read of the
// BMC's alert log, and a one-shot follower (a new one each run) only sees
// what no other follower has trimmed — the lab page follows too, and reads
// every 2 s. So the getter reads as one durable follower
// (`vmsctl alerts --follower-id`, issue 21), registered by a first read
// when the getter is made: make it before the action whose alert it waits
// for. It keeps every alert it has seen across calls.
func AlertsSince(ctx context.Context, host string, since time.Time) func() ([]alertOut, error) {
	GinkgoHelper()
	var seen []alertOut
	id := strconv.FormatUint(uint64(rand.Uint32()|1), 10)
	read := func() ([]alertOut, error) {
		out, code := VmsctlStdout(ctx, "-o", "json", "alerts", host, "--follower-id", id)
		if code != 0 {
			return nil, fmt.Errorf("vmsctl alerts: exit %d: %s", code, out)
		}
		var all []alertOut
		if err := json.Unmarshal([]byte(out), &all); err != nil {
			return nil, fmt.Errorf("%w: %s", err, out)
		}
		return all, nil
	}
	first, err := read()
	Expect(err).NotTo(HaveOccurred(), "register the alert follower")
	seen = append(seen, first...)
	return func() ([]alertOut, error) {
		all, err := read()
		if err != nil {
			return nil, err
		}
		seen = append(seen, all...)
		var newer []alertOut
		for _, a := range seen {
			if !a.Time.Before(since) {
				newer = append(newer, a)
			}
		}
		if len(newer) == 0 && len(seen) > 0 {
			// Say what was there, so a miss can be told from a clock
			// skew between the guest and the VMS.
			last := seen[len(seen)-1]
			GinkgoWriter.Printf("vmsctl alerts: %d alert(s) seen, none since %s; newest %s (%s %s)\n",
				len(seen), since.Format(time.RFC3339Nano), last.Time.Format(time.RFC3339Nano), last.Action, last.VM)
		}
		return newer, nil
	}
}

// SELList returns a getter of `ipmitool sel list`'s lines.
func SELList(ctx context.Context, host string) func() ([]string, error) {
	return func() ([]string, error) {
		out, err := Ipmitool(ctx, host, "sel", "list")
		if err != nil {
			return nil, err
		}
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "|") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		return lines, nil
	}
}

// BootID is host's kernel boot id and uptime, read inside the host.
func BootID(ctx context.Context, host string) (id string, up time.Duration, err error) {
	out, err := InHost(ctx, host, "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f1 /proc/uptime")
	if err != nil {
		return "", 0, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", 0, fmt.Errorf("boot id and uptime: %q", out)
	}
	s, err := strconv.ParseFloat(f[1], 64)
	return f[0], time.Duration(s * float64(time.Second)), err
}

var _ = Describe("Changes behind the agent's back, and the host's power, from the VMS", Lab, VMSSide, Serial, Ordered, func() {
	const host = "h1"

	It("reports a `virsh destroy` typed inside the host as an unauthorized local change, in vmsctl alerts and the BMC's SEL", func(ctx SpecContext) {
		_, err := Do(ctx, client.ViaVMMI, host, vmsg.CmdStart, "web1")
		Expect(err).NotTo(HaveOccurred())
		Eventually(VM(ctx, client.ViaVMMI, host, "web1")).WithTimeout(2 * time.Minute).Should(BeInState("running"))
		DeferCleanup(func(ctx SpecContext) {
			_, err := Do(ctx, client.ViaVMMI, host, vmsg.CmdStart, "web1")
			Expect(err).NotTo(HaveOccurred())
			Eventually(VM(ctx, client.ViaVMMI, host, "web1")).WithTimeout(2 * time.Minute).Should(BeInState("running"))
		}, NodeTimeout(3*time.Minute))
		sel, err := SELList(ctx, host)()
		Expect(err).NotTo(HaveOccurred())
		// The BMC stamps alerts in whole seconds, vmsctl in milliseconds.
		since := time.Now().Add(-time.Second)
		alerts := AlertsSince(ctx, host, since) // the follower reads from here on

		out, err := InHost(ctx, host, "virsh -c qemu:///system destroy web1")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("destroyed"))
		Expect(VM(ctx, client.ViaVMMI, host, "web1")()).To(BeInState("shut off"))

		var got alertOut
		Eventually(func(g Gomega) {
			al, err := alerts()
			g.Expect(err).NotTo(HaveOccurred())
			found := false
			for _, a := range al {
				if a.VM == "web1" && a.Action == "destroy" {
					got, found = a, true
				}
			}
			g.Expect(found).To(BeTrue(), "no destroy alert for web1 yet: %+v", al)
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
		AddReportEntry("alert", got)
		Expect(got.Host).To(Equal(host))
		Expect(got.Principal).To(Equal("local"), "libvirt cannot tell who; hvagent says: not through it")
		Expect(got.Reason).To(HavePrefix("unauthorized local change:"))
		Expect(got.Reason).To(ContainSubstring("web1"))
		Expect(got.Reason).To(ContainSubstring("Stopped/Destroyed"), "libvirt's reason")

		// One new SEL entry: an OEM timestamped record of ooblab's IANA
		// number (32473 = 7ed9, shown most significant byte first), class
		// 0x05 (unauthorized local change), command 0x06 (destroy).
		var added []string
		Eventually(func(g Gomega) {
			now, err := SELList(ctx, host)()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(len(now)).To(BeNumerically(">", len(sel)))
			added = now[len(sel):]
			g.Expect(added).To(ContainElement(And(ContainSubstring("OEM record c0"), ContainSubstring("| 007ed9 | 0506"))), "new SEL lines: %q", added)
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
		AddReportEntry("ipmitool sel list (new)", strings.Join(added, "\n"))

		// vmsctl decodes the same record.
		out, code := Vmsctl(ctx, "-o", "json", "host", "sel", host)
		Expect(code).To(Equal(0), out)
		var s struct {
			Entries []struct {
				Alert *struct {
					Class   string `json:"class"`
					Command string `json:"command"`
				} `json:"alert"`
			} `json:"entries"`
		}
		Expect(json.Unmarshal([]byte(out), &s)).To(Succeed(), out)
		Expect(s.Entries).NotTo(BeEmpty())
		last := s.Entries[len(s.Entries)-1].Alert
		Expect(last).NotTo(BeNil(), out)
		Expect(last.Class).To(Equal("unauthorized local change"))
		Expect(last.Command).To(Equal("destroy"))
	}, SpecTimeout(6*time.Minute))

	It("power-cycles the host with vmsctl: it reboots and hvagent answers over both channels again", func(ctx SpecContext) {
		status := func() (string, error) {
			out, code := Vmsctl(ctx, "-o", "json", "host", "power", "status", host)
			if code != 0 {
				return "", fmt.Errorf("vmsctl host power status: exit %d: %s", code, out)
			}
			var st struct {
				Power string `json:"power"`
			}
			err := json.Unmarshal([]byte(out), &st)
			return st.Power, err
		}
		Expect(status()).To(Equal("on"))
		Eventually(Answers(ctx, client.ViaVMMI, host)).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
		bootBefore, _, err := BootID(ctx, host)
		Expect(err).NotTo(HaveOccurred())
		console, err := HvagentLog(host)
		Expect(err).NotTo(HaveOccurred())
		boots := strings.Count(console, "ooblab: rootfs up")

		t0 := time.Now()
		out, code := Vmsctl(ctx, "host", "power", "cycle", host)
		Expect(code).To(Equal(0), out)
		// The guest has come back when hvagent answers over both channels
		// (a TCG boot with libvirt takes a minute or more on a loaded machine).
		Eventually(Answers(ctx, client.ViaOOB, host)).WithContext(ctx).WithTimeout(6 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		Eventually(Answers(ctx, client.ViaVMMI, host)).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(Succeed())
		back := time.Since(t0)
		AddReportEntry("power cycle to both channels answering", back.String())
		Expect(status()).To(Equal("on"))

		bootAfter, up, err := BootID(ctx, host)
		Expect(err).NotTo(HaveOccurred())
		Expect(bootAfter).NotTo(Equal(bootBefore), "a new kernel boot")
		Expect(up).To(BeNumerically("<", time.Since(t0)), "the host's uptime starts after the cycle")
		console, err = HvagentLog(host)
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Count(console, "ooblab: rootfs up")).To(Equal(boots+1), "one more boot on the serial console")

		// The lab stays usable for the specs after this one: web1 runs
		// again (hvagent starts it at boot).
		Eventually(VM(ctx, client.ViaVMMI, host, "web1")).WithTimeout(3 * time.Minute).WithPolling(2 * time.Second).Should(BeInState("running"))
	}, SpecTimeout(12*time.Minute))
})
