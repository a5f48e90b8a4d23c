package main

// A lean RMCP+ (IPMI v2.0) client for the benchmark only: session setup
// (Open Session, RAKP 1–4) through go-ipmi's rmcpplus messages and crypto
// key derivation, then in-session requests built by hand so that the client
// spends as little CPU per request as possible: one connected UDP socket per
// session, no goroutine or allocation per request, HMAC and AES state kept
// across requests.
//
// In-session packet, as sent and received (v2.0 §13.6, §13.28, §13.29):
//
//	RMCP header        06 00 ff 07
//	auth type          06 (RMCP+)
//	payload type       c0 (IPMI, encrypted, authenticated)
//	session ID         4 bytes LE (the peer's ID)
//	session sequence   4 bytes LE
//	payload length     2 bytes LE
//	payload            IV (16) ‖ AES-CBC-128(IPMI message ‖ 01 02 … n ‖ n)
//	integrity pad      ff… so that auth type … next header is a multiple of 4
//	pad length, 07     2 bytes
//	auth code          HMAC-SHA1-96 (suite 3) or HMAC-SHA256-128 (suite 17) with K1
//	                   over auth type … next header

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/rand/v2"
	"net"
	"time"

	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/rmcpplus"
	"github.com/bougou/go-ipmi/pkg/types"
)

// errTimeout is a request that got no matching answer before its deadline.
var errTimeout = errors.New("no answer before deadline")

// ccError is an IPMI completion code other than 0x00.
type ccError uint8

func (e ccError) Error() string { return fmt.Sprintf("completion code %#02x", uint8(e)) }

type leanSession struct {
	conn    *net.UDPConn
	timeout time.Duration

	consID, bmcID uint32
	seq           uint32 // session sequence number of the last request
	rqSeq         uint8  // IPMI requester sequence (6 bits)

	block  cipher.Block
	mac    hash.Hash
	macLen int
	rng    *rand.ChaCha8

	iv   [16]byte
	out  []byte
	in   []byte
	sum  []byte
	body []byte
}

// dialLean opens an RMCP+ session with cipher suite 3 or 17 at administrator
// privilege (name-only lookup).
func dialLean(ctx context.Context, addr, user, pass string, suite uint8, timeout time.Duration) (*leanSession, error) {
	authAlg, integAlg, cryptAlg, ok := types.GetCipherSuiteAlgorithms(types.CipherSuiteID(suite))
	if !ok || cryptAlg != types.CryptAlg_AES_CBC_128 ||
		(integAlg != types.IntegrityAlg_HMAC_SHA1_96 && integAlg != types.IntegrityAlg_HMAC_SHA256_128) {
		return nil, fmt.Errorf("cipher suite %d: the lean client speaks suites 3 and 17 only", suite)
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, err
	}
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	s := &leanSession{
		conn: conn, timeout: timeout, rng: rand.NewChaCha8(seed),
		out: make([]byte, 0, 512), in: make([]byte, 2048), body: make([]byte, 0, 256),
	}
	if err := s.setup(ctx, user, pass, authAlg, integAlg); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *leanSession) setup(ctx context.Context, user, pass string, authAlg types.AuthAlg, integAlg types.IntegrityAlg) error {
	s.consID = uint32(s.rng.Uint64()>>32) | 1
	a, i, c := rmcpplus.NewAlgorithmPayloads(authAlg, integAlg, types.CryptAlg_AES_CBC_128)
	open := &rmcpplus.OpenSessionRequest{RemoteConsoleSessionID: s.consID,
		AuthenticationPayload: a, IntegrityPayload: i, ConfidentialityPayload: c}
	p, err := s.handshake(ctx, types.PayloadTypeRmcpOpenSessionRequest, open.Pack(), types.PayloadTypeRmcpOpenSessionResponse)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	var or rmcpplus.OpenSessionResponse
	if err := or.Unpack(p); err != nil {
		return fmt.Errorf("open session response: %w", err)
	}
	if or.RmcpStatusCode != types.RmcpStatusCodeNoErrors {
		return fmt.Errorf("open session: %w", types.NewRmcpStatusError(or.RmcpStatusCode))
	}
	s.bmcID = or.ManagedSystemSessionID

	var consRand [16]byte
	_, _ = crand.Read(consRand[:])
	r1 := &rmcpplus.RAKPMessage1{ManagedSystemSessionID: s.bmcID, RemoteConsoleRandomNumber: consRand,
		NameOnlyLookup: true, RequestedMaximumPrivilegeLevel: types.PrivilegeLevelAdministrator,
		UsernameLength: uint8(len(user)), Username: []byte(user)}
	role := r1.Role()
	p, err = s.handshake(ctx, types.PayloadTypeRAKPMessage1, r1.Pack(), types.PayloadTypeRAKPMessage2)
	if err != nil {
		return fmt.Errorf("RAKP 1: %w", err)
	}
	r2 := rmcpplus.RAKPMessage2{AuthAlg: authAlg}
	if err := r2.Unpack(p); err != nil {
		return fmt.Errorf("RAKP 2: %w", err)
	}
	if r2.RmcpStatusCode != types.RmcpStatusCodeNoErrors {
		return fmt.Errorf("RAKP 2: %w", types.NewRmcpStatusError(r2.RmcpStatusCode))
	}
	kuid := crypto.PadPassword20([]byte(pass))
	want, err := crypto.RAKP2AuthCode(authAlg, s.consID, s.bmcID, consRand[:], r2.ManagedSystemRandomNumber[:],
		r2.ManagedSystemGUID[:], role, user, kuid)
	if err == nil {
		want, err = crypto.TruncateRAKP2AuthCode(authAlg, want)
	}
	if err != nil || !hmac.Equal(want, r2.KeyExchangeAuthenticationCode) {
		return fmt.Errorf("RAKP 2: BMC's key exchange code does not match (wrong password?)")
	}
	sik, err := crypto.DeriveSIK(authAlg, consRand[:], r2.ManagedSystemRandomNumber[:], role, user, kuid)
	if err != nil {
		return err
	}
	k1, err := crypto.DeriveK1(authAlg, sik)
	if err != nil {
		return err
	}
	k2, err := crypto.DeriveK2(authAlg, sik)
	if err != nil {
		return err
	}
	code, err := crypto.RAKP3AuthCode(authAlg, r2.ManagedSystemRandomNumber[:], s.consID, role, user, kuid)
	if err != nil {
		return err
	}
	r3 := &rmcpplus.RAKPMessage3{ManagedSystemSessionID: s.bmcID, KeyExchangeAuthenticationCode: code}
	p, err = s.handshake(ctx, types.PayloadTypeRAKPMessage3, r3.Pack(), types.PayloadTypeRAKPMessage4)
	if err != nil {
		return fmt.Errorf("RAKP 3: %w", err)
	}
	r4 := rmcpplus.RAKPMessage4{AuthAlg: authAlg}
	if err := r4.Unpack(p); err != nil {
		return fmt.Errorf("RAKP 4: %w", err)
	}
	if r4.RmcpStatusCode != types.RmcpStatusCodeNoErrors {
		return fmt.Errorf("RAKP 4: %w", types.NewRmcpStatusError(r4.RmcpStatusCode))
	}

	if s.block, err = aes.NewCipher(k2[:16]); err != nil {
		return err
	}
	if integAlg == types.IntegrityAlg_HMAC_SHA256_128 {
		s.mac, s.macLen = hmac.New(sha256.New, k1), 16
	} else {
		s.mac, s.macLen = hmac.New(sha1.New, k1), 12
	}
	s.sum = make([]byte, 0, s.mac.Size())
	return nil
}

// handshake sends one session-less payload and waits for the answer of type
// want, resending up to three times.
func (s *leanSession) handshake(ctx context.Context, pt types.PayloadType, payload []byte, want types.PayloadType) ([]byte, error) {
	pkt := protocol.BuildRMCPPlusPacket(uint8(pt), 0, 0, 0, payload)
	for try := 0; try < 4; try++ {
		if _, err := s.conn.Write(pkt); err != nil {
			return nil, err
		}
		dl := time.Now().Add(s.timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(dl) {
			dl = d
		}
		_ = s.conn.SetReadDeadline(dl)
		for {
			n, err := s.conn.Read(s.in)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
					break
				}
				return nil, err
			}
			if n < 16 || s.in[3] != 0x07 || s.in[4] != 0x06 {
				continue
			}
			_, _, ptype, _, p, ok := protocol.ParseRMCPPlusHeader(s.in[:n])
			if ok && types.PayloadType(ptype) == want {
				return append([]byte(nil), p...), nil
			}
		}
	}
	return nil, errTimeout
}

// do sends one in-session IPMI request to the BMC (LUN 0) and returns the
// response data after the completion code. The slice is valid until the next
// call.
func (s *leanSession) do(netFn, cmd uint8, data []byte) ([]byte, error) {
	s.rqSeq = (s.rqSeq + 1) & 0x3f
	s.seq++
	if s.seq == 0 {
		s.seq = 1
	}
	// IPMI LAN message (v2.0 §13.8).
	b := s.body[:0]
	b = append(b, protocol.BMCAddr, netFn<<2, 0, 0x81, s.rqSeq<<2, cmd)
	b[2] = protocol.Checksum(b[:2])
	b = append(b, data...)
	b = append(b, protocol.Checksum(b[3:]))
	// AES-CBC-128 confidentiality pad (§13.29): 1, 2, …, n, then n.
	n := (16 - (len(b)+1)%16) % 16
	for i := 1; i <= n; i++ {
		b = append(b, byte(i))
	}
	b = append(b, byte(n))
	s.body = b

	p := s.out[:0]
	p = append(p, 0x06, 0x00, 0xff, 0x07, 0x06, 0xc0)
	p = binary.LittleEndian.AppendUint32(p, s.bmcID)
	p = binary.LittleEndian.AppendUint32(p, s.seq)
	p = binary.LittleEndian.AppendUint16(p, uint16(16+len(b)))
	binary.LittleEndian.PutUint64(s.iv[:8], s.rng.Uint64())
	binary.LittleEndian.PutUint64(s.iv[8:], s.rng.Uint64())
	p = append(p, s.iv[:]...)
	off := len(p)
	p = append(p, b...)
	cipher.NewCBCEncrypter(s.block, s.iv[:]).CryptBlocks(p[off:], p[off:])
	pad := types.IntegrityPadLen(12, 16+len(b))
	for i := 0; i < pad; i++ {
		p = append(p, 0xff)
	}
	p = append(p, byte(pad), 0x07)
	s.mac.Reset()
	s.mac.Write(p[4:])
	s.sum = s.mac.Sum(s.sum[:0])
	p = append(p, s.sum[:s.macLen]...)
	s.out = p

	if _, err := s.conn.Write(p); err != nil {
		return nil, err
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(s.timeout))
	for {
		n, err := s.conn.Read(s.in)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, errTimeout
			}
			return nil, err
		}
		if resp, ok, err := s.open(s.in[:n], cmd); ok {
			return resp, err
		}
	}
}

// open checks and decrypts one received packet; ok is false for a packet
// that is not the answer to the pending request (a late answer to an earlier
// one, say).
func (s *leanSession) open(pkt []byte, cmd uint8) (resp []byte, ok bool, err error) {
	if len(pkt) < 16+32+2+s.macLen || pkt[3] != 0x07 || pkt[4] != 0x06 || pkt[5] != 0xc0 {
		return nil, false, nil
	}
	if binary.LittleEndian.Uint32(pkt[6:10]) != s.consID {
		return nil, false, nil
	}
	plen := int(binary.LittleEndian.Uint16(pkt[14:16]))
	if plen < 32 || plen%16 != 0 || 16+plen+2+s.macLen > len(pkt) {
		return nil, false, nil
	}
	end := len(pkt) - s.macLen
	s.mac.Reset()
	s.mac.Write(pkt[4:end])
	s.sum = s.mac.Sum(s.sum[:0])
	if !hmac.Equal(s.sum[:s.macLen], pkt[end:]) {
		return nil, false, nil
	}
	iv, ct := pkt[16:32], pkt[32:16+plen]
	cipher.NewCBCDecrypter(s.block, iv).CryptBlocks(ct, ct)
	padN := int(ct[len(ct)-1])
	if padN >= len(ct) {
		return nil, false, nil
	}
	m := ct[:len(ct)-1-padN]
	// rqSA, netFn/rqLUN, cks, rsSA, rqSeq/rsLUN, cmd, cc, data…, cks
	if len(m) < 8 || m[4]>>2 != s.rqSeq || m[5] != cmd {
		return nil, false, nil
	}
	if m[6] != 0 {
		return nil, true, ccError(m[6])
	}
	return m[7 : len(m)-1], true, nil
}

// close ends the session on the BMC (Close Session, v2.0 §22.19) and the socket.
func (s *leanSession) close() error {
	var id [4]byte
	binary.LittleEndian.PutUint32(id[:], s.bmcID)
	_, err := s.do(0x06, 0x3c, id[:])
	s.conn.Close()
	return err
}

// ping sends RMCP/ASF presence pings to addr until a pong arrives or ctx ends.
func ping(ctx context.Context, addr string) error {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	// RMCP header (class ASF), ASF IANA 4542, Presence Ping, tag, reserved, length 0.
	req := []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x2a, 0x00, 0x00}
	buf := make([]byte, 512)
	wait := 20 * time.Millisecond
	for {
		_, _ = conn.Write(req) // ECONNREFUSED until the port is bound: retried below
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		n, err := conn.Read(buf)
		if err == nil && n >= 12 && buf[3] == 0x06 && buf[8] == 0x40 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no RMCP presence pong from %s: %w", addr, ctx.Err())
		}
		if err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				// Refused: nothing listening yet. Wait out the slot, then retry.
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
		}
		if wait < 200*time.Millisecond {
			wait *= 2
		}
	}
}
