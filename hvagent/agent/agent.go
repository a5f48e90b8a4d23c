// Package agent is hvagent's one request path, shared by both channels: the
// OOB-I (records read from BMC Queue 1, package oob) and the VMM-I (TLS
// frames, package vmmi) both hand a sealed envelope to Agent.HandleEnvelope
// and send back whatever envelopes it returns.
//
// For one envelope:
//
//	open (seal.Opener: host id, T-1..T+1, replay window)
//	  └─ fails → logged; tampered (ErrAuth) or replayed (ErrReplay) also
//	             raise an alert; nothing is answered; but a stale one that
//	             is an authentic, signed request within ±1 h → Reply
//	             ErrClockSkew in the VMS's time step + Alert, not run (clock.go)
//	decode vmsg.Request (another kind → logged, nothing answered)
//	signature (internal/ident) by a key the list names for the principal,
//	and on the VMM-I the TLS client certificate's principal (WithPeer)
//	  └─ missing, bad, someone else's → Reply ErrDenied + Alert (nothing
//	     journalled: a forged request cannot take a request id)
//	journal.Begin(request id), state changes only (a read whose id the
//	journal holds is answered from it; reads claim nothing):
//	one request id, one outcome
//	  done before          → the recorded reply, resealed (no check, no run)
//	  running or checked   → wait (DuplicateWait) for its outcome, then as
//	  by another copy        above; still running → Reply ErrInProgress
//	  begun before a crash → Reply ErrInterrupted with the VM's state now
//	                         (the claim's note, "start app1", tells a
//	                         restarted agent what may still be under way)
//	  journal cannot write → Reply ErrInternal + Alert, not run
//	  new: claimed ↓
//	issue time outside ±MaxSkew → Reply ErrStale (claim released)
//	policy.Decide(principal, command, vm)
//	  Deny          → Reply ErrDenied (journalled) + Alert
//	  NeedChallenge → no answer in the request: a Challenge message (claim
//	                  released; the challenge is kept in the challenger's
//	                  state file, so it survives a restart)
//	                  answer right: run; wrong, reused, expired, unknown or
//	                  locked out: Reply ErrChallengeNo (journalled) + Alert
//	  Allow         → run
//	run: "action begun" (a state change), detached from the requester and
//	     with no deadline of the agent's (libvirt ends it): virt action →
//	     Reply with the resulting state(s) and host info → journal.Put →
//	     answer (if the requester is still there; else the retry gets it);
//	     still running after ActionTimeout → Reply ErrInProgress, and the
//	     real outcome is journalled when libvirt gives it
//
// Every answer is sealed with the host key (kind Reply, Challenge or Alert)
// under a fresh random message id. The journal stores, per request id, a
// fingerprint of (principal, command, VM) and the CBOR reply body, so a
// retry on either channel, also after an agent restart, gets the same reply
// without running the action or its checks again; a request id reused for
// a different request is refused with ErrBadRequest.
//
// Alerts go to the sinks in the background (MaxAlertsInFlight at once,
// beyond that dropped, counted and logged). Refusal alerts pass an
// alert.Throttle with two budgets: refusals of proven principals (denied,
// challenge refused) and junk (envelopes that do not open, requests whose
// signature does not verify), so junk cannot use up the room of a real
// refusal. An alert held back is not put in the answer either; it is counted
// in a summary alert per kind at the end of its minute. A lockout is always
// alerted.
//
// Files: agent.go (Config, New, sealing, shutdown), gate.go (the
// concurrency gate), request.go (the request path above, up to the run),
// execute.go (the run on the hypervisor and its journalling), alerts.go
// (refusals, alert classes and delivery), throttle.go (the alert budgets and
// summaries), reads.go (recent reads'
// answers, in memory), boot.go (journalled boot-time starts), history.go.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/challenge"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Channels, as passed in via.
const (
	ViaOOB  = "oob-i"
	ViaVMMI = "vmm-i"
)

// Config holds an Agent's dependencies. Key, Policy, Hypervisor and Journal
// are required.
type Config struct {
	Key        *seal.Key
	Policy     *policy.Policy
	Hypervisor virt.Hypervisor
	Journal    *journal.Journal
	// Challenger holds outstanding challenges; nil builds one from the
	// policy's registered users with seal.ChallengeVerifier, keeping its
	// state in ChallengeState.
	Challenger *challenge.Challenger
	// ChallengeState is the file that keeps outstanding challenges, spent
	// codes and lockouts across restarts ("" keeps them in memory only).
	ChallengeState string
	// Alerts gets every alert (log, hook, SEL…). May be nil.
	Alerts alert.Sink
	// Queue2 gets the alerts whose sealed Alert message cannot travel in the
	// answer of an OOB-I request: refusals on the VMM-I and bad envelopes.
	// May be nil.
	Queue2 alert.Sink
	// Host describes this host in replies; HostID defaults to the key's.
	Host vmsg.HostInfo
	// MaxSkew bounds |now − request issue time| (default 5 min; the
	// envelope's own T±1 window is ~90 s).
	MaxSkew time.Duration
	// ActionTimeout bounds a read, and how long the requester of a state
	// change waits before it is answered "still running" (default 60 s);
	// the state change itself runs, detached, until libvirt ends it.
	ActionTimeout time.Duration
	// DuplicateWait bounds how long a duplicate of a request still running
	// waits for its outcome before it is answered ErrInProgress (default
	// ActionTimeout).
	DuplicateWait time.Duration
	// AlertTimeout bounds the delivery of one alert to Alerts (default 15 s).
	AlertTimeout time.Duration
	// EnvelopeAlertsPerMinute caps the junk budget (default 6 a minute):
	// alerts for envelopes that do not open and requests whose signature
	// does not verify, so garbage cannot flood the SEL.
	EnvelopeAlertsPerMinute int
	// RefusalAlertsPerMinute caps the alerts for refused requests of one
	// class and principal (default 3 a minute); RefusalAlertsTotal caps
	// the refusals of proven principals together (default 20 a minute).
	// Alerts held back are counted in a summary alert per kind when their
	// minute ends. A lockout is always alerted.
	RefusalAlertsPerMinute, RefusalAlertsTotal int
	// MaxAlertsInFlight bounds the alerts being delivered at once (default
	// 32); beyond, an alert is dropped, counted and logged, so slow outlets
	// (a full Queue 2) never stall requests.
	MaxAlertsInFlight int
	// MaxConcurrent bounds the requests served at once (default 8); the
	// requests for one VM are served one after another, in arrival order
	// (see Prepare).
	MaxConcurrent int
	Opener        seal.OpenerOptions
	Now           func() time.Time
	Logger        *slog.Logger
}

// Agent serves sealed requests. It is safe for concurrent use.
type Agent struct {
	cfg    Config
	hostID string
	opener *seal.Opener
	sealer *seal.Sealer
	chal   *challenge.Challenger
	pol    atomic.Pointer[policy.Policy]
	log    *slog.Logger

	reads      *readCache     // recent reads' answers (reads.go)
	actions    sync.WaitGroup // actions and alert deliveries running
	executions atomic.Uint64
	alertSlots chan struct{}
	dropped    atomic.Uint64

	// The concurrency gate (gate.go).
	slots chan struct{}
	gmu   sync.Mutex
	byID  map[uint64]*Job          // the first job of each request id in the gate
	lanes map[string]chan struct{} // per VM: done of the last job in line

	throttle *alert.Throttle // refusal and junk alerts (throttle.go)
	flushMu  sync.Mutex
	flushing *time.Timer // sends the throttle's summaries when its minute ends
}

// New checks cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Key == nil:
		return nil, errors.New("agent: no host key")
	case cfg.Policy == nil:
		return nil, errors.New("agent: no policy")
	case cfg.Hypervisor == nil:
		return nil, errors.New("agent: no hypervisor")
	case cfg.Journal == nil:
		return nil, errors.New("agent: no journal")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = 5 * time.Minute
	}
	if cfg.ActionTimeout <= 0 {
		cfg.ActionTimeout = 60 * time.Second
	}
	if cfg.AlertTimeout <= 0 {
		cfg.AlertTimeout = 15 * time.Second
	}
	if cfg.DuplicateWait <= 0 {
		cfg.DuplicateWait = cfg.ActionTimeout
	}
	if cfg.EnvelopeAlertsPerMinute <= 0 {
		cfg.EnvelopeAlertsPerMinute = 6
	}
	if cfg.RefusalAlertsPerMinute <= 0 {
		cfg.RefusalAlertsPerMinute = 3
	}
	if cfg.RefusalAlertsTotal <= 0 {
		cfg.RefusalAlertsTotal = 20
	}
	if cfg.MaxAlertsInFlight <= 0 {
		cfg.MaxAlertsInFlight = 32
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 8
	}
	if cfg.Host.HostID == "" {
		cfg.Host.HostID = cfg.Key.HostID()
	}
	a := &Agent{
		cfg:        cfg,
		hostID:     cfg.Key.HostID(),
		opener:     seal.NewOpener(cfg.Key, cfg.Opener),
		sealer:     seal.NewSealer(cfg.Key),
		log:        cfg.Logger,
		alertSlots: make(chan struct{}, cfg.MaxAlertsInFlight),
		throttle:   newThrottle(cfg),
		slots:      make(chan struct{}, cfg.MaxConcurrent),
		byID:       map[uint64]*Job{},
		lanes:      map[string]chan struct{}{},
		reads:      newReadCache(readWindowSkews * cfg.MaxSkew),
	}
	a.pol.Store(cfg.Policy)
	a.chal = cfg.Challenger
	if a.chal == nil {
		c, err := challenge.Open(challenge.Config{Keys: a.userKey, HostID: a.hostID, Verifier: seal.ChallengeVerifier{},
			StateFile: cfg.ChallengeState, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		a.chal = c
	}
	return a, nil
}

// SetPolicy replaces the authorization list (e.g. on SIGHUP).
func (a *Agent) SetPolicy(p *policy.Policy) {
	if p != nil {
		a.pol.Store(p)
	}
}

func (a *Agent) policy() *policy.Policy { return a.pol.Load() }

// userKey is who answers principal's challenges on this host: a TOTP key
// of this host's group, or approval keys.
func (a *Agent) userKey(principal string) (challenge.Answerer, bool) {
	u, ok := a.policy().UserOf(principal)
	if !ok || !u.CanAnswer() {
		return challenge.Answerer{}, false
	}
	return challenge.Answerer{User: u.Name, Secret: u.Secret, ApprovalKeys: u.ApprovalKeys}, true
}

// KnownPrincipal reports whether the authorization list names principal
// (hvagent/vmmi checks client certificates with it).
func (a *Agent) KnownPrincipal(principal string) bool { return a.policy().KnownPrincipal(principal) }

// HostID is the host this agent answers for.
func (a *Agent) HostID() string { return a.hostID }

// Seal seals m for the VMS under a fresh random message id.
func (a *Agent) Seal(m vmsg.Message) ([]byte, error) {
	kind, body, err := vmsg.Encode(m)
	if err != nil {
		return nil, err
	}
	return a.sealer.Seal(kind, randID(), body, a.cfg.Now())
}

func randID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥1.24)
	return binary.BigEndian.Uint64(b[:])
}

// HandleEnvelope serves one sealed envelope that arrived on via and returns
// the sealed answers to send back, in order (a Reply or a Challenge, then
// possibly an Alert). An envelope that cannot be opened or is not a request
// gets no answer: out is nil and err says why (already logged). It goes
// through the concurrency gate (gate.go): Prepare, then Run.
func (a *Agent) HandleEnvelope(ctx context.Context, env []byte, via string) (out [][]byte, err error) {
	return a.Prepare(ctx, env, via).Run(ctx)
}

// Executions is how many requests reached the hypervisor (tests and the
// lab count it to prove one execution per request id).
func (a *Agent) Executions() uint64 { return a.executions.Load() }

// Wait waits until every action begun has finished and journalled its
// outcome, or ctx ends (then it returns ctx's error). Call it on shutdown,
// after the channels stopped taking requests, before closing the journal.
// It stops the timer of the throttle's summaries: a later refusal arms it
// again.
func (a *Agent) Wait(ctx context.Context) error {
	a.stopFlush()
	done := make(chan struct{})
	go func() {
		a.actions.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *Agent) answer(m vmsg.Message) ([][]byte, error) {
	env, err := a.Seal(m)
	if err != nil {
		return nil, err
	}
	return [][]byte{env}, nil
}
