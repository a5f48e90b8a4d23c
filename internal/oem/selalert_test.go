package oem

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

var selAlertTests = []struct {
	name string
	a    SELAlert
	ts   uint32
	want string
}{
	{"local destroy", SELAlert{Class: AlertLocal, Command: 6}, 0x65000000, "00 00 c0 00 00 00 65 d9 7e 00 05 06 00 00 00 00"},
	{"denied start, request id", SELAlert{Class: AlertDenied, Command: 4, RequestID: 0x11223344}, 1, "00 00 c0 01 00 00 00 d9 7e 00 01 04 44 33 22 11"},
}

func TestSELAlert(t *testing.T) {
	for _, tt := range selAlertTests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tt.a.Record(DefaultIANA, tt.ts)
			want, _ := hex.DecodeString(strings.ReplaceAll(tt.want, " ", ""))
			if !bytes.Equal(rec[:], want) {
				t.Fatalf("Record = % x\nwant     % x", rec, want)
			}
			got, ok := ParseSELAlert(rec[:], DefaultIANA)
			if !ok || got != tt.a {
				t.Fatalf("ParseSELAlert = %+v, %v", got, ok)
			}
			if _, ok := ParseSELAlert(rec[:], DefaultIANA+1); ok {
				t.Fatal("another manufacturer's record taken for an alert")
			}
		})
	}
	if AlertLocal.String() != "unauthorized local change" || AlertClass(0x42).String() != "class 0x42" {
		t.Fatal("class names")
	}
}

func FuzzParseSELAlert(f *testing.F) {
	for _, tt := range selAlertTests {
		rec := tt.a.Record(DefaultIANA, tt.ts)
		f.Add(rec[:])
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		a, ok := ParseSELAlert(rec, DefaultIANA)
		if !ok {
			return
		}
		back := a.Record(DefaultIANA, 0)
		if !bytes.Equal(back[10:], rec[10:16]) {
			t.Fatalf("round trip % x -> % x", rec, back)
		}
	})
}
