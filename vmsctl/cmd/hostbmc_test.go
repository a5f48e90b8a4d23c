package cmd

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/ooblab/ooblab/bmcsim/bmc"
	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/oem"
)

// power is the managed system behind bmcsim's chassis.
type power struct {
	mu sync.Mutex
	on bool
	n  int // controls received
}

var _ bmc.PowerDriver = (*power)(nil)

func (p *power) State(context.Context) (bool, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.on, true
}
func (p *power) set(on bool) error              { p.mu.Lock(); defer p.mu.Unlock(); p.on = on; p.n++; return nil }
func (p *power) controls() int                  { p.mu.Lock(); defer p.mu.Unlock(); return p.n }
func (p *power) PowerOn(context.Context) error  { return p.set(true) }
func (p *power) PowerOff(context.Context) error { return p.set(false) }
func (p *power) Reset(context.Context) error    { return p.set(true) }
func (p *power) GracefulShutdown(context.Context) error {
	return p.set(false)
}

// bmcRig is a CLI rig whose h1 has an in-process bmcsim BMC.
func bmcRig(t *testing.T) (*rig, *bmcsimtest.BMC, *power) {
	t.Helper()
	b := bmcsimtest.Start(t, bmcsimtest.Options{NoKCS: true,
		Users: []config.User{{Name: "op", Password: "op-secret-1", Privilege: "operator"}}})
	pw := &power{on: true}
	b.BMC.SetPowerDriver(pw)
	r := newRig(t)
	r.useBMC(t, b.LAN)
	return r, b, pw
}

// useBMC points h1's inventory entry at the BMC on lan, as user op with
// its password in a file beside the inventory.
func (r *rig) useBMC(t *testing.T, lan string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, "h1.pw"), []byte("op-secret-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := fileio.LoadInventory(r.inv)
	if err != nil {
		t.Fatal(err)
	}
	inv.Hosts[0].BMC = inventory.BMC{Addr: lan, User: "op", PasswordFile: "h1.pw"}
	if err := fileio.SaveInventory(inv, r.inv); err != nil {
		t.Fatal(err)
	}
}

// useConsole gives the inventory's host h1 a console account (bmc.console_user).
func (r *rig) useConsole(t *testing.T, user, pass string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, "h1-console.pw"), []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := fileio.LoadInventory(r.inv)
	if err != nil {
		t.Fatal(err)
	}
	inv.Hosts[0].BMC.ConsoleUser, inv.Hosts[0].BMC.ConsolePasswordFile = user, "h1-console.pw"
	if err := fileio.SaveInventory(inv, r.inv); err != nil {
		t.Fatal(err)
	}
}

var (
	bmcAddr   = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	latencyMs = regexp.MustCompile(`(latency_ms"?): [0-9.e-]+`)
	selTime   = regexp.MustCompile(`"time": "[^"]+"`)
	// raw holds the timestamp too (bytes 3-6).
	rawRec = regexp.MustCompile(`"raw": "([0-9a-f]{6})[0-9a-f]{8}([0-9a-f]{18})"`)
)

func normBMC(s string) string {
	s = bmcAddr.ReplaceAllString(s, "127.0.0.1:PORT")
	s = latencyMs.ReplaceAllString(s, `${1}: 0`)
	s = selTime.ReplaceAllString(s, `"time": "TIME"`)
	return rawRec.ReplaceAllString(s, `"raw": "${1}TIMESTMP${2}"`)
}

func TestGoldenHostBMC(t *testing.T) {
	r, b, pw := bmcRig(t)
	b.BMC.SEL.AddOEM(uint32(oem.DefaultIANA), [6]byte{byte(oem.AlertLocal), 6, 0x2a, 0, 0, 0})
	var std [16]byte
	std[2], std[7], std[9], std[10], std[11], std[12], std[13] = 0x02, 0x20, 0x04, 0x12, 0x30, 0x6f, 0x01
	b.BMC.SEL.Add(std)
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"host-power-status.json", []string{"-o", "json", "host", "power", "status", "h1"}},
		{"host-power-cycle.json", []string{"-o", "json", "host", "power", "cycle", "h1"}},
		{"host-power-off.yaml", []string{"-o", "yaml", "host", "power", "off", "h1"}},
		{"host-sel.json", []string{"-o", "json", "host", "sel", "h1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := r.run(t, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			checkGolden(t, tt.name, normBMC(out))
		})
	}
	if n := pw.controls(); n != 3 { // cycle = off + on, then off
		t.Fatalf("the managed system got %d controls, want 3", n)
	}
	// Table output.
	code, out, _ := r.run(t, "host", "power", "on", "h1")
	if code != 0 || !strings.Contains(out, "h1: power on sent to the BMC; power is now on") {
		t.Fatalf("power on table: exit %d\n%s", code, out)
	}
	code, out, _ = r.run(t, "host", "sel", "h1")
	if code != 0 || !strings.Contains(out, "hvagent alert: unauthorized local change, destroy, request 0000002a") ||
		!strings.Contains(out, "h1: 2 SEL record(s)") {
		t.Fatalf("sel table: exit %d\n%s", code, out)
	}
}

func TestHostBMCExitCodes(t *testing.T) {
	r, _, _ := bmcRig(t)
	os.WriteFile(filepath.Join(r.dir, "h1.pw"), []byte("wrong\n"), 0o600)
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"host", "power", "status", "h1"}, ExitRefused},
		{[]string{"host", "power", "sideways", "h1"}, ExitUsage},
		{[]string{"host", "power", "on"}, ExitUsage},
		{[]string{"host", "sel", "nosuchhost"}, ExitUsage},
		{[]string{"host", "sel", "dead"}, ExitError}, // no bmc.addr in the inventory
	} {
		if got, out, errs := r.run(t, tt.args...); got != tt.want {
			t.Errorf("%v: exit %d, want %d\n%s%s", tt.args, got, tt.want, out, errs)
		}
	}
}
