package lan

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/metrics"
)

// ReplyCache answers a retransmitted in-session request without running its
// handler again. go-ipmi's sequence window accepts the same session sequence
// number twice, and a console whose answer was lost resends its request
// (same rqSeq, new sequence number): without the cache a SEL add, a power
// cycle or a queue write would run twice.
//
// It has two halves:
//   - the guard, reading packets off the socket, notes each in-session
//     request that passes the integrity check (arrived): its session and
//     IPMI sequence numbers, which the handler never sees;
//   - a registry middleware, which only runs for packets the server accepted
//     (integrity, sequence window, a live session), takes that note and
//     either answers from the cache or runs the handler and files its answer.
//
// Entries are keyed by the BMC's session ID and the console's address, both
// as the server saw them; never by the console's session ID, which clients
// share (go-ipmi's client always uses 0xa0a1a2a3).
type ReplyCache struct {
	name    string
	metrics *metrics.Metrics
	now     func() time.Time

	mu       sync.Mutex
	sessions map[replyKey]*sessionReplies
}

type replyKey struct {
	bmcID uint32
	addr  string
}

const (
	cacheDepth   = 16 // answered requests kept per session and address
	arrivalDepth = 16 // requests read and not yet dispatched, per session and address
	cacheTTL     = 10 * time.Second
	// maxReplyKeys bounds the (session, address) pairs kept: a session
	// holder hopping source ports cannot grow the cache without end. Past
	// it, requests of new pairs run uncached until the sweeper frees room.
	maxReplyKeys = 256
)

// request identifies one in-session IPMI request.
type request struct {
	sessSeq uint32
	rqSeq   uint8
	netFn   uint8
	cmd     uint8
	sum     uint64 // of the request data
	at      time.Time
}

func (r *request) sameMessage(o *request) bool {
	return r.rqSeq == o.rqSeq && r.netFn == o.netFn && r.cmd == o.cmd && r.sum == o.sum
}

type cacheEntry struct {
	request
	used bool
	data []byte
	cc   types.CompletionCode
}

type sessionReplies struct {
	arrivals []request
	entries  [cacheDepth]cacheEntry
	next     int
	last     int // index of the most recent answer, -1 when none
}

func NewReplyCache(name string, m *metrics.Metrics) *ReplyCache {
	return &ReplyCache{name: name, metrics: m, now: time.Now, sessions: map[replyKey]*sessionReplies{}}
}

// arrived notes a request read off the socket.
func (rc *ReplyCache) arrived(k replyKey, r request) {
	r.at = rc.now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	sr := rc.sessions[k]
	if sr == nil {
		if len(rc.sessions) >= maxReplyKeys {
			return
		}
		sr = &sessionReplies{last: -1}
		rc.sessions[k] = sr
	}
	if len(sr.arrivals) == arrivalDepth {
		sr.arrivals = append(sr.arrivals[:0], sr.arrivals[1:]...)
	}
	sr.arrivals = append(sr.arrivals, r)
}

// take finds the note of an accepted request and a cached answer to it.
// ok is false when the guard noted no such request (not from the LAN).
func (rc *ReplyCache) take(k replyKey, netFn, cmd uint8, sum uint64) (req request, hit *cacheEntry, ok bool) {
	now := rc.now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	sr := rc.sessions[k]
	if sr == nil {
		return request{}, nil, false
	}
	at := -1
	for i := range sr.arrivals {
		a := &sr.arrivals[i]
		if a.netFn == netFn && a.cmd == cmd && a.sum == sum && now.Sub(a.at) <= cacheTTL {
			at = i
			break
		}
	}
	if at < 0 {
		return request{}, nil, false
	}
	req = sr.arrivals[at]
	sr.arrivals = append(sr.arrivals[:at], sr.arrivals[at+1:]...)
	for i := range sr.entries {
		e := &sr.entries[i]
		if !e.used || now.Sub(e.at) > cacheTTL || !e.sameMessage(&req) {
			continue
		}
		// The very same packet again, or the console's retry of its last
		// request under a new session sequence number.
		if e.sessSeq == req.sessSeq || i == sr.last {
			c := *e
			c.data = bytes.Clone(e.data)
			return req, &c, true
		}
	}
	return req, nil, true
}

// file keeps the answer to an accepted request.
func (rc *ReplyCache) file(k replyKey, req request, data []byte, cc types.CompletionCode) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	sr := rc.sessions[k]
	if sr == nil {
		return // swept: the session ended meanwhile
	}
	sr.entries[sr.next] = cacheEntry{request: req, used: true, data: bytes.Clone(data), cc: cc}
	sr.last = sr.next
	sr.next = (sr.next + 1) % cacheDepth
}

// Middleware is the registry half: it runs inside the server's per-session
// lock (Session.ProcMu), so one session's requests pass it one at a time.
func (rc *ReplyCache) Middleware(next handlers.Handler) handlers.Handler {
	return handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, data []byte) ([]byte, types.CompletionCode, error) {
		if hctx == nil || hctx.Session == nil {
			return next.Handle(ctx, hctx, data) // system interface, pre-session
		}
		addr := hctx.Session.GetAddr()
		if addr == nil {
			return next.Handle(ctx, hctx, data)
		}
		k := replyKey{bmcID: hctx.Session.BMCID, addr: addr.String()}
		req, hit, ok := rc.take(k, uint8(hctx.Command.NetFn), hctx.Command.ID, checksum(data))
		if hit != nil {
			rc.metrics.Retransmits.WithLabelValues(rc.name).Inc()
			return hit.data, hit.cc, nil
		}
		resp, cc, err := next.Handle(ctx, hctx, data)
		if ok {
			rc.file(k, req, resp, cc)
		}
		return resp, cc, err
	})
}

// Sweep forgets sessions that ended and notes that were never dispatched.
func (rc *ReplyCache) Sweep(sessions *bmc.SessionStore) {
	now := rc.now()
	rc.mu.Lock()
	keys := make([]replyKey, 0, len(rc.sessions))
	for k, sr := range rc.sessions {
		keep := sr.arrivals[:0]
		for _, a := range sr.arrivals {
			if now.Sub(a.at) <= cacheTTL {
				keep = append(keep, a)
			}
		}
		sr.arrivals = keep
		keys = append(keys, k)
	}
	rc.mu.Unlock()
	// The session store has its own lock; it is not taken under rc.mu.
	gone := ended(sessions, keys, func(k replyKey) uint32 { return k.bmcID })
	if len(gone) == 0 {
		return
	}
	rc.mu.Lock()
	for _, k := range gone {
		delete(rc.sessions, k)
	}
	rc.mu.Unlock()
}

// ended returns the keys whose session (id(k)) the store no longer holds.
// Callers gather keys under their own lock and call it without: the
// store takes its own.
func ended[K any](sessions *bmc.SessionStore, keys []K, id func(K) uint32) []K {
	var gone []K
	for _, k := range keys {
		if _, err := sessions.Get(id(k)); err != nil {
			gone = append(gone, k)
		}
	}
	return gone
}
