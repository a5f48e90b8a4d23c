package sim

import (
	"bytes"
	"encoding/binary"
	"hash/fnv"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/transport"
	"github.com/bougou/go-ipmi/pkg/types"
)

// lanGuard sits between the UDP socket and go-ipmi's RMCP+ server. It adds
// what a trustworthy BMC needs and go-ipmi v0.9.1 lacks:
//
//   - lockout: after LockoutAttempts failed authentications a user is refused
//     (RAKP 2 status 0x0D, unauthorized name) for LockoutDuration;
//   - a response cache: a retransmitted in-session request (the same packet
//     again, or the same IPMI rqSeq and bytes as the session's last request)
//     gets the cached response and its handler does not run twice.
//
// It reads packets the way the server does (RMCP+ header, K2 decryption,
// integrity check) but never changes them.
type lanGuard struct {
	transport.PacketConn
	b       *bmc.BMC
	log     *slog.Logger
	metrics *Metrics
	name    string

	maxFails    int
	lockFor     time.Duration
	authTimeout time.Duration
	now         func() time.Time

	mu      sync.Mutex
	users   map[string]*authState    // by user name
	pending map[uint32]*pendingAuth  // by console session ID
	cache   map[uint32]*sessionCache // by BMC session ID
	byCons  map[uint32]uint32        // console session ID -> BMC session ID
}

type authState struct {
	fails       int
	lockedUntil time.Time
}

type pendingAuth struct {
	user    string
	known   bool
	addr    string
	started time.Time
	bmcID   uint32
}

// sessionCache remembers the last few requests of one session.
type sessionCache struct {
	entries [cacheDepth]cacheEntry
	next    int
	last    int // index of the most recent request, -1 when none
}

const (
	cacheDepth = 16
	cacheTTL   = 10 * time.Second
)

type cacheEntry struct {
	used    bool
	sessSeq uint32
	rqSeq   uint8
	netFn   uint8
	cmd     uint8
	sum     uint64
	at      time.Time
	done    bool
	resp    []byte // plaintext IPMI response message
}

func newLANGuard(conn transport.PacketConn, b *bmc.BMC, cfg *Config, m *Metrics, log *slog.Logger) *lanGuard {
	return &lanGuard{
		PacketConn:  conn,
		b:           b,
		log:         log,
		metrics:     m,
		name:        cfg.Name,
		maxFails:    cfg.LockoutAttempts,
		lockFor:     cfg.LockoutDuration.Duration,
		authTimeout: cfg.AuthTimeout.Duration,
		now:         time.Now,
		users:       map[string]*authState{},
		pending:     map[uint32]*pendingAuth{},
		cache:       map[uint32]*sessionCache{},
		byCons:      map[uint32]uint32{},
	}
}

// RMCP+ payload types (v2.0 Table 13-16).
const (
	ptIPMI  = 0x00
	ptRAKP1 = 0x12
	ptRAKP2 = 0x13
	ptRAKP3 = 0x14
	ptRAKP4 = 0x15
)

// ReadFrom returns the next packet the server should see; packets the guard
// answers itself (locked-out users, retransmits) are consumed here.
func (g *lanGuard) ReadFrom(buf []byte) (int, net.Addr, error) {
	for {
		n, addr, err := g.PacketConn.ReadFrom(buf)
		if err != nil {
			return n, addr, err
		}
		if g.inspect(buf[:n], addr) {
			return n, addr, nil
		}
	}
}

// WriteTo watches the server's answers: RAKP 4 settles an authentication,
// in-session responses fill the cache.
func (g *lanGuard) WriteTo(pkt []byte, addr net.Addr) (int, error) {
	g.observe(pkt)
	return g.PacketConn.WriteTo(pkt, addr)
}

func isRMCPPlus(pkt []byte) bool {
	return len(pkt) >= 16 && pkt[3]&0x1F == 0x07 && pkt[4] == 0x06
}

// inspect reports whether pkt goes on to the server.
func (g *lanGuard) inspect(pkt []byte, addr net.Addr) bool {
	if !isRMCPPlus(pkt) {
		return true
	}
	sid, seq, ptype, flags, payload, ok := protocol.ParseRMCPPlusHeader(pkt)
	if !ok {
		return true
	}
	switch ptype & 0x3F {
	case ptRAKP1:
		return g.onRAKP1(payload, addr)
	case ptRAKP3:
		g.onRAKP3(payload)
		return true
	case ptIPMI:
		if sid == 0 {
			return true
		}
		return g.onRequest(pkt, addr, sid, seq, flags, payload)
	}
	return true
}

// onRAKP1: payload = tag(1) reserved(3) bmcSessionID(4) consoleRand(16)
// role(1) reserved(2) nameLen(1) name.
func (g *lanGuard) onRAKP1(p []byte, addr net.Addr) bool {
	if len(p) < 28 {
		return true
	}
	bmcID := binary.LittleEndian.Uint32(p[4:8])
	nameLen := int(p[27])
	if len(p) < 28+nameLen {
		return true
	}
	name := string(p[28 : 28+nameLen])
	sess, err := g.b.Sessions.Get(bmcID)
	if err != nil {
		return true // the server refuses it
	}
	now := g.now()
	g.mu.Lock()
	g.expirePendingLocked(now)
	st := g.users[name]
	locked := st != nil && now.Before(st.lockedUntil)
	if !locked {
		_, uerr := g.b.Users.GetByName(name)
		g.pending[sess.ConsoleID] = &pendingAuth{user: name, known: uerr == nil, addr: addr.String(), started: now, bmcID: bmcID}
	}
	g.mu.Unlock()
	if !locked {
		return true
	}
	g.metrics.AuthFailures.WithLabelValues(g.name, "locked_out").Inc()
	g.log.Warn("refused login of locked-out user", "user", name, "from", addr.String(),
		"locked_until", st.lockedUntil.Format(time.RFC3339))
	// RAKP 2 error: tag, status 0x0D (unauthorized name), reserved(2), console session ID.
	resp := []byte{p[0], 0x0D, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(resp[4:8], sess.ConsoleID)
	_, _ = g.PacketConn.WriteTo(protocol.BuildRMCPPlusPacket(ptRAKP2, 0, 0, 0, resp), addr)
	_ = g.b.Sessions.Close(bmcID)
	return false
}

// onRAKP3: payload = tag(1) status(1) reserved(2) bmcSessionID(4) authcode.
// A non-zero status is the console telling us our RAKP 2 did not verify: the
// password it holds is wrong.
func (g *lanGuard) onRAKP3(p []byte) {
	if len(p) < 8 || p[1] == 0 {
		return
	}
	bmcID := binary.LittleEndian.Uint32(p[4:8])
	g.mu.Lock()
	defer g.mu.Unlock()
	for cons, pa := range g.pending {
		if pa.bmcID == bmcID {
			delete(g.pending, cons)
			g.failLocked(pa, "rakp3_status")
			return
		}
	}
}

// observe looks at an outgoing packet.
func (g *lanGuard) observe(pkt []byte) {
	if !isRMCPPlus(pkt) {
		return
	}
	sid, _, ptype, flags, payload, ok := protocol.ParseRMCPPlusHeader(pkt)
	if !ok {
		return
	}
	switch ptype & 0x3F {
	case ptRAKP4, ptRAKP2:
		// tag(1) status(1) reserved(2) consoleSessionID(4)
		if len(payload) < 8 {
			return
		}
		status := payload[1]
		if ptype&0x3F == ptRAKP2 && status == 0 {
			return // the exchange goes on
		}
		cons := binary.LittleEndian.Uint32(payload[4:8])
		g.mu.Lock()
		pa := g.pending[cons]
		if pa != nil {
			delete(g.pending, cons)
			if status == 0 {
				if st := g.users[pa.user]; st != nil {
					st.fails = 0
				}
				g.byCons[cons] = pa.bmcID
			} else {
				g.failLocked(pa, "bad_credentials")
			}
		}
		g.mu.Unlock()
	case ptIPMI:
		if sid == 0 {
			return
		}
		g.onResponse(sid, flags, payload)
	}
}

// failLocked counts one failed authentication. g.mu must be held.
func (g *lanGuard) failLocked(pa *pendingAuth, reason string) {
	if !pa.known {
		reason = "unknown_user"
	}
	g.metrics.AuthFailures.WithLabelValues(g.name, reason).Inc()
	g.log.Warn("authentication failed", "user", pa.user, "from", pa.addr, "reason", reason)
	if !pa.known {
		return // unknown names cannot be locked; they never log in
	}
	st := g.users[pa.user]
	if st == nil {
		st = &authState{}
		g.users[pa.user] = st
	}
	st.fails++
	if st.fails >= g.maxFails {
		st.lockedUntil = g.now().Add(g.lockFor)
		st.fails = 0
		g.metrics.Lockouts.WithLabelValues(g.name).Inc()
		g.log.Warn("user locked out after repeated failed authentications",
			"user", pa.user, "from", pa.addr, "attempts", g.maxFails,
			"for", g.lockFor.String(), "action", "check the password the client uses; the lock lifts by itself")
	}
}

// expirePendingLocked counts handshakes abandoned after RAKP 2 (a console
// that found our RAKP 2 wrong and gave up) as failures.
func (g *lanGuard) expirePendingLocked(now time.Time) {
	for cons, pa := range g.pending {
		if now.Sub(pa.started) > g.authTimeout {
			delete(g.pending, cons)
			g.failLocked(pa, "abandoned")
		}
	}
}

// Locked reports whether user is locked out now.
func (g *lanGuard) Locked(user string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.users[user]
	return st != nil && g.now().Before(st.lockedUntil)
}

func (g *lanGuard) sweep() {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expirePendingLocked(now)
	for id := range g.cache {
		if _, err := g.b.Sessions.Get(id); err != nil {
			delete(g.cache, id)
		}
	}
	for cons, id := range g.byCons {
		if _, err := g.b.Sessions.Get(id); err != nil {
			delete(g.byCons, cons)
		}
	}
}

func payloadPlain(sess *bmc.Session, flags uint8, payload []byte) ([]byte, bool) {
	if flags&types.PayloadFlagEncrypted == 0 {
		return payload, true
	}
	if len(sess.K2) < 16 {
		return nil, false
	}
	p, err := crypto.DecryptAESPayload(payload, sess.K2)
	return p, err == nil
}

func checksum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// onRequest handles an in-session IPMI request; it reports whether the
// server should see it.
func (g *lanGuard) onRequest(pkt []byte, addr net.Addr, sid, seq uint32, flags uint8, payload []byte) bool {
	sess, err := g.b.Sessions.Get(sid)
	if err != nil || !verifyIntegrity(pkt, sess, flags&types.PayloadFlagAuthenticated != 0) {
		return true // the server drops it
	}
	plain, ok := payloadPlain(sess, flags, payload)
	if !ok {
		return true
	}
	netFn, cmd, data, rqSeq, ok := protocol.ParseIPMIRequest(plain)
	if !ok {
		return true
	}
	sum := checksum(data)
	now := g.now()

	g.mu.Lock()
	sc := g.cache[sid]
	if sc == nil {
		sc = &sessionCache{last: -1}
		g.cache[sid] = sc
	}
	match := -1
	for i := range sc.entries {
		e := &sc.entries[i]
		if !e.used || now.Sub(e.at) > cacheTTL {
			continue
		}
		same := e.rqSeq == rqSeq && e.netFn == netFn && e.cmd == cmd && e.sum == sum
		if e.sessSeq == seq && same {
			match = i // the very same packet again
			break
		}
		if i == sc.last && same {
			match = i // the console's retry of its last request
			break
		}
	}
	if match < 0 {
		e := &sc.entries[sc.next]
		*e = cacheEntry{used: true, sessSeq: seq, rqSeq: rqSeq, netFn: netFn, cmd: cmd, sum: sum, at: now}
		sc.last = sc.next
		sc.next = (sc.next + 1) % cacheDepth
		g.mu.Unlock()
		return true
	}
	e := sc.entries[match]
	g.mu.Unlock()
	g.metrics.Retransmits.WithLabelValues(g.name).Inc()
	if !e.done {
		return false // still running; its answer is on the way
	}
	g.resend(sess, addr, flags&types.PayloadFlagEncrypted != 0, e.resp)
	return false
}

// onResponse stores the server's answer to the session's pending request.
func (g *lanGuard) onResponse(consoleID uint32, flags uint8, payload []byte) {
	g.mu.Lock()
	bmcID, ok := g.byCons[consoleID]
	g.mu.Unlock()
	if !ok {
		return
	}
	sess, err := g.b.Sessions.Get(bmcID)
	if err != nil {
		return
	}
	plain, ok := payloadPlain(sess, flags, payload)
	if !ok || len(plain) < 7 {
		return
	}
	netFn := (plain[1] >> 2) &^ 1
	rqSeq := plain[4] >> 2
	cmd := plain[5]
	g.mu.Lock()
	defer g.mu.Unlock()
	sc := g.cache[bmcID]
	if sc == nil {
		return
	}
	for i := range sc.entries {
		e := &sc.entries[i]
		if e.used && !e.done && e.rqSeq == rqSeq && e.netFn == netFn && e.cmd == cmd {
			e.done = true
			e.resp = bytes.Clone(plain)
			return
		}
	}
}

// resend sends a cached response under a fresh outbound sequence number.
func (g *lanGuard) resend(sess *bmc.Session, addr net.Addr, encrypt bool, plain []byte) {
	body := plain
	var flags uint8
	if encrypt && len(sess.K2) >= 16 {
		enc, err := crypto.EncryptAESPayload(plain, sess.K2, crypto.RandomBytes(16))
		if err != nil {
			return
		}
		body = enc
		flags |= types.PayloadFlagEncrypted
	}
	if sess.IntegrityAlg != types.IntegrityAlg_None {
		flags |= types.PayloadFlagAuthenticated
	}
	pkt := protocol.BuildRMCPPlusPacket(ptIPMI, flags, sess.ConsoleID, sess.NextOutboundSeq(), body)
	pkt, ok := appendIntegrity(pkt, sess)
	if !ok {
		return
	}
	_, _ = g.PacketConn.WriteTo(pkt, addr)
}

// Offsets of the RMCP+ session packet (v2.0 §13.6).
const (
	rmcpHeaderLen    = 4
	sessionHeaderLen = 12
	payloadOffset    = rmcpHeaderLen + sessionHeaderLen
	nextHeader       = 0x07
)

// appendIntegrity adds the integrity pad, pad length, next header and
// AuthCode trailer (v2.0 Table 13-8).
func appendIntegrity(pkt []byte, sess *bmc.Session) ([]byte, bool) {
	n, ok := crypto.IntegrityAuthCodeLen(sess.IntegrityAlg)
	if !ok {
		return nil, false
	}
	if n == 0 {
		return pkt, true
	}
	if len(sess.K1) == 0 || len(pkt) < payloadOffset {
		return nil, false
	}
	pad := types.IntegrityPadLen(sessionHeaderLen, len(pkt)-payloadOffset)
	out := make([]byte, 0, len(pkt)+pad+2+n)
	out = append(out, pkt...)
	for i := 0; i < pad; i++ {
		out = append(out, 0xFF)
	}
	out = append(out, byte(pad), nextHeader)
	code, err := crypto.SessionIntegrityAuthCode(sess.IntegrityAlg, out[rmcpHeaderLen:], sess.K1, "")
	if err != nil || len(code) != n {
		return nil, false
	}
	return append(out, code...), true
}

// verifyIntegrity checks the AuthCode trailer of an in-session packet.
func verifyIntegrity(pkt []byte, sess *bmc.Session, authenticated bool) bool {
	n, ok := crypto.IntegrityAuthCodeLen(sess.IntegrityAlg)
	if !ok {
		return false
	}
	if n == 0 {
		return true
	}
	if !authenticated || len(sess.K1) == 0 || len(pkt) < payloadOffset {
		return false
	}
	plen := int(binary.LittleEndian.Uint16(pkt[14:16]))
	end := payloadOffset + plen
	if len(pkt) < end {
		return false
	}
	pad := types.IntegrityPadLen(sessionHeaderLen, plen)
	codeAt := end + pad + 2
	if len(pkt) != codeAt+n {
		return false
	}
	want, err := crypto.SessionIntegrityAuthCode(sess.IntegrityAlg, pkt[rmcpHeaderLen:codeAt], sess.K1, "")
	if err != nil {
		return false
	}
	return crypto.Equal(want, pkt[codeAt:])
}
