// Package rmcpp holds the RMCP+ (IPMI v2.0 §13.6) session packet layout
// that both ends of ooblab's LAN guards read: bmcsim/lan's server guard
// and vmsctl/client's UDP guard each check a datagram's AuthCode before
// go-ipmi sees it. Pure functions of their arguments; no I/O, no keys.
//
//	0      4                          16        16+n     +pad  +2     end
//	+------+--------------------------+---------+--------+-----+------+------+
//	| RMCP | auth type, payload type, | payload | pad    | pad | next | Auth |
//	|      | session ID, sequence,    | (n)     | (0xFF) | len | hdr  | Code |
//	|      | payload length (LE16)    |         |        |     | 0x07 |      |
//	+------+--------------------------+---------+--------+-----+------+------+
//
// The AuthCode covers the session header through the next header byte,
// and the pad makes that span a multiple of 4 bytes.
package rmcpp

import (
	"encoding/binary"

	"github.com/bougou/go-ipmi/pkg/types"
)

// Offsets of the session packet.
const (
	RMCPHeaderLen    = 4
	SessionHeaderLen = 12 // auth type, payload type, session ID, sequence, length
	PayloadOffset    = RMCPHeaderLen + SessionHeaderLen
)

// PayloadLen is the payload length field of a session packet; ok is false
// when pkt is shorter than its headers.
func PayloadLen(pkt []byte) (n int, ok bool) {
	if len(pkt) < PayloadOffset {
		return 0, false
	}
	return int(binary.LittleEndian.Uint16(pkt[14:16])), true
}

// AuthCode splits an authenticated session packet whose AuthCode is n
// bytes long into the bytes the code covers (session header to next
// header) and the code. ok is false unless pkt is exactly that long: a
// payload, its integrity pad, pad length, next header and n code bytes.
func AuthCode(pkt []byte, n int) (signed, code []byte, ok bool) {
	plen, ok := PayloadLen(pkt)
	if !ok || n <= 0 {
		return nil, nil, false
	}
	codeAt := PayloadOffset + plen + types.IntegrityPadLen(SessionHeaderLen, plen) + 2
	if len(pkt) != codeAt+n {
		return nil, nil, false
	}
	return pkt[RMCPHeaderLen:codeAt], pkt[codeAt:], true
}
