package vmcodec

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
)

var ipmbTests = []struct {
	name string
	m    IPMBMsg
	get  string // Get Message body
	send string // Send Message data
}{
	{
		name: "queue 1 notify push",
		m:    IPMBMsg{Channel: 0, NetFn: 0x2E, RqSA: 0x81, Seq: 5, Cmd: 0x10, Data: []byte{0xD9, 0x7E, 0x00, 0x01, 0x00}},
		get:  "00 b8 28 81 14 10 d9 7e 00 01 00 03",
		send: "00 00 b8 48 81 14 10 d9 7e 00 01 00 03",
	},
	{
		name: "response from the host",
		m:    IPMBMsg{Channel: 0, RsSA: 0x81, NetFn: 0x2F, RqSA: 0x20, Seq: 5, Cmd: 0x10, Data: []byte{0x00}},
		send: "00 81 bc c3 20 14 10 00 bc",
	},
}

func TestIPMB(t *testing.T) {
	for _, tt := range ipmbTests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.get != "" {
				b := AppendGetMessage(nil, tt.m)
				if got := testutil.Hex(b); got != tt.get {
					t.Fatalf("AppendGetMessage = %s, want %s", got, tt.get)
				}
				m, err := ParseGetMessage(b)
				want := tt.m
				want.RsSA = BMCSlaveAddr
				if err != nil || m.NetFn != want.NetFn || m.RqSA != want.RqSA || m.Seq != want.Seq || m.Cmd != want.Cmd || !bytes.Equal(m.Data, want.Data) {
					t.Fatalf("ParseGetMessage = %+v, %v", m, err)
				}
			}
			b := AppendSendMessage(nil, tt.m)
			if got := testutil.Hex(b); got != tt.send {
				t.Fatalf("AppendSendMessage = %s, want %s", got, tt.send)
			}
			m, err := ParseSendMessage(b)
			if err != nil || m.RsSA != tt.m.RsSA || m.NetFn != tt.m.NetFn || m.Cmd != tt.m.Cmd || !bytes.Equal(m.Data, tt.m.Data) {
				t.Fatalf("ParseSendMessage = %+v, %v", m, err)
			}
			b[len(b)-1]++
			if _, err := ParseSendMessage(b); !errors.Is(err, ErrIPMBChecksum) {
				t.Fatalf("bad sum2 accepted: %v", err)
			}
		})
	}
	if _, err := ParseSendMessage(testutil.Unhex(t, "00 20 18 c8 81 04")); !errors.Is(err, ErrIPMBShort) {
		t.Fatalf("short Send Message: %v", err)
	}
	if _, err := ParseGetMessage(testutil.Unhex(t, "00 18 c8 81 04 01")); !errors.Is(err, ErrIPMBShort) {
		t.Fatalf("short Get Message: %v", err)
	}
}

func FuzzIPMB(f *testing.F) {
	for _, tt := range ipmbTests {
		f.Add(AppendSendMessage(nil, tt.m))
		f.Add(AppendGetMessage(nil, tt.m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := ParseSendMessage(b); err == nil {
			if again := AppendSendMessage(nil, m); !bytes.Equal(again[1:], b[1:]) {
				t.Fatalf("Send Message %x re-encodes as %x", b, again)
			}
		}
		if m, err := ParseGetMessage(b); err == nil && len(m.Data) != len(b)-7 {
			t.Fatalf("Get Message data %d bytes from %d", len(m.Data), len(b))
		}
	})
}
