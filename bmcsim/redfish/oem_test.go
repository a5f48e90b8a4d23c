package redfish_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// queueCmd posts one OOB-I queue command through the Manager's OEM action.
func queueCmd(t *testing.T, do func(body string) (int, []byte), cmd int, data []byte) (int, uint8, []byte) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"Command": cmd, "Data": data})
	status, out := do(string(body))
	var resp struct {
		CompletionCode uint8
		Data           []byte
	}
	if status == 200 {
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
	}
	return status, resp.CompletionCode, resp.Data
}

// TestQueueCommandOverRedfish: the OOB-I queue commands of the LAN side
// run through Redfish with the IPMI handler's rules: a VMS writes Queue 1
// (binding its requester id to its BMC user), reads the host's answer from
// Queue 2 by that id; another BMC user cannot read it (D4h), a ReadOnly
// user cannot run the action, and the host's commands are not served.
func TestQueueCommandOverRedfish(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	const uri = "/redfish/v1/Managers/1/Actions/Oem/OoblabManager.QueueCommand"
	as := func(user, pw string) func(string) (int, []byte) {
		return func(body string) (int, []byte) {
			status, _, data := do(t, hc, b, "POST", uri, user, pw, body)
			return status, data
		}
	}
	iana := oem.IANA(b.BMC.Config.IANA)
	w, err := (&oem.WriteQueueRequest{IANA: iana, Record: record.Record{Requester: 0x42, MsgID: 7, Count: 1, Payload: []byte("start web1")}}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	if status, cc, _ := queueCmd(t, as("vms", "vms-pw-2"), int(oem.CmdWriteQueue1), w); status != 200 || cc != 0 {
		t.Fatalf("Write Queue 1: %d cc %#x", status, cc)
	}
	if n := b.Queues.Queue1().Len(); n != 1 {
		t.Fatalf("queue 1 holds %d records", n)
	}
	// The host answers on Queue 2 (as hvagent does over KCS): a push on
	// the SSE stream tells the VMS.
	next := openSSE(t, b, "?"+url.Values{"$filter": {"MessageId eq 'Ooblab.1.0.Queue2Record'"}}.Encode())
	if err := b.Queues.Queue2().Write(record.Record{Requester: 0x42, MsgID: 7, Count: 1, Payload: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	if got := next(); len(got) != 1 || !strings.Contains(got[0], "requester 0x42") {
		t.Errorf("Queue 2 event %q", got)
	}
	r, _ := (&oem.ReadQueue2ForRequest{IANA: iana, Reader: 0x42}).Pack()
	if status, cc, _ := queueCmd(t, as("admin", "admin-pw-1"), int(oem.CmdReadQueue2For), r); status != 200 || cc != 0xD4 {
		t.Errorf("another user reads the VMS's reader: %d cc %#x, want 0xD4", status, cc)
	}
	status, cc, data := queueCmd(t, as("vms", "vms-pw-2"), int(oem.CmdReadQueue2For), r)
	if status != 200 || cc != 0 {
		t.Fatalf("Read Queue 2 For: %d cc %#x", status, cc)
	}
	var resp oem.ReadQueueResponse
	if err := resp.Unpack(data); err != nil || resp.Empty || !bytes.Equal(resp.Record.Payload, []byte("ok")) {
		t.Errorf("answer %+v (%v)", resp, err)
	}
	if status, _, _ := queueCmd(t, as("viewer", "viewer-pw-3"), int(oem.CmdWriteQueue1), w); status != 403 {
		t.Errorf("ReadOnly: %d, want 403", status)
	}
	status, out := as("vms", "vms-pw-2")(`{"Command":2,"Data":""}`)
	wantError(t, "host command", status, out, 400, "ActionParameterValueNotInList")
}

// TestQueue2PushCarriesRecordToItsOwner: the Queue 2 event carries a
// record addressed to a reader (Oem.Ooblab.Record, the bytes Read Queue 2
// For returns) on the streams of the BMC user that owns that reader only:
// the administrator's and a ReadOnly user's streams get the event without
// it, and an alert log record travels to nobody. Nothing reaches a stream
// its user could not have read.
func TestQueue2PushCarriesRecordToItsOwner(t *testing.T) {
	b, _ := start(t)
	q := "?" + url.Values{"$filter": {"MessageId eq 'Ooblab.1.0.Queue2Record'"}}.Encode()
	owner := openSSEAs(t, b, "vms", "vms-pw-2", q)
	admin := openSSEAs(t, b, "admin", "admin-pw-1", q)
	viewer := openSSEAs(t, b, "viewer", "viewer-pw-3", q)
	if err := b.Queues.Queue2().Bind("vms", 0x42); err != nil {
		t.Fatal(err)
	}
	want := record.Record{Requester: 0x42, MsgID: 7, Count: 1, Payload: []byte("sealed answer")}
	if err := b.Queues.Queue2().Write(want); err != nil {
		t.Fatal(err)
	}
	pushed := func(evs []sseEventRecord) []byte {
		t.Helper()
		if len(evs) != 1 || len(evs[0].MessageArgs) != 1 || evs[0].MessageArgs[0] != "0x42" {
			t.Fatalf("Queue 2 event %+v", evs)
		}
		var o struct{ Record []byte }
		if raw, ok := evs[0].Oem["Ooblab"]; ok {
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatal(err)
			}
		}
		return o.Record
	}
	got, err := record.Parse(pushed(owner()))
	if err != nil || got.Key() != want.Key() || got.Requester != want.Requester || !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("owner's stream: record %+v (%v), want %+v", got, err, want)
	}
	if r := pushed(admin()); r != nil {
		t.Errorf("the administrator's stream got another user's record: % x", r)
	}
	if r := pushed(viewer()); r != nil {
		t.Errorf("a ReadOnly stream got a record: % x", r)
	}
	// An alert (the alert log, requester 0): the event, never the record.
	if err := b.Queues.Queue2().Write(record.Record{MsgID: 8, Count: 1, Payload: []byte("alert")}); err != nil {
		t.Fatal(err)
	}
	for name, next := range map[string]func() []sseEventRecord{"owner": owner, "admin": admin} {
		evs := next()
		if len(evs) != 1 || evs[0].MessageArgs[0] != "0x0" || evs[0].Oem != nil {
			t.Errorf("%s: alert log event %+v, want no record", name, evs)
		}
	}
}

// sseNext opens an SSE stream with q, authenticated by auth (Basic or a
// session token), and returns a function reading the next event's records,
// or the error that ended the stream.
func sseNext(t *testing.T, b *bmcsimtest.BMC, q string, auth func(*http.Request)) func() ([]sseEventRecord, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", b.RedfishURL+"/redfish/v1/EventService/SSE"+q, nil)
	auth(req)
	resp, err := b.RedfishClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("SSE: %d", resp.StatusCode)
	}
	rd := bufio.NewReader(resp.Body)
	return func() ([]sseEventRecord, error) {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return nil, err
			}
			data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: ")
			if !ok {
				continue
			}
			var ev struct{ Events []sseEventRecord }
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatal(err)
			}
			return ev.Events, nil
		}
	}
}

// TestQueue2PushEndsWithItsCredentials: a stream carries its user's
// Queue 2 records only while the credentials that opened it still hold.
// After the owner's password is changed (by HTTP Basic with the old
// password, and by a session the change ends), after its session is
// deleted, and after the user is demoted below Operator (IPMI Set User
// Access), no record reaches the stream opened before.
func TestQueue2PushEndsWithItsCredentials(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	q := "?" + url.Values{"$filter": {"MessageId eq 'Ooblab.1.0.Queue2Record'"}}.Encode()
	if err := b.Queues.Queue2().Bind("vms", 0x42); err != nil {
		t.Fatal(err)
	}
	var msg uint64
	write := func() {
		t.Helper()
		msg++
		if err := b.Queues.Queue2().Write(record.Record{Requester: 0x42, MsgID: msg, Count: 1, Payload: []byte("sealed answer")}); err != nil {
			t.Fatal(err)
		}
	}
	carries := func(next func() ([]sseEventRecord, error)) bool {
		t.Helper()
		evs, err := next()
		return err == nil && len(evs) == 1 && evs[0].Oem["Ooblab"] != nil
	}
	basic := func(user, pw string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pw) }
	}
	login := func(pw string) (tok, loc string) {
		t.Helper()
		status, hdr, data := do(t, hc, b, "POST", "/redfish/v1/SessionService/Sessions", "", "", `{"UserName":"vms","Password":"`+pw+`"}`)
		if status != 201 {
			t.Fatalf("login: %d %s", status, data)
		}
		return hdr.Get("X-Auth-Token"), hdr.Get("Location")
	}
	token := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("X-Auth-Token", tok) }
	}

	// A password change: the old password's stream, and a session's.
	oldBasic := sseNext(t, b, q, basic("vms", "vms-pw-2"))
	tok, _ := login("vms-pw-2")
	oldSession := sseNext(t, b, q, token(tok))
	write()
	if !carries(oldBasic) || !carries(oldSession) {
		t.Fatal("the owner's streams did not get the record")
	}
	if status, _, data := do(t, hc, b, "PATCH", "/redfish/v1/AccountService/Accounts/3", "admin", "admin-pw-1", `{"Password":"vms-new-pw"}`); status != 200 {
		t.Fatalf("password change: %d %s", status, data)
	}
	write()
	if carries(oldBasic) {
		t.Error("a stream opened with the old password got a record after the password changed")
	}
	if carries(oldSession) {
		t.Error("the stream of a session the password change ended got a record")
	}

	// A session deleted.
	tok, loc := login("vms-new-pw")
	deleted := sseNext(t, b, q, token(tok))
	write()
	if !carries(deleted) {
		t.Fatal("the session's stream did not get the record")
	}
	if status, _, data := do(t, hc, b, "DELETE", strings.TrimPrefix(loc, b.RedfishURL), "admin", "admin-pw-1", ""); status != 204 {
		t.Fatalf("session delete: %d %s", status, data)
	}
	write()
	if carries(deleted) {
		t.Error("the stream of a deleted session got a record")
	}

	// The user demoted to ReadOnly (IPMI USER privilege on the LAN channel).
	demoted := sseNext(t, b, q, basic("vms", "vms-new-pw"))
	write()
	if !carries(demoted) {
		t.Fatal("the owner's stream did not get the record")
	}
	if err := b.BMC.IPMI.Users.Update(3, func(u *ipmibmc.User) error {
		a := u.ChannelAccess[1]
		a.MaxPrivilege = ipmibmc.PrivilegeLevelUser
		u.ChannelAccess[1] = a
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	write()
	if carries(demoted) {
		t.Error("the stream of a user demoted below Operator got a record")
	}
}
