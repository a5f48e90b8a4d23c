package bmc

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bougou/go-ipmi/pkg/types"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ooblab/ooblab/bmcsim/sensors"
)

// getSDRs is how many Get SDR requests the BMC answered with cc.
func (l *lanBMC) getSDRs(cc string) int {
	return int(promtest.ToFloat64(l.metrics.Requests.WithLabelValues(l.Config.Name, "0x0a", "0x23", "Get SDR", cc)))
}

// sdrWalk is the fewest Get SDR requests that read every record in
// chunks of ipmitool's size: a header read, then the body.
func sdrWalk(chunk int) int {
	n := 1 + (len(types.PackMCLocator(types.MCLocatorPackOpts{Name: "bmcsim t1"}))-5+chunk-1)/chunk
	for _, r := range sensors.Records() {
		n += 1 + (len(r)-5+chunk-1)/chunk
	}
	return n
}

func TestIpmitoolSensors(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	for _, suite := range []int{17, 3} {
		t.Run("suite"+strconv.Itoa(suite), func(t *testing.T) {
			before, refused := l.getSDRs("0x00"), l.getSDRs("0xca")
			out := l.mustIpmitool(t, suite, "sdr", "list")
			// ipmitool reads a record's header, then its body in chunks
			// of 32 bytes (ipmitool 1.8.19); a refused size makes it retry every
			// smaller one.
			if got, want := l.getSDRs("0x00")-before, sdrWalk(32); got != want {
				t.Errorf("sdr list: %d Get SDR requests answered, want %d", got, want)
			}
			if n := l.getSDRs("0xca") - refused; n != 0 {
				t.Errorf("sdr list: %d Get SDR requests refused with CAh", n)
			}
			wantMatch(t, "sdr list", out, `CPU Temp +\| 3[789] degrees C +\| ok`, `Inlet Temp +\| 2[345](\.50)? degrees C +\| ok`,
				`Fan 1 +\| (29|30)[0-9]0 RPM +\| ok`, `Fan 2 +\| (28|29)[0-9]0 RPM +\| ok`, `PSU Input Power +\| 9[0-9] Watts +\| ok`,
				`12V Rail +\| 12\.[01][0-9] Volts +\| ok`, `Host Power +\| 0x01 +\| ok`)
			if strings.Contains(out, "| ns") {
				t.Errorf("sdr list: a sensor without reading:\n%s", out)
			}
			wantMatch(t, "sdr elist", l.mustIpmitool(t, suite, "sdr", "elist"), `CPU Temp +\| 01h \| ok +\| +3\.0 \| 3[789] degrees C`,
				`Inlet Temp +\| 02h \| ok +\| 55\.0 \|`, `Host Power +\| 07h \| ok +\| +7\.0 \| S0/G0: working`)
			wantAll(t, "sdr type", l.mustIpmitool(t, suite, "sdr", "type", "Temperature"), "CPU Temp", "Inlet Temp")
			wantMatch(t, "sensor list", l.mustIpmitool(t, suite, "sensor", "list"),
				`Inlet Temp +\| 2[345]\.[05]00 +\| degrees C +\| ok +\| na +\| 5\.000 +\| 10\.000 +\| 40\.000 +\| 45\.000 +\| 50\.000`,
				`12V Rail +\| 12\.[01][0-9]0 +\| Volts +\| ok +\| na +\| 10\.780 +\| 11\.410 +\| 12\.600 +\| 13\.230 +\| na`)
			wantMatch(t, "sensor get", l.mustIpmitool(t, suite, "sensor", "get", "Inlet Temp"),
				`Sensor Reading +: 2[345](\.500)? \(\+/- 0\) degrees C`, `Upper Critical +: 45\.000`, `Lower Critical +: 5\.000`, `Positive Hysteresis +: 2\.000`)
			wantAll(t, "sdr -v", l.mustIpmitool(t, suite, "sdr", "-v", "list"), "Sensor ID              : Fan 1 (0x3)", "Upper critical        : 90.000", "Readable Thresholds   : unc ucr unr", "Settable Thresholds   : \n")
		})
	}
}

func TestFreeIPMISensors(t *testing.T) {
	need(t, "ipmi-sensors")
	l := startLAN(t, testConfig())
	wantAll(t, "ipmi-sensors, suite 3", l.freeipmi(t, "ipmi-sensors", "--cipher-suite-id=3", "--sdr-cache-directory="+t.TempDir()), "Inlet Temp")
	out := l.freeipmi(t, "ipmi-sensors", "--sdr-cache-directory="+t.TempDir(), "--output-sensor-thresholds")
	wantMatch(t, "ipmi-sensors", out, `CPU Temp +\| Temperature +\| 3[789]\.00 +\| C +\| N/A +\| N/A +\| N/A +\| 80\.00 +\| 90\.00 +\| 95\.00 +\| 'OK'`,
		`Inlet Temp +\| Temperature +\| 2[345]\.[05]0 +\| C +\| N/A +\| 5\.00 +\| 10\.00 +\| 40\.00 +\| 45\.00 +\| 50\.00`,
		`Fan 1 +\| Fan +\| 29[0-9]0\.00|30[0-9]0\.00 +\| RPM`, `PSU Input Power +\| Power Supply +\| 9[0-9]\.00 +\| W`,
		`12V Rail +\| Voltage +\| 12\.[01][0-9] +\| V`, `Host Power +\| System ACPI Power State +\| N/A .*'S0/G0'`)
	// ipmimonitoring (FreeIPMI's monitoring output) interprets each
	// reading against the thresholds: all nominal.
	mon := l.freeipmi(t, "ipmimonitoring", "--sdr-cache-directory="+t.TempDir())
	wantMatch(t, "ipmimonitoring", mon, `CPU Temp +\| Temperature +\| Nominal`, `Inlet Temp +\| Temperature +\| Nominal`,
		`Fan 1 +\| Fan +\| Nominal`, `PSU Input Power +\| Power Supply +\| Nominal`, `12V Rail +\| Voltage +\| Nominal`)
	// A pinned reading past UCR is Critical.
	l.Sensors().Pin(sensors.InletTemp, 48)
	wantMatch(t, "ipmimonitoring, Inlet Temp pinned at 48", l.freeipmi(t, "ipmimonitoring", "--sdr-cache-directory="+t.TempDir()),
		`Inlet Temp +\| Temperature +\| Critical +\| 48\.00`)
}

// wantMatch checks that out matches every regular expression.
func wantMatch(t *testing.T, what, out string, res ...string) {
	t.Helper()
	for _, re := range res {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("%s: output does not match %q:\n%s", what, re, out)
		}
	}
}

// TestIpmitoolThresholdEvents: a pinned Inlet Temp past its upper
// thresholds adds SEL entries that ipmitool sel elist names; the return
// deasserts them.
func TestIpmitoolThresholdEvents(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	l.Sensors().Pin(sensors.InletTemp, 48)
	l.Sensors().Release(sensors.InletTemp)
	for _, suite := range []int{17, 3} {
		out := l.mustIpmitool(t, suite, "sel", "elist")
		wantMatch(t, "sel elist", out,
			`Temperature Inlet Temp \| Upper Non-critical going high \| Asserted \| Reading 48 > Threshold 40 degrees C`,
			`Temperature Inlet Temp \| Upper Critical going high \| Asserted \| Reading 48 > Threshold 45 degrees C`,
			`Upper Critical going high \| Deasserted \| Reading 2[345](\.5)? < Threshold 45 degrees C\n.*Temperature Inlet Temp \| Upper Non-critical going high \| Deasserted`)
	}
}

// TestDCMIPowerReading: ipmitool dcmi power reading and FreeIPMI's
// ipmi-dcmi --get-system-power-statistics read the PSU power model.
func TestDCMIPowerReading(t *testing.T) {
	need(t, "ipmitool", "ipmi-dcmi")
	l := startLAN(t, testConfig())
	for _, suite := range []int{17, 3} {
		out := l.mustIpmitool(t, suite, "dcmi", "power", "reading")
		wantMatch(t, "dcmi power reading", out, `Instantaneous power reading: +9[0-9] Watts`,
			`Minimum during sampling period: +9[0-9] Watts`, `Maximum during sampling period: +9[0-9] Watts`,
			`Average power reading over sample period: +9[0-9] Watts`, `Power reading state is: +activated`)
		wantMatch(t, "dcmi get_temp_reading", l.mustIpmitool(t, suite, "dcmi", "get_temp_reading"),
			`Inlet air temperature\(40h\)\s+1\s+\+2[345] C`, `CPU temperature sensors\(41h\)\s+1\s+\+3[789] C`)
		wantAll(t, "dcmi discover", l.mustIpmitool(t, suite, "dcmi", "discover"), "Power management available",
			"Out-of-band primary LAN channel available", "Temperature monitor available")
	}
	// Suite 3 too (a later --cipher-suite-id wins over the helper's 17).
	wantMatch(t, "ipmi-dcmi -I 3", l.freeipmi(t, "ipmi-dcmi", "--cipher-suite-id=3", "--get-system-power-statistics"), `Current Power +: 9[0-9] Watts`)
	out := l.freeipmi(t, "ipmi-dcmi", "--get-system-power-statistics")
	wantMatch(t, "ipmi-dcmi", out, `Current Power +: 9[0-9] Watts`, `Minimum Power over sampling duration +: 9[0-9] watts`,
		`Power Measurement +: Active`)
	t.Log(out)
	t.Log(l.freeipmi(t, "ipmi-dcmi", "--get-dcmi-capability-info"))
}
