package lab_test

import (
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

var _ = Describe("VM commands", Lab, Ordered, func() {
	const host = "h1"

	It("lists the lab's nested VMs over both channels, the same way", func(ctx SpecContext) {
		for _, via := range []string{client.ViaVMMI, client.ViaOOB} {
			res, err := Do(ctx, via, host, vmsg.CmdList, "")
			Expect(err).NotTo(HaveOccurred(), via)
			Expect(res.Via).To(Equal(via))
			var names []string
			for _, v := range res.Reply.VMs {
				names = append(names, v.Name)
			}
			Expect(names).To(ContainElements("web1", "db1", "app1"), via)
		}
	}, SpecTimeout(2*time.Minute))

	for _, via := range []string{client.ViaVMMI, client.ViaOOB, client.ViaAuto} {
		It("starts, suspends, resumes, reboots and stops app1 via "+via, func(ctx SpecContext) {
			if via == client.ViaAuto {
				// Auto prefers the VMM-I while it answers (a cold TLS
				// handshake into a TCG guest may miss the first budget).
				Eventually(Via(ctx, via, host, vmsg.CmdPing, "")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
			}
			res, err := Do(ctx, via, host, vmsg.CmdStart, "app1")
			Expect(err).NotTo(HaveOccurred())
			if via != client.ViaAuto {
				Expect(res.Via).To(Equal(via))
			}
			Eventually(VM(ctx, via, host, "app1")).WithTimeout(time.Minute).Should(BeInState("running"))

			_, err = Do(ctx, via, host, vmsg.CmdSuspend, "app1")
			Expect(err).NotTo(HaveOccurred())
			Expect(VM(ctx, client.ViaVMMI, host, "app1")()).To(BeInState("paused"))
			_, err = Do(ctx, via, host, vmsg.CmdSuspend, "app1")
			Expect(err).NotTo(HaveOccurred(), "suspend is idempotent")

			_, err = Do(ctx, via, host, vmsg.CmdResume, "app1")
			Expect(err).NotTo(HaveOccurred())
			Expect(VM(ctx, client.ViaOOB, host, "app1")()).To(BeInState("running"))

			_, err = Do(ctx, via, host, vmsg.CmdReboot, "app1")
			Expect(err).NotTo(HaveOccurred())
			Eventually(VM(ctx, via, host, "app1")).WithTimeout(time.Minute).Should(BeInState("running"))

			_, err = Do(ctx, via, host, vmsg.CmdDestroy, "app1")
			Expect(err).NotTo(HaveOccurred())
			Expect(VM(ctx, client.ViaVMMI, host, "app1")()).To(BeInState("shut off"))
			_, err = Do(ctx, via, host, vmsg.CmdDestroy, "app1")
			Expect(err).NotTo(HaveOccurred(), "destroy is idempotent")
		}, SpecTimeout(6*time.Minute))
	}

	It("asks for a challenge before changing a protected VM, and refuses a wrong code", func(ctx SpecContext) {
		_, err := Do(ctx, client.ViaVMMI, host, vmsg.CmdStart, "db1")
		Expect(err).To(HaveOccurred())
		Expect(errors.Is(err, client.ErrChallengeFailed)).To(BeTrue(), "%v", err)
	}, SpecTimeout(2*time.Minute))

	It("runs a protected VM's start over the OOB-I when the operator answers the challenge", func(ctx SpecContext) {
		out, code := Vmsctl(ctx, "vm", "start", host, "db1", "--via", "oob", "--otp-secret-file", labDir+"/operator.key")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("oob-i"))
		Eventually(VM(ctx, client.ViaVMMI, host, "db1")).WithTimeout(time.Minute).Should(BeInState("running"))
		out, code = Vmsctl(ctx, "vm", "destroy", host, "db1", "--via", "vmmi", "--otp-secret-file", labDir+"/operator.key")
		Expect(code).To(Equal(0), out)
	}, SpecTimeout(4*time.Minute))

	It("refuses an unauthorized principal, and the BMC's SEL records the alert", func(ctx SpecContext) {
		_, err := Do(ctx, client.ViaVMMI, host, vmsg.CmdStart, "web1") // idempotent
		Expect(err).NotTo(HaveOccurred())
		Eventually(VM(ctx, client.ViaVMMI, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))
		c, err := client.New(inv, client.Options{Via: client.ViaOOB, Principal: "intern"})
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		_, err = c.Do(ctx, host, vmsg.CmdDestroy, "web1")
		Expect(errors.Is(err, client.ErrUnauthorized)).To(BeTrue(), "%v", err)
		Expect(VM(ctx, client.ViaVMMI, host, "web1")()).To(BeInState("running"))
		Eventually(func() (string, error) { return Ipmitool(ctx, host, "sel", "list") }).WithTimeout(30 * time.Second).
			Should(ContainSubstring("OEM"))
		Eventually(AlertsJSON(ctx, host)).WithTimeout(30 * time.Second).Should(ContainSubstring("intern"))
	}, SpecTimeout(4*time.Minute))
})

var _ = Describe("Failover", Lab, Failover, Serial, Ordered, func() {
	const host = "h1"

	AfterAll(func(ctx SpecContext) { MustLab(ctx, "plug", host, "vmmi") })

	It("carries a shutdown over the OOB-I when the VMM-I is unplugged, and says so", func(ctx SpecContext) {
		_, err := Do(ctx, client.ViaVMMI, host, vmsg.CmdStart, "web1")
		Expect(err).NotTo(HaveOccurred())
		MustLab(ctx, "unplug", host, "vmmi")
		_, err = Do(ctx, client.ViaVMMI, host, vmsg.CmdPing, "")
		Expect(err).To(HaveOccurred(), "the VMM-I must be unreachable while unplugged")

		out, code := Vmsctl(ctx, "vm", "destroy", host, "web1")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("oob-i"))
		Expect(VM(ctx, client.ViaOOB, host, "web1")()).To(BeInState("shut off"))
	}, SpecTimeout(4*time.Minute))

	It("goes back to the VMM-I once it is plugged again", func(ctx SpecContext) {
		MustLab(ctx, "plug", host, "vmmi")
		Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdStart, "web1")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
		Expect(VM(ctx, client.ViaVMMI, host, "web1")()).To(BeInState("running"))
	}, SpecTimeout(3*time.Minute))
})
