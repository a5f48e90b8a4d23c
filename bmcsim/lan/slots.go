package lan

import (
	"sync"
	"time"

	"github.com/ooblab/ooblab/bmcsim/config"
)

// Slots shares the BMC's session table (session_limit slots, go-ipmi's
// SessionStore) so that the VMS can always get a session
// (docs/bmcsim.md, "Session slots"):
//
//   - half-open handshakes (Open Session without a completed RAKP) of one
//     source IP are capped (handshake_source_limit) and end authTimeout after
//     their Open Session;
//   - when the table is full, an Open Session may take the slot of the
//     oldest half-open handshake of the source holding the most of them, and
//     only if that source holds more than the asking one would: never an
//     established session, never the handshake of a source that holds no
//     more than the asker. go-ipmi's own rule (evict the oldest pending
//     session, whoever's) is never reached, because the guard makes room
//     before the server allocates;
//   - from RAKP 1 on a handshake claims a slot of its user and its source
//     (session_user_limit, session_source_limit), and users below operator
//     privilege together may hold no more than session_limit −
//     session_reserved slots.
//
// An Open Session the guard passed counts as half-open at once, before the
// server answers it (a burst is counted before any answer), and is matched
// to its answer by (address, console session ID); one never answered is
// forgotten at the next sweep after a second.
type Slots struct {
	limit, perSourceOpen    int
	perUser, perSource, low int // low: slots users below operator may hold
	halfOpenFor             time.Duration
	now                     func() time.Time

	mu       sync.Mutex
	sessions map[uint32]*slot       // by BMC session ID
	opening  map[consoleKey]opening // passed to the server, not yet answered
	halfOpen map[string]int         // per source IP: opening + half-open sessions
	bySource map[string]int         // per source IP: claimed + established
	byUser   map[string]int         // per user name: claimed + established
	lowHeld  int                    // claimed + established of users below operator
}

type slot struct {
	ip      string
	created time.Time
	open    bool   // half-open: RAKP not completed
	user    string // set once claimed at RAKP 1
	claimed bool
	low     bool
}

type opening struct {
	ip string
	at time.Time
}

// openingTTL is how long an Open Session passed to the server counts
// without an answer.
const openingTTL = time.Second

// NewSlots builds the slot book from cfg's knobs.
func NewSlots(cfg *config.Config) *Slots {
	return &Slots{
		limit:         cfg.SessionLimit,
		perSourceOpen: cfg.HandshakeSourceLimit,
		perUser:       cfg.SessionUserLimit,
		perSource:     cfg.SessionSourceLimit,
		low:           cfg.SessionLimit - cfg.SessionReserved,
		halfOpenFor:   cfg.AuthTimeout.Duration,
		now:           time.Now,
		sessions:      map[uint32]*slot{},
		opening:       map[consoleKey]opening{},
		halfOpen:      map[string]int{},
		bySource:      map[string]int{},
		byUser:        map[string]int{},
	}
}

// open decides an Open Session from addr: whether it goes to the server,
// and the half-open session to close first to make room for it (0: none).
// stored is the number of sessions the server's table holds now.
func (s *Slots) open(addr string, consoleID uint32, stored int) (ok bool, victim uint32) {
	ip := sourceIP(addr)
	k := consoleKey{addr, consoleID}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.opening[k]; dup {
		return true, 0 // a retransmit: the server answers it once
	}
	if s.halfOpen[ip] >= s.perSourceOpen {
		return false, 0
	}
	if stored+len(s.opening) >= s.limit {
		if victim = s.victimLocked(ip); victim == 0 {
			return false, 0
		}
		s.dropLocked(victim) // the guard closes it; the store's hook finds nothing
	}
	s.opening[k] = opening{ip: ip, at: s.now()}
	s.halfOpen[ip]++
	return true, victim
}

// victimLocked picks the oldest half-open session of the source holding
// the most half-open handshakes, if that is more than ip would hold with
// one more. The table holds at most session_limit entries.
func (s *Slots) victimLocked(ip string) uint32 {
	var worst string
	for src, n := range s.halfOpen {
		if n > s.halfOpen[worst] || worst == "" && n > 0 {
			worst = src
		}
	}
	if worst == "" || s.halfOpen[worst] <= s.halfOpen[ip]+1 {
		return 0
	}
	var id uint32
	var oldest time.Time
	for sid, sl := range s.sessions {
		if sl.open && sl.ip == worst && (id == 0 || sl.created.Before(oldest)) {
			id, oldest = sid, sl.created
		}
	}
	return id
}

// opened records the server's Open Session answer to addr.
func (s *Slots) opened(addr string, consoleID uint32, status uint8, bmcID uint32) {
	ip := sourceIP(addr)
	k := consoleKey{addr, consoleID}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, counted := s.opening[k]
	delete(s.opening, k)
	if status != 0 || bmcID == 0 || s.sessions[bmcID] != nil {
		if counted {
			s.halfOpen[ip]--
			s.tidyLocked(ip)
		}
		return
	}
	if !counted {
		s.halfOpen[ip]++
	}
	s.sessions[bmcID] = &slot{ip: ip, created: s.now(), open: true}
}

// slotRefusal says why claim refused.
type slotRefusal string

// claim takes a slot for user on session bmcID at its RAKP 1, or says why
// not. low: the user's channel privilege is below operator. Claiming an
// already claimed session again (a repeated RAKP 1) changes nothing.
func (s *Slots) claim(bmcID uint32, user string, low bool) slotRefusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.sessions[bmcID]
	if sl == nil || sl.claimed {
		return ""
	}
	switch {
	case s.byUser[user] >= s.perUser:
		return "user_sessions"
	case s.bySource[sl.ip] >= s.perSource:
		return "source_sessions"
	case low && s.lowHeld >= s.low:
		return "reserved_sessions"
	}
	sl.user, sl.claimed, sl.low = user, true, low
	s.byUser[user]++
	s.bySource[sl.ip]++
	if low {
		s.lowHeld++
	}
	return ""
}

// settled marks session bmcID logged in (RAKP 4 status 0); a failed
// handshake gives back its claim and stays half-open until it ends.
func (s *Slots) settled(bmcID uint32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.sessions[bmcID]
	if sl == nil || !sl.open {
		return
	}
	if ok {
		sl.open = false
		s.halfOpen[sl.ip]--
		return
	}
	s.unclaimLocked(sl)
}

func (s *Slots) unclaimLocked(sl *slot) {
	if !sl.claimed {
		return
	}
	sl.claimed = false
	s.byUser[sl.user]--
	s.bySource[sl.ip]--
	if sl.low {
		s.lowHeld--
	}
	if s.byUser[sl.user] == 0 {
		delete(s.byUser, sl.user)
	}
}

// Removed forgets a session that left the server's table (Close Session,
// inactivity, the guard's closing); the store's removal hook calls it.
func (s *Slots) Removed(bmcID uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(bmcID)
}

func (s *Slots) dropLocked(bmcID uint32) {
	sl := s.sessions[bmcID]
	if sl == nil {
		return
	}
	delete(s.sessions, bmcID)
	s.unclaimLocked(sl)
	if sl.open {
		s.halfOpen[sl.ip]--
	}
	s.tidyLocked(sl.ip)
}

func (s *Slots) tidyLocked(ip string) {
	if s.halfOpen[ip] <= 0 {
		delete(s.halfOpen, ip)
	}
	if s.bySource[ip] <= 0 {
		delete(s.bySource, ip)
	}
}

// expire forgets Open Sessions never answered and returns the half-open
// sessions older than the handshake time, for the guard to close.
func (s *Slots) expire() []uint32 {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, o := range s.opening {
		if now.Sub(o.at) > openingTTL {
			delete(s.opening, k)
			s.halfOpen[o.ip]--
			s.tidyLocked(o.ip)
		}
	}
	var ids []uint32
	for id, sl := range s.sessions {
		if sl.open && now.Sub(sl.created) > s.halfOpenFor {
			ids = append(ids, id)
		}
	}
	return ids
}

// Held reports the sessions (claimed or established) of user and of
// users below operator, for tests and metrics.
func (s *Slots) Held(user string) (ofUser, low int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byUser[user], s.lowHeld
}

// IDs lists the BMC session IDs the book holds (half-open and
// established), for a BMC reset that drops every session.
func (s *Slots) IDs() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint32, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	return ids
}
