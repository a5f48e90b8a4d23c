package client

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmc"
	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/inventory"
)

// fakePower is the managed system behind bmcsim's chassis: it records the
// controls it gets and reports its state.
type fakePower struct {
	mu    sync.Mutex
	on    bool
	calls []string
	slow  time.Duration // PowerOn takes this long (a BMC resetting its host)
}

var _ bmc.PowerDriver = (*fakePower)(nil)

func (f *fakePower) State(context.Context) (bool, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on, true
}

func (f *fakePower) set(call string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	f.on = on
	return nil
}

func (f *fakePower) PowerOn(context.Context) error {
	f.mu.Lock()
	d := f.slow
	f.mu.Unlock()
	time.Sleep(d) // the BMC's handler at work: what the client must wait out
	return f.set("on", true)
}
func (f *fakePower) PowerOff(context.Context) error         { return f.set("off", false) }
func (f *fakePower) Reset(context.Context) error            { return f.set("reset", true) }
func (f *fakePower) GracefulShutdown(context.Context) error { return f.set("graceful", false) }

func (f *fakePower) took() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// bmcClient is a Client whose inventory's h1 is an in-process bmcsim with
// a fake power driver; password is the one the inventory gives.
func bmcClient(t *testing.T, password string) (*Client, *bmcsimtest.BMC, *fakePower) {
	t.Helper()
	b := bmcsimtest.Start(t, bmcsimtest.Options{NoKCS: true,
		Users: []config.User{{Name: "op", Password: "op-secret-1", Privilege: "operator"}}})
	fp := &fakePower{on: true}
	b.BMC.SetPowerDriver(fp)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "h1.pw"), []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inv := &inventory.Inventory{Principal: "ops", Dir: dir, Hosts: []inventory.Host{{Name: "h1", HostID: "hv1",
		BMC: inventory.BMC{Addr: b.LAN, User: "op", PasswordFile: "h1.pw"}}}}
	c, err := New(inv, Options{Via: ViaOOB})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, b, fp
}

func TestHostPowerThroughBMCSim(t *testing.T) {
	c, _, fp := bmcClient(t, "op-secret-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := c.HostPower(ctx, "h1")
	if err != nil || !st.On {
		t.Fatalf("status = %+v, %v; want on", st, err)
	}
	for _, tt := range []struct {
		a      PowerAction
		call   []string // what the managed system gets
		wantOn bool
	}{
		{PowerOff, []string{"off"}, false},
		{PowerOn, []string{"on"}, true},
		{PowerCycle, []string{"off", "on"}, true},
		{PowerReset, []string{"reset"}, true},
		{PowerSoft, []string{"graceful"}, false},
	} {
		before := len(fp.took())
		if err := c.HostPowerControl(ctx, "h1", tt.a); err != nil {
			t.Fatalf("power %s: %v", tt.a, err)
		}
		got := fp.took()[before:]
		if len(got) != len(tt.call) || (len(got) > 0 && got[0] != tt.call[0]) || (len(got) > 1 && got[1] != tt.call[1]) {
			t.Fatalf("power %s: managed system got %v, want %v", tt.a, got, tt.call)
		}
		st, err := c.HostPower(ctx, "h1")
		if err != nil || st.On != tt.wantOn {
			t.Fatalf("after %s: status %+v, %v; want on=%v", tt.a, st, err, tt.wantOn)
		}
	}
	if err := c.HostPowerControl(ctx, "h1", "sideways"); err == nil {
		t.Fatal("unknown action accepted")
	}
}

// TestHostPowerSlowBMC: a chassis control the BMC takes 1.5 s to act on
// (bmcsim resetting a PVH guest takes ~1 s) is answered, and run once.
func TestHostPowerSlowBMC(t *testing.T) {
	c, _, fp := bmcClient(t, "op-secret-1")
	fp.mu.Lock()
	fp.on, fp.slow = false, 1500*time.Millisecond
	fp.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.HostPowerControl(ctx, "h1", PowerOn); err != nil {
		t.Fatalf("power on a slow BMC: %v", err)
	}
	if got := fp.took(); len(got) != 1 || got[0] != "on" {
		t.Fatalf("the managed system got %v, want one power on", got)
	}
}

func TestHostSELThroughBMCSim(t *testing.T) {
	c, b, _ := bmcClient(t, "op-secret-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := c.HostSEL(ctx, "h1")
	if err != nil || len(got) != 0 {
		t.Fatalf("empty SEL: %+v, %v", got, err)
	}
	// An hvagent alert record (OEM timestamped) and a standard event.
	b.BMC.SEL.AddOEM(config.DefaultIANA, [6]byte{0x05, 0x06, 0x2a, 0, 0, 0})
	var std [16]byte
	std[2] = 0x02
	std[7], std[9], std[10], std[11], std[12] = 0x20, 0x04, 0x12, 0x30, 0x6f // BMC, EvM 4, System Event, sensor 0x30, sensor-specific
	b.BMC.SEL.Add(std)
	got, err = c.HostSEL(ctx, "h1")
	if err != nil || len(got) != 2 {
		t.Fatalf("SEL = %+v, %v; want 2 records", got, err)
	}
	oem := got[0]
	if oem.Type != 0xC0 || oem.ManufacturerID != config.DefaultIANA || oem.OEMData[0] != 0x05 || oem.OEMData[2] != 0x2a ||
		oem.Time.IsZero() || time.Since(oem.Time) > time.Hour || len(oem.Raw) != 16 ||
		oem.Alert == nil || oem.Alert.Class.String() != "unauthorized local change" || oem.Alert.Command != 6 || oem.Alert.RequestID != 42 {
		t.Fatalf("OEM record %+v", oem)
	}
	if s := got[1]; s.Alert != nil || s.Type != 0x02 || s.SensorNumber != 0x30 || s.GeneratorID != 0x20 || s.SensorType == "" || s.ID == oem.ID {
		t.Fatalf("standard record %+v", s)
	}
}

func TestHostPowerWrongPasswordIsUnauthorized(t *testing.T) {
	c, _, fp := bmcClient(t, "wrong")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.HostPowerControl(ctx, "h1", PowerOff); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if len(fp.took()) != 0 {
		t.Fatalf("a refused user reached the chassis: %v", fp.took())
	}
}

func TestHostPowerNoBMCIsUnreachable(t *testing.T) {
	// A UDP socket that never answers: a BMC that is down.
	mute, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	inv := &inventory.Inventory{Principal: "ops", Hosts: []inventory.Host{{Name: "h1", HostID: "hv1",
		BMC: inventory.BMC{Addr: mute.LocalAddr().String(), User: "op"}}}}
	c, err := New(inv, Options{Via: ViaOOB})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.HostPower(ctx, "h1"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
}
