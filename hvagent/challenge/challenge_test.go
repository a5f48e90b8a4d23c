package challenge

import (
	"errors"
	"testing"
	"time"
)

var secret = []byte("12345678901234567890") // RFC 6238 appendix B SHA-1 key

func keys(principal string) (string, []byte, bool) {
	if principal == "vms1" {
		return "alice", secret, true
	}
	return "", nil, false
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

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name string
		run  func(c *Challenger) error
		want error
	}{
		{"right code", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now.Add(5*time.Second))
		}, nil},
		{"wrong code", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, "000000", now)
		}, ErrBadCode},
		{"code for another nonce", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			ch2 := c.Issue(2, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch2.Nonce[:], now), now)
		}, ErrBadCode},
		{"reused code", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			code := Code(secret, ch.Nonce[:], now)
			if err := c.Verify(1, "vms1", "start", "db1", ch.Nonce, code, now); err != nil {
				return err
			}
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, code, now.Add(time.Second))
		}, ErrCodeReused},
		{"expired nonce", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			later := now.Add(61 * time.Second)
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], later), later)
		}, ErrExpired},
		{"nonce for another request id", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			return c.Verify(2, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"nonce for another action", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "destroy", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"nonce for another VM", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			return c.Verify(1, "vms1", "start", "db2", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"nonce for another principal", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			return c.Verify(1, "ops", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
		{"never issued", func(c *Challenger) error {
			return c.Verify(1, "vms1", "start", "db1", [16]byte{1}, "123456", now)
		}, ErrUnknownChallenge},
		{"principal without user", func(c *Challenger) error {
			ch := c.Issue(1, "ops", "start", "db1", now)
			return c.Verify(1, "ops", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrNoUser},
		{"three bad codes drop the challenge", func(c *Challenger) error {
			ch := c.Issue(1, "vms1", "start", "db1", now)
			for i := 0; i < 3; i++ {
				if err := c.Verify(1, "vms1", "start", "db1", ch.Nonce, "000000", now); !errors.Is(err, ErrBadCode) {
					return err
				}
			}
			return c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now)
		}, ErrUnknownChallenge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{Keys: keys})
			err := tt.run(c)
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBoundedOutstanding(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := New(Config{Keys: keys, MaxOutstanding: 3, TTL: 10 * time.Second})
	first := c.Issue(1, "vms1", "start", "db1", now)
	for i := uint64(2); i <= 4; i++ {
		c.Issue(i, "vms1", "start", "db1", now)
	}
	if n := c.Outstanding(); n != 3 {
		t.Fatalf("Outstanding = %d, want 3", n)
	}
	if err := c.Verify(1, "vms1", "start", "db1", first.Nonce, Code(secret, first.Nonce[:], now), now); !errors.Is(err, ErrUnknownChallenge) {
		t.Fatalf("oldest not dropped: %v", err)
	}
	// Expired ones go first.
	c.Issue(5, "vms1", "start", "db1", now.Add(11*time.Second))
	if n := c.Outstanding(); n != 1 {
		t.Fatalf("Outstanding after expiry = %d, want 1", n)
	}
}

func TestSpentForgottenAfterWindow(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := New(Config{Keys: keys})
	ch := c.Issue(1, "vms1", "start", "db1", now)
	if err := c.Verify(1, "vms1", "start", "db1", ch.Nonce, Code(secret, ch.Nonce[:], now), now); err != nil {
		t.Fatal(err)
	}
	c.Issue(2, "vms1", "start", "db1", now.Add(2*time.Minute)) // runs gc
	c.mu.Lock()
	n := len(c.spent)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("spent set holds %d after the window", n)
	}
}
