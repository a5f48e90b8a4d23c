package lab_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// ChassisPower is the power state the BMC reports to ipmitool.
func ChassisPower(host string) func() string {
	return func() string { return Ipmitool(host, "chassis", "power", "status") }
}

// Answers reports whether the host's agent answers a ping over a channel.
func Answers(via, host string) func() error {
	return func() error {
		_, err := Do(via, host, vmsg.CmdPing, "")
		return err
	}
}

var _ = Describe("Chassis power through the BMC", Lab, Power, Serial, Ordered, func() {
	const host = "h1"

	It("soft-shuts the hypervisor host down (ACPI), and powers it back on", func() {
		Expect(Ipmitool(host, "chassis", "power", "soft")).To(ContainSubstring("Soft"))
		Eventually(ChassisPower(host)).WithTimeout(2 * time.Minute).WithPolling(time.Second).
			Should(ContainSubstring("Chassis Power is off"))
		Expect(RunLab("status")).To(ContainSubstring("shutdown"))

		Expect(Ipmitool(host, "chassis", "power", "on")).To(ContainSubstring("Up/On"))
		Expect(ChassisPower(host)()).To(ContainSubstring("Chassis Power is on"))
		Eventually(Answers(client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
		Eventually(Answers(client.ViaVMMI, host)).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	})

	It("hard-resets the host: the agent comes back over the OOB-I", func() {
		Expect(Ipmitool(host, "chassis", "power", "reset")).To(ContainSubstring("Reset"))
		Eventually(Answers(client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
		Expect(ChassisPower(host)()).To(ContainSubstring("Chassis Power is on"))
	})

	It("powers the host off hard; both channels go quiet", func() {
		Expect(Ipmitool(host, "chassis", "power", "off")).To(ContainSubstring("Down/Off"))
		Expect(ChassisPower(host)()).To(ContainSubstring("Chassis Power is off"))
		Expect(Answers(client.ViaVMMI, host)()).To(HaveOccurred())
		Expect(Ipmitool(host, "chassis", "power", "on")).To(ContainSubstring("Up/On"))
		Eventually(Answers(client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
	})
})
