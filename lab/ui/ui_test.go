package ui

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
	"github.com/ooblab/ooblab/vmsctl/client/clienttest"
)

const token = "0123456789abcdef0123456789abcdef"

// agentWithWeb1 plays an agent with web1.
func agentWithWeb1(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
	return &vmsg.Reply{RequestID: req.ID, OK: true, VMs: []vmsg.VMState{{Name: "web1", State: "shut off"}}}, nil
}

// newTest is a page over fake channels that play an agent with web1.
func newTest(t *testing.T) (*Server, *httptest.Server, *clienttest.Fake) {
	t.Helper()
	return newTestAgent(t, agentWithWeb1)
}

// newTestAgent is a page over fake channels answered by handle.
func newTestAgent(t *testing.T, handle func(context.Context, string, *vmsg.Request) (vmsg.Message, error)) (*Server, *httptest.Server, *clienttest.Fake) {
	t.Helper()
	inv := &inventory.Inventory{Principal: "ops", Hosts: []inventory.Host{{Name: "h1", HostID: "hv1"}}}
	fake := &clienttest.Fake{ChannelName: client.ViaVMMI, Handle: handle}
	clients := map[string]*client.Client{}
	for _, via := range []string{client.ViaAuto, client.ViaVMMI, client.ViaOOB} {
		c, err := client.New(inv, client.Options{Via: via, VMMI: fake, OOB: fake})
		if err != nil {
			t.Fatal(err)
		}
		clients[via] = c
	}
	s, err := New(Config{Inventory: inv, Token: token, Clients: clients,
		SetLink: func(context.Context, string, bool) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close() })
	return s, ts, fake
}

func do(t *testing.T, ts *httptest.Server, method, path, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var good = map[string]string{"X-Lab-Token": token, "Content-Type": "application/json"}

func TestToken(t *testing.T) {
	_, ts, _ := newTest(t)
	for _, p := range []string{"/", "/?token=wrong", "/api/state", "/api/events?token=" + token[:31]} {
		if code, _ := do(t, ts, "GET", p, "", nil); code != http.StatusForbidden {
			t.Errorf("GET %s: %d, want 403", p, code)
		}
	}
	if code, body := do(t, ts, "GET", "/?token="+token, "", nil); code != 200 || !strings.Contains(body, "ooblab") {
		t.Errorf("page with the token: %d %.80s", code, body)
	}
	if code, _ := do(t, ts, "GET", "/static/app.js", "", nil); code != 200 {
		t.Errorf("static without token: %d (holds no secret, served)", code)
	}
}

// Actions refuse what a cross-site page could send, and bad input, with
// a clear error and nothing run.
func TestActionsRefuseAndRunNothing(t *testing.T) {
	_, ts, fake := newTest(t)
	ok := `{"host":"h1","vm":"web1","action":"start","via":"auto"}`
	cases := []struct {
		name string
		hdr  map[string]string
		body string
		want int
		msg  string
	}{
		{"no token", map[string]string{"Content-Type": "application/json"}, ok, 403, "X-Lab-Token"},
		{"form post (CSRF)", map[string]string{"X-Lab-Token": token, "Content-Type": "application/x-www-form-urlencoded"}, ok, 415, "application/json"},
		{"cross origin", map[string]string{"X-Lab-Token": token, "Content-Type": "application/json", "Origin": "http://evil.example"}, ok, 403, "cross-origin"},
		{"unknown host", good, `{"host":"h9","vm":"web1","action":"start"}`, 404, "unknown host"},
		{"odd vm name", good, `{"host":"h1","vm":"web1; reboot","action":"start"}`, 400, "VM name"},
		{"path vm name", good, `{"host":"h1","vm":"../x","action":"start"}`, 400, "VM name"},
		{"unknown action", good, `{"host":"h1","vm":"web1","action":"format"}`, 400, "action"},
		{"unknown channel", good, `{"host":"h1","vm":"web1","action":"start","via":"carrier-pigeon"}`, 400, "channel"},
		{"unknown field", good, `{"host":"h1","vm":"web1","action":"start","sudo":true}`, 400, "unknown field"},
		{"not json", good, `start web1`, 400, "bad request body"},
		{"bad code", good, `{"host":"h1","vm":"db1","action":"start","code":"12ab56"}`, 400, "app code"},
		{"oversized", good, `{"host":"h1","vm":"web1","action":"start","via":"` + strings.Repeat("a", 8<<10) + `"}`, 413, "body over"},
	}
	for _, c := range cases {
		code, body := do(t, ts, "POST", "/api/vm", c.body, c.hdr)
		if code != c.want || !strings.Contains(body, c.msg) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, code, strings.TrimSpace(body), c.want, c.msg)
		}
	}
	if code, body := do(t, ts, "POST", "/api/link", `{"host":"h1"}`, good); code != 400 || !strings.Contains(body, "up") {
		t.Errorf("link without up: %d %s", code, body)
	}
	if code, body := do(t, ts, "POST", "/api/power", `{"host":"h1","action":"explode"}`, good); code != 400 {
		t.Errorf("bad power action: %d %s", code, body)
	}
	if n := len(fake.Calls()); n != 0 {
		t.Errorf("%d requests reached the channel; want none", n)
	}
	if code, _ := do(t, ts, "GET", "/api/vm", "", good); code != http.StatusMethodNotAllowed {
		t.Errorf("GET on an action: %d, want 405", code)
	}
}

// A command from the page goes through vmsctl's client, and its row — who,
// what, channel, outcome, request id — reaches the event stream.
func TestCommandRowStreamed(t *testing.T) {
	_, ts, fake := newTest(t)
	req, _ := http.NewRequest("GET", ts.URL+"/api/events?token="+token, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ts.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	code, body := do(t, ts, "POST", "/api/vm", `{"host":"h1","vm":"web1","action":"destroy","via":"vmmi"}`, good)
	if code != 200 {
		t.Fatalf("destroy: %d %s", code, body)
	}
	var row CommandRow
	if err := json.Unmarshal([]byte(body), &row); err != nil || !row.OK || row.Via != client.ViaVMMI || row.RequestID == "" {
		t.Fatalf("row %+v (%v)", row, err)
	}
	destroys := 0
	for _, c := range fake.Calls() { // the page polls the host after a command, too
		if c.Req.Command == vmsg.CmdDestroy && c.Req.VM == "web1" {
			destroys++
		}
	}
	if destroys != 1 {
		t.Fatalf("%d destroys reached the channel, want 1", destroys)
	}
	buf := make([]byte, 64<<10)
	var got strings.Builder
	for !strings.Contains(got.String(), `"what":"destroy web1"`) {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("stream ended before the row: %v\n%s", err, got.String())
		}
	}
}

// FuzzActionBody: whatever an action's body holds, the page answers with
// a status and runs at most the one command a well-formed body names.
func FuzzActionBody(f *testing.F) {
	for _, s := range []string{`{"host":"h1","vm":"web1","action":"start"}`, `{"host":"h1","up":false}`, `{"host":"h1","action":"on"}`,
		`{"vm":"\u0000"}`, `[]`, `{"host":"h1","vm":"web1","action":"start","code":"123456"}`, ``} {
		f.Add(s)
	}
	inv := &inventory.Inventory{Principal: "ops", Hosts: []inventory.Host{{Name: "h1", HostID: "hv1"}}}
	fake := &clienttest.Fake{ChannelName: client.ViaVMMI}
	clients := map[string]*client.Client{}
	for _, via := range []string{client.ViaAuto, client.ViaVMMI, client.ViaOOB} {
		c, err := client.New(inv, client.Options{Via: via, VMMI: fake, OOB: fake})
		if err != nil {
			f.Fatal(err)
		}
		clients[via] = c
	}
	s, err := New(Config{Inventory: inv, Token: token, Clients: clients, Timeout: time.Second,
		SetLink: func(context.Context, string, bool) error { return nil }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, p := range []string{"/api/vm", "/api/link"} {
			req := httptest.NewRequest("POST", p, strings.NewReader(body))
			req.Header.Set("X-Lab-Token", token)
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != 200 && w.Code != 400 && w.Code != 404 && w.Code != 413 {
				t.Fatalf("%s %q: status %d %s", p, body, w.Code, w.Body.String())
			}
			if w.Code != 200 && !json.Valid(w.Body.Bytes()) {
				t.Fatalf("error body is not JSON: %s", w.Body.String())
			}
		}
	})
}

// The page's SEL list gets each entry once: the whole log at the first
// read, then only what came after the newest one seen; a cleared log
// starts again.
func TestSELEntriesOnce(t *testing.T) {
	s, _, _ := newTest(t)
	e := func(id uint16) client.SELEntry {
		return client.SELEntry{ID: id, Type: 0x02, SensorType: "Temperature", SensorNumber: 2, Event: "Upper Critical going high"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addSEL("h1", []client.SELEntry{e(1), e(2)})
	s.addSEL("h1", []client.SELEntry{e(1), e(2)})
	s.addSEL("h1", []client.SELEntry{e(1), e(2), e(3)})
	if got := len(s.st.SEL); got != 3 || s.st.SEL[0].ID != 3 || !strings.Contains(s.st.SEL[0].Event, "Temperature #2") {
		t.Fatalf("after 3 entries: %+v", s.st.SEL)
	}
	s.addSEL("h1", []client.SELEntry{e(1)}) // cleared, one new entry (ids start again)
	if got := len(s.st.SEL); got != 4 {
		t.Fatalf("after a clear: %+v", s.st.SEL)
	}
}

// Two pages in one process (same token, same host name) poll their hosts
// each under its own lock: one page's poll in flight does not make the
// other's a no-op.
func TestPollLocksPerServer(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a, _, _ := newTestAgent(t, func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		once.Do(func() { close(entered) })
		select {
		case <-release:
		case <-ctx.Done():
		}
		return agentWithWeb1(ctx, host, req)
	})
	b, _, bFake := newTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); a.pollHost(ctx, "h1", false) }()
	defer func() { close(release); <-done }()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("page a's poll never reached its channel")
	}
	b.pollHost(ctx, "h1", false)
	if len(bFake.Calls()) == 0 {
		t.Error("page b's poll of h1 did nothing while page a's was in flight: the two pages share a lock")
	}
}
