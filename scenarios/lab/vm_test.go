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

	It("lists the lab's nested VMs over both channels, the same way", func() {
		for _, via := range []string{client.ViaVMMI, client.ViaOOB} {
			res, err := Do(via, host, vmsg.CmdList, "")
			Expect(err).NotTo(HaveOccurred(), via)
			Expect(res.Via).To(Equal(via))
			var names []string
			for _, v := range res.Reply.VMs {
				names = append(names, v.Name)
			}
			Expect(names).To(ContainElements("web1", "db1", "app1"), via)
		}
	})

	for _, via := range []string{client.ViaVMMI, client.ViaOOB, client.ViaAuto} {
		It("starts, suspends, resumes, reboots and stops app1 via "+via, func() {
			if via == client.ViaAuto {
				// Auto prefers the VMM-I while it answers (a cold TLS
				// handshake into a TCG guest may miss the first budget).
				Eventually(func() (string, error) {
					res, err := Do(via, host, vmsg.CmdPing, "")
					if err != nil {
						return "", err
					}
					return res.Via, nil
				}).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
			}
			res, err := Do(via, host, vmsg.CmdStart, "app1")
			Expect(err).NotTo(HaveOccurred())
			if via != client.ViaAuto {
				Expect(res.Via).To(Equal(via))
			}
			Eventually(VM(via, host, "app1")).WithTimeout(time.Minute).Should(BeInState("running"))

			_, err = Do(via, host, vmsg.CmdSuspend, "app1")
			Expect(err).NotTo(HaveOccurred())
			Expect(VM(client.ViaVMMI, host, "app1")()).To(BeInState("paused"))
			_, err = Do(via, host, vmsg.CmdSuspend, "app1")
			Expect(err).NotTo(HaveOccurred(), "suspend is idempotent")

			_, err = Do(via, host, vmsg.CmdResume, "app1")
			Expect(err).NotTo(HaveOccurred())
			Expect(VM(client.ViaOOB, host, "app1")()).To(BeInState("running"))

			_, err = Do(via, host, vmsg.CmdReboot, "app1")
			Expect(err).NotTo(HaveOccurred())
			Eventually(VM(via, host, "app1")).WithTimeout(time.Minute).Should(BeInState("running"))

			_, err = Do(via, host, vmsg.CmdDestroy, "app1")
			Expect(err).NotTo(HaveOccurred())
			Expect(VM(client.ViaVMMI, host, "app1")()).To(BeInState("shut off"))
			_, err = Do(via, host, vmsg.CmdDestroy, "app1")
			Expect(err).NotTo(HaveOccurred(), "destroy is idempotent")
		})
	}

	It("asks for a challenge before changing a protected VM, and refuses a wrong code", func() {
		_, err := Do(client.ViaVMMI, host, vmsg.CmdStart, "db1")
		Expect(err).To(HaveOccurred())
		Expect(errors.Is(err, client.ErrChallengeFailed)).To(BeTrue(), "%v", err)
	})

	It("runs a protected VM's start over the OOB-I when the operator answers the challenge", func() {
		out, code := Vmsctl("vm", "start", host, "db1", "--via", "oob", "--otp-secret-file", labDir+"/operator.key")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("oob-i"))
		Eventually(VM(client.ViaVMMI, host, "db1")).WithTimeout(time.Minute).Should(BeInState("running"))
		out, code = Vmsctl("vm", "destroy", host, "db1", "--via", "vmmi", "--otp-secret-file", labDir+"/operator.key")
		Expect(code).To(Equal(0), out)
	})

	It("refuses an unauthorized principal, and the BMC's SEL records the alert", func() {
		_, err := Do(client.ViaVMMI, host, vmsg.CmdStart, "web1") // idempotent
		Expect(err).NotTo(HaveOccurred())
		Eventually(VM(client.ViaVMMI, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))
		c, err := client.New(inv, client.Options{Via: client.ViaOOB, Principal: "intern"})
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		_, err = c.Do(SpecContextTimeout(), host, vmsg.CmdDestroy, "web1")
		Expect(errors.Is(err, client.ErrUnauthorized)).To(BeTrue(), "%v", err)
		Expect(VM(client.ViaVMMI, host, "web1")()).To(BeInState("running"))
		Eventually(func() string { return Ipmitool(host, "sel", "list") }).WithTimeout(30 * time.Second).
			Should(ContainSubstring("OEM"))
		Eventually(func() string { out, _ := Vmsctl("alerts", host, "-o", "json"); return out }).
			WithTimeout(30 * time.Second).Should(ContainSubstring("intern"))
	})
})

var _ = Describe("Failover", Lab, Failover, Serial, Ordered, func() {
	const host = "h1"

	AfterAll(func() { RunLab("plug", host, "vmmi") })

	It("carries a shutdown over the OOB-I when the VMM-I is unplugged, and says so", func() {
		_, err := Do(client.ViaVMMI, host, vmsg.CmdStart, "web1")
		Expect(err).NotTo(HaveOccurred())
		RunLab("unplug", host, "vmmi")
		_, err = Do(client.ViaVMMI, host, vmsg.CmdPing, "")
		Expect(err).To(HaveOccurred(), "the VMM-I must be unreachable while unplugged")

		out, code := Vmsctl("vm", "destroy", host, "web1")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("oob-i"))
		Expect(VM(client.ViaOOB, host, "web1")()).To(BeInState("shut off"))
	})

	It("goes back to the VMM-I once it is plugged again", func() {
		RunLab("plug", host, "vmmi")
		Eventually(func() (string, error) {
			res, err := Do(client.ViaAuto, host, vmsg.CmdStart, "web1")
			if err != nil {
				return "", err
			}
			return res.Via, nil
		}).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
		Expect(VM(client.ViaVMMI, host, "web1")()).To(BeInState("running"))
	})
})
