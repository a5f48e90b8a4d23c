package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// SensorValue reads one sensor of host's BMC with ipmitool (sensor
// reading NAME).
func SensorValue(ctx context.Context, host, name string) (float64, error) {
	out, err := Ipmitool(ctx, host, "sensor", "reading", name)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(regexp.QuoteMeta(name) + `\s*\|\s*([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no reading of %s in %q", name, out)
	}
	return strconv.ParseFloat(m[1], 64)
}

var _ = Describe("The BMC's sensors follow the host", Lab, Sensors, Serial, Ordered, func() {
	const host = "h1"

	It("raises CPU temperature and input power within a minute of a CPU burner started in the host", func(ctx SpecContext) {
		// Quiet first: the host may still be busy from an earlier spec (a
		// nested VM booting under TCG keeps QEMU near one CPU, and the
		// model's power is then near its 255 W top, with no room to rise).
		Eventually(func() (float64, error) { return SensorValue(ctx, host, "PSU Input Power") }).
			WithContext(ctx).WithTimeout(2*time.Minute).WithPolling(2*time.Second).Should(BeNumerically("<=", 175),
			"the host never went quiet enough to measure a rise")
		AddReportEntry("ipmitool sdr elist (idle)", MustIpmitool(ctx, host, "sdr", "elist"))
		AddReportEntry("ipmitool dcmi power reading (idle)", MustIpmitool(ctx, host, "dcmi", "power", "reading"))
		cpu0, err := SensorValue(ctx, host, "CPU Temp")
		Expect(err).NotTo(HaveOccurred())
		pwr0, err := SensorValue(ctx, host, "PSU Input Power")
		Expect(err).NotTo(HaveOccurred())

		// One busy loop per guest CPU, ended by timeout(1) if the cleanup
		// never runs.
		out, err := InHost(ctx, host, `for i in $(seq $(nproc)); do timeout 300 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!; done`)
		Expect(err).NotTo(HaveOccurred())
		pids := strings.Fields(out)
		Expect(pids).NotTo(BeEmpty(), out)
		DeferCleanup(func(ctx SpecContext) {
			_, err := InHost(ctx, host, "kill "+strings.Join(pids, " ")+" 2>/dev/null; true")
			Expect(err).NotTo(HaveOccurred())
		}, NodeTimeout(time.Minute))

		Eventually(func(g Gomega) {
			cpu, err := SensorValue(ctx, host, "CPU Temp")
			g.Expect(err).NotTo(HaveOccurred())
			pwr, err := SensorValue(ctx, host, "PSU Input Power")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(cpu).To(BeNumerically(">=", cpu0+5), "CPU Temp (idle %v)", cpu0)
			g.Expect(pwr).To(BeNumerically(">=", pwr0+30), "PSU Input Power (idle %v)", pwr0)
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(5 * time.Second).Should(Succeed())
		AddReportEntry("ipmitool sdr elist (load)", MustIpmitool(ctx, host, "sdr", "elist"))
		AddReportEntry("ipmitool dcmi power reading (load)", MustIpmitool(ctx, host, "dcmi", "power", "reading"))
	}, SpecTimeout(6*time.Minute))

	It("logs a SEL entry when `lab sensor` pins Inlet Temp past its upper critical threshold, and vmsctl host sel shows it", func(ctx SpecContext) {
		MustLab(ctx, "sensor", host, "Inlet Temp", "48")
		DeferCleanup(func(ctx SpecContext) { MustLab(ctx, "sensor", host, "Inlet Temp", "--release") }, NodeTimeout(time.Minute))

		Expect(MustIpmitool(ctx, host, "sel", "elist")).To(MatchRegexp(`Inlet Temp \| Upper Critical going high \| Asserted \| Reading 48 > Threshold 45`))
		out, code := Vmsctl(ctx, "-o", "json", "host", "sel", host)
		Expect(code).To(Equal(0), out)
		var s struct {
			Entries []struct {
				Kind         string `json:"kind"`
				SensorType   string `json:"sensor_type"`
				SensorNumber *uint8 `json:"sensor_number"`
				Event        string `json:"event"`
				Deasserted   bool   `json:"deasserted"`
			} `json:"entries"`
		}
		Expect(json.Unmarshal([]byte(out), &s)).To(Succeed(), out)
		found := false
		for _, e := range s.Entries {
			if e.Kind == "system event" && e.SensorNumber != nil && *e.SensorNumber == 2 && !e.Deasserted {
				found = true
			}
		}
		Expect(found).To(BeTrue(), "no asserted event of sensor 2 (Inlet Temp) in vmsctl host sel:\n%s", out)
	}, SpecTimeout(2*time.Minute))
})
