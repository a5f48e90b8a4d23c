package client

import (
	"encoding/json"
	"testing"

	"github.com/ooblab/ooblab/internal/record"
)

// pushData is an SSE event's data as bmcsim sends it for a Queue 2 record.
func pushData(tb testing.TB, arg string, rec []byte) []byte {
	er := map[string]any{"MessageId": "Ooblab.1.0.Queue2Record", "MessageArgs": []string{arg}}
	if rec != nil {
		er["Oem"] = map[string]any{"Ooblab": map[string]any{"Record": rec}}
	}
	b, err := json.Marshal(map[string]any{"Events": []any{er}})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestDecodePush: a record for this reader is taken; one for another
// reader, or one whose header names another, is neither taken nor a
// wake-up; the alert log and a record-less event are wake-ups.
func TestDecodePush(t *testing.T) {
	mine, _ := record.Record{Requester: 0x42, MsgID: 7, Count: 1, Payload: []byte("answer")}.AppendBinary(nil)
	theirs, _ := record.Record{Requester: 0x43, MsgID: 8, Count: 1, Payload: []byte("answer")}.AppendBinary(nil)
	for _, tc := range []struct {
		name string
		data []byte
		recs int
		wake bool
	}{
		{"mine", pushData(t, "0x42", mine), 1, false},
		{"mine, no record", pushData(t, "0x42", nil), 0, true},
		{"alert log", pushData(t, "0x0", nil), 0, true},
		{"another reader", pushData(t, "0x43", theirs), 0, false},
		{"my id, another's record", pushData(t, "0x42", theirs), 0, true},
		{"garbage record", pushData(t, "0x42", []byte{1, 2, 3}), 0, true},
		{"not JSON", []byte("{"), 0, false},
	} {
		recs, wake := decodePush(tc.data, 0x42)
		if len(recs) != tc.recs || wake != tc.wake {
			t.Errorf("%s: %d records, wake %v; want %d, %v", tc.name, len(recs), wake, tc.recs, tc.wake)
		}
	}
}

// FuzzDecodePush: the BMC's event bytes never panic the VMS, and every
// record taken is addressed to this reader and parses back the same.
func FuzzDecodePush(f *testing.F) {
	mine, _ := record.Record{Requester: 0x42, MsgID: 7, Count: 1, Payload: []byte("answer")}.AppendBinary(nil)
	f.Add(pushData(f, "0x42", mine))
	f.Add(pushData(f, "0x0", nil))
	f.Add([]byte(`{"Events":[{"MessageArgs":["0x42"],"Oem":{"Ooblab":{"Record":"AAAA"}}}]}`))
	f.Add([]byte(`{"Events":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, _ := decodePush(data, 0x42)
		for _, r := range recs {
			if r.Requester != 0x42 {
				t.Fatalf("took a record for %#x", r.Requester)
			}
			b, err := r.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			if r2, err := record.Parse(b); err != nil || r2.Key() != r.Key() {
				t.Fatalf("record does not parse back: %v", err)
			}
		}
	})
}
