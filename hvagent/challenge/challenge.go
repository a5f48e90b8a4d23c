// Package challenge is hvagent's request-challenge-verify step for state
// changes to protected VMs.
//
// The agent answers such a request with a [Challenge]: a random 16-byte
// nonce and an expiry. The VMS answers with the principal's registered
// user's TOTP code bound to that nonce; [Challenger.Verify] checks that
//
//   - the nonce is outstanding and was issued for the same request id,
//     principal, action and VM (else ErrUnknownChallenge);
//   - it has not expired (ErrExpired);
//   - the code was not used before (ErrCodeReused): a nonce is spent by its
//     first good answer and remembered as spent, with the user and time
//     step, until that step's acceptance window has passed;
//   - the code is right for the user's secret, the nonce and the time
//     (ErrBadCode); after MaxAttempts bad codes the challenge is dropped.
//
// The code function is injected ([Verifier]) so the seal package's helper
// can replace the default [NonceTOTP].
//
// NonceTOTP, the default code: with step T = floor(unix time / 30 s),
//
//	mac  = HMAC-SHA1(key = user's TOTP secret, msg = T as 8 bytes big-endian ‖ nonce)
//	off  = mac[19] & 0x0f
//	bin  = (mac[off]&0x7f)<<24 | mac[off+1]<<16 | mac[off+2]<<8 | mac[off+3]
//	code = bin mod 10^6, written as 6 decimal digits, zero padded
//
// i.e. RFC 4226 HOTP with the counter followed by the nonce. Codes for
// T-1, T and T+1 are accepted (±30 s of clock skew).
package challenge

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/seal"
)

// Sentinel errors, found with errors.Is.
var (
	ErrUnknownChallenge = errors.New("challenge: unknown challenge")
	ErrExpired          = errors.New("challenge: challenge expired")
	ErrBadCode          = errors.New("challenge: wrong code")
	ErrCodeReused       = errors.New("challenge: code already used")
	ErrNoUser           = errors.New("challenge: principal has no registered user")
)

// NonceSize is the nonce length in bytes.
const NonceSize = 16

// Challenge is what the agent sends back instead of running the request.
type Challenge struct {
	Nonce  [NonceSize]byte
	Expiry time.Time
}

// Verifier checks a code for secret bound to nonce at time now, and says
// which time step it matched (for the reuse check).
type Verifier interface {
	Verify(secret, nonce []byte, code string, now time.Time) (step int64, ok bool)
}

// KeyFunc gives the registered user answering for principal and the
// user's TOTP secret. ok is false when principal has no registered user.
type KeyFunc func(principal string) (user string, secret []byte, ok bool)

// Config configures a Challenger. Keys is required.
type Config struct {
	Keys           KeyFunc
	Verifier       Verifier      // default NonceTOTP{}
	TTL            time.Duration // default 60 s
	MaxOutstanding int           // default 1024; the oldest is dropped beyond
	MaxAttempts    int           // bad codes per challenge, default 3
	// ReuseWindow is how long a spent nonce is remembered after its time
	// step began. Default 3 steps of 30 s: a code for T is accepted until
	// T+1 ends.
	ReuseWindow time.Duration
}

type pending struct {
	requestID             uint64
	principal, action, vm string
	expiry                time.Time
	attempts              int
	seq                   uint64 // issue order, to drop the oldest
}

type spent struct {
	user  string
	step  int64
	until time.Time
}

// Challenger holds the outstanding challenges. Safe for concurrent use.
type Challenger struct {
	cfg Config

	mu      sync.Mutex
	seq     uint64
	pending map[[NonceSize]byte]*pending
	spent   map[[NonceSize]byte]spent
}

// New returns a Challenger; it panics if cfg.Keys is nil.
func New(cfg Config) *Challenger {
	if cfg.Keys == nil {
		panic("challenge: Config.Keys is nil")
	}
	if cfg.Verifier == nil {
		cfg.Verifier = NonceTOTP{}
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 60 * time.Second
	}
	if cfg.MaxOutstanding <= 0 {
		cfg.MaxOutstanding = 1024
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.ReuseWindow <= 0 {
		cfg.ReuseWindow = 3 * Step
	}
	return &Challenger{
		cfg:     cfg,
		pending: map[[NonceSize]byte]*pending{},
		spent:   map[[NonceSize]byte]spent{},
	}
}

// Issue makes a challenge for one request. When MaxOutstanding challenges
// are already outstanding, expired ones are dropped first, then the oldest.
func (c *Challenger) Issue(requestID uint64, principal, action, vm string, now time.Time) Challenge {
	var n [NonceSize]byte
	rand.Read(n[:]) // never fails (Go ≥ 1.24)
	ch := Challenge{Nonce: n, Expiry: now.Add(c.cfg.TTL)}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.gc(now)
	for len(c.pending) >= c.cfg.MaxOutstanding {
		var oldest [NonceSize]byte
		var min uint64 = ^uint64(0)
		for k, p := range c.pending {
			if p.seq < min {
				min, oldest = p.seq, k
			}
		}
		delete(c.pending, oldest)
	}
	c.seq++
	c.pending[n] = &pending{requestID: requestID, principal: principal, action: action, vm: vm,
		expiry: ch.Expiry, seq: c.seq}
	return ch
}

// gc drops expired challenges and spent records past their window.
func (c *Challenger) gc(now time.Time) {
	for k, p := range c.pending {
		if now.After(p.expiry) {
			delete(c.pending, k)
		}
	}
	for k, s := range c.spent {
		if now.After(s.until) {
			delete(c.spent, k)
		}
	}
}

// Outstanding is the number of challenges waiting for an answer.
func (c *Challenger) Outstanding() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Verify checks the answer to a challenge. On success the challenge is
// spent: the request may run once.
func (c *Challenger) Verify(requestID uint64, principal, action, vm string, nonce [NonceSize]byte, code string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	if s, ok := c.spent[nonce]; ok && !now.After(s.until) {
		return fmt.Errorf("%w: nonce %x was answered by user %q at step %d", ErrCodeReused, nonce[:4], s.user, s.step)
	}
	p, ok := c.pending[nonce]
	if !ok {
		return fmt.Errorf("%w: nonce %x is not outstanding", ErrUnknownChallenge, nonce[:4])
	}
	if p.requestID != requestID || p.principal != principal || p.action != action || p.vm != vm {
		return fmt.Errorf("%w: nonce %x was issued for another request", ErrUnknownChallenge, nonce[:4])
	}
	if now.After(p.expiry) {
		delete(c.pending, nonce)
		return fmt.Errorf("%w: at %s", ErrExpired, p.expiry.UTC().Format(time.RFC3339))
	}
	user, secret, ok := c.cfg.Keys(principal)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoUser, principal)
	}
	step, ok := c.cfg.Verifier.Verify(secret, nonce[:], code, now)
	if !ok {
		p.attempts++
		if p.attempts >= c.cfg.MaxAttempts {
			delete(c.pending, nonce)
			return fmt.Errorf("%w (attempt %d of %d; challenge dropped)", ErrBadCode, p.attempts, c.cfg.MaxAttempts)
		}
		return fmt.Errorf("%w (attempt %d of %d)", ErrBadCode, p.attempts, c.cfg.MaxAttempts)
	}
	delete(c.pending, nonce)
	c.spent[nonce] = spent{user: user, step: step,
		until: time.Unix(step*int64(Step/time.Second), 0).Add(c.cfg.ReuseWindow)}
	return nil
}

// Step is the TOTP time step.
const Step = seal.ChallengeStep

// NonceTOTP is the default Verifier (see the package doc): internal/seal's
// challenge code, which the VMS side computes with the same function.
type NonceTOTP struct{}

var _ Verifier = NonceTOTP{}

// Code returns the 6-digit code for secret and nonce at time t.
func Code(secret, nonce []byte, t time.Time) string { return seal.ChallengeCode(secret, nonce, t) }

// Verify accepts the code of step T-1, T or T+1 (constant time, all three
// steps checked).
func (NonceTOTP) Verify(secret, nonce []byte, code string, now time.Time) (int64, bool) {
	return seal.VerifyChallengeCode(secret, nonce, code, now)
}
