package lan

// RMCP+ (IPMI v2.0 §13) packet reading for the LAN guard: the header and
// the handshake messages it accounts for (the in-session integrity check and
// decryption it repeats to recognise a request are in keys.go). Everything
// here is a pure function of its arguments; nothing is sent.

import (
	"encoding/binary"
	"hash/fnv"

	"github.com/ooblab/ooblab/internal/rmcpp"
)

// RMCP+ payload types (v2.0 Table 13-16).
const (
	PayloadIPMI         = 0x00
	PayloadOpenSession  = 0x10
	PayloadOpenResponse = 0x11
	PayloadRAKP1        = 0x12
	PayloadRAKP2        = 0x13
	PayloadRAKP3        = 0x14
	PayloadRAKP4        = 0x15
)

// Offsets of the RMCP+ session packet (v2.0 §13.6; internal/rmcpp).
const (
	RMCPHeaderLen    = rmcpp.RMCPHeaderLen
	SessionHeaderLen = rmcpp.SessionHeaderLen
	PayloadOffset    = rmcpp.PayloadOffset
)

// RMCP+ status codes the guard sends (v2.0 Table 13-15).
const (
	StatusInsufficientResources = 0x01
)

func IsRMCPPlus(pkt []byte) bool {
	return len(pkt) >= PayloadOffset && pkt[3]&0x1F == 0x07 && pkt[4] == 0x06
}

// rakp1 is what the guard reads of RAKP message 1 (v2.0 Table 13-11):
// tag(1) reserved(3) bmcSessionID(4) consoleRand(16) role(1) reserved(2)
// nameLen(1) name.
type rakp1 struct {
	tag   uint8
	bmcID uint32
	name  string
}

func parseRAKP1(p []byte) (rakp1, bool) {
	if len(p) < 28 {
		return rakp1{}, false
	}
	n := int(p[27])
	if n > 16 || len(p) < 28+n {
		return rakp1{}, false
	}
	return rakp1{tag: p[0], bmcID: binary.LittleEndian.Uint32(p[4:8]), name: string(p[28 : 28+n])}, true
}

// rakp2Error builds the payload of a RAKP message 2 that refuses the
// handshake: tag, status, reserved(2), console session ID (v2.0 Table 13-12).
func rakp2Error(tag, status uint8, consoleID uint32) []byte {
	p := []byte{tag, status, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(p[4:8], consoleID)
	return p
}

// rakp3 is what the guard reads of RAKP message 3 (v2.0 Table 13-13):
// tag(1) status(1) reserved(2) bmcSessionID(4) authcode. A non-zero status
// is the console saying our RAKP 2 did not verify against its password.
type rakp3 struct {
	status uint8
	bmcID  uint32
}

func parseRAKP3(p []byte) (rakp3, bool) {
	if len(p) < 8 {
		return rakp3{}, false
	}
	return rakp3{status: p[1], bmcID: binary.LittleEndian.Uint32(p[4:8])}, true
}

// rakpReply is the common head of RAKP messages 2 and 4 (v2.0 Tables 13-12,
// 13-14): tag(1) status(1) reserved(2) consoleSessionID(4).
type rakpReply struct {
	status    uint8
	consoleID uint32
}

func parseRAKPReply(p []byte) (rakpReply, bool) {
	if len(p) < 8 {
		return rakpReply{}, false
	}
	return rakpReply{status: p[1], consoleID: binary.LittleEndian.Uint32(p[4:8])}, true
}

// openSession is what the guard reads of an RMCP+ Open Session Request
// (v2.0 Table 13-9): tag(1) maxPrivilege(1) reserved(2)
// consoleSessionID(4), then the three algorithm payloads (the server's).
type openSession struct {
	tag       uint8
	consoleID uint32
}

func parseOpenSession(p []byte) (openSession, bool) {
	if len(p) < 8 {
		return openSession{}, false
	}
	return openSession{tag: p[0], consoleID: binary.LittleEndian.Uint32(p[4:8])}, true
}

// openReply is the head of an RMCP+ Open Session Response (v2.0 Table
// 13-10): tag(1) status(1) maxPrivilege(1) reserved(1)
// consoleSessionID(4) bmcSessionID(4), then the algorithm payloads; an
// error response may stop after the console session ID.
type openReply struct {
	status    uint8
	consoleID uint32
	bmcID     uint32 // 0 when absent
}

func parseOpenReply(p []byte) (openReply, bool) {
	if len(p) < 8 {
		return openReply{}, false
	}
	r := openReply{status: p[1], consoleID: binary.LittleEndian.Uint32(p[4:8])}
	if len(p) >= 12 {
		r.bmcID = binary.LittleEndian.Uint32(p[8:12])
	}
	return r, true
}

func checksum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}
