package redfish_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stmcginnis/gofish/schemas"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/oem"
)

// openSSE opens an SSE stream with query q and returns a function reading
// the next event's MessageIds.
func openSSE(t *testing.T, b *bmcsimtest.BMC, q string) func() []string {
	t.Helper()
	next := openSSEAs(t, b, "viewer", "viewer-pw-3", q)
	return func() []string {
		var ids []string
		for _, e := range next() {
			ids = append(ids, e.MessageId+" "+e.Message)
		}
		return ids
	}
}

// sseEventRecord is what the tests read of an SSE event's EventRecord.
type sseEventRecord struct {
	MessageId, Message string
	MessageArgs        []string
	Oem                map[string]json.RawMessage
}

// openSSEAs opens an SSE stream as user with query q and returns a
// function reading the next event's records.
func openSSEAs(t *testing.T, b *bmcsimtest.BMC, user, pw, q string) func() []sseEventRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", b.RedfishURL+"/redfish/v1/EventService/SSE"+q, nil)
	req.SetBasicAuth(user, pw)
	resp, err := b.RedfishClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("SSE: %d %s", resp.StatusCode, body)
	}
	rd := bufio.NewReader(resp.Body)
	if _, err := rd.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	return func() []sseEventRecord {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("SSE: %v", err)
			}
			data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: ")
			if !ok {
				continue
			}
			var ev struct{ Events []sseEventRecord }
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatal(err)
			}
			return ev.Events
		}
	}
}

// TestSSEFilterAndSELEvents: a $filter on MessageId lets only power-on
// events through; a new SEL record (an hvagent alert) reaches an
// unfiltered stream as ResourceCreated with the alert decoded.
func TestSSEFilterAndSELEvents(t *testing.T) {
	b, _ := start(t)
	onOnly := openSSE(t, b, "?"+url.Values{"$filter": {"MessageId eq 'ResourceEvent.1.3.ResourcePoweredOn'"}}.Encode())
	all := openSSE(t, b, "")
	sys := system(t, connect(t, b, "vms", "vms-pw-2", true))
	for _, rt := range []schemas.ResetType{schemas.ForceOffResetType, schemas.OnResetType} {
		if _, err := sys.Reset(rt); err != nil {
			t.Fatal(err)
		}
	}
	if got := onOnly(); len(got) != 1 || !strings.HasPrefix(got[0], "ResourceEvent.1.3.ResourcePoweredOn ") {
		t.Errorf("filtered stream got %q first, want the power-on only", got)
	}
	if got := all(); !strings.HasPrefix(got[0], "ResourceEvent.1.3.ResourcePoweredOff ") {
		t.Errorf("unfiltered stream got %q first", got)
	}
	all() // the power-on
	b.BMC.SEL.Add(oem.SELAlert{Class: oem.AlertLocal, RequestID: 9}.Record(oem.IANA(b.BMC.Config.IANA), 0))
	if got := all(); !strings.HasPrefix(got[0], "ResourceEvent.1.3.ResourceCreated ") || !strings.Contains(got[0], "unauthorized local change") {
		t.Errorf("SEL event %q", got)
	}
	hc := b.RedfishClient()
	status, _, data := do(t, hc, b, "GET", "/redfish/v1/EventService/SSE?%24filter=Severity+eq+%27OK%27", "viewer", "viewer-pw-3", "")
	wantError(t, "unsupported filter", status, data, 400, "QueryParameterValueFormatError")
}

// TestSubscriptionDeliveryRetries: a subscription's destination refuses
// the first POST; the event is delivered on the retry, once, with the
// subscription's Context.
func TestSubscriptionDeliveryRetries(t *testing.T) {
	b, _ := start(t)
	var mu sync.Mutex
	var got []string
	calls := 0
	arrived := make(chan struct{}, 4)
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		n := calls
		if n > 1 {
			got = append(got, string(body))
		}
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		arrived <- struct{}{}
	}))
	defer dest.Close()
	hc := b.RedfishClient()
	status, _, data := do(t, hc, b, "PATCH", "/redfish/v1/EventService", "admin", "admin-pw-1", `{"DeliveryRetryIntervalSeconds":1}`)
	if status != 200 {
		t.Fatalf("PATCH EventService: %d %s", status, data)
	}
	status, h, data := do(t, hc, b, "POST", "/redfish/v1/EventService/Subscriptions", "vms", "vms-pw-2",
		`{"Destination":"`+dest.URL+`/events","Protocol":"Redfish","Context":"vms-1","RegistryPrefixes":["ResourceEvent"]}`)
	if status != 201 || h.Get("Location") == "" {
		t.Fatalf("POST subscription: %d %s", status, data)
	}
	status, _, data = do(t, hc, b, "POST", "/redfish/v1/EventService/Subscriptions", "vms", "vms-pw-2", `{"Destination":"file:///etc/passwd"}`)
	wantError(t, "file destination", status, data, 400, "PropertyValueNotInList")
	status, _, data = do(t, hc, b, "POST", "/redfish/v1/EventService/Subscriptions", "viewer", "viewer-pw-3", `{"Destination":"`+dest.URL+`"}`)
	wantError(t, "ReadOnly subscribes", status, data, 403, "InsufficientPrivilege")

	if _, err := system(t, connect(t, b, "vms", "vms-pw-2", true)).Reset(schemas.ForceOffResetType); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("event not delivered")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 || len(got) != 1 || !strings.Contains(got[0], `"Context":"vms-1"`) || !strings.Contains(got[0], "ResourcePoweredOff") {
		t.Errorf("%d calls, delivered %q", calls, got)
	}
	// DELETE ends it.
	loc := strings.TrimPrefix(h.Get("Location"), b.RedfishURL)
	if status, _, data := do(t, hc, b, "DELETE", loc, "vms", "vms-pw-2", ""); status != 204 {
		t.Errorf("DELETE subscription: %d %s", status, data)
	}
}

// TestSSEPowerChangedOutsideRedfish: the guest powering itself off (the
// driver's state changes, no Redfish action) reaches an SSE stream, once,
// within the watcher's poll.
func TestSSEPowerChangedOutsideRedfish(t *testing.T) {
	b, fp := start(t)
	next := openSSE(t, b, "")
	fp.op("off", false) // e.g. the guest ran poweroff, or ipmitool chassis power off
	if got := next(); len(got) != 1 || !strings.HasPrefix(got[0], "ResourceEvent.1.3.ResourcePoweredOff ") {
		t.Fatalf("event %q", got)
	}
	// A Redfish On is reported by the action, not again by the watcher.
	if _, err := system(t, connect(t, b, "vms", "vms-pw-2", true)).Reset(schemas.OnResetType); err != nil {
		t.Fatal(err)
	}
	if got := next(); !strings.HasPrefix(got[0], "ResourceEvent.1.3.ResourcePoweredOn ") {
		t.Fatalf("event %q", got)
	}
	_, _, _ = do(t, b.RedfishClient(), b, "POST", "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent", "vms", "vms-pw-2", `{"Message":"marker"}`)
	if got := next(); !strings.Contains(got[0], "marker") {
		t.Errorf("after the power-on the stream got %q, want the marker (a duplicate power event?)", got)
	}
}
