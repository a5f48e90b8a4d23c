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
	"github.com/ooblab/ooblab/internal/record"
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

// sseFrame is one event as a stream carries it.
type sseFrame struct {
	id      string
	records []sseEventRecord
}

// streamFrom opens an SSE stream as user with the Last-Event-ID lastID
// ("" for none) and returns a function reading its next event.
func streamFrom(t *testing.T, b *bmcsimtest.BMC, user, pw, lastID string) (next func() sseFrame, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, "GET", b.RedfishURL+"/redfish/v1/EventService/SSE", nil)
	req.SetBasicAuth(user, pw)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := b.RedfishClient().Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		cancel()
		t.Fatalf("SSE: %d", resp.StatusCode)
	}
	stop = func() { cancel(); resp.Body.Close() }
	t.Cleanup(stop)
	rd := bufio.NewReader(resp.Body)
	return func() sseFrame {
		t.Helper()
		var f sseFrame
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("SSE: %v", err)
			}
			line = strings.TrimSpace(line)
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				f.id = id
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var ev struct{ Events []sseEventRecord }
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					t.Fatal(err)
				}
				f.records = ev.Events
				return f
			}
		}
	}, stop
}

// TestSSELastEventIDReplay: a client that reconnects with Last-Event-ID
// first gets the events it missed while away, in order, then live ones;
// an id this BMC never gave out (a restart) gets every kept event; the
// replay keeps to the stream's user: a Queue 2 record travels again to its
// owner only.
func TestSSELastEventIDReplay(t *testing.T) {
	b, _ := start(t)
	iana := oem.IANA(b.BMC.Config.IANA)
	sel := func(req uint32) {
		b.BMC.SEL.Add(oem.SELAlert{Class: oem.AlertLocal, RequestID: req}.Record(iana, 0))
	}
	next, stop := streamFrom(t, b, "vms", "vms-pw-2", "")
	sel(1)
	first := next()
	stop()
	// Away: a SEL entry and a record for vms's reader.
	sel(2)
	if err := b.Queues.Queue2().Bind("vms", 0x42); err != nil {
		t.Fatal(err)
	}
	if err := b.Queues.Queue2().Write(record.Record{Requester: 0x42, MsgID: 9, Count: 1, Payload: []byte("answer")}); err != nil {
		t.Fatal(err)
	}
	hasRecord := func(f sseFrame) bool {
		return len(f.records) == 1 && f.records[0].Oem != nil
	}
	again, _ := streamFrom(t, b, "vms", "vms-pw-2", first.id)
	got := []sseFrame{again(), again()}
	if got[0].records[0].MessageId != "ResourceEvent.1.3.ResourceCreated" || got[1].records[0].MessageId != "Ooblab.1.0.Queue2Record" {
		t.Fatalf("replay after %s: %+v, want the SEL entry then the Queue 2 record", first.id, got)
	}
	if !hasRecord(got[1]) {
		t.Errorf("the owner's replay lost the record: %+v", got[1])
	}
	if !(got[0].id > first.id && got[1].id > got[0].id) {
		t.Errorf("ids %s, %s after %s: not increasing", got[0].id, got[1].id, first.id)
	}
	sel(3)
	if live := again(); live.records[0].MessageId != "ResourceEvent.1.3.ResourceCreated" || live.id <= got[1].id {
		t.Errorf("after the replay, live event %+v", live)
	}
	// Another user, from an id of another process: everything kept, the
	// Queue 2 record without its bytes.
	other, _ := streamFrom(t, b, "viewer", "viewer-pw-3", "1")
	var n int
	for {
		f := other()
		n++
		if f.records[0].MessageId == "Ooblab.1.0.Queue2Record" {
			if hasRecord(f) {
				t.Errorf("the replay gave viewer vms's record: %+v", f)
			}
			break
		}
	}
	if n != 3 {
		t.Errorf("viewer from a foreign id got %d events up to the Queue 2 record, want 3 (SEL 1, SEL 2, the record)", n)
	}
}
