package vmcodec

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
)

type wantFrame struct {
	kind FrameKind
	raw  string
	err  error
}

var decodeTests = []struct {
	name string
	in   string
	want []wantFrame
}{
	{"qemu hello", "ff 01 a1 08 3f a1", []wantFrame{{KindControl, "ff 01", nil}, {KindControl, "08 3f", nil}}},
	{"get device id", "00 18 01 e7 a0", []wantFrame{{KindMessage, "00 18 01 e7", nil}}},
	{"hello then request", "ff 01 a1 08 3f a1 00 18 01 e7 a0", []wantFrame{
		{KindControl, "ff 01", nil}, {KindControl, "08 3f", nil}, {KindMessage, "00 18 01 e7", nil}}},
	// seq 0xa0 escaped; checksum -(a0+18+01) = 0x47
	{"escaped seq", "aa b0 18 01 47 a0", []wantFrame{{KindMessage, "a0 18 01 47", nil}}},
	{"bad checksum", "00 18 01 e6 a0", []wantFrame{{KindMessage, "00 18 01 e6", ErrChecksum}}},
	{"short", "00 18 a0", []wantFrame{{KindMessage, "00 18", ErrShort}}},
	{"escape at end", "00 18 01 aa a0", []wantFrame{{KindMessage, "00 18 01", ErrEscapeAtEnd}}},
	{"empty frames skipped", "a0 a1 a0 00 a1", []wantFrame{{KindControl, "00", nil}}},
	{"garbage then resync", "12 34 56 a0 00 18 01 e7 a0", []wantFrame{
		{KindMessage, "12 34 56", ErrShort}, {KindMessage, "00 18 01 e7", nil}}},
	{"double escape", "aa aa b1 a1", []wantFrame{{KindControl, "a1", nil}}},
}

func TestDecode(t *testing.T) {
	for _, tt := range decodeTests {
		if tt.want == nil {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			var got []Frame
			var d Decoder
			in := testutil.Unhex(t, tt.in)
			// byte at a time, as QEMU writes it, must equal all at once
			for i := range in {
				d.Feed(in[i:i+1], func(f Frame) { got = append(got, f) })
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d frames %v, want %d", len(got), got, len(tt.want))
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Kind != w.kind || testutil.Hex(g.Raw) != w.raw || !errors.Is(g.Err, w.err) {
					t.Errorf("frame %d = {%d %q %v}, want {%d %q %v}", i, g.Kind, testutil.Hex(g.Raw), g.Err, w.kind, w.raw, w.err)
				}
			}
		})
	}
}

func TestDecodeTooLong(t *testing.T) {
	var d Decoder
	var got []Frame
	in := append(bytes.Repeat([]byte{0x11}, MaxFrame+10), msgEnd)
	in = append(in, testutil.Unhex(t, "00 18 01 e7 a0")...)
	d.Feed(in, func(f Frame) { got = append(got, f) })
	if len(got) != 2 || !errors.Is(got[0].Err, ErrTooLong) || !got[1].IsMessage() {
		t.Fatalf("got %+v", got)
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"get device id", AppendMessage(nil, 0, 0x06<<2, 0x01, nil), "00 18 01 e7 a0"},
		{"response netfn 07", AppendMessage(nil, 0, 0x07<<2, 0x01, []byte{0x00}), "00 1c 01 00 e3 a0"},
		{"escape seq a0", AppendMessage(nil, 0xa0, 0x18, 0x01, nil), "aa b0 18 01 47 a0"},
		{"escape data aa", AppendMessage(nil, 1, 0x18, 0x02, []byte{0xaa}), "01 18 02 aa ba 3b a0"},
		{"version", AppendControl(nil, OpVersion, ProtocolVersion), "ff 01 a1"},
		{"capabilities", AppendControl(nil, OpCapabilities, 0x3f), "08 3f a1"},
		{"enable irq", AppendControl(nil, OpEnableIRQ), "05 a1"},
		{"attn irq", AppendControl(nil, OpAttnIRQ), "02 a1"},
		{"graceful", AppendControl(nil, OpGracefulShutdown), "09 a1"},
	}
	for _, tt := range tests {
		if testutil.Hex(tt.got) != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, testutil.Hex(tt.got), tt.want)
		}
		var d Decoder
		n := 0
		d.Feed(tt.got, func(f Frame) {
			n++
			if f.Err != nil {
				t.Errorf("%s: own encoding does not decode: %v", tt.name, f.Err)
			}
		})
		if n != 1 {
			t.Errorf("%s: %d frames", tt.name, n)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, tt := range decodeTests {
		f.Add(testutil.Unhex(f, tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var d Decoder
		d.Feed(in, func(fr Frame) {
			if len(fr.Raw) > MaxFrame {
				t.Fatalf("frame of %d bytes kept", len(fr.Raw))
			}
			if fr.Err != nil || fr.Kind != KindMessage {
				return
			}
			if Checksum(fr.Raw) != 0 || len(fr.Raw) < 4 {
				t.Fatalf("accepted a bad message % x", fr.Raw)
			}
			// re-encoding a good message decodes to the same bytes
			enc := AppendMessage(nil, fr.Seq(), fr.Raw[1], fr.Cmd(), fr.Data())
			var d2 Decoder
			d2.Feed(enc, func(g Frame) {
				if g.Err != nil || !bytes.Equal(g.Raw, fr.Raw) {
					t.Fatalf("round trip % x -> % x (%v)", fr.Raw, g.Raw, g.Err)
				}
			})
		})
	})
}
