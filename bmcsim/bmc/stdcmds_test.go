package bmc

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ooblab/ooblab/bmcsim/lan"
	"github.com/ooblab/ooblab/internal/testutil"
)

// TestIpmitoolStandardCommands: the commands clients send that bmcsim
// answered C1h, CCh or wrongly (a BMC reset reset the host).
func TestIpmitoolStandardCommands(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	var host fakeDriver
	l.SetPowerDriver(&host)
	for _, suite := range []int{17, 3} {
		t.Run("suite"+strconv.Itoa(suite), func(t *testing.T) {
			for _, tc := range []struct {
				args []string
				want []string
			}{
				{[]string{"mc", "info"}, []string{"Manufacturer ID           : 49622"}},
				{[]string{"mc", "getenables"}, []string{"System Event Logging", ": enabled"}},
				{[]string{"raw", "0x06", "0x07"}, []string{"00 00"}},          // Get ACPI Power State: S0, D0
				{[]string{"raw", "0x06", "0x31"}, []string{"00"}},             // Get Message Flags
				{[]string{"raw", "0x04", "0x01"}, []string{"20 00"}},          // Get Event Receiver
				{[]string{"raw", "0x00", "0x0f"}, []string{"3c 00 00 00 00"}}, // Get POH Counter
				{[]string{"chassis", "poh"}, []string{"POH Counter  : 0 days, 0 hours"}},
				{[]string{"pef", "info"}, []string{"0x51 | 0 | 0 |"}},               // version, no actions, no filters
				{[]string{"pef", "status"}, []string{"| 0xffff | 0x0000 | 0x0000"}}, // an empty SEL
				{[]string{"user", "summary"}, []string{"Maximum IDs	    : 15", "Enabled User Count  : 3"}},
				{[]string{"user", "list"}, []string{"2   admin", "4   viewer", "15                   "}},
				{[]string{"mc", "reset", "warm"}, []string{"Sent warm reset command to MC"}},
				{[]string{"mc", "reset", "cold"}, []string{"Sent cold reset command to MC"}},
			} {
				out := l.mustIpmitool(t, suite, tc.args...)
				wantAll(t, strings.Join(tc.args, " "), out, tc.want...)
			}
			if n := host.calls(); n != 0 {
				t.Errorf("BMC resets reached the host: %d power actions", n)
			}
		})
	}
}

// TestStandardCommandCodes: slot numbers past 15, read-only PEF
// parameters and unknown ones get the spec's codes.
func TestStandardCommandCodes(t *testing.T) {
	b, _ := offlineBMC(t)
	app, se := types.NetFnAppRequest, types.NetFnSensorEventRequest
	runCodeCases(t, b, app, []codeCase{
		{"user access of slot 3", 0x44, "01 03", types.CodeOK, "0f 43 01 13"},
		{"user access of slot 16", 0x44, "01 10", types.CodeRequestDataFieldInvalid, ""},
		{"user name of empty slot 9", 0x46, "09", types.CodeOK, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"},
		{"user name of slot 16", 0x46, "10", types.CodeRequestDataFieldInvalid, ""},
		{"set user name in slot 20", 0x45, "14 61 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", types.CodeRequestDataFieldInvalid, ""},
		{"set user name in empty slot 9", 0x45, "09 6e 65 77 00 00 00 00 00 00 00 00 00 00 00 00 00", types.CodeOK, ""},
		{"user name of slot 9", 0x46, "09", types.CodeOK, "6e 65 77 00 00 00 00 00 00 00 00 00 00 00 00 00"},
	})
	runCodeCases(t, b, se, []codeCase{
		{"PEF parameter 5 is read-only", 0x12, "05 01", 0x82, ""},
		{"PEF parameter 20", 0x13, "14 00 00", 0x80, ""},
		{"PEF control", 0x12, "01 01", types.CodeOK, ""},
		{"PEF control back", 0x13, "01 00 00", types.CodeOK, "11 01"},
		{"PEF revision only", 0x13, "81 00 00", types.CodeOK, "11"},
		{"set event receiver", 0x00, "22 01", types.CodeOK, ""},
		{"get event receiver", 0x01, "", types.CodeOK, "22 01"},
		{"last processed event", 0x15, "", types.CodeOK, ""},
	})
}

// fakeDriver is a PowerDriver that counts the power actions it is asked.
type fakeDriver struct {
	mu sync.Mutex
	n  int
}

var _ PowerDriver = (*fakeDriver)(nil)

func (d *fakeDriver) count() error                           { d.mu.Lock(); d.n++; d.mu.Unlock(); return nil }
func (d *fakeDriver) calls() int                             { d.mu.Lock(); defer d.mu.Unlock(); return d.n }
func (d *fakeDriver) State(context.Context) (bool, bool)     { return true, true }
func (d *fakeDriver) PowerOn(context.Context) error          { return d.count() }
func (d *fakeDriver) PowerOff(context.Context) error         { return d.count() }
func (d *fakeDriver) Reset(context.Context) error            { return d.count() }
func (d *fakeDriver) GracefulShutdown(context.Context) error { return d.count() }

// TestCommandTable: every command docs/bmcsim.md's table lists is
// answered (not C1h); one it does not list is C1h and counted.
func TestCommandTable(t *testing.T) {
	b, _ := offlineBMC(t)
	doc, err := os.ReadFile("../../docs/bmcsim.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^\| ([0-9A-F]{2})h \| ([0-9A-F]{2})h \| ([^|]+) \|`)
	rows := row.FindAllStringSubmatch(string(doc), -1)
	if len(rows) < 80 {
		t.Fatalf("%d rows in the command table", len(rows))
	}
	for _, r := range rows {
		netfn, _ := strconv.ParseUint(r[1], 16, 8)
		cmd, _ := strconv.ParseUint(r[2], 16, 8)
		if _, cc := b.call(types.NetFn(netfn), uint8(cmd), nil); cc == types.CodeInvalidCommand {
			t.Errorf("%sh %sh %s: C1h", r[1], r[2], r[3])
		}
	}
	if _, cc := b.call(types.NetFnAppRequest, 0x52, nil); cc != types.CodeInvalidCommand {
		t.Errorf("Master Write-Read: %v, want C1h", cc)
	}
	if n := promtest.ToFloat64(b.metrics.Requests.WithLabelValues(b.Config.Name, "0x06", "0x52", "", "0xc1")); n != 1 {
		t.Errorf("C1h answers counted: %v, want 1", n)
	}
}

// TestFRUAreas: ipmitool and FreeIPMI read the chassis, board and product
// areas.
func TestFRUAreas(t *testing.T) {
	need(t, "ipmitool", "ipmi-fru")
	l := startLAN(t, testConfig())
	wantMatch(t, "fru print", l.mustIpmitool(t, 17, "fru", "print", "0"), `Chassis Type +: Rack Mount Chassis`,
		`Board Mfg +: ooblab`, `Board Product +: bmcsim board`, `Board Serial +: t1`, `Product Manufacturer +: ooblab`, `Product Serial +: t1`)
	wantMatch(t, "ipmi-fru", l.freeipmi(t, "ipmi-fru", "--sdr-cache-directory="+t.TempDir()),
		`Board Manufacturer: ooblab`, `Product Name: bmcsim`)
}

// FuzzStdCommands sends arbitrary requests to the standard commands of
// stdcmds.go.
func FuzzStdCommands(f *testing.F) {
	cmds := []struct {
		netfn types.NetFn
		cmd   uint8
	}{
		{types.NetFnAppRequest, 0x02}, {types.NetFnAppRequest, 0x06}, {types.NetFnAppRequest, 0x07},
		{types.NetFnAppRequest, 0x2E}, {types.NetFnAppRequest, 0x30}, {types.NetFnAppRequest, 0x43},
		{types.NetFnAppRequest, 0x44}, {types.NetFnAppRequest, 0x45}, {types.NetFnAppRequest, 0x46},
		{types.NetFnAppRequest, 0x47}, {types.NetFnSensorEventRequest, 0x00}, {types.NetFnSensorEventRequest, 0x11},
		{types.NetFnSensorEventRequest, 0x12}, {types.NetFnSensorEventRequest, 0x13}, {types.NetFnSensorEventRequest, 0x14},
		{types.NetFnChassisRequest, 0x0F},
	}
	for i, seed := range []string{"", "01 03", "05 01", "81 00 00", "09 6e 65 77 00 00 00 00 00 00 00 00 00 00 00 00 00", "01 02 00"} {
		f.Add(byte(i), testutil.MustUnhex(seed))
	}
	b, _ := offlineBMC(f)
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		c := cmds[int(which)%len(cmds)]
		resp, cc := b.call(c.netfn, c.cmd, data)
		if cc == types.CodeOK && c.cmd == 0x46 && c.netfn == types.NetFnAppRequest && len(resp) != 16 {
			t.Fatalf("user name of %d bytes", len(resp))
		}
	})
}

// TestBMCResetDropsSessions: a Warm or Cold Reset is answered, then every
// RMCP+ session is gone (as a real BMC's reset drops them); the SEL stays.
func TestBMCResetDropsSessions(t *testing.T) {
	l := startLAN(t, testConfig())
	for _, cmd := range []uint8{0x03, 0x02} {
		other := dialConsole(t, "127.0.0.1", l.port, 0x51)
		other.login("op", "s3cret-op", types.PrivilegeLevelOperator)
		c := dialConsole(t, "127.0.0.1", l.port, 0x52)
		c.login("admin", "s3cret-admin", types.PrivilegeLevelAdministrator)
		if n := l.IPMI.Sessions.Count(); n < 2 {
			t.Fatalf("sessions before the reset: %d", n)
		}
		sel := len(l.SEL.Entries())
		resp, err := c.exchange(c.request(uint8(types.NetFnAppRequest), cmd, nil), lan.PayloadIPMI, 5*time.Second)
		if err != nil || len(resp) == 0 {
			t.Fatalf("reset %#x not answered: %v", cmd, err)
		}
		testutil.WaitFor(t, 5*time.Second, "sessions dropped", func() bool { return l.IPMI.Sessions.Count() == 0 })
		if got := len(l.SEL.Entries()); got != sel {
			t.Fatalf("SEL %d entries after the reset, was %d", got, sel)
		}
	}
}
