package redfish_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/redfish"
)

type rfError struct {
	Error struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Extended []struct {
			MessageID string `json:"MessageId"`
		} `json:"@Message.ExtendedInfo"`
	} `json:"error"`
}

// do sends one request as user (Basic) and returns status, headers, body.
func do(t *testing.T, hc *http.Client, b *bmcsimtest.BMC, method, path, user, pw, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, b.RedfishURL+path, strings.NewReader(body))
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

func wantError(t *testing.T, what string, status int, data []byte, wantStatus int, wantKey string) {
	t.Helper()
	var e rfError
	if err := json.Unmarshal(data, &e); err != nil {
		t.Errorf("%s: body not a Redfish error: %v: %s", what, err, data)
		return
	}
	want := "Base.1.19." + wantKey
	if status != wantStatus || e.Error.Code != want || len(e.Error.Extended) != 1 || e.Error.Extended[0].MessageID != want {
		t.Errorf("%s: %d %s, want %d %s (%s)", what, status, e.Error.Code, wantStatus, want, data)
	}
}

func TestBadInput(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	const sys = "/redfish/v1/Systems/1"
	for _, tt := range []struct {
		name, body string
		status     int
		key        string
	}{
		{"malformed", `{"Boot":`, 400, "MalformedJSON"},
		{"not an object", `[1,2]`, 400, "MalformedJSON"},
		{"trailing data", `{} {}`, 400, "MalformedJSON"},
		{"wrong type", `{"Boot":{"BootSourceOverrideTarget":7}}`, 400, "PropertyValueTypeError"},
		{"wrong type object", `{"Boot":"Pxe"}`, 400, "PropertyValueTypeError"},
		{"unknown property", `{"PowerState":"Off"}`, 400, "PropertyUnknown"},
		{"unknown nested", `{"Boot":{"BootOrder":["Pxe"]}}`, 400, "PropertyUnknown"},
		{"wrong case", `{"boot":{"BootSourceOverrideTarget":"Pxe"}}`, 400, "PropertyUnknown"},
		{"not in list", `{"Boot":{"BootSourceOverrideTarget":"Usb"}}`, 400, "PropertyValueNotInList"},
		{"oversized", `{"Boot":{"BootSourceOverrideTarget":"` + strings.Repeat("x", redfish.MaxBody) + `"}}`, 413, "RequestBodyTooLarge"},
	} {
		status, _, data := do(t, hc, b, "PATCH", sys, "vms", "vms-pw-2", tt.body)
		wantError(t, tt.name, status, data, tt.status, tt.key)
	}
	if got := b.BMC.BootFlags(); got[0] != 0 || got[1] != 0 {
		t.Errorf("a refused PATCH changed the boot flags: %+v", got)
	}

	// A PATCH with a stale ETag is refused and changes nothing.
	_, h, _ := do(t, hc, b, "GET", sys, "vms", "vms-pw-2", "")
	tag := h.Get("ETag")
	if tag == "" {
		t.Fatal("no ETag on Systems/1")
	}
	status, _, data := do(t, hc, b, "PATCH", sys, "vms", "vms-pw-2", `{"Boot":{"BootSourceOverrideTarget":"Cd"}}`, "If-Match", `W/"0000000000000000"`)
	wantError(t, "stale If-Match", status, data, 412, "PreconditionFailed")
	if got := b.BMC.BootFlags(); got[1] != 0 {
		t.Errorf("a 412 PATCH changed the boot flags: %+v", got)
	}
	status, h2, data := do(t, hc, b, "PATCH", sys, "vms", "vms-pw-2", `{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once"}}`, "If-Match", tag)
	if status != 200 || h2.Get("ETag") == tag {
		t.Errorf("PATCH with the current ETag: %d, ETag %q (was %q): %s", status, h2.Get("ETag"), tag, data)
	}

	// Methods, paths, actions.
	status, h, data = do(t, hc, b, "DELETE", sys, "vms", "vms-pw-2", "")
	wantError(t, "DELETE system", status, data, 405, "OperationNotAllowed")
	if h.Get("Allow") != "GET, HEAD, PATCH" {
		t.Errorf("Allow %q", h.Get("Allow"))
	}
	if h.Get("OData-Version") != "4.0" {
		t.Errorf("OData-Version %q", h.Get("OData-Version"))
	}
	status, _, data = do(t, hc, b, "GET", "/redfish/v1/Systems/2", "vms", "vms-pw-2", "")
	wantError(t, "unknown system", status, data, 404, "ResourceNotFound")
	status, _, data = do(t, hc, b, "POST", sys+"/Actions/ComputerSystem.Reset", "vms", "vms-pw-2", `{}`)
	wantError(t, "reset without type", status, data, 400, "ActionParameterMissing")
	status, _, data = do(t, hc, b, "POST", sys+"/Actions/ComputerSystem.Reset", "vms", "vms-pw-2", `{"ResetType":"Explode"}`)
	wantError(t, "reset bogus type", status, data, 400, "ActionParameterValueNotInList")
	status, _, data = do(t, hc, b, "GET", sys, "", "", "")
	wantError(t, "no credentials", status, data, 401, "NoValidSession")
	status, _, data = do(t, hc, b, "POST", "/redfish/v1/SessionService/Sessions", "", "", `{"UserName":"vms"}`)
	wantError(t, "session without password", status, data, 400, "PropertyMissing")
}

func TestAccountsAdminOnly(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	const vmsAcct = "/redfish/v1/AccountService/Accounts/3"
	status, _, data := do(t, hc, b, "PATCH", vmsAcct, "vms", "vms-pw-2", `{"Password":"stolen"}`)
	wantError(t, "operator changes a password", status, data, 403, "InsufficientPrivilege")
	status, _, data = do(t, hc, b, "PATCH", vmsAcct, "admin", "admin-pw-1", `{"RoleId":"Administrator"}`)
	wantError(t, "role change", status, data, 400, "PropertyUnknown")
	status, _, data = do(t, hc, b, "PATCH", vmsAcct, "admin", "admin-pw-1", `{"Password":"vms-new-pw"}`)
	if status != 200 {
		t.Fatalf("admin password change: %d %s", status, data)
	}
	if status, _, _ = do(t, hc, b, "GET", "/redfish/v1/Systems/1", "vms", "vms-pw-2", ""); status != 401 {
		t.Errorf("old password: %d, want 401", status)
	}
	if status, _, _ = do(t, hc, b, "GET", "/redfish/v1/Systems/1", "vms", "vms-new-pw", ""); status != 200 {
		t.Errorf("new password: %d, want 200", status)
	}
	// The IPMI side has the new password too: one user store.
	u, err := b.BMC.IPMI.Users.GetByName("vms")
	if err != nil || !u.VerifyPassword([]byte("vms-new-pw")) {
		t.Errorf("IPMI user store does not have the new password: %v", err)
	}
}

// TestWrongLoginFlood: 1,000 wrong logins from one address lock that
// address only; the right password from another address logs in at once,
// and the login book holds one entry.
func TestWrongLoginFlood(t *testing.T) {
	b, _ := start(t)
	attacker := b.RedfishClient()
	attacker.Transport.(*http.Transport).DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	hc := b.RedfishClient()
	for i := range 1000 {
		status, _, data := do(t, attacker, b, "POST", "/redfish/v1/SessionService/Sessions", "", "",
			`{"UserName":"vms","Password":"guess`+itoa(i)+`"}`)
		if status != 401 {
			t.Fatalf("wrong login %d: %d %s", i, status, data)
		}
	}
	// Locked from the attacker's address even with the right password...
	if status, _, _ := do(t, attacker, b, "GET", "/redfish/v1/Systems/1", "vms", "vms-pw-2", ""); status != 401 {
		t.Errorf("right password from the locked address: %d, want 401", status)
	}
	// ...and not from the VMS's.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", b.RedfishURL+"/redfish/v1/SessionService/Sessions",
		strings.NewReader(`{"UserName":"vms","Password":"vms-pw-2"}`))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("X-Auth-Token") == "" || resp.Header.Get("Location") == "" {
		t.Errorf("right source login: %d, token %t, location %q", resp.StatusCode, resp.Header.Get("X-Auth-Token") != "", resp.Header.Get("Location"))
	}
	if n := redfish.LoginBookSize(b.Redfish); n != 1 {
		t.Errorf("login book holds %d entries after 1,000 wrong logins of one user from one address, want 1", n)
	}
	// One book with RMCP+: the user is slowed there too, for sources with
	// failures only.
	if !b.BMC.Slowed("vms") {
		t.Error("Redfish failures did not count in the BMC's (RMCP+) login book")
	}
	if w := b.BMC.LoginWait("vms", "127.0.0.1"); w != 0 {
		t.Errorf("the clean source waits %v on RMCP+", w)
	}
}

// TestLoginBackedOffByRMCPFailures: a source whose logins failed in the
// BMC's shared book (as RMCP+ handshakes do) is refused on Redfish, even
// with the right password, with a Retry-After within the backoff bound.
func TestLoginBackedOffByRMCPFailures(t *testing.T) {
	b, _ := start(t)
	for range 10 {
		w, tk := b.BMC.BeginLogin("vms", "127.0.0.3")
		if w > 0 {
			break
		}
		b.BMC.EndLogin("vms", "127.0.0.3", tk, false)
	}
	hc := b.RedfishClient()
	hc.Transport.(*http.Transport).DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}).DialContext
	status, h, data := do(t, hc, b, "GET", "/redfish/v1/Systems/1", "vms", "vms-pw-2", "")
	wantError(t, "backed-off source", status, data, 401, "NoValidSession")
	if ra, _ := strconv.Atoi(h.Get("Retry-After")); ra < 1 || time.Duration(ra)*time.Second > b.BMC.Config.LoginBackoffMax.Duration+time.Second {
		t.Errorf("Retry-After %q", h.Get("Retry-After"))
	}
	if status, _, _ := do(t, b.RedfishClient(), b, "GET", "/redfish/v1/Systems/1", "vms", "vms-pw-2", ""); status != 200 {
		t.Errorf("the clean source: %d", status)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestParallelBasicFromOneSource: a VMS sending 100 requests at once with
// HTTP Basic from one address gets every one served: its own logins in
// flight never back it off in the BMC's shared login book.
func TestParallelBasicFromOneSource(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	var wg sync.WaitGroup
	var refused atomic.Int32
	for range 100 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", b.RedfishURL+"/redfish/v1/Systems/1", nil)
			req.SetBasicAuth("vms", "vms-pw-2")
			resp, err := hc.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Errorf("%d of 100 parallel requests with the right password refused", n)
	}
}
