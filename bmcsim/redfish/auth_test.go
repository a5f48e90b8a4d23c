package redfish

import (
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestLoginBookBounded: wrong logins naming ever new users from ever new
// addresses never grow the book past maxPairs.
func TestLoginBookBounded(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLogins(5, time.Minute, c.now)
	for i := range 3 * maxPairs {
		l.failed("user"+strconv.Itoa(i), "10.0.0."+strconv.Itoa(i%250))
	}
	if n := l.size(); n > maxPairs {
		t.Fatalf("book holds %d pairs, bound %d", n, maxPairs)
	}
	// A pair locked before the flood stays counted while its lock holds
	// only if it is not the oldest; the flood cannot lock anyone else.
	if l.locked("vms", "127.0.0.1") {
		t.Error("vms locked from an address that never failed")
	}
}

func TestLoginLockExpires(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLogins(3, time.Minute, c.now)
	for range 3 {
		l.failed("vms", "10.0.0.9")
	}
	if !l.locked("vms", "10.0.0.9") || l.locked("vms", "10.0.0.1") {
		t.Fatal("want vms locked from 10.0.0.9 only")
	}
	c.add(time.Minute)
	if l.locked("vms", "10.0.0.9") {
		t.Fatal("lock outlived its duration")
	}
	l.failed("vms", "10.0.0.9")
	if l.locked("vms", "10.0.0.9") {
		t.Fatal("one failure after the lock ran out locked again")
	}
}

func TestSessionTimeout(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newSessions(2, time.Minute, c.now)
	a := s.create("vms", RoleOperator)
	if s.create("x", RoleReadOnly) == nil || s.create("y", RoleReadOnly) != nil {
		t.Fatal("session limit 2 not kept")
	}
	c.add(50 * time.Second)
	if s.lookup(a.token) == nil {
		t.Fatal("session expired early")
	}
	c.add(61 * time.Second)
	if s.lookup(a.token) != nil {
		t.Fatal("idle session still valid after the timeout")
	}
	if s.create("z", RoleReadOnly) == nil {
		t.Fatal("expired sessions still count against the limit")
	}
}

// countingBackend counts password checks; only Authenticate is used.
type countingBackend struct {
	Backend
	checks atomic.Int32
}

func (c *countingBackend) Authenticate(string, string) (Account, bool) {
	c.checks.Add(1)
	time.Sleep(time.Millisecond) // a check that takes a while (a slow hash, a loaded BMC)
	return Account{}, false
}

// TestParallelGuessesCheckedOneByOne: 200 wrong logins sent at once from
// one address reach the password check at most lockout_attempts times:
// each failure is counted before the next guess is checked.
func TestParallelGuessesCheckedOneByOne(t *testing.T) {
	be := &countingBackend{}
	s := New(be, Options{LockoutAttempts: 5})
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			r := httptest.NewRequest("POST", "/", nil)
			r.RemoteAddr = "10.0.0.2:4242"
			_, _ = s.login(r, "vms", "guess")
		})
	}
	wg.Wait()
	if n := be.checks.Load(); n > 5 {
		t.Errorf("%d guesses checked, want at most 5", n)
	}
}
