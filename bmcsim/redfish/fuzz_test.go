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
