package redfish

import (
	"net/http"
	"testing"
)

// Every request body bmcsim decodes has a fuzz target: whatever the bytes,
// the decoder returns a value or a Redfish error with a 4xx status, and
// never panics.

func fuzzDecode[T any](f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v T
		if err := decodeJSON(data, &v); err != nil {
			if err.status < 400 || err.status > 499 || err.key == "" {
				t.Fatalf("error %+v", err)
			}
			w := &discardWriter{h: http.Header{}}
			writeError(w, err)
		}
	})
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(c int)           { d.code = c }

func FuzzDecodeSession(f *testing.F) {
	fuzzDecode[sessionRequest](f, `{"UserName":"a","Password":"b"}`, `{"UserName":1}`, `{"username":"a"}`, `{`, `{"A":1}`)
}

func FuzzDecodeSystemPatch(f *testing.F) {
	fuzzDecode[systemPatch](f, `{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`,
		`{"Boot":{"X":1}}`, `{"Boot":3}`, `{"Boot":null}`)
}

func FuzzDecodeReset(f *testing.F) {
	fuzzDecode[resetRequest](f, `{"ResetType":"On"}`, `{"ResetType":7}`, `{} {}`)
}

func FuzzDecodeAccountPatch(f *testing.F) {
	fuzzDecode[accountPatch](f, `{"Password":"new"}`, `{"Password":null}`, `{"RoleId":"Administrator"}`)
}

func FuzzDecodeClearLog(f *testing.F) {
	fuzzDecode[clearLogRequest](f, `{}`, `{"LogEntriesETag":"W/\"1\""}`)
}

func FuzzDecodeTestEvent(f *testing.F) {
	fuzzDecode[testEventRequest](f, `{"EventId":"1","MessageArgs":["a"],"Severity":"OK"}`, `{"MessageArgs":"a"}`)
}

func FuzzDecodeSubscription(f *testing.F) {
	fuzzDecode[subscriptionRequest](f, `{"Destination":"https://x/e","Protocol":"Redfish","RegistryPrefixes":["ResourceEvent"]}`,
		`{"Destination":1}`, `{"RegistryPrefixes":"x"}`)
}

func FuzzDecodeEventServicePatch(f *testing.F) {
	fuzzDecode[eventServicePatch](f, `{"DeliveryRetryAttempts":2,"DeliveryRetryIntervalSeconds":1}`, `{"DeliveryRetryAttempts":1.5}`)
}

// FuzzParseFilter: any $filter parses or is a 400, never a panic, and a
// parsed one matches without panicking.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"MessageId eq 'ResourceEvent.1.3.ResourcePoweredOn'", "RegistryPrefix eq 'ResourceEvent' or OriginResource eq '/redfish/v1/Systems/1'",
		"MessageId eq ''", "x eq 'y'", "MessageId eq 'a'b'", " or "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := parseFilter(s)
		if err != nil {
			if err.status != 400 {
				t.Fatalf("status %d", err.status)
			}
			return
		}
		flt.match(eventRecord{messageID: "ResourceEvent.1.3.ResourceCreated", origin: "/x"})
	})
}

func FuzzDecodeQueueCommand(f *testing.F) {
	fuzzDecode[queueRequest](f, `{"Command":1,"Data":"WX4AAQ=="}`, `{"Command":"1"}`, `{"Data":"!!"}`)
}
