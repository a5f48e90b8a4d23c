package redfish_test

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/testutil"
)

// writeCA writes the BMC's Redfish certificate as a PEM CA file.
func writeCA(t *testing.T, der []byte) string {
	path := filepath.Join(t.TempDir(), "redfish-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSushy drives bmcsim with python3-sushy (Debian): Basic and session
// login, power state, every reset type, boot override set and read back,
// the manager, SEL entries with a decoded hvagent alert, accounts, the
// event service (a test event through SSE) and logout.
func TestSushy(t *testing.T) {
	testutil.Integration(t, "/usr/bin/python3")
	if err := exec.Command("/usr/bin/python3", "-c", "import sushy").Run(); err != nil {
		t.Fatalf("python3-sushy missing (make deps): %v", err)
	}
	b, fp := start(t)
	b.BMC.SEL.Add(oem.SELAlert{Class: oem.AlertCrash, Command: 0, RequestID: 7}.Record(oem.IANA(b.BMC.Config.IANA), 0))
	cmd := exec.Command("/usr/bin/python3", "testdata/sushy_client.py", b.RedfishURL, writeCA(t, b.RedfishCert.Raw), "vms")
	// requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE override the
	// verify= a session was given: keep them out.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REQUESTS_CA_BUNDLE=") && !strings.HasPrefix(kv, "CURL_CA_BUNDLE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "REDFISH_PASSWORD=vms-pw-2")
	out, err := cmd.CombinedOutput()
	t.Logf("sushy:\n%s", out)
	if err != nil {
		t.Fatalf("sushy client: %v", err)
	}
	for _, want := range []string{"ok basic", "ok session", "ok power_state On", "ok reset Nmi", "ok boot Pxe Once UEFI",
		"ok manager BMC 1.0", `ok sel 1 ["hvagent alert: crash`, "ok accounts admin,viewer,vms", "ok event", "ok logout"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sushy output lacks %q", want)
		}
	}
	if got := strings.Join(fp.take(), ","); got != "off,on,graceful,reset,off,on,nmi" {
		t.Errorf("power driver saw %q", got)
	}
	if s := b.Redfish.Subscribers(); s != 0 {
		t.Logf("%d SSE streams still open", s)
	}
}

// TestRedfishtool lists and reads the tree with DMTF's redfishtool (Debian),
// its OData service document and $metadata too, and resets the system.
func TestRedfishtool(t *testing.T) {
	testutil.Integration(t, "redfishtool")
	b, fp := start(t)
	host := strings.TrimPrefix(b.RedfishURL, "https://")
	cfg := writeRedfishtoolConfig(t, "vms", "vms-pw-2")
	run := func(args ...string) string {
		t.Helper()
		all := append([]string{"-r", host, "-S", "Always", "-c", cfg}, args...)
		out, err := exec.Command("redfishtool", all...).CombinedOutput()
		if err != nil {
			t.Fatalf("redfishtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"root"}, `"RedfishVersion"`},
		{[]string{"odata"}, `"url": "/redfish/v1/Systems"`},
		{[]string{"metadata"}, `<edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ComputerSystem_v1.xml">`},
		{[]string{"Systems", "list"}, "/redfish/v1/Systems/1"},
		{[]string{"Systems", "-1", "get"}, `"PowerState": "On"`},
		{[]string{"Chassis", "-1", "get"}, `"ChassisType"`},
		{[]string{"Managers", "-1", "get"}, `"FirmwareVersion"`},
		{[]string{"AccountService", "Accounts", "list"}, "vms"},
		{[]string{"AccountService", "Roles", "list"}, "Administrator"},
		{[]string{"SessionService", "get"}, `"SessionTimeout"`},
	} {
		if out := run(tc.args...); !strings.Contains(out, tc.want) {
			t.Errorf("redfishtool %s: no %s in\n%s", strings.Join(tc.args, " "), tc.want, out)
		}
	}
	run("Systems", "-1", "reset", "ForceOff")
	if got := strings.Join(fp.take(), ","); got != "off" {
		t.Errorf("after redfishtool reset ForceOff the driver saw %q", got)
	}
	if out := run("Systems", "-1", "get"); !strings.Contains(out, `"PowerState": "Off"`) {
		t.Errorf("after reset: %s", out)
	}
}

// writeRedfishtoolConfig writes the credentials as the JSON file that
// redfishtool's -c reads ({"user": …, "password": …}, redfishtoolMain.py),
// mode 0600, so that no password is in redfishtool's argv (ps shows argv to
// every user of the machine).
func writeRedfishtoolConfig(t *testing.T, user, password string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{"user": user, "password": password})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "redfishtool.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
