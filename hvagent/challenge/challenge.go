// Package challenge is hvagent's request-challenge-verify step for state
// changes to protected VMs.
//
// The agent answers such a request with a [Challenge]: a random 16-byte
// nonce and an expiry, bound here, server side, to the request id, the
// principal, the action, the VM and the principal's registered operator.
// The VMS sends the same request id again with the nonce and a 6-digit code;
// [Challenger.Verify] checks, in order, that
//
//   - a challenge is outstanding for this request id and was issued for the
//     same nonce, principal, action and VM (else ErrUnknownChallenge);
//   - it has not expired (ErrExpired);
//   - neither the operator nor the principal is locked out by the failure
//     budget (ErrLocked);
//   - the code is right (else ErrBadCode). An operator in TOTP mode answers
//     with one of
//     1. the operator's RFC 6238 code, what any authenticator app shows for
//     the enrolled otpauth:// key of this host's group (HMAC-SHA1, 6
//     digits, 30 s steps, T-1..T+1 accepted). A time step is usable once
//     per operator on this host (ErrCodeReused): a code seen once, on any
//     request, is spent here. It is not spent on the other hosts of the
//     group, which do not see it: there it answers one challenge each
//     until its window ends, about 90 s after its step began (the price of
//     codes an app shows; a host of another group holds another key and
//     refuses it);
//     2. the automation code ([Verifier], default [NonceTOTP]): the same
//     key's code bound to the nonce, computed by a VMS that holds the
//     operator's key (vmsctl --otp-secret-file). It cannot be replayed:
//     the nonce is spent with its challenge.
//     An operator in approval mode answers with an approval token
//     (internal/ident.SignApproval): the operator's Ed25519 signature over
//     this host's id (Config.HostID), the principal, action, VM, request
//     id and nonce. The host holds the public key only; the token is good
//     for this one challenge.
//
// Guessing is bounded: a challenge takes one answer, right or wrong (the
// agent records the refusal as the request's outcome); Budget wrong codes within BudgetWindow, counted per operator and
// per principal, lock both for LockFor (the failure that locks returns
// ErrLockout, so the agent alerts it once). At most MaxOutstanding
// challenges wait at once, MaxPerPrincipal per principal (ErrTooMany).
//
// With Config.StateFile the outstanding challenges, the spent time steps and
// the failure budgets survive an agent restart: every change is written to
// the file (JSON, written to a temporary file, fsynced and renamed), so a
// protected request begun before a restart is answered truthfully.
//
// NonceTOTP, the automation code: with step T = floor(unix time / 30 s),
//
//	mac  = HMAC-SHA1(key = user's TOTP secret, msg = T as 8 bytes big-endian ‖ nonce)
//	off  = mac[19] & 0x0f
//	bin  = (mac[off]&0x7f)<<24 | mac[off+1]<<16 | mac[off+2]<<8 | mac[off+3]
//	code = bin mod 10^6, written as 6 decimal digits, zero padded
//
// i.e. RFC 4226 HOTP with the counter followed by the nonce.
package challenge

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/seal"
)

// Sentinel errors, found with errors.Is.
var (
	ErrUnknownChallenge = errors.New("challenge: unknown challenge")
	ErrExpired          = errors.New("challenge: challenge expired")
	ErrBadCode          = errors.New("challenge: wrong code")
	ErrCodeReused       = errors.New("challenge: code already used")
	ErrNoUser           = errors.New("challenge: principal has no registered user")
	ErrLocked           = errors.New("challenge: locked out after too many wrong codes")
	// ErrLockout comes with the wrong code that used up the budget.
	ErrLockout = errors.New("challenge: failure budget used up; locked out")
	ErrTooMany = errors.New("challenge: too many outstanding challenges")
)

// NonceSize is the nonce length in bytes.
const NonceSize = 16

// Challenge is what the agent sends back instead of running the request.
type Challenge struct {
	Nonce  [NonceSize]byte
	Expiry time.Time
}

// Verifier checks an automation code for secret bound to nonce at time now,
// and says which time step it matched.
type Verifier interface {
	Verify(secret, nonce []byte, code string, now time.Time) (step int64, ok bool)
}

// Answerer is the registered user who answers a principal's challenges on
// this host, and how: with TOTP codes of Secret, or with approvals signed
// by one of ApprovalKeys.
type Answerer struct {
	User         string
	Secret       []byte
	ApprovalKeys []ed25519.PublicKey
}

// KeyFunc gives the registered user answering for principal. ok is false
// when principal has no registered user who can answer on this host.
type KeyFunc func(principal string) (a Answerer, ok bool)

// Config configures a Challenger. Keys is required.
type Config struct {
	Keys KeyFunc
	// HostID is this host's id, which approvals name; without it no
	// approval is accepted.
	HostID   string
	Verifier Verifier // automation codes; default NonceTOTP{}
	// StateFile, when set, keeps the state across restarts (see the
	// package doc). Mode 0600.
	StateFile       string
	TTL             time.Duration // default 60 s
	MaxOutstanding  int           // default 64
	MaxPerPrincipal int           // default 4
	Budget          int           // wrong codes per operator and per principal, default 5
	BudgetWindow    time.Duration // default 15 min
	LockFor         time.Duration // default 5 min
	// ReuseWindow is how long a spent time step is remembered after it
	// began. Default 3 steps of 30 s: a code for T is accepted until T+1
	// ends.
	ReuseWindow time.Duration
	Logger      *slog.Logger
}

type pending struct {
	RequestID uint64          `json:"request_id"`
	Nonce     [NonceSize]byte `json:"nonce"`
	Principal string          `json:"principal"`
	Action    string          `json:"action"`
	VM        string          `json:"vm"`
	Expiry    time.Time       `json:"expiry"`
}

type spentKey struct {
	User string `json:"user"`
	Step int64  `json:"step"`
}

type spent struct {
	spentKey
	Until time.Time `json:"until"`
}

type budget struct {
	Fails       []time.Time `json:"fails,omitempty"`
	LockedUntil time.Time   `json:"locked_until,omitzero"`
}

// state is what StateFile holds.
type state struct {
	Pending []*pending         `json:"pending"`
	Spent   []spent            `json:"spent"`
	Budgets map[string]*budget `json:"budgets"`
}

// Challenger holds the outstanding challenges. Safe for concurrent use.
type Challenger struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	pending map[uint64]*pending // by request id
	spent   map[spentKey]time.Time
	budgets map[string]*budget // "user:NAME", "principal:NAME"
	version uint64

	wmu     sync.Mutex // one writer of StateFile
	written uint64
}

// New returns a Challenger that keeps its state in memory (StateFile is
// ignored); it panics if cfg.Keys is nil.
func New(cfg Config) *Challenger {
	cfg.StateFile = ""
	c, err := Open(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

// Open returns a Challenger, loading cfg.StateFile when it exists.
func Open(cfg Config) (*Challenger, error) {
	if cfg.Keys == nil {
		return nil, errors.New("challenge: Config.Keys is nil")
	}
	if cfg.Verifier == nil {
		cfg.Verifier = NonceTOTP{}
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 60 * time.Second
	}
	if cfg.MaxOutstanding <= 0 {
		cfg.MaxOutstanding = 64
	}
	if cfg.MaxPerPrincipal <= 0 {
		cfg.MaxPerPrincipal = 4
	}
	if cfg.Budget <= 0 {
		cfg.Budget = 5
	}
	if cfg.BudgetWindow <= 0 {
		cfg.BudgetWindow = 15 * time.Minute
	}
	if cfg.LockFor <= 0 {
		cfg.LockFor = 5 * time.Minute
	}
	if cfg.ReuseWindow <= 0 {
		cfg.ReuseWindow = 3 * Step
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Challenger{cfg: cfg, log: cfg.Logger,
		pending: map[uint64]*pending{}, spent: map[spentKey]time.Time{}, budgets: map[string]*budget{}}
	if cfg.StateFile == "" {
		return c, nil
	}
	b, err := os.ReadFile(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return c, nil
	case err != nil:
		return nil, fmt.Errorf("challenge state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("challenge state %s: %w (move it away to start afresh: outstanding challenges are then refused)", cfg.StateFile, err)
	}
	for _, p := range st.Pending {
		if p != nil {
			c.pending[p.RequestID] = p
		}
	}
	for _, s := range st.Spent {
		c.spent[s.spentKey] = s.Until
	}
	for k, v := range st.Budgets {
		if v != nil {
			c.budgets[k] = v
		}
	}
	return c, nil
}

// snapshot returns the state to write, or nil without a StateFile. Caller
// holds mu.
func (c *Challenger) snapshot() ([]byte, uint64) {
	if c.cfg.StateFile == "" {
		return nil, 0
	}
	c.version++
	st := state{Budgets: c.budgets}
	for _, p := range c.pending {
		st.Pending = append(st.Pending, p)
	}
	for k, u := range c.spent {
		st.Spent = append(st.Spent, spent{spentKey: k, Until: u})
	}
	b, err := json.Marshal(st)
	if err != nil {
		c.log.Error("cannot encode the challenge state", "err", err)
		return nil, 0
	}
	return b, c.version
}

// persist writes a snapshot taken under mu, outside mu. A snapshot older
// than the one on disk is skipped.
func (c *Challenger) persist(b []byte, v uint64) error {
	if b == nil {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if v <= c.written {
		return nil
	}
	path := c.cfg.StateFile
	if err := fileio.WriteFile(path, b, 0o600); err != nil {
		c.log.Error("challenge state not saved: outstanding challenges, spent codes and lockouts may not survive a restart", "file", path, "err", err)
		return err
	}
	c.written = v
	return nil
}

// Issue makes a challenge for one request, or returns the one already
// outstanding for the same request id. It refuses (ErrLocked, ErrTooMany)
// a principal or operator that is locked out, and a new challenge beyond
// the caps.
func (c *Challenger) Issue(requestID uint64, principal, action, vm string, now time.Time) (Challenge, error) {
	c.mu.Lock()
	c.gc(now)
	if p, ok := c.pending[requestID]; ok && p.Principal == principal && p.Action == action && p.VM == vm {
		c.mu.Unlock()
		return Challenge{Nonce: p.Nonce, Expiry: p.Expiry}, nil
	}
	if err := c.lockedLocked(principal, now); err != nil {
		c.mu.Unlock()
		return Challenge{}, err
	}
	n := 0
	for _, p := range c.pending {
		if p.Principal == principal {
			n++
		}
	}
	if n >= c.cfg.MaxPerPrincipal || len(c.pending) >= c.cfg.MaxOutstanding {
		c.mu.Unlock()
		return Challenge{}, fmt.Errorf("%w: %d for %q, %d in all (max %d, %d); answer or let them expire (%s)",
			ErrTooMany, n, principal, len(c.pending), c.cfg.MaxPerPrincipal, c.cfg.MaxOutstanding, c.cfg.TTL)
	}
	p := &pending{RequestID: requestID, Principal: principal, Action: action, VM: vm, Expiry: now.Add(c.cfg.TTL)}
	rand.Read(p.Nonce[:]) // never fails (Go ≥ 1.24)
	c.pending[requestID] = p
	b, v := c.snapshot()
	c.mu.Unlock()
	c.persist(b, v)
	return Challenge{Nonce: p.Nonce, Expiry: p.Expiry}, nil
}

// gc drops expired challenges, spent steps past their window and budgets
// with nothing left to count. Caller holds mu.
func (c *Challenger) gc(now time.Time) {
	for k, p := range c.pending {
		if now.After(p.Expiry) {
			delete(c.pending, k)
		}
	}
	for k, until := range c.spent {
		if now.After(until) {
			delete(c.spent, k)
		}
	}
	cut := now.Add(-c.cfg.BudgetWindow)
	for k, b := range c.budgets {
		i := 0
		for i < len(b.Fails) && b.Fails[i].Before(cut) {
			i++
		}
		b.Fails = b.Fails[i:]
		if len(b.Fails) == 0 && !now.Before(b.LockedUntil) {
			delete(c.budgets, k)
		}
	}
}

// lockedLocked says whether principal or its operator is locked out.
// Caller holds mu.
func (c *Challenger) lockedLocked(principal string, now time.Time) error {
	keys := []string{"principal:" + principal}
	if an, ok := c.cfg.Keys(principal); ok {
		keys = append(keys, "user:"+an.User)
	}
	for _, k := range keys {
		if b, ok := c.budgets[k]; ok && now.Before(b.LockedUntil) {
			return fmt.Errorf("%w: %s until %s", ErrLocked, k, b.LockedUntil.UTC().Format(time.RFC3339))
		}
	}
	return nil
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
	err := c.verify(requestID, principal, action, vm, nonce, code, now)
	c.gc(now)
	b, v := c.snapshot()
	c.mu.Unlock()
	c.persist(b, v)
	return err
}

func (c *Challenger) verify(requestID uint64, principal, action, vm string, nonce [NonceSize]byte, code string, now time.Time) error {
	p, ok := c.pending[requestID]
	if !ok {
		return fmt.Errorf("%w: no challenge outstanding for request %d (nonce %x)", ErrUnknownChallenge, requestID, nonce[:4])
	}
	if subtle.ConstantTimeCompare(p.Nonce[:], nonce[:]) != 1 || p.Principal != principal || p.Action != action || p.VM != vm {
		return fmt.Errorf("%w: nonce %x was issued for another request", ErrUnknownChallenge, nonce[:4])
	}
	if now.After(p.Expiry) {
		delete(c.pending, requestID)
		return fmt.Errorf("%w: at %s", ErrExpired, p.Expiry.UTC().Format(time.RFC3339))
	}
	if err := c.lockedLocked(principal, now); err != nil {
		return err
	}
	an, ok := c.cfg.Keys(principal)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoUser, principal)
	}
	user, secret := an.User, an.Secret
	if len(an.ApprovalKeys) > 0 {
		return c.verifyApproval(p, an, nonce, code, now)
	}
	if step, ok := AppCodeStep(secret, code, now); ok {
		k := spentKey{User: user, Step: step}
		if _, used := c.spent[k]; used {
			return fmt.Errorf("%w: user %q's code of time step %d was used before; wait for the next code", ErrCodeReused, user, step)
		}
		c.spent[k] = time.Unix(step*int64(Step/time.Second), 0).Add(c.cfg.ReuseWindow)
		delete(c.pending, requestID)
		return nil
	}
	if _, ok := c.cfg.Verifier.Verify(secret, nonce[:], code, now); ok {
		delete(c.pending, requestID)
		return nil
	}
	delete(c.pending, requestID)
	if lock := c.fail(now, "user:"+user, "principal:"+principal); lock != "" {
		return fmt.Errorf("%w; %w: %s", ErrBadCode, ErrLockout, lock)
	}
	return fmt.Errorf("%w (the challenge is spent; send the command again for a new one)", ErrBadCode)
}

// verifyApproval checks an approval-mode answer. Caller holds mu.
func (c *Challenger) verifyApproval(p *pending, an Answerer, nonce [NonceSize]byte, token string, now time.Time) error {
	delete(c.pending, p.RequestID) // one answer per challenge
	if c.cfg.HostID == "" {
		return fmt.Errorf("%w: this agent has no host id to check approvals against", ErrBadCode)
	}
	a := ident.Approval{HostID: c.cfg.HostID, Principal: p.Principal, Action: p.Action, VM: p.VM, RequestID: p.RequestID, Nonce: nonce[:]}
	if _, err := ident.VerifyApproval(an.ApprovalKeys, a, token); err == nil {
		return nil
	}
	what := "not an approval for this challenge"
	if !ident.IsApprovalToken(token) {
		what = fmt.Sprintf("user %q answers with approvals (vmsctl approve), not codes", an.User)
	}
	if lock := c.fail(now, "user:"+an.User, "principal:"+p.Principal); lock != "" {
		return fmt.Errorf("%w: %s; %w: %s", ErrBadCode, what, ErrLockout, lock)
	}
	return fmt.Errorf("%w: %s (the challenge is spent; send the command again for a new one)", ErrBadCode, what)
}

// fail counts one wrong code against every key; when one reaches the
// budget, all of them are locked and their challenges dropped. It returns
// a description of the lockout, or "". Caller holds mu.
func (c *Challenger) fail(now time.Time, keys ...string) string {
	locked := false
	for _, k := range keys {
		b := c.budgets[k]
		if b == nil {
			b = &budget{}
			c.budgets[k] = b
		}
		b.Fails = append(b.Fails, now)
		if len(b.Fails) >= c.cfg.Budget {
			locked = true
		}
	}
	if !locked {
		return ""
	}
	until := now.Add(c.cfg.LockFor)
	for _, k := range keys {
		c.budgets[k].LockedUntil = until
		c.budgets[k].Fails = nil
	}
	for id, p := range c.pending {
		if "principal:"+p.Principal == keys[1] {
			delete(c.pending, id)
		}
	}
	return fmt.Sprintf("%d wrong codes within %s: %v locked until %s", c.cfg.Budget, c.cfg.BudgetWindow, keys, until.UTC().Format(time.RFC3339))
}

// Step is the TOTP time step.
const Step = seal.ChallengeStep

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// AppCode is the code an authenticator app shows at t for secret
// (RFC 6238: HMAC-SHA1, 6 digits, 30 s).
func AppCode(secret []byte, t time.Time) string {
	code, err := totp.GenerateCodeCustom(b32.EncodeToString(secret), t, appOpts)
	if err != nil {
		return "" // only for an invalid secret, which base32 of bytes is not
	}
	return code
}

var appOpts = totp.ValidateOpts{Period: uint(Step / time.Second), Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// AppCodeStep checks an authenticator-app code for steps T-1, T and T+1
// (all three compared, in constant time) and returns the step it matched.
func AppCodeStep(secret []byte, code string, now time.Time) (step int64, ok bool) {
	if len(code) != 6 {
		return 0, false
	}
	t := now.Unix() / int64(Step/time.Second)
	for s := t - 1; s <= t+1; s++ {
		want := AppCode(secret, time.Unix(s*int64(Step/time.Second), 0))
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && !ok {
			step, ok = s, true
		}
	}
	return step, ok
}

// NonceTOTP is the default Verifier (see the package doc): internal/seal's
// challenge code, which the VMS side computes with the same function.
type NonceTOTP struct{}

var _ Verifier = NonceTOTP{}

// Code returns the 6-digit automation code for secret and nonce at time t.
func Code(secret, nonce []byte, t time.Time) string { return seal.ChallengeCode(secret, nonce, t) }

// Verify accepts the code of step T-1, T or T+1 (constant time, all three
// steps checked).
func (NonceTOTP) Verify(secret, nonce []byte, code string, now time.Time) (int64, bool) {
	return seal.VerifyChallengeCode(secret, nonce, code, now)
}
