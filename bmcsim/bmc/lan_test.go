package bmc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/testutil"
)

// lanBMC is a BMC serving RMCP+ on a loopback port for the test's life.
type lanBMC struct {
	*BMC
	port int
	logs *testutil.SyncBuffer
}

func testConfig() config.Config {
	return config.Config{
		Name: "t1",
		LAN:  "127.0.0.1:0",
		Users: []config.User{
			{Name: "admin", Password: "s3cret-admin", Privilege: "administrator"},
			{Name: "op", Password: "s3cret-op", Privilege: "operator"},
			{Name: "viewer", Password: "s3cret-view", Privilege: "user"},
		},
	}
}

func startLAN(t *testing.T, cfg config.Config) *lanBMC {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := New(cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := b.ListenLAN()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, "ServeLAN", func(ctx context.Context) error { return b.ServeLAN(ctx, conn) })
	port := conn.LocalAddr().(*net.UDPAddr).Port
	return &lanBMC{BMC: b, port: port, logs: logs}
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	testutil.Integration(t, tools...)
}

// ipmitool runs the real ipmitool -I lanplus against the BMC.
func (l *lanBMC) ipmitool(t *testing.T, suite int, user, pass string, args ...string) (string, error) {
	t.Helper()
	base := []string{"-I", "lanplus", "-H", "127.0.0.1", "-p", strconv.Itoa(l.port),
		"-U", user, "-P", pass, "-C", strconv.Itoa(suite), "-R", "2", "-N", "1"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ipmitool", append(base, args...)...).CombinedOutput()
	return string(out), err
}

func (l *lanBMC) mustIpmitool(t *testing.T, suite int, args ...string) string {
	t.Helper()
	out, err := l.ipmitool(t, suite, "admin", "s3cret-admin", args...)
	if err != nil {
		t.Fatalf("ipmitool -C %d %s: %v\n%s", suite, strings.Join(args, " "), err, out)
	}
	return out
}

// freeipmi runs a FreeIPMI tool over IPMI 2.0.
func (l *lanBMC) freeipmi(t *testing.T, tool string, args ...string) string {
	t.Helper()
	base := []string{"-h", "127.0.0.1:" + strconv.Itoa(l.port), "--driver-type=LAN_2_0",
		"-u", "admin", "-p", "s3cret-admin", "--cipher-suite-id=17", "--config-file=/dev/null"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func wantAll(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

func TestIpmitoolEverydayCommands(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	for _, suite := range []int{17, 3} {
		t.Run("suite"+strconv.Itoa(suite), func(t *testing.T) {
			for _, tc := range []struct {
				args []string
				want []string
			}{
				{[]string{"mc", "info"}, []string{"IPMI Version              : 2.0", "Manufacturer ID           : 49622", "Chassis Device", "SEL Device"}},
				{[]string{"mc", "guid"}, []string{"System GUID"}},
				{[]string{"mc", "selftest"}, []string{"Selftest: passed"}},
				{[]string{"chassis", "status"}, []string{"System Power         : on"}},
				{[]string{"chassis", "power", "status"}, []string{"Chassis Power is on"}},
				{[]string{"channel", "info"}, []string{"802.3 LAN", "multi-session", "always available"}},
				{[]string{"channel", "getciphers", "ipmi"}, []string{"\n3 ", "\n17 ", "hmac_sha256"}},
				{[]string{"session", "info", "active"}, []string{"ADMINISTRATOR", "IPMIv2/RMCP+", "127.0.0.1"}},
				{[]string{"user", "list"}, []string{"admin", "op", "viewer", "OPERATOR"}},
				{[]string{"sel", "info"}, []string{"Version          : 1.5", "'Reserve'"}},
				{[]string{"lan", "print"}, []string{"IP Address              : 127.0.0.1", "MAC Address             : 02:00:"}},
				{[]string{"sdr", "list"}, nil},
				{[]string{"sdr", "elist", "mcloc"}, []string{"bmcsim t1"}},
			} {
				out := l.mustIpmitool(t, suite, tc.args...)
				wantAll(t, strings.Join(tc.args, " "), out, tc.want...)
			}
			out := l.mustIpmitool(t, suite, "channel", "getciphers", "ipmi")
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "0 ") {
					t.Errorf("cipher suite 0 offered: %q", line)
				}
			}
		})
	}
}

func TestIpmitoolChassisPower(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	steps := []struct {
		cmd, want string
		on        bool
	}{
		{"off", "Down/Off", false},
		{"on", "Up/On", true},
		{"cycle", "Cycle", true},
		{"reset", "Reset", true},
		{"soft", "Soft", false},
		{"on", "Up/On", true},
	}
	for _, s := range steps {
		out := l.mustIpmitool(t, 17, "chassis", "power", s.cmd)
		wantAll(t, "power "+s.cmd, out, s.want)
		if l.PowerOn() != s.on {
			t.Errorf("after power %s: BMC power on = %v, want %v", s.cmd, l.PowerOn(), s.on)
		}
		word := map[bool]string{true: "on", false: "off"}[s.on]
		wantAll(t, "power status", l.mustIpmitool(t, 3, "chassis", "power", "status"), "Chassis Power is "+word)
	}
}

func TestIpmitoolSEL(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	wantAll(t, "sel list", l.mustIpmitool(t, 17, "sel", "list"), "SEL has no entries")
	// Add a system event record: sensor type 0x05 (physical security), event 0x6f.
	l.mustIpmitool(t, 17, "raw", "0x0a", "0x44", "0", "0", "0x02", "0", "0", "0", "0", "0x20", "0", "0x04", "0x05", "0x01", "0x6f", "0x00", "0xff", "0xff")
	wantAll(t, "sel info", l.mustIpmitool(t, 17, "sel", "info"), "Entries          : 1")
	out := l.mustIpmitool(t, 17, "sel", "list")
	if strings.Contains(out, "SEL has no entries") || !strings.Contains(out, "Physical Security") {
		t.Errorf("sel list after add:\n%s", out)
	}
	wantAll(t, "sel clear", l.mustIpmitool(t, 3, "sel", "clear"), "Clearing SEL")
	wantAll(t, "sel info", l.mustIpmitool(t, 17, "sel", "info"), "Entries          : 0")
	if n := len(l.SEL.Entries()); n != 0 {
		t.Errorf("SEL holds %d records after clear", n)
	}
}

func TestFreeIPMITools(t *testing.T) {
	need(t, "bmc-info", "ipmi-chassis", "ipmi-sel", "ipmi-raw")
	l := startLAN(t, testConfig())
	wantAll(t, "bmc-info", l.freeipmi(t, "bmc-info"),
		"IPMI Version          : 2.0", "SEL Device            : supported", "Chassis Device        : supported",
		"System Name                   : t1", "Medium Type          : 802.3 LAN")
	wantAll(t, "ipmi-chassis status", l.freeipmi(t, "ipmi-chassis", "--get-chassis-status"), "System Power                        : on")
	l.freeipmi(t, "ipmi-chassis", "--chassis-control=power-down")
	if l.PowerOn() {
		t.Error("ipmi-chassis power-down left power on")
	}
	wantAll(t, "ipmi-chassis status", l.freeipmi(t, "ipmi-chassis", "--get-chassis-status"), "System Power                        : off")
	l.freeipmi(t, "ipmi-chassis", "--chassis-control=power-up")
	wantAll(t, "ipmi-sel info", l.freeipmi(t, "ipmi-sel", "--info"), "Number of log entries                  : 0")
	l.SEL.AddOEM(config.DefaultIANA, [6]byte{1, 2, 3, 4, 5, 6})
	wantAll(t, "ipmi-sel", l.freeipmi(t, "ipmi-sel", "--sdr-cache-recreate"), "OEM")
	wantAll(t, "ipmi-sel info", l.freeipmi(t, "ipmi-sel", "--info"), "Number of log entries                  : 1")
	l.freeipmi(t, "ipmi-sel", "--clear")
	wantAll(t, "ipmi-raw", l.freeipmi(t, "ipmi-raw", "0", "6", "1"), "rcvd: 01 00 20 01 01 00 02 8E D6 C1 00")
}

func TestRefusedLogins(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	for _, tc := range []struct {
		name       string
		args       []string
		user, pass string
	}{
		{"cipher suite 0", []string{"-C", "0"}, "admin", "s3cret-admin"},
		{"wrong password", nil, "admin", "wrong"},
		{"unknown user", nil, "mallory", "s3cret-admin"},
		{"anonymous", nil, "", ""},
	} {
		args := append([]string{"-I", "lanplus", "-H", "127.0.0.1", "-p", strconv.Itoa(l.port), "-U", tc.user, "-P", tc.pass, "-R", "1", "-N", "1"}, tc.args...)
		out, err := exec.Command("ipmitool", append(args, "mc", "info")...).CombinedOutput()
		if err == nil || strings.Contains(string(out), "Device ID") {
			t.Errorf("%s: login accepted:\n%s", tc.name, out)
		}
	}
	// IPMI 1.5 (-I lan) is refused outright.
	out, err := exec.Command("ipmitool", "-I", "lan", "-H", "127.0.0.1", "-p", strconv.Itoa(l.port), "-U", "admin", "-P", "s3cret-admin", "-R", "1", "-N", "1", "mc", "info").CombinedOutput()
	if err == nil || strings.Contains(string(out), "Device ID") {
		t.Errorf("IPMI 1.5 accepted:\n%s", out)
	}
	// A user-level account cannot change chassis power.
	out2, err := l.ipmitool(t, 17, "viewer", "s3cret-view", "-L", "USER", "chassis", "power", "off")
	if err == nil || !l.PowerOn() {
		t.Errorf("user-privilege power off was not refused:\n%s", out2)
	}
	// An operator can.
	if out, err := l.ipmitool(t, 17, "op", "s3cret-op", "-L", "OPERATOR", "chassis", "power", "off"); err != nil || l.PowerOn() {
		t.Errorf("operator power off failed: %v\n%s", err, out)
	}
}

func TestNoUserRefusesToStart(t *testing.T) {
	cfg := testConfig()
	cfg.Users = nil
	if _, err := New(cfg, slog.Default(), nil); err == nil || !strings.Contains(err.Error(), "no default credentials") {
		t.Fatalf("New without users: %v", err)
	}
	cfg = testConfig()
	cfg.CipherSuites = []int{0}
	if _, err := New(cfg, slog.Default(), nil); err == nil {
		t.Fatal("cipher suite 0 accepted")
	}
}
