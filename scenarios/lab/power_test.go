package lab_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// ChassisPower is the power state the BMC reports to ipmitool.
func ChassisPower(ctx context.Context, host string) func() (string, error) {
	return func() (string, error) { return Ipmitool(ctx, host, "chassis", "power", "status") }
}

// Answers reports whether the host's agent answers a ping over a channel.
func Answers(ctx context.Context, via, host string) func() error {
	return func() error {
		_, err := Do(ctx, via, host, vmsg.CmdPing, "")
		return err
	}
}

var _ = Describe("Chassis power through the BMC", Lab, Power, Serial, Ordered, func() {
	const host = "h1"

	It("soft-shuts the hypervisor host down (ACPI), and powers it back on", func(ctx SpecContext) {
		Expect(MustIpmitool(ctx, host, "chassis", "power", "soft")).To(ContainSubstring("Soft"))
		Eventually(ChassisPower(ctx, host)).WithTimeout(2 * time.Minute).WithPolling(time.Second).
			Should(ContainSubstring("Chassis Power is off"))
		Expect(MustLab(ctx, "status")).To(ContainSubstring("shutdown"))

		Expect(MustIpmitool(ctx, host, "chassis", "power", "on")).To(ContainSubstring("Up/On"))
		Expect(ChassisPower(ctx, host)()).To(ContainSubstring("Chassis Power is on"))
		Eventually(Answers(ctx, client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
		Eventually(Answers(ctx, client.ViaVMMI, host)).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	}, SpecTimeout(8*time.Minute))

	It("hard-resets the host: the agent comes back over the OOB-I", func(ctx SpecContext) {
		Expect(MustIpmitool(ctx, host, "chassis", "power", "reset")).To(ContainSubstring("Reset"))
		Eventually(Answers(ctx, client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
		Expect(ChassisPower(ctx, host)()).To(ContainSubstring("Chassis Power is on"))
	}, SpecTimeout(5*time.Minute))

	It("powers the host off hard; both channels go quiet", func(ctx SpecContext) {
		Expect(MustIpmitool(ctx, host, "chassis", "power", "off")).To(ContainSubstring("Down/Off"))
		Expect(ChassisPower(ctx, host)()).To(ContainSubstring("Chassis Power is off"))
		Expect(Answers(ctx, client.ViaVMMI, host)()).To(HaveOccurred())
		Expect(MustIpmitool(ctx, host, "chassis", "power", "on")).To(ContainSubstring("Up/On"))
		Eventually(Answers(ctx, client.ViaOOB, host)).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
	}, SpecTimeout(5*time.Minute))
})
