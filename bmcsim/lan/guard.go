// Package lan is what stands between a BMC's UDP socket and go-ipmi's
// RMCP+ server: the Guard, which does the login accounting and lockout
// (logins.go) and notes requests for the response cache that answers
// retransmits without running a handler again (replies.go). It reads RMCP+
// packets the way the server does (rmcpplus.go) and never changes them.
package lan

import (
	"log/slog"
	"net"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/transport"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/metrics"
)

// Guard sits between the UDP socket and go-ipmi's RMCP+ server and adds
// what a trustworthy BMC needs and go-ipmi v0.9.1 lacks:
//
//   - login accounting and lockout (loginBook, logins.go);
//   - the response cache for retransmitted requests (ReplyCache, replies.go),
//     whose notes it takes from the packets it reads.
//
// It reads packets the way the server does (rmcpplus.go) and never changes
// them; it drops a RAKP 3 that belongs to no handshake it knows and answers a
// RAKP 1 it refuses itself. All sending and logging happens outside the
// book's and the cache's mutexes.
type Guard struct {
	transport.PacketConn
	b       *bmc.BMC
	log     *slog.Logger
	metrics *metrics.Metrics
	name    string

	logins  *loginBook
	replies *ReplyCache
	keys    keyCache
}

func NewGuard(conn transport.PacketConn, b *bmc.BMC, cfg *config.Config, m *metrics.Metrics, replies *ReplyCache, log *slog.Logger) *Guard {
	return &Guard{
		PacketConn: conn,
		b:          b,
		log:        log,
		metrics:    m,
		name:       cfg.Name,
		logins:     newLoginBook(cfg),
		replies:    replies,
	}
}

// ReadFrom returns the next packet the server should see; packets the guard
// refuses are consumed here.
func (g *Guard) ReadFrom(buf []byte) (int, net.Addr, error) {
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

// WriteTo watches the server's answers: RAKP 2 errors and RAKP 4 settle a
// handshake.
func (g *Guard) WriteTo(pkt []byte, addr net.Addr) (int, error) {
	g.observe(pkt, addr)
	return g.PacketConn.WriteTo(pkt, addr)
}

// inspect reports whether pkt goes on to the server.
func (g *Guard) inspect(pkt []byte, addr net.Addr) bool {
	if !IsRMCPPlus(pkt) || addr == nil {
		return true
	}
	sid, seq, ptype, flags, payload, ok := protocol.ParseRMCPPlusHeader(pkt)
	if !ok {
		return true
	}
	switch ptype & 0x3F {
	case PayloadRAKP1:
		return g.onRAKP1(payload, addr)
	case PayloadRAKP3:
		return g.onRAKP3(payload, addr)
	case PayloadIPMI:
		if sid != 0 {
			g.onRequest(pkt, addr, sid, seq, flags, payload)
		}
	}
	return true
}

func (g *Guard) onRAKP1(p []byte, addr net.Addr) bool {
	m, ok := parseRAKP1(p)
	if !ok {
		return true // the server refuses it
	}
	sess, err := g.b.Sessions.Get(m.bmcID)
	if err != nil {
		return true // the server refuses it
	}
	_, uerr := g.b.Users.GetByName(m.name)
	from := addr.String()
	res := g.logins.rakp1(handshakeKey{bmcID: m.bmcID, addr: from}, sess.ConsoleID, m.name, uerr == nil)
	for _, id := range res.close {
		_ = g.b.Sessions.Close(id) // superseded: its RAKP 3 would find no session
	}
	for i := range res.charged {
		g.report(&res.charged[i])
	}
	var status uint8
	switch res.verdict {
	case rakp1Pass:
		return true
	case rakp1Locked:
		g.metrics.AuthFailures.WithLabelValues(g.name, "locked_out").Inc()
		g.log.Warn("refused login of locked-out user", "user", m.name, "from", from,
			"locked_until", res.until.Format(time.RFC3339))
		status = StatusUnauthorizedName
	case rakp1Throttled:
		g.metrics.AuthFailures.WithLabelValues(g.name, "source_throttled").Inc()
		g.log.Debug("refused handshake from a source over its budget", "from", from)
		status = StatusInsufficientResources
	}
	_, _ = g.PacketConn.WriteTo(protocol.BuildRMCPPlusPacket(PayloadRAKP2, 0, 0, 0, rakp2Error(m.tag, status, sess.ConsoleID)), addr)
	_ = g.b.Sessions.Close(m.bmcID)
	return false
}

func (g *Guard) onRAKP3(p []byte, addr net.Addr) bool {
	m, ok := parseRAKP3(p)
	if !ok {
		return true // the server answers it with an error
	}
	pass, out := g.logins.rakp3(handshakeKey{bmcID: m.bmcID, addr: addr.String()}, m.status)
	g.report(out)
	if !pass {
		g.log.Debug("dropped a RAKP 3 of no pending handshake from its address", "from", addr.String())
	}
	return pass
}

// onRequest notes an in-session IPMI request for the reply cache.
func (g *Guard) onRequest(pkt []byte, addr net.Addr, sid, seq uint32, flags uint8, payload []byte) {
	sess, err := g.b.Sessions.Get(sid)
	if err != nil {
		return // the server drops it
	}
	var req request
	ok := false
	g.keys.request(pkt, sess, flags, payload, func(plain []byte) { // false: the server drops it
		var data []byte
		req.netFn, req.cmd, data, req.rqSeq, ok = protocol.ParseIPMIRequest(plain)
		req.sessSeq, req.sum = seq, checksum(data)
	})
	if ok {
		g.replies.arrived(replyKey{bmcID: sid, addr: addr.String()}, req)
	}
}

// observe looks at an outgoing packet.
func (g *Guard) observe(pkt []byte, addr net.Addr) {
	if !IsRMCPPlus(pkt) || addr == nil {
		return
	}
	_, _, ptype, _, payload, ok := protocol.ParseRMCPPlusHeader(pkt)
	if !ok {
		return
	}
	switch ptype & 0x3F {
	case PayloadRAKP2:
		if m, ok := parseRAKPReply(payload); ok && m.status != 0 {
			g.report(g.logins.rakp2Refused(addr.String(), m.consoleID))
		}
	case PayloadRAKP4:
		if m, ok := parseRAKPReply(payload); ok {
			g.report(g.logins.rakp4(addr.String(), m.consoleID, m.status))
		}
	}
}

// report logs and counts one accounting outcome.
func (g *Guard) report(out *loginOutcome) {
	if out == nil || out.reason == "" {
		return
	}
	g.metrics.AuthFailures.WithLabelValues(g.name, out.reason).Inc()
	g.log.Warn("authentication failed", "user", out.user, "from", out.addr, "reason", out.reason)
	if !out.locked.IsZero() {
		g.metrics.Lockouts.WithLabelValues(g.name).Inc()
		scope := "all sources"
		if out.fromIP != "" {
			scope = "logins from " + out.fromIP
		}
		g.log.Warn("user locked out after repeated failed authentications",
			"user", out.user, "from", out.addr, "scope", scope, "attempts", g.logins.maxFails,
			"until", out.locked.Format(time.RFC3339),
			"action", "check the password the client uses; the lock lifts by itself")
	}
	if out.srcShut {
		g.log.Warn("source throttled after too many abandoned handshakes or unknown user names",
			"from", sourceIP(out.addr), "limit_per_minute", g.logins.srcLimit,
			"action", "a client that gives up after RAKP 2 may be harvesting password hashes (CVE-2013-4786); the budget refills by itself")
	}
}

// Locked reports whether user is locked out now, for all sources or some.
func (g *Guard) Locked(user string) bool { return g.logins.Locked(user) }

// LockedFrom reports whether user is locked out for logins from ip.
func (g *Guard) LockedFrom(user, ip string) bool { return g.logins.LockedFrom(user, ip) }

// Sweep ends abandoned handshakes and forgets ended sessions' replies.
func (g *Guard) Sweep() {
	ids, outs := g.logins.expire()
	for _, id := range ids {
		_ = g.b.Sessions.Close(id) // a late RAKP 3 finds nothing to guess against
	}
	for i := range outs {
		g.report(&outs[i])
	}
	g.replies.Sweep(g.b.Sessions)
	g.keys.sweep(g.b.Sessions)
}

// LocalAddr is the socket's address: go-ipmi's server reads it to report
// the SOL payload's port in Activate Payload (v2.0 Table 24-2).
func (g *Guard) LocalAddr() net.Addr {
	if la, ok := g.PacketConn.(interface{ LocalAddr() net.Addr }); ok {
		return la.LocalAddr()
	}
	return nil
}
