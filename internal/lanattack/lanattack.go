// Package lanattack is a stranger on the management LAN, for tests: it
// sends a BMC the RMCP+ handshakes (IPMI v2.0 §13.17–13.23) that someone
// who does not know a user's password can send — naming that user — from a
// source address of its choice (a second loopback address, or the VMS's own
// address as a spoofer would). It never completes a login.
package lanattack

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/rmcpplus"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Kind is how a handshake ends.
type Kind int

const (
	// OpenOnly sends Open Session and nothing more: a half-open slot.
	OpenOnly Kind = iota
	// Abandon stops after RAKP 2 (the BMC's challenge), never sending RAKP 3.
	Abandon
	// ErrorStatus answers RAKP 2 with a RAKP 3 whose status is an error
	// (what a console sends when it finds the BMC's code wrong).
	ErrorStatus
	// RandomHMAC answers RAKP 2 with a RAKP 3 carrying a random code.
	RandomHMAC
)

func (k Kind) String() string {
	return [...]string{"open-only", "abandon-after-rakp2", "error-status-rakp3", "random-hmac-rakp3"}[k]
}

// ErrTimeout is a BMC that did not answer a step.
var ErrTimeout = errors.New("lanattack: no answer")

// Handshake runs one handshake of kind k naming user, from src (an IP; port
// 0) to the BMC at dst, cipher suite 17, and returns the RMCP+ status code
// of the BMC's last answer (RAKP 4's for ErrorStatus/RandomHMAC; 0 when
// there is none to wait for).
func Handshake(src, dst, user string, k Kind, timeout time.Duration) (types.RmcpStatusCode, error) {
	laddr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(src, "0"))
	if err != nil {
		return 0, err
	}
	raddr, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		return 0, err
	}
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	authAlg, integAlg, cryptAlg, _ := types.GetCipherSuiteAlgorithms(17)
	var rnd [4]byte
	_, _ = crand.Read(rnd[:])
	consID := uint32(rnd[0])<<24 | uint32(rnd[1])<<16 | uint32(rnd[2])<<8 | uint32(rnd[3]) | 1
	a, i, cr := rmcpplus.NewAlgorithmPayloads(authAlg, integAlg, cryptAlg)
	open := &rmcpplus.OpenSessionRequest{RemoteConsoleSessionID: consID,
		AuthenticationPayload: a, IntegrityPayload: i, ConfidentialityPayload: cr}
	if k == OpenOnly {
		_, err := c.Write(protocol.BuildRMCPPlusPacket(uint8(types.PayloadTypeRmcpOpenSessionRequest), 0, 0, 0, open.Pack()))
		return 0, err
	}
	p, err := exchange(c, types.PayloadTypeRmcpOpenSessionRequest, open.Pack(), types.PayloadTypeRmcpOpenSessionResponse, timeout)
	if err != nil {
		return 0, fmt.Errorf("open session: %w", err)
	}
	var or rmcpplus.OpenSessionResponse
	if err := or.Unpack(p); err != nil {
		return 0, err
	}
	if or.RmcpStatusCode != types.RmcpStatusCodeNoErrors {
		return or.RmcpStatusCode, nil
	}
	var consRand [16]byte
	_, _ = crand.Read(consRand[:])
	r1 := &rmcpplus.RAKPMessage1{ManagedSystemSessionID: or.ManagedSystemSessionID, RemoteConsoleRandomNumber: consRand,
		NameOnlyLookup: true, RequestedMaximumPrivilegeLevel: types.PrivilegeLevelUser,
		UsernameLength: uint8(len(user)), Username: []byte(user)}
	p, err = exchange(c, types.PayloadTypeRAKPMessage1, r1.Pack(), types.PayloadTypeRAKPMessage2, timeout)
	if err != nil {
		return 0, fmt.Errorf("RAKP 1: %w", err)
	}
	r2 := rmcpplus.RAKPMessage2{AuthAlg: authAlg}
	if err := r2.Unpack(p); err != nil {
		return 0, err
	}
	if r2.RmcpStatusCode != types.RmcpStatusCodeNoErrors || k == Abandon {
		return r2.RmcpStatusCode, nil
	}
	r3 := &rmcpplus.RAKPMessage3{ManagedSystemSessionID: or.ManagedSystemSessionID}
	if k == ErrorStatus {
		r3.RmcpStatusCode = types.RmcpStatusCodeInvalidIntegrityCheckValue
	} else {
		code := make([]byte, 32)
		_, _ = crand.Read(code)
		r3.KeyExchangeAuthenticationCode = code
	}
	p, err = exchange(c, types.PayloadTypeRAKPMessage3, r3.Pack(), types.PayloadTypeRAKPMessage4, timeout)
	if errors.Is(err, ErrTimeout) {
		return 0, nil // a BMC may stay silent to a bad RAKP 3
	}
	if err != nil {
		return 0, fmt.Errorf("RAKP 3: %w", err)
	}
	r4 := rmcpplus.RAKPMessage4{AuthAlg: authAlg}
	if err := r4.Unpack(p); err != nil {
		return 0, nil // an error RAKP 4 carries no code to parse
	}
	return r4.RmcpStatusCode, nil
}

// exchange sends one session-less payload and waits for an answer of type
// want (one try: an attacker does not retransmit).
func exchange(c *net.UDPConn, pt types.PayloadType, payload []byte, want types.PayloadType, timeout time.Duration) ([]byte, error) {
	if _, err := c.Write(protocol.BuildRMCPPlusPacket(uint8(pt), 0, 0, 0, payload)); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, ErrTimeout
			}
			return nil, err
		}
		if n < 16 || buf[3] != 0x07 || buf[4] != 0x06 {
			continue
		}
		_, _, ptype, _, p, ok := protocol.ParseRMCPPlusHeader(buf[:n])
		if ok && types.PayloadType(ptype) == want {
			return append([]byte(nil), p...), nil
		}
	}
}
