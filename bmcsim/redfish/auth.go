package redfish

import (
	"crypto/rand"
	"encoding/hex"
	"hash/fnv"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// session is one Redfish login (SessionService/Sessions/{id}).
type session struct {
	id      string
	token   string
	user    string
	role    Role
	created time.Time
	last    time.Time
}

// sessions holds the live sessions by token, at most max of them.
type sessions struct {
	mu      sync.Mutex
	byToken map[string]*session
	byID    map[string]*session
	next    uint64
	max     int
	timeout time.Duration
	now     func() time.Time
}

func newSessions(max int, timeout time.Duration, now func() time.Time) *sessions {
	return &sessions{byToken: map[string]*session{}, byID: map[string]*session{}, max: max, timeout: timeout, now: now}
}

// create opens a session for user, or returns nil when max are open.
func (s *sessions) create(user string, role Role) *session {
	var tok [24]byte
	_, _ = rand.Read(tok[:])
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	if len(s.byToken) >= s.max {
		return nil
	}
	s.next++
	se := &session{id: strconv.FormatUint(s.next, 10), token: hex.EncodeToString(tok[:]), user: user, role: role, created: now, last: now}
	s.byToken[se.token] = se
	s.byID[se.id] = se
	return se
}

// lookup finds the session of token and marks it used.
func (s *sessions) lookup(token string) *session {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.byToken[token]
	if se == nil {
		return nil
	}
	if now.Sub(se.last) > s.timeout {
		s.removeLocked(se)
		return nil
	}
	se.last = now
	cp := *se
	return &cp
}

func (s *sessions) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	if se := s.byID[id]; se != nil {
		cp := *se
		return &cp
	}
	return nil
}

func (s *sessions) list() []session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	out := make([]session, 0, len(s.byID))
	for _, se := range s.byID {
		out = append(out, *se)
	}
	return out
}

func (s *sessions) remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.byID[id]
	if se == nil {
		return false
	}
	s.removeLocked(se)
	return true
}

// removeUser ends every session of user (its password changed).
func (s *sessions) removeUser(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, se := range s.byID {
		if se.user == user {
			s.removeLocked(se)
		}
	}
}

func (s *sessions) removeLocked(se *session) {
	delete(s.byToken, se.token)
	delete(s.byID, se.id)
}

func (s *sessions) expireLocked(now time.Time) {
	for _, se := range s.byID {
		if now.Sub(se.last) > s.timeout {
			s.removeLocked(se)
		}
	}
}

// logins counts failed Redfish logins per (user, source IP), as the LAN
// channel counts abandoned handshakes: after attempts failures that user is
// refused from that address for lockFor, and only from there, so a
// stranger guessing passwords never locks the user out of the VMS's
// address. The book holds at most maxPairs entries: when full it forgets
// expired entries, then the oldest quarter.
type logins struct {
	mu       sync.Mutex
	attempts int
	lockFor  time.Duration
	now      func() time.Time
	pairs    map[pairKey]*failState
}

// maxPairs bounds the login book's memory (about 100 bytes an entry).
const maxPairs = 4096

type pairKey struct{ user, ip string }

type failState struct {
	fails int
	first time.Time
	until time.Time
}

func newLogins(attempts int, lockFor time.Duration, now func() time.Time) *logins {
	return &logins{attempts: attempts, lockFor: lockFor, now: now, pairs: map[pairKey]*failState{}}
}

// locked reports whether user may not log in from ip now.
func (l *logins) locked(user, ip string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.pairs[pairKey{user, ip}]
	return st != nil && now.Before(st.until)
}

// failed counts a wrong password; it reports whether this one locked the pair.
func (l *logins) failed(user, ip string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := pairKey{user, ip}
	st := l.pairs[k]
	if st == nil {
		if len(l.pairs) >= maxPairs {
			l.evictLocked(now)
		}
		st = &failState{first: now}
		l.pairs[k] = st
	}
	if !st.until.IsZero() && !now.Before(st.until) {
		*st = failState{first: now} // the lock ran out: count afresh
	}
	st.fails++
	if st.fails >= l.attempts && st.until.IsZero() {
		st.until = now.Add(l.lockFor)
		return true
	}
	return false
}

// succeeded forgets the pair's failures.
func (l *logins) succeeded(user, ip string) {
	l.mu.Lock()
	delete(l.pairs, pairKey{user, ip})
	l.mu.Unlock()
}

func (l *logins) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pairs)
}

func (l *logins) evictLocked(now time.Time) {
	type aged struct {
		k     pairKey
		first time.Time
	}
	live := make([]aged, 0, len(l.pairs))
	for k, st := range l.pairs {
		if (!st.until.IsZero() && !now.Before(st.until)) || now.Sub(st.first) > l.lockFor {
			delete(l.pairs, k)
			continue
		}
		live = append(live, aged{k, st.first})
	}
	if len(l.pairs) < maxPairs {
		return
	}
	// Still full: forget the oldest quarter at once, so a flood of new
	// pairs costs one scan per maxPairs/4 logins, not one per login.
	slices.SortFunc(live, func(a, b aged) int { return a.first.Compare(b.first) })
	for _, a := range live[:maxPairs/4] {
		delete(l.pairs, a.k)
	}
}

// caller is who makes a request.
type caller struct {
	user    string
	role    Role
	session string // session id, "" for HTTP Basic
}

func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// login checks a user name and password from r's source, with the login
// accounting; it returns the account or an error to send.
func (s *Service) login(r *http.Request, user, password string) (Account, *apiError) {
	ip := sourceIP(r)
	// One check at a time per (user, source): a burst of guesses is
	// counted one by one, never checked side by side before the first
	// failure lands; a VMS's parallel requests queue for microseconds.
	mu := &s.loginMu[loginStripe(user, ip)]
	mu.Lock()
	defer mu.Unlock()
	if s.logins.locked(user, ip) {
		s.log.Warn("redfish login refused: locked out from this address", "user", user, "source", ip)
		return Account{}, errNoSession()
	}
	end := func(bool) {}
	if book, ok := s.backend.(LoginBook); ok {
		var wait time.Duration
		if wait, end = book.BeginLogin(user, ip); wait > 0 {
			// Backed off, as a RAKP 1 would be: refused unchecked, counted nothing.
			s.log.Info("redfish login refused: backed off", "user", user, "source", ip, "retry_after", wait)
			e := errNoSession()
			e.retry = wait
			return Account{}, e
		}
	}
	a, ok := s.backend.Authenticate(user, password)
	end(ok)
	if !ok {
		if s.logins.failed(user, ip) {
			s.log.Warn("redfish login locked for this address", "user", user, "source", ip, "for", s.opts.LockoutDuration)
		}
		s.log.Info("redfish login failed", "user", user, "source", ip)
		return Account{}, errNoSession()
	}
	s.logins.succeeded(user, ip)
	return a, nil
}

// authenticate finds r's caller: an X-Auth-Token session or HTTP Basic.
func (s *Service) authenticate(r *http.Request) (*caller, *apiError) {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		se := s.sessions.lookup(tok)
		if se == nil {
			return nil, errNoSession()
		}
		return &caller{user: se.user, role: se.role, session: se.id}, nil
	}
	if u, p, ok := r.BasicAuth(); ok {
		a, err := s.login(r, u, p)
		if err != nil {
			return nil, err
		}
		return &caller{user: a.UserName, role: a.Role}, nil
	}
	return nil, errNoSession()
}

// stillHolds returns a check that the credentials r was authenticated
// with (as c) still authenticate c.user with a role of at least least: a
// long-lived request, an SSE stream, must end once its user's password
// changes, its session is deleted or times out, or the user is disabled or
// demoted, as every new request would be refused. It checks the password
// without the login accounting (no guess is counted), and keeps the
// session alive while it holds (the stream uses it).
func (s *Service) stillHolds(r *http.Request, c *caller, least Role) func() bool {
	tok := r.Header.Get("X-Auth-Token")
	user, pass, _ := r.BasicAuth()
	return func() bool {
		if c.session != "" {
			se := s.sessions.lookup(tok)
			if se == nil || se.id != c.session {
				return false
			}
			// Its role is the user's at login: check the account now.
			for _, a := range s.backend.Accounts() {
				if a.UserName == c.user {
					return a.Enabled && a.Role.rank() >= least.rank()
				}
			}
			return false
		}
		a, ok := s.backend.Authenticate(user, pass)
		return ok && a.UserName == c.user && a.Role.rank() >= least.rank()
	}
}

// loginStripes is how many locks serialize password checks, by (user,
// source) hash.
const loginStripes = 64

func loginStripe(user, ip string) int {
	h := fnv.New32a()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(ip))
	return int(h.Sum32() % loginStripes)
}
