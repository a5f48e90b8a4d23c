package chardev

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

var wireSeeds = []string{
	"ff 01 a1",             // VERSION from the BMC
	"05 a1 02 a1",          // ENABLE_IRQ, ATTN_IRQ
	"00 1c 01 00 e3 a0",    // a response: seq 0, netfn 07, cmd 01, cc 00
	"aa b0 1c 01 00 43 a0", // escaped seq a0
	"00 1c 01 00 e2 a0",    // bad checksum
	"00 1c 33 00 00 00 b8 28 81 04 10 aa b0 bb a0", // Get Message with an escaped a0 in the data
	"aa a0 aa",
}

func TestAppendMessageHex(t *testing.T) {
	got := appendMessage(nil, 0, 0x06<<2, 0x01, nil)
	if want := "001801e7a0"; hex.EncodeToString(got) != want {
		t.Fatalf("Get Device ID %x, want %s", got, want)
	}
	if got := appendControl(nil, OpCapabilities, QEMU72Caps); hex.EncodeToString(got) != "083fa1" {
		t.Fatalf("CAPABILITIES %x", got)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range wireSeeds {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var d decoder
		d.feed(in, func(fr frame) {
			if len(fr.raw) > maxFrame {
				t.Fatalf("kept %d bytes", len(fr.raw))
			}
			if fr.bad != "" || fr.ctrl {
				return
			}
			if sum(fr.raw) != 0 || len(fr.raw) < 5 {
				t.Fatalf("accepted % x", fr.raw)
			}
			enc := appendMessage(nil, fr.raw[0], fr.raw[1], fr.raw[2], fr.raw[3:len(fr.raw)-1])
			var d2 decoder
			d2.feed(enc, func(g frame) {
				if g.bad != "" || !bytes.Equal(g.raw, fr.raw) {
					t.Fatalf("round trip % x -> % x", fr.raw, g.raw)
				}
			})
			parseGetMessage(fr.raw[4 : len(fr.raw)-1]) // must not panic on any body
		})
	})
}
