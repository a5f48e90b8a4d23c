package challenge

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var secret = []byte("12345678901234567890") // RFC 6238 appendix B SHA-1 key

func keys(principal string) (Answerer, bool) {
	if principal == "vms1" {
		return Answerer{User: "alice", Secret: secret}, true
	}
	return Answerer{}, false
}

func TestCodeVectors(t *testing.T) {
	seq := make([]byte, 16)
	for i := range seq {
		seq[i] = byte(i)
	}
	for _, tt := range []struct {
		nonce []byte
		unix  int64
		want  string
	}{
		// Empty nonce: plain RFC 6238 (94287082 → last 6 digits).
		{nil, 59, "287082"},
		// Nonce 00 01 … 0f; computed independently with Python's hmac.
		{seq, 59, "615817"},
		{seq, 1111111109, "543950"},
	} {
		if got := Code(secret, tt.nonce, time.Unix(tt.unix, 0)); got != tt.want {
			t.Errorf("Code(nonce %x, t=%d) = %s, want %s", tt.nonce, tt.unix, got, tt.want)
		}
	}
}

func TestNonceTOTPWindow(t *testing.T) {
	nonce := []byte("0123456789abcdef")
	t0 := time.Unix(1_700_000_010, 0) // inside a step
	code := Code(secret, nonce, t0)
	for _, tt := range []struct {
		d  time.Duration
		ok bool
	}{{-60 * time.Second, false}, {-30 * time.Second, true}, {0, true}, {30 * time.Second, true}, {60 * time.Second, false}} {
		if _, ok := (NonceTOTP{}).Verify(secret, nonce, code, t0.Add(tt.d)); ok != tt.ok {
			t.Errorf("at %v: ok = %v, want %v", tt.d, ok, tt.ok)
		}
	}
	if _, ok := (NonceTOTP{}).Verify(secret, []byte("other nonce....."), code, t0); ok {
		t.Error("code accepted for another nonce")
	}
	if _, ok := (NonceTOTP{}).Verify(secret, nonce, code+"0", t0); ok {
		t.Error("7-digit code accepted")
	}
}

// issue is Issue for tests that expect it to succeed.
func issue(t *testing.T, c *Challenger, id uint64, principal, action, vm string, now time.Time) Challenge {
	t.Helper()
	ch, err := c.Issue(id, principal, action, vm, now)
	if err != nil {
		t.Fatalf("Issue(%d): %v", id, err)
	}
	return ch
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name string
		run  func(t *testing.T, c *Challenger) error
		want error
	}{
		{"right automation code", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now.Add(5*time.Second))
		}, nil},
		{"right app code", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, AppCode(secret, now), now.Add(5*time.Second))
		}, nil},
		{"wrong code", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, "000000", now)
		}, ErrBadCode},
		{"code for another nonce", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			ch2 := issue(t, c, 2, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch2.Nonce[:], now), now)
		}, ErrBadCode},
		{"app code of a step used before", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			code := AppCode(secret, now)
			if err := c.Verify(1, "vms1", "start", "db1", ch.Nonce, code, now); err != nil {
				return err
			}
			ch2 := issue(t, c, 2, "vms1", "destroy", "db1", now)
			return c.Verify(2, "vms1", "destroy", "db1", ch2.Nonce, code, now.Add(time.Second))
		}, ErrCodeReused},
		{"answered challenge is spent", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			code := Code(secret, ch.Nonce[:], now)
			if err := c.Verify(1, "vms1", "start", "db1", ch.Nonce, code, now); err != nil {
				return err
			}
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, code, now.Add(time.Second))
		}, ErrUnknownChallenge},
		{"expired nonce", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			later := now.Add(61 * time.Second)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], later), later)
		}, ErrExpired},
		{"nonce for another request id", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			return c.Verify(2, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"nonce for another action", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "destroy", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"nonce for another VM", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db2", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"nonce for another principal", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			return c.Verify(1, "ops", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"never issued", func(t *testing.T, c *Challenger) error {
			return c.Verify(1, "vms1", "start", "db1", [16]byte{1}, "123456", now)
		}, ErrUnknownChallenge},
		{"principal without user", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "ops", "start", "db1", now)
			return c.Verify(1, "ops", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrNoUser},
		{"a wrong code spends the challenge", func(t *testing.T, c *Challenger) error {
			ch := issue(t, c, 1, "vms1", "start", "db1", now)
			if err := c.Verify(1, "vms1", "start", "db1", ch.Nonce, "000000", now); !errors.Is(err, ErrBadCode) {
				return err
			}
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{Keys: keys})
			err := tt.run(t, c)
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAppCodeVectors(t *testing.T) {
	// RFC 6238 appendix B, SHA-1, last 6 of the 8 digits.
	for _, tt := range []struct {
		unix int64
		want string
	}{{59, "287082"}, {1111111109, "081804"}, {1234567890, "005924"}, {2000000000, "279037"}} {
		if got := AppCode(secret, time.Unix(tt.unix, 0)); got != tt.want {
			t.Errorf("AppCode(t=%d) = %s, want %s", tt.unix, got, tt.want)
		}
	}
	now := time.Unix(1_700_000_010, 0)
	for _, tt := range []struct {
		d  time.Duration
		ok bool
	}{{-60 * time.Second, false}, {-30 * time.Second, true}, {0, true}, {30 * time.Second, true}, {60 * time.Second, false}} {
		step, ok := AppCodeStep(secret, AppCode(secret, now.Add(tt.d)), now)
		if ok != tt.ok || ok && step != now.Add(tt.d).Unix()/30 {
			t.Errorf("code of %v: step %d ok %v, want ok %v", tt.d, step, ok, tt.ok)
		}
	}
}

func TestIssueIsOncePerRequest(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := New(Config{Keys: keys})
	a := issue(t, c, 1, "vms1", "start", "db1", now)
	b := issue(t, c, 1, "vms1", "start", "db1", now.Add(time.Second))
	if a != b || c.Outstanding() != 1 {
		t.Fatalf("a retransmitted request got a second challenge: %x vs %x, %d outstanding", a.Nonce, b.Nonce, c.Outstanding())
	}
}

func TestCaps(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := New(Config{Keys: keys, MaxOutstanding: 5, MaxPerPrincipal: 3, TTL: 10 * time.Second})
	for i := uint64(1); i <= 3; i++ {
		issue(t, c, i, "vms1", "start", "db1", now)
	}
	if _, err := c.Issue(4, "vms1", "start", "db1", now); !errors.Is(err, ErrTooMany) {
		t.Fatalf("4th for one principal: %v", err)
	}
	issue(t, c, 5, "ops", "start", "db1", now)
	issue(t, c, 6, "ops2", "start", "db1", now)
	if _, err := c.Issue(7, "ops3", "start", "db1", now); !errors.Is(err, ErrTooMany) {
		t.Fatalf("beyond the total: %v", err)
	}
	// Expired ones make room.
	issue(t, c, 8, "vms1", "start", "db1", now.Add(11*time.Second))
	if n := c.Outstanding(); n != 1 {
		t.Fatalf("Outstanding after expiry = %d, want 1", n)
	}
}

func TestBudgetLocksOperatorAndPrincipal(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := New(Config{Keys: keys, Budget: 5, LockFor: 5 * time.Minute})
	var lockouts int
	for i := uint64(1); i <= 5; i++ {
		ch := issue(t, c, i, "vms1", "start", "db1", now)
		err := c.Verify(i, "vms1", "start", "db1", ch.Nonce, "000000", now)
		if !errors.Is(err, ErrBadCode) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if errors.Is(err, ErrLockout) {
			lockouts++
		}
	}
	if lockouts != 1 {
		t.Fatalf("%d lockouts, want 1 (on the 5th)", lockouts)
	}
	if _, err := c.Issue(9, "vms1", "start", "db1", now); !errors.Is(err, ErrLocked) {
		t.Fatalf("issue while locked: %v", err)
	}
	// The right code does not get through while locked either.
	later := now.Add(5*time.Minute + time.Second)
	ch := issue(t, c, 10, "vms1", "start", "db1", later)
	if err := c.Verify(10, "vms1", "start", "db1", ch.Nonce, AppCode(secret, later), later); err != nil {
		t.Fatalf("after the lock: %v", err)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	path := filepath.Join(t.TempDir(), "challenges")
	c, err := Open(Config{Keys: keys, StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	ch := issue(t, c, 1, "vms1", "start", "db1", now)
	used := AppCode(secret, now)
	ch2 := issue(t, c, 2, "vms1", "start", "db2", now)
	if err := c.Verify(2, "vms1", "start", "db2", ch2.Nonce, used, now); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}

	c2, err := Open(Config{Keys: keys, StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Verify(1, "vms1", "start", "db1", ch.Nonce, used, now.Add(time.Second)); !errors.Is(err, ErrCodeReused) {
		t.Fatalf("spent step forgotten across a restart: %v", err)
	}
	if err := c2.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now.Add(time.Second)); err != nil {
		t.Fatalf("challenge issued before the restart: %v", err)
	}
	if err := os.WriteFile(path, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Keys: keys, StateFile: path}); err == nil {
		t.Fatal("a corrupt state file was accepted silently")
	}
}

func TestSpentForgottenAfterWindow(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := New(Config{Keys: keys})
	issue(t, c, 1, "vms1", "start", "db1", now)
	ch := issue(t, c, 1, "vms1", "start", "db1", now)
	if err := c.Verify(1, "vms1", "start", "db1", ch.Nonce, AppCode(secret, now), now); err != nil {
		t.Fatal(err)
	}
	issue(t, c, 2, "vms1", "start", "db1", now.Add(2*time.Minute)) // runs gc
	c.mu.Lock()
	n := len(c.spent)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("spent set holds %d after the window", n)
	}
}
