package client

import (
	"crypto/aes"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"

	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/ooblab/ooblab/internal/rmcpp"
	"golang.org/x/net/proxy"
)

// go-ipmi v0.9.1's client takes every datagram from its BMC's address as
// the answer it waits for: it never checks an in-session answer's AuthCode,
// and it decrypts before anything else, so a datagram whose ciphertext is
// not whole AES blocks, or whose plaintext ends in a pad length longer than
// itself, panics the reading goroutine — the whole of vmsctl, or of a VMS
// built on this package, taken down by one forged or corrupted UDP packet.
//
// udpGuard is the socket it reads from instead (WithUDPProxy): it watches
// the session set-up go by (the algorithms in the Open Session Response,
// the random numbers, role and name of RAKP 1 and 2), derives the session's
// K1 and K2 as both ends do (IPMI v2.0 §13.31-13.32, with go-ipmi's own
// crypto functions), and hands go-ipmi an in-session datagram only when its
// AuthCode is right for this session and its payload decrypts and unpads.
// Everything else from the wire is dropped and counted; the client's
// deadline and retries then work as for a lost answer.
//
// Session-less datagrams (presence pong, Get Channel Authentication
// Capabilities, Open Session Response, RAKP 2 and 4) pass: go-ipmi checks
// their lengths, and RAKP 2 and 4 carry their own authentication codes.
// IPMI v1.5 sessions are not used here (the client asks for RMCP+ only).

// refusedDatagrams counts what every udpGuard of this process dropped.
var refusedDatagrams atomic.Uint64

// RefusedDatagrams is how many datagrams from BMC addresses this process
// refused before go-ipmi saw them: forged, corrupted, or for another
// session. 0 on a healthy network.
func RefusedDatagrams() uint64 { return refusedDatagrams.Load() }

// guardDialer is the proxy.Dialer that makes udpGuards.
type guardDialer struct {
	password string
	dropped  *atomic.Uint64 // shared by every socket of one OOB, may be nil
}

var _ proxy.Dialer = guardDialer{}

func (d guardDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr) // connected: the kernel drops datagrams from any other address
	if err != nil {
		return nil, err
	}
	return &udpGuard{Conn: c, st: newGuardState(d.password), dropped: d.dropped}, nil
}

type udpGuard struct {
	net.Conn
	mu      sync.Mutex
	st      *guardState
	dropped *atomic.Uint64
}

func (g *udpGuard) Write(b []byte) (int, error) {
	g.mu.Lock()
	g.st.sent(b)
	g.mu.Unlock()
	return g.Conn.Write(b)
}

// Read returns the next datagram go-ipmi may see; the read deadline the
// client set still bounds the whole call.
func (g *udpGuard) Read(b []byte) (int, error) {
	for {
		n, err := g.Conn.Read(b)
		if err != nil {
			return n, err
		}
		g.mu.Lock()
		ok := g.st.received(b[:n])
		g.mu.Unlock()
		if ok {
			return n, nil
		}
		if g.dropped != nil {
			g.dropped.Add(1)
		}
	}
}

// RMCP+ layout (IPMI v2.0 Table 13-8), for the payload types used here (no
// OEM explicit payloads).
const (
	rmcpHeaderLen = rmcpp.RMCPHeaderLen

	payloadOpenSessionRequest  = 0x10
	payloadOpenSessionResponse = 0x11
	payloadRAKP1               = 0x12
	payloadRAKP2               = 0x13

	flagEncrypted     = 0x80
	flagAuthenticated = 0x40
)

// guardState is one socket's view of its session.
type guardState struct {
	password string

	consoleID uint32 // the session ID we asked for: the BMC's answers carry it
	authAlg   types.AuthAlg
	integAlg  types.IntegrityAlg
	cryptAlg  types.CryptAlg
	haveAlgs  bool

	rm       [16]byte
	role     uint8
	username string
	haveRAKP bool

	k1, k2 []byte // nil until RAKP 2 has come
}

func newGuardState(password string) *guardState { return &guardState{password: password} }

// isSession20 is go-ipmi's own test (types.Rmcp.Unpack) for a datagram it
// reads as RMCP+: message class (ACK bit cleared) not ASF, auth type byte
// 06h. Nothing else about the header is checked there, so neither is it
// here.
func isSession20(pkt []byte) bool {
	return len(pkt) > rmcpHeaderLen && pkt[3]&0x7F != 0x06 && pkt[4] == 0x06
}

// rmcpPlus splits a datagram isSession20 accepted: payload type (without
// the encrypted/authenticated bits), flags, session ID and payload. ok is
// false for a header that is cut short, an OEM explicit payload (a longer
// header this client never asks for) or a payload length that does not
// fit.
func rmcpPlus(pkt []byte) (ptype, flags uint8, sid uint32, payload []byte, ok bool) {
	sid, _, ptype, flags, payload, ok = protocol.ParseRMCPPlusHeader(pkt)
	if !ok || ptype == 0x02 { // OEM explicit: a longer header
		return 0, 0, 0, nil, false
	}
	return ptype, flags & 0xC0, sid, payload, true
}

// sent watches the client's session set-up.
func (s *guardState) sent(pkt []byte) {
	if !isSession20(pkt) {
		return
	}
	ptype, _, sid, p, ok := rmcpPlus(pkt)
	if !ok || sid != 0 {
		return
	}
	switch ptype {
	case payloadOpenSessionRequest:
		if len(p) >= 8 {
			*s = guardState{password: s.password, consoleID: binary.LittleEndian.Uint32(p[4:8])}
		}
	case payloadRAKP1:
		if len(p) >= 28 && 28+int(p[27]) <= len(p) {
			copy(s.rm[:], p[8:24])
			s.role = p[24]
			s.username = string(p[28 : 28+int(p[27])])
			s.haveRAKP = true
			s.k1, s.k2 = nil, nil
		}
	}
}

// received reports whether go-ipmi may see pkt.
func (s *guardState) received(pkt []byte) bool {
	if !isSession20(pkt) {
		// RMCP presence pong, IPMI v1.5 (Get Channel Authentication
		// Capabilities before the session): go-ipmi parses them without
		// decrypting. Anything in-session is RMCP+ here.
		return true
	}
	ptype, flags, sid, p, ok := rmcpPlus(pkt)
	if !ok {
		return false
	}
	if sid == 0 {
		if flags != 0 {
			return false // set-up messages are never encrypted or authenticated
		}
		s.setup(ptype, p)
		return true
	}
	if sid != s.consoleID || s.k1 == nil {
		return false // not our session, or before its keys exist
	}
	return s.authentic(pkt, flags, p)
}

// setup notes the BMC's half of the session set-up; RAKP 2 completes the
// keys.
func (s *guardState) setup(ptype uint8, p []byte) {
	switch ptype {
	case payloadOpenSessionResponse:
		// tag, status, privilege, reserved, console ID, BMC ID, then three
		// 8-byte algorithm records with the algorithm at offset 4.
		if len(p) >= 36 && p[1] == 0 && binary.LittleEndian.Uint32(p[4:8]) == s.consoleID {
			s.authAlg = types.AuthAlg(p[16] & 0x3F)
			s.integAlg = types.IntegrityAlg(p[24] & 0x3F)
			s.cryptAlg = types.CryptAlg(p[32] & 0x3F)
			s.haveAlgs = true
		}
	case payloadRAKP2:
		// tag, status, reserved, console ID, BMC random (16), GUID (16), code.
		if len(p) < 40 || p[1] != 0 || !s.haveAlgs || !s.haveRAKP || binary.LittleEndian.Uint32(p[4:8]) != s.consoleID {
			return
		}
		_, k1, k2, err := crypto.DeriveSessionKeys(s.authAlg, s.rm[:], p[8:24], s.role, s.username, crypto.PadPassword20([]byte(s.password)))
		if err != nil {
			return // an algorithm go-ipmi cannot do either: nothing in-session will pass
		}
		s.k1, s.k2 = k1, k2
	}
}

// authentic checks an in-session datagram the way the BMC checks ours:
// AuthCode over the session header, payload, pad, pad length and next
// header; then a confidential payload must be IV ‖ whole AES blocks whose
// plaintext unpads.
func (s *guardState) authentic(pkt []byte, flags uint8, payload []byte) bool {
	n, ok := crypto.IntegrityAuthCodeLen(s.integAlg)
	if !ok {
		return false
	}
	if n > 0 {
		if flags&flagAuthenticated == 0 {
			return false
		}
		signed, code, ok := rmcpp.AuthCode(pkt, n)
		if !ok {
			return false
		}
		want, err := crypto.SessionIntegrityAuthCode(s.integAlg, signed, s.k1, s.password)
		if err != nil || len(want) < n || !crypto.Equal(want[:n], code) {
			return false
		}
	}
	if flags&flagEncrypted == 0 {
		return true
	}
	if s.cryptAlg != types.CryptAlg_AES_CBC_128 {
		return false // the client asks for suites 3 and 17 (AES) only
	}
	ct := len(payload) - aes.BlockSize
	if ct <= 0 || ct%aes.BlockSize != 0 || len(s.k2) < 16 {
		return false
	}
	plain, err := crypto.DecryptAES(payload[aes.BlockSize:], s.k2[:16], payload[:aes.BlockSize])
	if err != nil {
		return false
	}
	_, err = crypto.UnpadAES(plain)
	return err == nil
}
