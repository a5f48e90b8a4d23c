package lan

import (
	"net"
	"sync"
	"time"

	"github.com/ooblab/ooblab/bmcsim/config"
)

// Logins keeps the LAN channel's login accounting (docs/bmcsim.md, "LAN
// login accounting"). Its rule: nothing a sender who does not know the
// password can send may refuse the right password for longer than
// Policy.BackoffMax, and guessing stays slow all the same.
//
//   - A handshake for a known user counts from its RAKP 1, provisionally,
//     against its source IP address and its user; it is released when RAKP 4
//     says it succeeded (and then delays nothing: the backoff runs from the
//     last attempt that did not succeed), and becomes a failure otherwise (RAKP 3 with an error
//     status, a RAKP 4 error, a RAKP 2 error, no RAKP 3 within authTimeout, a
//     newer handshake from the same address and console ID). So a burst of
//     guesses started at once is counted before any of them is settled.
//   - Per source: while its count (failures plus handshakes in flight) is
//     below the threshold, a RAKP 1 passes at once; from the threshold on it
//     must come a backoff after the source's last RAKP 1 — a quarter, half,
//     then all of BackoffMax. A refused RAKP 1 costs nothing and does not
//     extend anything.
//   - Per user: once the user's failures reach the threshold, for
//     Policy.Slowdown after the last one, a source that has failures of its
//     own may try that user only BackoffMax after the user's last RAKP 1 —
//     guessing spread over many sources shares one slot. A source without
//     failures is never slowed by the user's count, so the owner at a clean
//     address gets in at once whatever strangers do.
//   - Failures are forgotten Policy.Reset after the last attempt.
//   - RAKP 1 naming an unknown user, or repeated on a pending handshake,
//     spends the source's handshake budget (a token bucket; CVE-2013-4786
//     hash harvesting), past which the source gets no RAKP 2 until it refills.
//
// Every packet costs O(1): pending handshakes are found by the BMC's session
// ID or by (address, console session ID), never by a scan; sources live in a
// bounded table (maxSources, least recently used evicted); users are only
// the configured ones. The sweep (once a second) scans the pending
// handshakes, which are bounded by the session table, and the sources from
// the oldest until one is recent.
//
// The book only counts; the guard sends, logs and closes sessions from the
// outcomes it returns, outside the book's mutex.
type Logins struct {
	authTimeout time.Duration
	srcLimit    float64 // suspicious handshakes a source may make per srcWindow
	now         func() time.Time

	mu        sync.Mutex
	policy    Policy
	pending   map[uint32]*handshake // by BMC session ID
	byConsole map[consoleKey]uint32 // (address, console ID) → BMC session ID
	sources   sourceTable
	users     map[string]*userState // known users only
}

// Policy is the part of the accounting LAN configuration parameter 26 (Bad
// Password Threshold) sets.
type Policy struct {
	Threshold  int           // 0: no backoff, no slowdown (the spec's "disabled")
	Reset      time.Duration // Attempt Count Reset Interval: failures forgotten
	Slowdown   time.Duration // User Lockout Interval: how long a user stays slowed
	BackoffMax time.Duration // the longest any RAKP 1 is made to wait
	AuditEvent bool          // parameter 26's event bit, kept to be read back
}

// maxPending bounds the handshakes in flight. The guard never reaches it
// (each needs a session in the store, at most 63), but the book does not
// rely on its caller for its memory: past it a RAKP 1 is refused like one
// over its source's budget.
const maxPending = 256

// srcWindow is the time a source's handshake budget takes to refill.
const srcWindow = time.Minute

type consoleKey struct {
	addr      string // IP:port
	consoleID uint32
}

type handshake struct {
	user      string
	known     bool
	addr      string
	consoleID uint32
	started   time.Time
	rakp3     bool // a RAKP 3 with status 0 went to the server; RAKP 4 tells
	// The source's and user's last attempt before this one: a success
	// gives them back, so that a login does not delay the next one.
	srcLast, userLast time.Time
}

type userState struct {
	fails     int
	pending   int
	last      time.Time // last RAKP 1 that passed or failure
	slowUntil time.Time
}

// NewLogins builds the book from cfg's knobs.
func NewLogins(cfg *config.Config) *Logins {
	lb := &Logins{
		authTimeout: cfg.AuthTimeout.Duration,
		srcLimit:    float64(cfg.SourceHandshakeLimit),
		now:         time.Now,
		policy: Policy{
			Threshold:  cfg.LockoutAttempts,
			Reset:      cfg.AttemptResetInterval.Duration,
			Slowdown:   cfg.LockoutDuration.Duration,
			BackoffMax: cfg.LoginBackoffMax.Duration,
		},
		pending:   map[uint32]*handshake{},
		byConsole: map[consoleKey]uint32{},
		users:     map[string]*userState{},
	}
	lb.sources.init(maxSources)
	return lb
}

// userLocked returns the record of user, a name the user table knows (so
// the records are bounded by the table; expire forgets idle ones).
func (lb *Logins) userLocked(name string) *userState {
	u := lb.users[name]
	if u == nil {
		u = &userState{}
		lb.users[name] = u
	}
	return u
}

// Policy returns the accounting's parameters.
func (lb *Logins) Policy() Policy {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.policy
}

// SetPolicy changes them (Set LAN Configuration Parameters, parameter 26).
// BackoffMax is not part of parameter 26 and is kept when p's is zero.
func (lb *Logins) SetPolicy(p Policy) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if p.BackoffMax == 0 {
		p.BackoffMax = lb.policy.BackoffMax
	}
	lb.policy = p
}

// loginOutcome is one thing the guard reports (log line and metric).
type loginOutcome struct {
	reason  string // bmcsim_auth_failures_total reason; "" for a success
	user    string
	addr    string
	slowed  time.Time // set when this failure began the user's slowdown, until when
	srcShut bool      // this charge used up the source's handshake budget
}

// rakp1Verdict says what to do with a RAKP 1.
type rakp1Verdict int

const (
	rakp1Pass      rakp1Verdict = iota // on to the server
	rakp1Backoff                       // refuse: the source or user must wait
	rakp1Throttled                     // refuse: the source spent its handshake budget
	rakp1Drop                          // drop: names another user or address than its pending handshake
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
	wait    time.Duration  // rakp1Backoff: how long until a RAKP 1 would pass
	close   []uint32       // BMC sessions of handshakes this one supersedes
	charged []loginOutcome // charges made (unknown name, superseded or repeated handshakes)
}

// rakp1 opens the accounting of a handshake on BMC session bmcID from addr.
//
// Each RAKP 1 draws a fresh RAKP 2 (a new hash) from the server, so a RAKP 1
// repeated on a pending handshake spends the source's budget. A new
// handshake from the address and console session ID of a pending one ends
// that one as abandoned: one address and console ID have at most one
// pending handshake, so a RAKP 2 or RAKP 4, which name only the console's
// ID, settle exactly the handshake they answer.
func (lb *Logins) rakp1(bmcID uint32, addr string, consoleID uint32, user string, known bool) rakp1Result {
	now := lb.now()
	ip := sourceIP(addr)
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var res rakp1Result
	src := lb.sources.get(ip)
	if src != nil && lb.budgetLocked(src, now) < 1 {
		res.verdict = rakp1Throttled
		return res
	}
	if old := lb.pending[bmcID]; old != nil {
		if old.addr != addr || old.user != user || old.rakp3 {
			res.verdict = rakp1Drop // the accounting would no longer match the server's
			return res
		}
		out := loginOutcome{reason: "repeated_rakp1", user: user, addr: addr}
		out.srcShut = lb.chargeBudgetLocked(ip, now)
		res.charged = append(res.charged, out)
		return res
	}
	if known {
		if wait := lb.waitLocked(src, lb.users[user], now); wait > 0 {
			res.verdict, res.wait = rakp1Backoff, wait
			return res
		}
	}
	ck := consoleKey{addr, consoleID}
	if _, ok := lb.byConsole[ck]; !ok && len(lb.pending) >= maxPending {
		res.verdict = rakp1Throttled
		return res
	}
	if oldID, ok := lb.byConsole[ck]; ok {
		res.close = append(res.close, oldID)
		if out := lb.settleLocked(oldID, false, "abandoned", now); out != nil {
			res.charged = append(res.charged, *out)
		}
	}
	h := &handshake{user: user, known: known, addr: addr, consoleID: consoleID, started: now}
	if known {
		src = lb.sources.getOrAdd(ip, now, lb.srcLimit)
		u := lb.userLocked(user)
		h.srcLast, h.userLast = src.last, u.last
		src.pending++
		src.last = now
		u.pending++
		u.last = now
	} else {
		out := loginOutcome{reason: "unknown_user", user: user, addr: addr}
		out.srcShut = lb.chargeBudgetLocked(ip, now)
		res.charged = append(res.charged, out)
	}
	lb.pending[bmcID] = h
	lb.byConsole[ck] = bmcID
	return res
}

// waitLocked is how long a RAKP 1 from src naming user must still wait.
func (lb *Logins) waitLocked(src *source, u *userState, now time.Time) time.Duration {
	p := lb.policy
	if p.Threshold <= 0 || src == nil {
		return 0 // a source without a record is clean: never slowed
	}
	lb.forgetLocked(src, u, now)
	var wait time.Duration
	if n := src.fails + src.pending - p.Threshold + 1; n > 0 {
		d := p.BackoffMax
		if n < 3 {
			d >>= 3 - n // a quarter, then half, then all of BackoffMax
		}
		wait = src.last.Add(d).Sub(now)
	}
	if src.fails > 0 && u != nil && now.Before(u.slowUntil) {
		wait = max(wait, u.last.Add(p.BackoffMax).Sub(now))
	}
	return max(0, min(wait, p.BackoffMax))
}

// forgetLocked clears counts older than the reset interval.
func (lb *Logins) forgetLocked(src *source, u *userState, now time.Time) {
	reset := lb.policy.Reset
	if reset == 0 {
		return // the spec's "reset disabled": kept while the record is
	}
	if src != nil && src.pending == 0 && src.fails > 0 && now.Sub(src.last) > reset {
		src.fails = 0
	}
	if u != nil && u.pending == 0 && u.fails > 0 && now.Sub(u.last) > reset {
		u.fails = 0
	}
}

// settleLocked ends the pending handshake on bmcID: ok releases its
// provisional count, otherwise it becomes a failure of its source and user.
func (lb *Logins) settleLocked(bmcID uint32, ok bool, reason string, now time.Time) *loginOutcome {
	h := lb.pending[bmcID]
	if h == nil {
		return nil
	}
	delete(lb.pending, bmcID)
	ck := consoleKey{h.addr, h.consoleID}
	if lb.byConsole[ck] == bmcID {
		delete(lb.byConsole, ck)
	}
	if !h.known {
		return nil // charged to the source's budget at RAKP 1; it never logs in
	}
	ip := sourceIP(h.addr)
	src := lb.sources.get(ip)
	if src == nil { // evicted from the table meanwhile: the failure still counts
		src = lb.sources.getOrAdd(ip, now, lb.srcLimit)
		src.pending++
	}
	u := lb.userLocked(h.user)
	src.pending--
	u.pending--
	if ok {
		if src.last.Equal(h.started) {
			src.last = h.srcLast
		}
		if u.last.Equal(h.started) {
			u.last = h.userLast
		}
		return nil
	}
	src.fails++
	u.fails++
	u.last = now
	lb.sources.touch(src, now)
	out := &loginOutcome{reason: reason, user: h.user, addr: h.addr}
	if t := lb.policy.Threshold; t > 0 && u.fails >= t {
		if !now.Before(u.slowUntil) {
			out.slowed = now.Add(lb.policy.Slowdown)
		}
		u.slowUntil = now.Add(lb.policy.Slowdown)
	}
	return out
}

// rakp2Refused settles a handshake the server refused at RAKP 1 (a role
// the user may not have, a disabled account): a failure like any other.
// It returns the handshake's BMC session ID (0 if none).
func (lb *Logins) rakp2Refused(addr string, consoleID uint32) (uint32, *loginOutcome) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	id, ok := lb.byConsole[consoleKey{addr, consoleID}]
	if !ok || lb.pending[id].rakp3 {
		return 0, nil
	}
	return id, lb.settleLocked(id, false, "refused", now)
}

// rakp3 reports whether a RAKP 3 goes on to the server, and the failure it
// counts. A RAKP 3 must come from the address its RAKP 1 came from, for a
// handshake still pending; any other is dropped, so that no password guess
// reaches the server uncounted.
func (lb *Logins) rakp3(bmcID uint32, addr string, status uint8) (bool, *loginOutcome) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	h := lb.pending[bmcID]
	if h == nil || h.addr != addr {
		return false, nil
	}
	if status == 0 {
		h.rakp3 = true
		return true, nil
	}
	return true, lb.settleLocked(bmcID, false, "rakp3_status", now)
}

// rakp4 settles the handshake a RAKP 4 answers and returns its BMC session
// ID (0 if none): success releases its count, an error makes it a failure.
func (lb *Logins) rakp4(addr string, consoleID uint32, status uint8) (uint32, *loginOutcome) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	id, ok := lb.byConsole[consoleKey{addr, consoleID}]
	if !ok || !lb.pending[id].rakp3 {
		return 0, nil
	}
	return id, lb.settleLocked(id, status == 0, "bad_credentials", now)
}

// release ends the accounting of a handshake that never reached the server
// (the guard refused its RAKP 1 for want of a session slot): no failure.
func (lb *Logins) release(bmcID uint32) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.settleLocked(bmcID, true, "", now)
}

// abandon ends a pending handshake whose session was taken away (evicted
// for another source's Open Session): a failure, as it drew a RAKP 2.
func (lb *Logins) abandon(bmcID uint32) *loginOutcome {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.settleLocked(bmcID, false, "abandoned", now)
}

// expire ends the handshakes left pending for longer than authTimeout
// (failures, "abandoned") and forgets sources idle for longer than the reset
// interval and the budget's refill. It returns the BMC sessions to close (so
// that a late RAKP 3 finds no session to guess against) and the charges.
func (lb *Logins) expire() ([]uint32, []loginOutcome) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var ids []uint32
	var outs []loginOutcome
	for id, h := range lb.pending {
		if now.Sub(h.started) <= lb.authTimeout {
			continue
		}
		ids = append(ids, id)
		if out := lb.settleLocked(id, false, "abandoned", now); out != nil {
			outs = append(outs, *out)
		}
	}
	idle := max(lb.policy.Reset, srcWindow)
	lb.sources.forgetIdle(now.Add(-idle))
	for name, u := range lb.users {
		lb.forgetLocked(nil, u, now)
		if u.fails == 0 && u.pending == 0 && !now.Before(u.slowUntil) {
			delete(lb.users, name)
		}
	}
	return ids, outs
}

// budgetLocked is what is left of src's handshake budget now.
func (lb *Logins) budgetLocked(src *source, now time.Time) float64 {
	if d := now.Sub(src.at); d > 0 {
		src.tokens = min(lb.srcLimit, src.tokens+lb.srcLimit*float64(d)/float64(srcWindow))
		src.at = now
	}
	return src.tokens
}

// chargeBudgetLocked spends one unit of ip's budget and reports whether
// that used it up.
func (lb *Logins) chargeBudgetLocked(ip string, now time.Time) bool {
	src := lb.sources.getOrAdd(ip, now, lb.srcLimit)
	before := lb.budgetLocked(src, now)
	src.tokens--
	return before >= 1 && src.tokens < 1
}

// Wait reports how long a RAKP 1 from ip naming user would have to wait
// now (0: it passes).
func (lb *Logins) Wait(user, ip string) time.Duration {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.waitLocked(lb.sources.get(ip), lb.users[user], now)
}

// Slowed reports whether user is in its slowdown.
func (lb *Logins) Slowed(user string) bool {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	u := lb.users[user]
	return u != nil && now.Before(u.slowUntil)
}
