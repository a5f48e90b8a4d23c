package client

import (
	"bytes"
	"testing"

	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/ooblab/ooblab/internal/testutil"
)

// guardedSession is a guard state after a suite-17 set-up, with fixed keys.
func guardedSession() *guardState {
	return &guardState{password: "pw", consoleID: 0xa0a1a2a3, haveAlgs: true, haveRAKP: true,
		authAlg: types.AuthAlg_HMAC_SHA256, integAlg: types.IntegrityAlg_HMAC_SHA256_128, cryptAlg: types.CryptAlg_AES_CBC_128,
		k1: bytes.Repeat([]byte{1}, 32), k2: bytes.Repeat([]byte{2}, 32)}
}

// sealedAnswer builds an in-session datagram from the BMC to s's session.
func sealedAnswer(tb testing.TB, s *guardState, plain, iv []byte) []byte {
	return testutil.RMCPPlusPacket(tb, s.consoleID, s.integAlg, s.k1, s.k2, plain, iv)
}

// goIPMIRead is what go-ipmi v0.9.1's client does with a datagram it is
// handed (parseIPMIResponseFromRmcp and decryptPayload, which are not
// exported): the calls that panic on a bad one.
func goIPMIRead(pkt []byte, k2 []byte) {
	rmcp := &types.Rmcp{}
	if rmcp.Unpack(pkt) != nil || rmcp.Session20 == nil {
		return
	}
	data := rmcp.Session20.SessionPayload
	if rmcp.Session20.SessionHeader20.PayloadEncrypted {
		d, err := crypto.DecryptAES(data[16:], k2[:16], data[0:16])
		if err != nil {
			return
		}
		padLength := d[len(d)-1]
		data = d[0 : len(d)-int(padLength)-1]
	}
	_ = (&types.IPMIResponse{}).Unpack(data)
}

func TestGuardPassesItsSession(t *testing.T) {
	s := guardedSession()
	ok := sealedAnswer(t, s, []byte{0x81, 0x1c, 0x63, 0x20, 0x04, 0x01, 0x00, 0x7b}, bytes.Repeat([]byte{9}, 16))
	if !s.received(ok) {
		t.Fatal("a sealed answer of the session was refused")
	}
	other := guardedSession()
	other.k1 = bytes.Repeat([]byte{3}, 32)
	if other.received(ok) {
		t.Fatal("an answer sealed with another K1 passed")
	}
	wrongSID := guardedSession()
	wrongSID.consoleID++
	if wrongSID.received(ok) {
		t.Fatal("an answer to another session ID passed")
	}
	if fresh := newGuardState("pw"); fresh.received(ok) {
		t.Fatal("an in-session answer passed before any session was set up")
	}
}

// FuzzUDPGuard: whatever the guard hands on, go-ipmi's client reads without
// panicking; the guard itself never panics on a datagram or on what the
// client sends. Seeded with valid answers so mutations reach decryption.
func FuzzUDPGuard(f *testing.F) {
	s := guardedSession()
	for i, plain := range [][]byte{{0x81, 0x1c, 0x63, 0x20, 0x04, 0x01, 0x00, 0x7b}, bytes.Repeat([]byte{0x5a}, 40), {}} {
		f.Add(sealedAnswer(f, s, plain, bytes.Repeat([]byte{byte(i)}, 16)), false)
	}
	f.Add([]byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 36, 0}, false)
	f.Add([]byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 28, 0}, true)
	f.Fuzz(func(t *testing.T, pkt []byte, sent bool) {
		s := guardedSession()
		if sent {
			s.sent(pkt)
			return
		}
		if s.received(pkt) {
			goIPMIRead(pkt, s.k2)
		}
	})
}
