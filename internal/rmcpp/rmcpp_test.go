package rmcpp_test

import (
	"bytes"
	"testing"

	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/rmcpp"
	"github.com/ooblab/ooblab/internal/testutil"
)

var k1, k2, iv = bytes.Repeat([]byte{1}, 20), bytes.Repeat([]byte{2}, 20), bytes.Repeat([]byte{3}, 16)

// AuthCode finds the span go-ipmi signs and the code it appended, for
// every payload length (every pad length), and refuses a packet one byte
// short or long.
func TestAuthCode(t *testing.T) {
	for size := 0; size < 40; size++ {
		pkt := testutil.RMCPPlusPacket(t, 0x1234, types.IntegrityAlg_HMAC_SHA1_96, k1, k2, bytes.Repeat([]byte{0xAB}, size), iv)
		signed, code, ok := rmcpp.AuthCode(pkt, 12)
		if !ok {
			t.Fatalf("size %d: not split", size)
		}
		want, err := crypto.SessionIntegrityAuthCode(types.IntegrityAlg_HMAC_SHA1_96, signed, k1, "")
		if err != nil || !bytes.Equal(want, code) {
			t.Fatalf("size %d: the signed span does not give the code (%v)", size, err)
		}
		if len(signed)%4 != 0 || signed[len(signed)-1] != 0x07 {
			t.Fatalf("size %d: signed span %d bytes ending %#x, want a multiple of 4 ending in next header 0x07", size, len(signed), signed[len(signed)-1])
		}
		if _, _, ok := rmcpp.AuthCode(pkt[:len(pkt)-1], 12); ok {
			t.Fatalf("size %d: a packet a byte short was split", size)
		}
		if _, _, ok := rmcpp.AuthCode(append(pkt, 0), 12); ok {
			t.Fatalf("size %d: a packet a byte long was split", size)
		}
	}
	if _, _, ok := rmcpp.AuthCode(make([]byte, rmcpp.PayloadOffset-1), 12); ok {
		t.Fatal("a packet shorter than its headers was split")
	}
}

// FuzzAuthCode: any bytes give either no split or one that lies inside the
// packet and covers it exactly.
func FuzzAuthCode(f *testing.F) {
	f.Add(testutil.RMCPPlusPacket(f, 1, types.IntegrityAlg_HMAC_SHA1_96, k1, k2, []byte{0x18, 0x01}, iv), 12)
	f.Add(testutil.RMCPPlusPacket(f, 1, types.IntegrityAlg_HMAC_SHA256_128, k1, k2, nil, iv), 16)
	f.Add([]byte{0x06, 0, 0xff, 0x07, 0x06, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 12)
	f.Fuzz(func(t *testing.T, pkt []byte, n int) {
		signed, code, ok := rmcpp.AuthCode(pkt, n)
		if !ok {
			return
		}
		if len(code) != n || rmcpp.RMCPHeaderLen+len(signed)+len(code) != len(pkt) {
			t.Fatalf("split %d + %d of a %d-byte packet with n=%d", len(signed), len(code), len(pkt), n)
		}
	})
}
