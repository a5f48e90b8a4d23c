package bmc

import (
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/rmcpplus"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/lan"
)

// rmcpConsole is a console the tests drive one RMCP+ message at a time
// (cipher suite 17), so that they can do what a real client would not:
// abandon a handshake after RAKP 2, send a RAKP 3 with an error status or a
// wrong code, reuse a console session ID, or resend a request packet.
type rmcpConsole struct {
	t    *testing.T
	conn *net.UDPConn

	consID, bmcID uint32
	user          string
	role          uint8
	consRand      [16]byte
	r2            rmcpplus.RAKPMessage2

	k1, k2 []byte
	seq    uint32
	rqSeq  uint8
	last   []byte // the last in-session request packet sent
}

const suite17Auth = types.AuthAlg_HMAC_SHA256

// dialConsole opens a UDP socket from localIP (127.0.0.x) to the BMC.
func dialConsole(t *testing.T, localIP string, port int, consID uint32) *rmcpConsole {
	t.Helper()
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(localIP)},
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rmcpConsole{t: t, conn: conn, consID: consID}
}

// sameSocket is a new console on c's socket, with c's console session ID.
func (c *rmcpConsole) sameSocket() *rmcpConsole {
	return &rmcpConsole{t: c.t, conn: c.conn, consID: c.consID}
}

// exchange sends pkt and returns the payload of the first answer of type
// want, or an error after timeout.
func (c *rmcpConsole) exchange(pkt []byte, want uint8, timeout time.Duration) ([]byte, error) {
	if _, err := c.conn.Write(pkt); err != nil {
		return nil, err
	}
	return c.await(want, timeout)
}

func (c *rmcpConsole) await(want uint8, timeout time.Duration) ([]byte, error) {
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			return nil, err
		}
		_, _, pt, _, p, ok := protocol.ParseRMCPPlusHeader(buf[:n])
		if ok && pt&0x3F == want {
			if want == lan.PayloadIPMI {
				return append([]byte(nil), buf[:n]...), nil
			}
			return append([]byte(nil), p...), nil
		}
	}
}

// open sends Open Session (suite 17, administrator) and keeps the BMC's ID.
func (c *rmcpConsole) open() {
	c.t.Helper()
	a, i, cr := rmcpplus.NewAlgorithmPayloads(suite17Auth, types.IntegrityAlg_HMAC_SHA256_128, types.CryptAlg_AES_CBC_128)
	req := &rmcpplus.OpenSessionRequest{RemoteConsoleSessionID: c.consID,
		AuthenticationPayload: a, IntegrityPayload: i, ConfidentialityPayload: cr}
	p, err := c.exchange(protocol.BuildRMCPPlusPacket(0x10, 0, 0, 0, req.Pack()), 0x11, 5*time.Second)
	if err != nil {
		c.t.Fatalf("open session: %v", err)
	}
	var resp rmcpplus.OpenSessionResponse
	if err := resp.Unpack(p); err != nil || resp.RmcpStatusCode != types.RmcpStatusCodeNoErrors {
		c.t.Fatalf("open session: %v, status %#x", err, resp.RmcpStatusCode)
	}
	c.bmcID = resp.ManagedSystemSessionID
}

// rakp1 sends RAKP 1 naming user at privilege level priv and returns the
// RAKP 2 status.
func (c *rmcpConsole) rakp1(user string, priv types.PrivilegeLevel) uint8 {
	c.t.Helper()
	_, _ = rand.Read(c.consRand[:])
	m := &rmcpplus.RAKPMessage1{ManagedSystemSessionID: c.bmcID, RemoteConsoleRandomNumber: c.consRand,
		NameOnlyLookup: true, RequestedMaximumPrivilegeLevel: priv,
		UsernameLength: uint8(len(user)), Username: []byte(user)}
	c.user, c.role = user, m.Role()
	p, err := c.exchange(protocol.BuildRMCPPlusPacket(lan.PayloadRAKP1, 0, 0, 0, m.Pack()), lan.PayloadRAKP2, 5*time.Second)
	if err != nil {
		c.t.Fatalf("RAKP 1: %v", err)
	}
	c.r2 = rmcpplus.RAKPMessage2{AuthAlg: suite17Auth}
	if p[1] != 0 {
		return p[1] // an error RAKP 2 has no random number, GUID or code
	}
	if err := c.r2.Unpack(p); err != nil {
		c.t.Fatalf("RAKP 2: %v", err)
	}
	return p[1]
}

// rakp2Matches reports whether the BMC's RAKP 2 code verifies against pass.
func (c *rmcpConsole) rakp2Matches(pass string) bool {
	want, err := crypto.RAKP2AuthCode(suite17Auth, c.consID, c.bmcID, c.consRand[:], c.r2.ManagedSystemRandomNumber[:],
		c.r2.ManagedSystemGUID[:], c.role, c.user, crypto.PadPassword20([]byte(pass)))
	if err == nil {
		want, err = crypto.TruncateRAKP2AuthCode(suite17Auth, want)
	}
	return err == nil && hmac.Equal(want, c.r2.KeyExchangeAuthenticationCode)
}

// rakp3 sends RAKP 3 with status and, for status 0, the code computed from
// pass. It returns the RAKP 4 status, or an error when none came in time.
func (c *rmcpConsole) rakp3(status uint8, pass string, timeout time.Duration) (uint8, error) {
	c.t.Helper()
	m := &rmcpplus.RAKPMessage3{RmcpStatusCode: types.RmcpStatusCode(status), ManagedSystemSessionID: c.bmcID}
	kuid := crypto.PadPassword20([]byte(pass))
	if status == 0 {
		code, err := crypto.RAKP3AuthCode(suite17Auth, c.r2.ManagedSystemRandomNumber[:], c.consID, c.role, c.user, kuid)
		if err != nil {
			c.t.Fatal(err)
		}
		m.KeyExchangeAuthenticationCode = code
	}
	p, err := c.exchange(protocol.BuildRMCPPlusPacket(lan.PayloadRAKP3, 0, 0, 0, m.Pack()), lan.PayloadRAKP4, timeout)
	if err != nil {
		return 0, err
	}
	if p[1] == 0 {
		_, c.k1, c.k2, err = crypto.DeriveSessionKeys(suite17Auth, c.consRand[:], c.r2.ManagedSystemRandomNumber[:], c.role, c.user, kuid)
		if err != nil {
			c.t.Fatal(err)
		}
	}
	return p[1], nil
}

// login runs the whole handshake with the right password.
func (c *rmcpConsole) login(user, pass string, priv types.PrivilegeLevel) {
	c.t.Helper()
	c.open()
	if st := c.rakp1(user, priv); st != 0 {
		c.t.Fatalf("login %s: RAKP 2 status %#x", user, st)
	}
	if st, err := c.rakp3(0, pass, 5*time.Second); err != nil || st != 0 {
		c.t.Fatalf("login %s: RAKP 4 status %#x, %v", user, st, err)
	}
}

// request builds an in-session request packet (encrypted, authenticated).
func (c *rmcpConsole) request(netFn, cmd uint8, data []byte) []byte {
	c.t.Helper()
	c.seq++
	c.rqSeq = (c.rqSeq + 1) & 0x3F
	msg := []byte{protocol.BMCAddr, netFn << 2, 0, 0x81, c.rqSeq << 2, cmd}
	msg[2] = protocol.Checksum(msg[:2])
	msg = append(msg, data...)
	msg = append(msg, protocol.Checksum(msg[3:]))
	iv := make([]byte, 16)
	_, _ = rand.Read(iv)
	body, err := crypto.EncryptAESPayload(msg, c.k2, iv)
	if err != nil {
		c.t.Fatal(err)
	}
	pkt := protocol.BuildRMCPPlusPacket(lan.PayloadIPMI, types.PayloadFlagEncrypted|types.PayloadFlagAuthenticated, c.bmcID, c.seq, body)
	pad := types.IntegrityPadLen(lan.SessionHeaderLen, len(pkt)-lan.PayloadOffset)
	for i := 0; i < pad; i++ {
		pkt = append(pkt, 0xFF)
	}
	pkt = append(pkt, byte(pad), 0x07)
	code, err := crypto.SessionIntegrityAuthCode(types.IntegrityAlg_HMAC_SHA256_128, pkt[lan.RMCPHeaderLen:], c.k1, "")
	if err != nil {
		c.t.Fatal(err)
	}
	return append(pkt, code...)
}

var errNoAnswer = errors.New("no answer")

// send sends an in-session request packet and returns the answer's
// completion code and data, checked and decrypted.
func (c *rmcpConsole) send(pkt []byte) (uint8, []byte, error) {
	c.last = pkt
	if _, err := c.conn.Write(pkt); err != nil {
		return 0, nil, err
	}
	for {
		resp, err := c.await(lan.PayloadIPMI, 5*time.Second)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %v", errNoAnswer, err)
		}
		sid, _, _, flags, payload, _ := protocol.ParseRMCPPlusHeader(resp)
		if sid != c.consID || flags&types.PayloadFlagAuthenticated == 0 {
			continue
		}
		n := len(resp) - 16 // HMAC-SHA256-128
		want, err := crypto.SessionIntegrityAuthCode(types.IntegrityAlg_HMAC_SHA256_128, resp[lan.RMCPHeaderLen:n], c.k1, "")
		if err != nil || !hmac.Equal(want, resp[n:]) {
			return 0, nil, fmt.Errorf("answer fails our integrity check (another session's?)")
		}
		plain, err := crypto.DecryptAESPayload(payload, c.k2)
		if err != nil {
			return 0, nil, fmt.Errorf("answer does not decrypt with our K2: %v", err)
		}
		if len(plain) < 8 {
			return 0, nil, fmt.Errorf("short answer %x", plain)
		}
		// rqSA netFn/rqLUN cks rsSA rqSeq/rsLUN cmd cc data... cks
		if plain[4]>>2 != c.rqSeq {
			continue // a late answer to an earlier request
		}
		return plain[6], plain[7 : len(plain)-1], nil
	}
}

// do sends one in-session request.
func (c *rmcpConsole) do(netFn, cmd uint8, data []byte) (uint8, []byte, error) {
	return c.send(c.request(netFn, cmd, data))
}

// resend sends the last request packet again, byte for byte.
func (c *rmcpConsole) resend() (uint8, []byte, error) { return c.send(c.last) }

func (c *rmcpConsole) String() string {
	return c.conn.LocalAddr().String() + "/" + strconv.FormatUint(uint64(c.bmcID), 16)
}

// sessionUserID reads the BMC's answer to Get Session Info for the current
// session: data[3] is the user ID logged in on it.
func sessionUserID(t *testing.T, c *rmcpConsole, data []byte) uint8 {
	t.Helper()
	if len(data) < 4 {
		t.Fatalf("%s: Get Session Info answered %x", c, data)
	}
	return data[3]
}
