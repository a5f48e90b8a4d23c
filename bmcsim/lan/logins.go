package lan

import (
	"net"
	"sync"
	"time"

	"github.com/ooblab/ooblab/bmcsim/config"
)

// loginBook keeps the LAN channel's login accounting the way a careful BMC
// does (docs/bmcsim.md, "LAN login accounting"):
//
//   - a login the BMC itself saw fail counts against its user at once, from
//     any source: a RAKP 3 with a non-zero status (a console telling us our
//     RAKP 2 did not verify against its password) or a RAKP 4 error (a bad
//     RAKP 3 code, i.e. a password guess the BMC checked). After maxFails of
//     them the user is locked for lockFor;
//   - a handshake abandoned after RAKP 2 (no RAKP 3 within authTimeout) never
//     counts against the user as such: whoever abandons it may be anyone. It
//     is charged to the source IP address: to the source's budget, shared by
//     every RAKP 1 naming an unknown user, past which the source gets no RAKP 2
//     (no hash to harvest, CVE-2013-4786) until the budget refills; and to the
//     pair (user, source IP), which after maxFails is locked for lockFor —
//     that user from that address only. ipmitool (1.8.19 and upstream) and
//     FreeIPMI never send a RAKP 3 when our RAKP 2 does not verify against
//     their password, so this is how their wrong passwords are counted, without
//     letting a stranger lock the user out for everyone else;
//   - pending handshakes are keyed by the BMC's session ID and the source
//     address; the console's session ID is only used to find the handshake a
//     RAKP 2/4 answers, among those of that source.
//
// The book only counts; the guard sends, logs and closes sessions from the
// outcomes it returns, outside the book's mutex.
type loginBook struct {
	maxFails    int
	lockFor     time.Duration
	authTimeout time.Duration
	srcLimit    float64 // suspicious handshakes a source may make per srcWindow
	now         func() time.Time

	mu      sync.Mutex
	users   map[string]*userState     // failures the BMC verified, from anywhere
	pairs   map[userSource]*userState // abandoned handshakes, per user and source IP
	pending map[handshakeKey]*handshake
	sources map[string]*sourceState // by IP address, not port
}

// srcWindow is the time a source's handshake budget takes to refill.
const srcWindow = time.Minute

type userState struct {
	fails       int
	lockedUntil time.Time
}

type userSource struct {
	user string
	ip   string
}

type handshakeKey struct {
	bmcID uint32
	addr  string // IP:port the RAKP 1 came from
}

type handshake struct {
	user      string
	known     bool
	consoleID uint32
	started   time.Time
	rakp3     bool // a RAKP 3 with status 0 went to the server; RAKP 4 tells
}

// sourceState is a token bucket of suspicious handshakes.
type sourceState struct {
	tokens float64
	at     time.Time
}

func newLoginBook(cfg *config.Config) *loginBook {
	return &loginBook{
		maxFails:    cfg.LockoutAttempts,
		lockFor:     cfg.LockoutDuration.Duration,
		authTimeout: cfg.AuthTimeout.Duration,
		srcLimit:    float64(cfg.SourceHandshakeLimit),
		now:         time.Now,
		users:       map[string]*userState{},
		pairs:       map[userSource]*userState{},
		pending:     map[handshakeKey]*handshake{},
		sources:     map[string]*sourceState{},
	}
}

// loginOutcome is one thing the guard reports (log line and metric).
type loginOutcome struct {
	reason  string // bmcsim_auth_failures_total reason; "" for a success
	user    string
	addr    string
	locked  time.Time // set when this failure locked the user, until when
	fromIP  string    // set when the lock holds for this source IP only
	srcShut bool      // this charge used up the source's budget
}

// rakp1Verdict says what to do with a RAKP 1.
type rakp1Verdict int

const (
	rakp1Pass      rakp1Verdict = iota // on to the server
	rakp1Locked                        // refuse: the user is locked out
	rakp1Throttled                     // refuse: the source spent its budget
)

func sourceIP(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// rakp1Result is what the book decided about a RAKP 1.
type rakp1Result struct {
	verdict rakp1Verdict
	until   time.Time      // rakp1Locked: when the lock lifts
	close   []uint32       // BMC sessions of handshakes this one supersedes
	charged []loginOutcome // charges made (unknown name, superseded or repeated handshakes)
}

// rakp1 opens the accounting of a handshake.
//
// Each RAKP 1 draws a fresh RAKP 2 (a new hash) from the server, so a RAKP 1
// repeated on a pending handshake is charged to the source at once. A new
// handshake from the address and console session ID of a pending one ends
// that one as abandoned: one address and console ID have at most one
// pending handshake, so a RAKP 2 or RAKP 4, which name only the console's ID,
// settle exactly the handshake they answer.
func (lb *loginBook) rakp1(k handshakeKey, consoleID uint32, user string, known bool) rakp1Result {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var res rakp1Result
	if lb.budgetLocked(k.addr, now) < 1 {
		res.verdict = rakp1Throttled
		return res
	}
	if until, ok := lb.lockedLocked(user, sourceIP(k.addr), now); known && ok {
		res.verdict, res.until = rakp1Locked, until
		return res
	}
	if old := lb.pending[k]; old != nil {
		out := loginOutcome{reason: "repeated_rakp1", user: user, addr: k.addr}
		out.srcShut = lb.chargeSourceLocked(k.addr, now)
		res.charged = append(res.charged, out)
		if !old.rakp3 {
			old.user, old.known = user, known // the server now checks this name
		}
		return res
	}
	for pk, h := range lb.pending {
		if pk.addr != k.addr || h.consoleID != consoleID {
			continue
		}
		delete(lb.pending, pk)
		res.close = append(res.close, pk.bmcID)
		if h.known {
			res.charged = append(res.charged, lb.chargeSourceSideLocked(h, pk.addr, "abandoned", now))
		}
	}
	if !known {
		out := loginOutcome{reason: "unknown_user", user: user, addr: k.addr}
		out.srcShut = lb.chargeSourceLocked(k.addr, now)
		res.charged = append(res.charged, out)
	}
	lb.pending[k] = &handshake{user: user, known: known, consoleID: consoleID, started: now}
	return res
}

// rakp2Refused settles a handshake the server refused at RAKP 1 (a role
// the user may not have, a disabled account). Nothing about the password
// was checked and anyone may ask, so it is charged like an abandoned
// handshake: to the source and to the pair (user, source IP), never to the
// user.
func (lb *loginBook) rakp2Refused(addr string, consoleID uint32) *loginOutcome {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	k, ok := lb.findLocked(addr, consoleID, false)
	if !ok {
		return nil
	}
	h := lb.pending[k]
	delete(lb.pending, k)
	if !h.known {
		return nil // charged at RAKP 1
	}
	out := lb.chargeSourceSideLocked(h, k.addr, "refused", now)
	return &out
}

// rakp3 reports whether a RAKP 3 goes on to the server, and the failure it
// counts. A RAKP 3 must come from the address its RAKP 1 came from, for a
// handshake still pending; any other is dropped, so that no password guess
// reaches the server uncounted.
func (lb *loginBook) rakp3(k handshakeKey, status uint8) (bool, *loginOutcome) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	h := lb.pending[k]
	if h == nil {
		return false, nil
	}
	if status == 0 {
		h.rakp3 = true
		return true, nil
	}
	delete(lb.pending, k)
	return true, lb.failLocked(h, k.addr, "rakp3_status")
}

// rakp4 settles the handshake a RAKP 4 answers: success clears the user's
// count, an error counts against it.
func (lb *loginBook) rakp4(addr string, consoleID uint32, status uint8) *loginOutcome {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	k, ok := lb.findLocked(addr, consoleID, true)
	if !ok {
		return nil
	}
	h := lb.pending[k]
	delete(lb.pending, k)
	if status == 0 {
		if st := lb.users[h.user]; st != nil {
			st.fails = 0
		}
		if st := lb.pairs[userSource{h.user, sourceIP(addr)}]; st != nil {
			st.fails = 0
		}
		return nil
	}
	return lb.failLocked(h, addr, "bad_credentials")
}

// findLocked returns the pending handshake of addr with consoleID (there is
// at most one, see rakp1) if its RAKP 3 went to the server (rakp3) or not.
func (lb *loginBook) findLocked(addr string, consoleID uint32, rakp3 bool) (handshakeKey, bool) {
	for k, h := range lb.pending {
		if k.addr == addr && h.consoleID == consoleID && h.rakp3 == rakp3 {
			return k, true
		}
	}
	return handshakeKey{}, false
}

// failLocked counts one failed login of a handshake. lb.mu must be held.
func (lb *loginBook) failLocked(h *handshake, addr, reason string) *loginOutcome {
	if !h.known {
		return nil // counted and charged to the source at RAKP 1; it never logs in
	}
	out := &loginOutcome{reason: reason, user: h.user, addr: addr}
	st := lb.users[h.user]
	if st == nil {
		st = &userState{}
		lb.users[h.user] = st
	}
	out.locked = lb.countLocked(st)
	return out
}

// countLocked counts one failure in st and returns until when it locked st,
// or zero. A failure while st is locked (a handshake begun before the lock)
// neither counts nor extends the lock.
func (lb *loginBook) countLocked(st *userState) time.Time {
	now := lb.now()
	if now.Before(st.lockedUntil) {
		return time.Time{}
	}
	st.fails++
	if st.fails < lb.maxFails {
		return time.Time{}
	}
	st.lockedUntil = now.Add(lb.lockFor)
	st.fails = 0
	return st.lockedUntil
}

// lockedLocked reports whether user is locked out for ip, and until when.
func (lb *loginBook) lockedLocked(user, ip string, now time.Time) (time.Time, bool) {
	if st := lb.users[user]; st != nil && now.Before(st.lockedUntil) {
		return st.lockedUntil, true
	}
	if st := lb.pairs[userSource{user, ip}]; st != nil && now.Before(st.lockedUntil) {
		return st.lockedUntil, true
	}
	return time.Time{}, false
}

// expire ends the handshakes left for longer than authTimeout: each is
// charged to its source, never to its user. It returns the BMC sessions to
// close (so that a late RAKP 3 finds no session to guess against) and the
// charges.
func (lb *loginBook) expire() ([]uint32, []loginOutcome) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var ids []uint32
	var outs []loginOutcome
	for k, h := range lb.pending {
		if now.Sub(h.started) <= lb.authTimeout {
			continue
		}
		delete(lb.pending, k)
		ids = append(ids, k.bmcID)
		if !h.known {
			continue // charged at RAKP 1
		}
		outs = append(outs, lb.chargeSourceSideLocked(h, k.addr, "abandoned", now))
	}
	for ip, s := range lb.sources {
		if lb.refill(s, now) >= lb.srcLimit {
			delete(lb.sources, ip)
		}
	}
	for pk, st := range lb.pairs {
		if st.fails == 0 && !now.Before(st.lockedUntil) {
			delete(lb.pairs, pk)
		}
	}
	return ids, outs
}

// chargeSourceSideLocked charges a handshake that proved nothing about the
// password to its source's budget and to the pair (user, source IP).
func (lb *loginBook) chargeSourceSideLocked(h *handshake, addr, reason string, now time.Time) loginOutcome {
	out := loginOutcome{reason: reason, user: h.user, addr: addr}
	out.srcShut = lb.chargeSourceLocked(addr, now)
	pk := userSource{h.user, sourceIP(addr)}
	st := lb.pairs[pk]
	if st == nil {
		st = &userState{}
		lb.pairs[pk] = st
	}
	if out.locked = lb.countLocked(st); !out.locked.IsZero() {
		out.fromIP = pk.ip
	}
	return out
}

func (lb *loginBook) refill(s *sourceState, now time.Time) float64 {
	if d := now.Sub(s.at); d > 0 {
		s.tokens += lb.srcLimit * float64(d) / float64(srcWindow)
		if s.tokens > lb.srcLimit {
			s.tokens = lb.srcLimit
		}
		s.at = now
	}
	return s.tokens
}

// budgetLocked is what is left of addr's source budget now.
func (lb *loginBook) budgetLocked(addr string, now time.Time) float64 {
	s := lb.sources[sourceIP(addr)]
	if s == nil {
		return lb.srcLimit
	}
	return lb.refill(s, now)
}

// chargeSourceLocked spends one unit of addr's budget and reports whether
// that used it up.
func (lb *loginBook) chargeSourceLocked(addr string, now time.Time) bool {
	ip := sourceIP(addr)
	s := lb.sources[ip]
	if s == nil {
		s = &sourceState{tokens: lb.srcLimit, at: now}
		lb.sources[ip] = s
	}
	before := lb.refill(s, now)
	s.tokens--
	return before >= 1 && s.tokens < 1
}

// Locked reports whether user is locked out now, for every source or for
// at least one.
func (lb *loginBook) Locked(user string) bool {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if st := lb.users[user]; st != nil && now.Before(st.lockedUntil) {
		return true
	}
	for pk, st := range lb.pairs {
		if pk.user == user && now.Before(st.lockedUntil) {
			return true
		}
	}
	return false
}

// LockedFrom reports whether user is locked out now for logins from ip.
func (lb *loginBook) LockedFrom(user, ip string) bool {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	_, locked := lb.lockedLocked(user, ip, now)
	return locked
}

// Throttled reports whether the source IP of addr has spent its budget.
func (lb *loginBook) Throttled(addr string) bool {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.budgetLocked(addr, now) < 1
}
