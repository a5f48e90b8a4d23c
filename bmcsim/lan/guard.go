// Package lan is what stands between a BMC's UDP socket and go-ipmi's
// RMCP+ server: the Guard, which does the login accounting and backoff
// (logins.go), shares the session slots (slots.go) and notes requests for
// the response cache that answers retransmits without running a handler
// again (replies.go). It reads RMCP+ packets the way the server does
// (rmcpplus.go) and never changes them; LAN parameter 26 is lanparams.go.
package lan

import (
	"log/slog"
	"net"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/rmcpplus"
	"github.com/bougou/go-ipmi/pkg/transport"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/metrics"
)

// Guard sits between the UDP socket and go-ipmi's RMCP+ server and adds
// what a trustworthy BMC needs and go-ipmi v0.9.1 lacks:
//
//   - login accounting and backoff (Logins, logins.go);
//   - sharing of the session slots (Slots, slots.go);
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

	logins  *Logins
	slots   *Slots
	replies *ReplyCache
	keys    keyCache
}

// Books are the LAN channel's state a Guard works on; the BMC keeps them
// (Set LAN Configuration Parameters changes Logins' policy, the session
// store's removal hook tells Slots).
type Books struct {
	Logins  *Logins
	Slots   *Slots
	Replies *ReplyCache
}

func NewGuard(conn transport.PacketConn, b *bmc.BMC, cfg *config.Config, m *metrics.Metrics, books Books, log *slog.Logger) *Guard {
	return &Guard{
		PacketConn: conn,
		b:          b,
		log:        log,
		metrics:    m,
		name:       cfg.Name,
		logins:     books.Logins,
		slots:      books.Slots,
		replies:    books.Replies,
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
	case PayloadOpenSession:
		return g.onOpenSession(payload, addr)
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

// onOpenSession makes room for an Open Session, or refuses it with
// "insufficient resources" when its source holds its share of half-open
// handshakes or the table is full of others' sessions.
func (g *Guard) onOpenSession(p []byte, addr net.Addr) bool {
	m, ok := parseOpenSession(p)
	if !ok {
		return true // the server refuses it
	}
	ok, victim := g.slots.open(addr.String(), m.consoleID, g.b.Sessions.Count())
	if victim != 0 {
		_ = g.b.Sessions.Close(victim)
		g.report(g.logins.abandon(victim))
		g.metrics.AuthFailures.WithLabelValues(g.name, "handshake_evicted").Inc()
		g.log.Debug("closed a half-open handshake of the source holding most, for another source's Open Session", "from", addr.String())
	}
	if ok {
		return true
	}
	g.metrics.AuthFailures.WithLabelValues(g.name, "open_refused").Inc()
	g.log.Debug("refused Open Session: the source holds its share of half-open handshakes, or no slot is free", "from", addr.String())
	resp := &rmcpplus.OpenSessionResponse{MessageTag: m.tag,
		RmcpStatusCode: types.RmcpStatusCode(StatusInsufficientResources), RemoteConsoleSessionID: m.consoleID}
	_, _ = g.PacketConn.WriteTo(protocol.BuildRMCPPlusPacket(PayloadOpenResponse, 0, 0, 0, resp.Pack()), addr)
	return false
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
	u, uerr := g.b.Users.GetByName(m.name)
	from := addr.String()
	res := g.logins.rakp1(m.bmcID, from, sess.ConsoleID, m.name, uerr == nil)
	for _, id := range res.close {
		_ = g.b.Sessions.Close(id) // superseded: its RAKP 3 would find no session
	}
	for i := range res.charged {
		g.report(&res.charged[i])
	}
	var status uint8
	switch res.verdict {
	case rakp1Pass:
		if uerr != nil {
			return true
		}
		low := u.ChannelAccess[1].MaxPrivilege < bmc.PrivilegeLevelOperator
		why := g.slots.claim(m.bmcID, m.name, low)
		if why == "" {
			return true
		}
		g.logins.release(m.bmcID)
		g.metrics.AuthFailures.WithLabelValues(g.name, string(why)).Inc()
		g.log.Debug("refused a login: no session slot left for it", "user", m.name, "from", from, "cap", string(why))
		status = StatusInsufficientResources
	case rakp1Drop:
		g.log.Debug("dropped a RAKP 1 naming another user or address than its pending handshake", "from", from)
		return false
	case rakp1Backoff:
		g.metrics.AuthFailures.WithLabelValues(g.name, "backoff").Inc()
		g.log.Debug("refused a login during its backoff", "user", m.name, "from", from,
			"retry_in", res.wait.Round(time.Millisecond).String())
		status = StatusInsufficientResources
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
	pass, out := g.logins.rakp3(m.bmcID, addr.String(), m.status)
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
	case PayloadOpenResponse:
		if m, ok := parseOpenReply(payload); ok {
			g.slots.opened(addr.String(), m.consoleID, m.status, m.bmcID)
		}
	case PayloadRAKP2:
		if m, ok := parseRAKPReply(payload); ok && m.status != 0 {
			id, out := g.logins.rakp2Refused(addr.String(), m.consoleID)
			if id != 0 {
				g.slots.settled(id, false) // its claim back; the session ends as half-open
			}
			g.report(out)
		}
	case PayloadRAKP4:
		if m, ok := parseRAKPReply(payload); ok {
			id, out := g.logins.rakp4(addr.String(), m.consoleID, m.status)
			if id != 0 {
				g.slots.settled(id, m.status == 0)
			}
			g.report(out)
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
	if !out.slowed.IsZero() {
		g.metrics.Lockouts.WithLabelValues(g.name).Inc()
		p := g.logins.Policy()
		g.log.Warn("user slowed down after repeated failed authentications: sources with failures wait between attempts",
			"user", out.user, "from", out.addr, "threshold", p.Threshold, "wait", p.BackoffMax.String(),
			"until", out.slowed.Format(time.RFC3339),
			"action", "check the password the clients use; addresses without failures log in at once")
	}
	if out.srcShut {
		g.log.Warn("source throttled after too many repeated handshakes or unknown user names",
			"from", sourceIP(out.addr), "limit_per_minute", g.logins.srcLimit,
			"action", "a client that draws RAKP 2s without logging in may be harvesting password hashes (CVE-2013-4786); the budget refills by itself")
	}
}

// Sweep ends abandoned and half-open handshakes and forgets ended
// sessions' replies.
func (g *Guard) Sweep() {
	ids, outs := g.logins.expire()
	ids = append(ids, g.slots.expire()...)
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

// SessionIDs are the BMC's RMCP+ sessions now (half-open and
// established).
func (g *Guard) SessionIDs() []uint32 { return g.slots.IDs() }

// CloseSessions closes the sessions ids, as a BMC reset does to those it
// had; the server's store tells the book through its remove hook.
func (g *Guard) CloseSessions(ids []uint32) int {
	for _, id := range ids {
		_ = g.b.Sessions.Close(id)
	}
	return len(ids)
}
