package sol_test

// The SOL payload (IPMI v2.0 Table 15-2) is read by bmcsim (console to BMC)
// and by vmsctl's console (BMC to console) with go-ipmi's codec,
// types.SOLPayloadPacket; these tables pin it to the spec's bytes and the
// fuzz target keeps it total on outside bytes.
//
//	byte 0  packet sequence number [3:0] (0: ACK-only packet)
//	byte 1  acked/nacked sequence number [3:0]
//	byte 2  accepted character count
//	byte 3  console→BMC operation / BMC→console status:
//	        [6] NACK  [5] ring/WOR (in) · char transfer unavailable (out)
//	        [4] generate BREAK (in) · SOL deactivated (out)
//	        [3] CTS pause (in) · transmit overrun (out)  [2] DCD/DSR (in) · break (out)
//	        [1] flush inbound  [0] flush outbound
//	byte 4… character data

import (
	"bytes"
	"testing"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/testutil"
)

var codecTable = []struct {
	name string
	raw  string
	want types.SOLPayloadPacket
}{
	{"keystrokes", "01 00 00 00 6c 73 0d", types.SOLPayloadPacket{SequenceNumber: 1, CharacterData: []byte("ls\r")}},
	{"ack only", "00 03 05 00", types.SOLPayloadPacket{AckedSequenceNumber: 3, AcceptedCharacterCount: 5}},
	{"data with ack", "02 01 03 00 6f 6b", types.SOLPayloadPacket{SequenceNumber: 2, AckedSequenceNumber: 1, AcceptedCharacterCount: 3, CharacterData: []byte("ok")}},
	{"nack partial", "00 04 02 40", types.SOLPayloadPacket{AckedSequenceNumber: 4, AcceptedCharacterCount: 2, ControlByte: 0x40, NACK: true}},
	{"deactivation notice", "00 07 01 10", types.SOLPayloadPacket{AckedSequenceNumber: 7, AcceptedCharacterCount: 1, ControlByte: 0x10}},
	{"transfer unavailable", "00 00 00 20", types.SOLPayloadPacket{ControlByte: 0x20}},
	{"overrun with data", "0f 00 00 08 21", types.SOLPayloadPacket{SequenceNumber: 15, ControlByte: 0x08, CharacterData: []byte("!")}},
	{"break and flush", "05 00 00 13", types.SOLPayloadPacket{SequenceNumber: 5, ControlByte: 0x13}},
	{"high nibbles ignored", "f1 e2 ff 00", types.SOLPayloadPacket{SequenceNumber: 1, AckedSequenceNumber: 2, AcceptedCharacterCount: 0xff}},
}

func TestSOLPayloadCodec(t *testing.T) {
	for _, tt := range codecTable {
		t.Run(tt.name, func(t *testing.T) {
			raw := testutil.Unhex(t, tt.raw)
			var got types.SOLPayloadPacket
			if err := got.Unpack(raw); err != nil {
				t.Fatal(err)
			}
			if got.SequenceNumber != tt.want.SequenceNumber || got.AckedSequenceNumber != tt.want.AckedSequenceNumber ||
				got.AcceptedCharacterCount != tt.want.AcceptedCharacterCount || got.ControlByte != tt.want.ControlByte ||
				got.NACK != tt.want.NACK || !bytes.Equal(got.CharacterData, tt.want.CharacterData) {
				t.Fatalf("Unpack(%s) = %+v, want %+v", tt.raw, got, tt.want)
			}
			if tt.name == "high nibbles ignored" {
				return // the reserved bits do not come back
			}
			if p := tt.want.Pack(); !bytes.Equal(p, raw) {
				t.Errorf("Pack = %s, want %s", testutil.Hex(p), tt.raw)
			}
		})
	}
	var p types.SOLPayloadPacket
	if err := p.Unpack([]byte{1, 2, 3}); err == nil {
		t.Errorf("a 3-byte SOL payload decoded")
	}
}

func FuzzSOLPayload(f *testing.F) {
	for _, tt := range codecTable {
		f.Add(testutil.MustUnhex(tt.raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var p types.SOLPayloadPacket
		if err := p.Unpack(raw); err != nil {
			if len(raw) >= 4 {
				t.Fatalf("Unpack(%x): %v", raw, err)
			}
			return
		}
		if p.SequenceNumber > 15 || p.AckedSequenceNumber > 15 || p.NACK != (p.ControlByte&0x40 != 0) {
			t.Fatalf("Unpack(%x) = %+v", raw, p)
		}
		again := p.Pack()
		if !bytes.Equal(again[2:], raw[2:]) || again[0] != raw[0]&0x0f || again[1] != raw[1]&0x0f {
			t.Fatalf("Pack(Unpack(%x)) = %x", raw, again)
		}
	})
}
