package chardev

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/internal/vmcodec"
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
	got := vmcodec.AppendMessage(nil, 0, 0x06<<2, 0x01, nil)
	if want := "001801e7a0"; hex.EncodeToString(got) != want {
		t.Fatalf("Get Device ID %x, want %s", got, want)
	}
	if got := vmcodec.AppendControl(nil, vmcodec.OpCapabilities, QEMU72Caps); hex.EncodeToString(got) != "083fa1" {
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
		var d vmcodec.Decoder
		d.Feed(in, func(fr vmcodec.Frame) {
			if len(fr.Raw) > vmcodec.MaxFrame {
				t.Fatalf("kept %d bytes", len(fr.Raw))
			}
			if fr.Err != nil || fr.Kind == vmcodec.KindControl || len(fr.Raw) < minResponse {
				return // the client drops these (handleFrame)
			}
			if vmcodec.Checksum(fr.Raw) != 0 {
				t.Fatalf("accepted % x", fr.Raw)
			}
			enc := vmcodec.AppendMessage(nil, fr.Raw[0], fr.Raw[1], fr.Raw[2], fr.Raw[3:len(fr.Raw)-1])
			var d2 vmcodec.Decoder
			d2.Feed(enc, func(g vmcodec.Frame) {
				if g.Err != nil || !bytes.Equal(g.Raw, fr.Raw) {
					t.Fatalf("round trip % x -> % x", fr.Raw, g.Raw)
				}
			})
			parseGetMessage(fr.Raw[4 : len(fr.Raw)-1]) // must not panic on any body
		})
	})
}
