package testutil

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/types"
)

// RMCPPlusPacket builds an in-session RMCP+ IPMI datagram (IPMI v2.0 Table
// 13-8) for session ID sid, sequence 5: plain encrypted behind iv with K2
// (IV ‖ AES-CBC-128), then authenticated with K1 under alg, with go-ipmi's
// own crypto functions. Either direction: a console's request carries the
// BMC's session ID, a BMC's answer the console's.
func RMCPPlusPacket(tb testing.TB, sid uint32, alg types.IntegrityAlg, k1, k2, plain, iv []byte) []byte {
	tb.Helper()
	payload, err := crypto.EncryptAESPayload(plain, k2, iv)
	if err != nil {
		tb.Fatal(err)
	}
	const rmcpHeaderLen, sessionHeaderLen = 4, 12
	pkt := []byte{0x06, 0x00, 0xff, 0x07, 0x06, 0xc0}
	pkt = binary.LittleEndian.AppendUint32(pkt, sid)
	pkt = binary.LittleEndian.AppendUint32(pkt, 5)
	pkt = binary.LittleEndian.AppendUint16(pkt, uint16(len(payload)))
	pkt = append(pkt, payload...)
	pad := types.IntegrityPadLen(sessionHeaderLen, len(payload))
	pkt = append(pkt, bytes.Repeat([]byte{0xff}, pad)...)
	pkt = append(pkt, byte(pad), 0x07)
	code, err := crypto.SessionIntegrityAuthCode(alg, pkt[rmcpHeaderLen:], k1, "")
	if err != nil {
		tb.Fatal(err)
	}
	return append(pkt, code...)
}
