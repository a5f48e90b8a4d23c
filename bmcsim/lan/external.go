package lan

import "time"

// LoginTicket is an attempt BeginLogin let through, for EndLogin.
type LoginTicket struct {
	started, srcLast, userLast time.Time
}

// BeginLogin opens the accounting of a login for a known user that another
// channel of the BMC checks itself (Redfish sessions and HTTP Basic), so
// that one book counts a user's failures over every channel. Like a RAKP 1
// it must wait while its source, or the user it names, is backed off: then
// wait > 0 and nothing is counted (the caller refuses the attempt). Else
// the attempt counts provisionally, against its source and user, until
// EndLogin settles it: a burst of guesses started at once is counted
// before any is settled, as on the LAN channel.
func (lb *Logins) BeginLogin(user, ip string) (wait time.Duration, t LoginTicket) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if w := lb.waitLocked(lb.sources.get(ip), lb.users[user], now); w > 0 {
		return w, t
	}
	src := lb.sources.getOrAdd(ip, now, lb.srcLimit)
	u := lb.userLocked(user)
	t = LoginTicket{started: now, srcLast: src.last, userLast: u.last}
	src.pending++
	u.pending++
	src.last, u.last = now, now
	return 0, t
}

// EndLogin settles an attempt BeginLogin let through: a failure counts
// against its source and user (and may begin the user's slowdown, whose
// end it returns, else zero); a success releases the provisional count and
// gives the source and user back their last attempt's time, so a login
// does not delay the next one (as a RAKP 4 success does).
func (lb *Logins) EndLogin(user, ip string, t LoginTicket, ok bool) (slowedUntil time.Time) {
	now := lb.now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	src := lb.sources.getOrAdd(ip, now, lb.srcLimit)
	u := lb.userLocked(user)
	if src.pending > 0 {
		src.pending--
	}
	if u.pending > 0 {
		u.pending--
	}
	if ok {
		if src.last.Equal(t.started) {
			src.last = t.srcLast
		}
		if u.last.Equal(t.started) {
			u.last = t.userLast
		}
		return time.Time{}
	}
	src.fails++
	u.fails++
	u.last = now
	lb.sources.touch(src, now)
	if th := lb.policy.Threshold; th > 0 && u.fails >= th {
		if !now.Before(u.slowUntil) {
			slowedUntil = now.Add(lb.policy.Slowdown)
		}
		u.slowUntil = now.Add(lb.policy.Slowdown)
	}
	return slowedUntil
}
