package redfish_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"

	"github.com/ooblab/ooblab/bmcsim/app"
	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/oem"
)

// fakePower is the unit-test seam for the power driver: it records the
// operations and keeps the state.
type fakePower struct {
	mu  sync.Mutex
	on  bool
	ops []string
}

func (f *fakePower) State(context.Context) (bool, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on, true
}

func (f *fakePower) op(name string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, name)
	f.on = on
	return nil
}

func (f *fakePower) PowerOn(context.Context) error  { return f.op("on", true) }
func (f *fakePower) PowerOff(context.Context) error { return f.op("off", false) }
func (f *fakePower) Reset(context.Context) error    { return f.op("reset", true) }
func (f *fakePower) GracefulShutdown(context.Context) error {
	return f.op("graceful", false)
}
func (f *fakePower) Diag(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "nmi")
	return nil
}

func (f *fakePower) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

var testUsers = []config.User{
	{Name: "admin", Password: "admin-pw-1", Privilege: "administrator"},
	{Name: "vms", Password: "vms-pw-2", Privilege: "operator"},
	{Name: "viewer", Password: "viewer-pw-3", Privilege: "user"},
}

// start runs a bmcsim with Redfish and a fake power driver.
func start(t testing.TB) (*bmcsimtest.BMC, *fakePower) {
	t.Helper()
	fp := &fakePower{on: true}
	b := bmcsimtest.Start(t, bmcsimtest.Options{Redfish: true, NoKCS: true, NoSerial: true,
		Users:       append([]config.User(nil), testUsers...),
		BeforeServe: func(h *app.Host) { h.BMC.SetPowerDriver(fp) }})
	return b, fp
}

func connect(t testing.TB, b *bmcsimtest.BMC, user, pw string, basic bool) *gofish.APIClient {
	t.Helper()
	c, err := gofish.Connect(gofish.ClientConfig{Endpoint: b.RedfishURL, Username: user, Password: pw,
		HTTPClient: b.RedfishClient(), BasicAuth: basic})
	if err != nil {
		t.Fatalf("gofish connect as %s: %v", user, err)
	}
	return c
}

func system(t testing.TB, c *gofish.APIClient) *schemas.ComputerSystem {
	t.Helper()
	ss, err := c.Service.Systems()
	if err != nil || len(ss) != 1 {
		t.Fatalf("systems: %v (%d)", err, len(ss))
	}
	return ss[0]
}

func TestGofishSessionAndPower(t *testing.T) {
	b, fp := start(t)
	c := connect(t, b, "vms", "vms-pw-2", false)
	sys := system(t, c)
	if sys.PowerState != schemas.OnPowerState {
		t.Fatalf("PowerState %q, want On", sys.PowerState)
	}
	want := map[schemas.ResetType][]string{
		schemas.ForceOffResetType:         {"off"},
		schemas.OnResetType:               {"on"},
		schemas.GracefulShutdownResetType: {"graceful"},
		schemas.ForceRestartResetType:     {"reset"},
		schemas.PowerCycleResetType:       {"off", "on"},
		schemas.NmiResetType:              {"nmi"},
	}
	for _, rt := range []schemas.ResetType{schemas.ForceOffResetType, schemas.OnResetType, schemas.GracefulShutdownResetType,
		schemas.ForceRestartResetType, schemas.PowerCycleResetType, schemas.NmiResetType} {
		if _, err := sys.Reset(rt); err != nil {
			t.Fatalf("reset %s: %v", rt, err)
		}
		if got := strings.Join(fp.take(), ","); got != strings.Join(want[rt], ",") {
			t.Errorf("reset %s: driver did %q, want %q", rt, got, strings.Join(want[rt], ","))
		}
	}
	fp.op("off", false)
	fp.take()
	if s := system(t, c); s.PowerState != schemas.OffPowerState {
		t.Errorf("PowerState %q after the driver went off, want Off", s.PowerState)
	}
	c.Logout()
	// The token is gone: a request with it is refused.
	req, _ := http.NewRequest("GET", b.RedfishURL+"/redfish/v1/Systems/1", nil)
	req.Header.Set("X-Auth-Token", "0000")
	resp, err := b.RedfishClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bogus token: status %d, want 401", resp.StatusCode)
	}
}

func TestGofishBasicAuthAndPrivileges(t *testing.T) {
	b, fp := start(t)
	viewer := connect(t, b, "viewer", "viewer-pw-3", true)
	sys := system(t, viewer)
	if _, err := sys.Reset(schemas.ForceOffResetType); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("ReadOnly reset: %v, want a 403", err)
	}
	if ops := fp.take(); len(ops) != 0 {
		t.Errorf("ReadOnly reset reached the driver: %v", ops)
	}
	if _, err := gofish.Connect(gofish.ClientConfig{Endpoint: b.RedfishURL, Username: "viewer", Password: "wrong",
		HTTPClient: b.RedfishClient()}); err == nil {
		t.Error("session with a wrong password opened")
	}
}

func TestGofishBootOverrideSharedWithIPMI(t *testing.T) {
	b, _ := start(t)
	c := connect(t, b, "vms", "vms-pw-2", false)
	sys := system(t, c)
	if sys.Boot.BootSourceOverrideEnabled != schemas.DisabledBootSourceOverrideEnabled {
		t.Errorf("initial override %q", sys.Boot.BootSourceOverrideEnabled)
	}
	if len(sys.Boot.AllowableBootSourceOverrideTargetValues) == 0 {
		t.Error("no BootSourceOverrideTarget@Redfish.AllowableValues")
	}
	err := sys.SetBoot(&schemas.Boot{BootSourceOverrideTarget: schemas.PxeBootSource,
		BootSourceOverrideEnabled: schemas.OnceBootSourceOverrideEnabled, BootSourceOverrideMode: schemas.UEFIBootSourceOverrideMode})
	if err != nil {
		t.Fatal(err)
	}
	got := system(t, c).Boot
	if got.BootSourceOverrideTarget != schemas.PxeBootSource || got.BootSourceOverrideEnabled != schemas.OnceBootSourceOverrideEnabled ||
		got.BootSourceOverrideMode != schemas.UEFIBootSourceOverrideMode {
		t.Errorf("read back %+v", got)
	}
	// What Get System Boot Options parameter 5 answers: valid, once, EFI; PXE.
	if f := b.BMC.BootFlags(); f[0] != 0xA0 || f[1] != 0x04 {
		t.Errorf("IPMI boot flags % x, want a0 04 …", f)
	}
	// Set as Set System Boot Options does (hard drive, persistent, legacy),
	// read over Redfish.
	b.BMC.SetBootFlags([5]byte{0xC0, 0x08})
	if got := system(t, c).Boot; got.BootSourceOverrideTarget != schemas.HddBootSource || got.BootSourceOverrideEnabled != schemas.ContinuousBootSourceOverrideEnabled {
		t.Errorf("after IPMI set: %+v", got)
	}
	// A once-only override is used by the next boot a Reset makes, as by
	// ipmitool chassis power reset.
	sys = system(t, c)
	if err := sys.SetBoot(&schemas.Boot{BootSourceOverrideTarget: schemas.PxeBootSource, BootSourceOverrideEnabled: schemas.OnceBootSourceOverrideEnabled}); err != nil {
		t.Fatal(err)
	}
	if _, err := system(t, c).Reset(schemas.ForceRestartResetType); err != nil {
		t.Fatal(err)
	}
	if got := system(t, c).Boot.BootSourceOverrideEnabled; got != schemas.DisabledBootSourceOverrideEnabled {
		t.Errorf("once-only override after ForceRestart: %s, want Disabled", got)
	}
}

func TestGofishSELAndAccounts(t *testing.T) {
	b, _ := start(t)
	iana := oem.IANA(b.BMC.Config.IANA)
	alert := oem.SELAlert{Class: oem.AlertLocal, Command: 3, RequestID: 0x1234}
	b.BMC.SEL.Add(alert.Record(iana, 0))
	c := connect(t, b, "admin", "admin-pw-1", false)
	ms, err := c.Service.Managers()
	if err != nil || len(ms) != 1 {
		t.Fatal(err)
	}
	ls, err := ms[0].LogServices()
	if err != nil || len(ls) != 1 {
		t.Fatalf("log services: %v", err)
	}
	es, err := ls[0].Entries()
	if err != nil || len(es) != 1 {
		t.Fatalf("entries: %v (%d)", err, len(es))
	}
	if !strings.Contains(es[0].Message, "unauthorized local change") {
		t.Errorf("alert entry message %q", es[0].Message)
	}
	if _, err := ls[0].ClearLog(""); err != nil {
		t.Fatal(err)
	}
	if n := len(b.BMC.SEL.Entries()); n != 0 {
		t.Errorf("%d SEL records after ClearLog", n)
	}
	as, err := c.Service.AccountService()
	if err != nil {
		t.Fatal(err)
	}
	accts, err := as.Accounts()
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, a := range accts {
		roles[a.UserName] = a.RoleID
	}
	if roles["admin"] != "Administrator" || roles["vms"] != "Operator" || roles["viewer"] != "ReadOnly" {
		t.Errorf("roles %v", roles)
	}
}

// TestSSEPowerEvent: a power change made over Redfish reaches an SSE
// subscriber as a ResourceEvent.
func TestSSEPowerEvent(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.RedfishURL+"/redfish/v1/EventService/SSE", nil)
	req.SetBasicAuth("viewer", "viewer-pw-3")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("SSE content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	if _, err := rd.ReadString('\n'); err != nil { // the opening comment: subscribed
		t.Fatal(err)
	}
	c := connect(t, b, "vms", "vms-pw-2", true)
	if _, err := system(t, c).Reset(schemas.ForceOffResetType); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("SSE stream: %v", err)
		}
		data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			OdataType string `json:"@odata.type"`
			Events    []struct {
				MessageID         string `json:"MessageId"`
				OriginOfCondition struct {
					ID string `json:"@odata.id"`
				}
			}
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.OdataType != "#Event.v1_9_0.Event" || len(ev.Events) != 1 || ev.Events[0].MessageID != "ResourceEvent.1.3.ResourcePoweredOff" ||
			ev.Events[0].OriginOfCondition.ID != "/redfish/v1/Systems/1" {
			t.Fatalf("event %s", data)
		}
		return
	}
}
