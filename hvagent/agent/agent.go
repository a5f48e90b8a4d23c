// Package agent is hvagent's one request path, shared by both channels: the
// OOB-I (records read from BMC Queue 1, package oob) and the VMM-I (TLS
// frames, package vmmi) both hand a sealed envelope to Agent.HandleEnvelope
// and send back whatever envelopes it returns.
//
// For one envelope:
//
//	open (seal.Opener: host id, T-1..T+1, replay window)
//	  └─ fails → logged; tampered (ErrAuth) or replayed (ErrReplay) also
//	             raise an alert; nothing is answered
//	decode vmsg.Request (another kind → logged, nothing answered)
//	signature (internal/ident) by a key the list names for the principal,
//	and on the VMM-I the TLS client certificate's principal (WithPeer)
//	  └─ missing, bad, someone else's → Reply ErrDenied + Alert (nothing
//	     journalled: a forged request cannot take a request id)
//	journal.Begin(request id): one request id, one outcome
//	  done before          → the recorded reply, resealed (no check, no run)
//	  running or checked   → wait (DuplicateWait) for its outcome, then as
//	  by another copy        above; still running → Reply ErrInProgress
//	  begun before a crash → Reply ErrInterrupted with the VM's state now
//	                         (the claim's note, "start app1", tells a
//	                         restarted agent what may still be under way)
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
//	run: "action begun" (a state change), detached from the requester,
//	     under ActionTimeout: virt action →
//	     Reply with the resulting state(s) and host info → journal.Put →
//	     answer (if the requester is still there; else the retry gets it)
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
package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/challenge"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Channels, as passed in via.
const (
	ViaOOB  = "oob-i"
	ViaVMMI = "vmm-i"
)

// Alert reasons start with one of these classes, so sinks with little room
// (the 6 bytes of a SEL entry) can tell them apart; see Class.
const (
	ReasonDenied    = "denied"
	ReasonChallenge = "challenge refused"
	ReasonEnvelope  = "bad envelope"
	ReasonReplay    = "replayed envelope"
	// Changes hvagent did not make, seen in libvirt's lifecycle events
	// (package watch).
	ReasonLocal = "unauthorized local change"
	ReasonGuest = "guest-initiated"
	ReasonCrash = "crash"
)

// Class numbers for the alert classes (first byte of the SEL OEM data).
const (
	ClassOther     byte = 0x00
	ClassDenied    byte = 0x01
	ClassChallenge byte = 0x02
	ClassEnvelope  byte = 0x03
	ClassReplay    byte = 0x04
	ClassLocal     byte = 0x05
	ClassGuest     byte = 0x06
	ClassCrash     byte = 0x07
)

// Class maps an alert's reason to its class number.
func Class(a alert.Alert) byte {
	for _, c := range []struct {
		p string
		c byte
	}{{ReasonDenied, ClassDenied}, {ReasonChallenge, ClassChallenge}, {ReasonEnvelope, ClassEnvelope}, {ReasonReplay, ClassReplay},
		{ReasonLocal, ClassLocal}, {ReasonGuest, ClassGuest}, {ReasonCrash, ClassCrash}} {
		if len(a.Reason) >= len(c.p) && a.Reason[:len(c.p)] == c.p {
			return c.c
		}
	}
	return ClassOther
}

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
	// ActionTimeout bounds one action, which runs detached from its
	// requester (default 60 s).
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
	}
	a.pol.Store(cfg.Policy)
	a.chal = cfg.Challenger
	if a.chal == nil {
		c, err := challenge.Open(challenge.Config{Keys: a.userKey, Verifier: seal.ChallengeVerifier{},
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

func (a *Agent) userKey(principal string) (string, []byte, bool) {
	u, ok := a.policy().UserOf(principal)
	if !ok || len(u.Secret) == 0 {
		return "", nil, false
	}
	return u.Name, u.Secret, true
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

// SealAlert seals al as an Alert message (for a Queue 2 sink).
func (a *Agent) SealAlert(al alert.Alert) ([]byte, error) {
	return a.Seal(toVMsgAlert(al))
}

func toVMsgAlert(al alert.Alert) *vmsg.Alert {
	return &vmsg.Alert{TimeMs: al.Time.UnixMilli(), Host: al.Host, Principal: al.Principal,
		VM: al.VM, Action: al.Action, Reason: al.Reason}
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

// logMetaValue is the longest metadata value a log line carries whole.
const logMetaValue = 64

// logMetadata is m as request log lines show it: a value longer than
// logMetaValue bytes is cut to its first bytes and its length. hvagent logs
// to the guest's serial console, where a whole 16 KB value cost ~0.2 s of a
// one-vCPU TCG guest per request (and its answer waited for it).
func logMetadata(m map[string]string) map[string]string {
	long := false
	for _, v := range m {
		long = long || len(v) > logMetaValue
	}
	if !long {
		return m
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if len(v) > logMetaValue {
			v = fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(v[:logMetaValue/2], ""), len(v))
		}
		out[k] = v
	}
	return out
}

func (a *Agent) handle(ctx context.Context, req *vmsg.Request, via string, now time.Time) ([][]byte, error) {
	log := a.log.With("via", via, "request_id", req.ID, "principal", req.Principal, "command", req.Command.String(), "vm", req.VM)
	if len(req.Metadata) > 0 || req.OOBAddr != "" || req.VMMAddr != "" {
		log = log.With("meta", logMetadata(req.Metadata), "vms_oob_i", req.OOBAddr, "vms_vmm_i", req.VMMAddr)
	}
	fp := fingerprint(req)

	// Who sent it, before anything else: a forged principal learns nothing,
	// not even a journaled reply, and claims no request id.
	if err := a.checkSigner(ctx, req); err != nil {
		log.Warn("request refused: its principal is not proven; someone holding the host key (or a stale VMS key) is sending it", "err", err)
		return a.refuse(ctx, log, req, nil, via, vmsg.ErrDenied, fmt.Sprintf("%s: %v", ReasonDenied, err), err, now)
	}

	// One request id, one execution and one outcome: claim the id before
	// any check. A duplicate of a request still being checked or run waits
	// here (bounded) for its outcome; one that ran before gets the recorded
	// reply, never a second run nor a second challenge, policy or replay
	// check.
	wctx, cancel := context.WithTimeout(ctx, a.cfg.DuplicateWait)
	rec, claimed, err := a.cfg.Journal.BeginNote(wctx, req.ID, beginNote(req))
	cancel()
	switch {
	case errors.Is(err, journal.ErrInterrupted):
		return a.interrupted(ctx, log, req)
	case errors.Is(err, journal.ErrInProgress):
		if ctx.Err() != nil {
			return nil, ctx.Err() // the requester went away; nobody to answer
		}
		log.Info("duplicate of a request still running; answered in progress", "waited", a.cfg.DuplicateWait)
		return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInProgress,
			Error: "this request id is still running on the host; ask again with the same id for its outcome"})
	case err != nil:
		log.Error("journal unavailable; request not run", "err", err)
		return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInternal, Error: "journal: " + err.Error()})
	case !claimed:
		return a.replay(log, req, fp, rec)
	}

	// Claimed: every way out below either records an outcome (Put) or
	// releases the id (Abort) for a later attempt.
	if req.IssuedMs != 0 {
		if d := now.Sub(req.Issued()); d > a.cfg.MaxSkew || d < -a.cfg.MaxSkew {
			log.Warn("request refused: issue time outside the allowed skew; check both clocks", "issued", req.Issued(), "skew", d)
			a.abort(log, req.ID)
			return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrStale,
				Error: fmt.Sprintf("issue time %s is %s away from the host's clock (max %s)", req.Issued().UTC().Format(time.RFC3339), d.Round(time.Second), a.cfg.MaxSkew)})
		}
	}
	action := req.Command.String()
	vmName := req.VM
	if req.Command == vmsg.CmdList || req.Command == vmsg.CmdPing || req.Command == vmsg.CmdHistory {
		vmName = ""
	} else if vmName == "" {
		return a.record(log, req, fp, &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrBadRequest, Error: action + " needs a VM name"})
	}
	d := a.policy().Decide(req.Principal, action, vmName)
	switch d.Effect {
	case policy.Allow:
	case policy.NeedChallenge:
		if req.Answer == nil {
			// Not an outcome: the same id comes back with the answer, so
			// the claim is released once the challenge exists.
			ch, err := a.chal.Issue(req.ID, req.Principal, action, vmName, now)
			a.abort(log, req.ID)
			if err != nil {
				reason := fmt.Sprintf("%s: %v", ReasonChallenge, err)
				log.Warn("request refused: no challenge issued", "err", err)
				return a.refuse(ctx, log, req, nil, via, vmsg.ErrChallengeNo, reason, err, now)
			}
			log.Info("protected VM: challenge sent, waiting for the registered user's code", "user", d.User, "expires", ch.Expiry)
			return a.answer(&vmsg.Challenge{RequestID: req.ID, Nonce: ch.Nonce[:], ExpiresMs: ch.Expiry.UnixMilli(), VM: vmName, Command: req.Command})
		}
		var nonce [challenge.NonceSize]byte
		copy(nonce[:], req.Answer.Nonce)
		if err := a.chal.Verify(req.ID, req.Principal, action, vmName, nonce, req.Answer.Code, now); err != nil {
			reason := fmt.Sprintf("%s: %v", ReasonChallenge, err)
			log.Warn("request refused: challenge answer not accepted", "err", err)
			return a.refuse(ctx, log, req, &fp, via, vmsg.ErrChallengeNo, reason, err, now)
		}
		log.Info("challenge answered by the registered user", "user", d.User)
	default:
		reason := fmt.Sprintf("%s: %s", ReasonDenied, d.Reason)
		log.Warn("request refused by the authorization list", "reason", d.Reason)
		return a.refuse(ctx, log, req, &fp, via, vmsg.ErrDenied, reason, nil, now)
	}
	if req.Command == vmsg.CmdHistory { // read-only, and not journaled itself
		a.abort(log, req.ID)
		return a.answer(a.history(req, via, now))
	}
	return a.execute(ctx, log, req, fp, via)
}

type peerKey struct{}

// WithPeer tells HandleEnvelope that the envelope came over a connection
// whose client certificate names principal (hvagent/vmmi): a request
// claiming another principal is refused.
func WithPeer(ctx context.Context, principal string) context.Context {
	return context.WithValue(ctx, peerKey{}, principal)
}

// checkSigner verifies req's signature against the principal's keys in the
// authorization list, and the connection's principal if there is one.
func (a *Agent) checkSigner(ctx context.Context, req *vmsg.Request) error {
	if peer, ok := ctx.Value(peerKey{}).(string); ok && peer != req.Principal {
		return unproven{fmt.Errorf("signature: TLS client certificate is for %q, request claims %q", peer, req.Principal)}
	}
	if _, err := ident.VerifyRequest(a.policy().Keys(req.Principal), a.hostID, req); err != nil {
		return unproven{fmt.Errorf("signature: %w", err)}
	}
	return nil
}

// abort releases a claimed id that got no outcome.
func (a *Agent) abort(log *slog.Logger, id uint64) {
	if err := a.cfg.Journal.Abort(id); err != nil {
		log.Error("journal abort failed", "err", err)
	}
}

// record journals rep as the outcome of req and answers it.
func (a *Agent) record(log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, rep *vmsg.Reply) ([][]byte, error) {
	_, body, err := vmsg.Encode(rep)
	if err != nil {
		a.abort(log, req.ID)
		return nil, err
	}
	if err := a.cfg.Journal.Put(req.ID, joinRecord(fp, body)); err != nil {
		log.Error("journal put failed", "err", err)
		a.abort(log, req.ID)
	}
	return a.answer(rep)
}

// interrupted answers a request begun before a crash: its outcome is
// unknown, so the VMS gets ErrInterrupted with the VM's state now, never a
// second run and never "failed". Nothing is recorded: every retry reads the
// state afresh.
func (a *Agent) interrupted(ctx context.Context, log *slog.Logger, req *vmsg.Request) ([][]byte, error) {
	rep := &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInterrupted,
		Error: "the request began before an agent restart and its outcome is unknown; it was not run again; the VM's state is enclosed"}
	host := a.cfg.Host
	host.TimeMs = a.cfg.Now().UnixMilli()
	rep.Host = &host
	if req.VM != "" {
		sctx, cancel := context.WithTimeout(ctx, a.cfg.ActionTimeout)
		st, err := a.cfg.Hypervisor.Status(sctx, req.VM)
		cancel()
		if err == nil {
			rep.VMs = []vmsg.VMState{vmState(st)}
		} else {
			rep.Error += fmt.Sprintf(" (state unavailable: %v)", err)
		}
	}
	log.Warn("request begun before a restart; not run again, answered interrupted with the VM's state", "vms", rep.VMs)
	return a.answer(rep)
}

func (a *Agent) replay(log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, rec []byte) ([][]byte, error) {
	gotFP, body, ok := splitRecord(rec)
	if !ok {
		log.Error("journal record unreadable; answering an internal error", "len", len(rec))
		return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInternal, Error: "journal record for this request id is unreadable"})
	}
	if gotFP != fp {
		log.Warn("request id reused for a different request; refused")
		return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrBadRequest, Error: "request id already used for a different request"})
	}
	log.Info("duplicate request id: answered from the journal, not run again")
	env, err := a.sealer.Seal(vmsg.KindReply, randID(), body, a.cfg.Now())
	if err != nil {
		return nil, err
	}
	return [][]byte{env}, nil
}

// execute runs a claimed request. The action runs to its end under its own
// deadline (ActionTimeout), detached from ctx: a requester that goes away
// (connection closed, loop cancelled, SIGTERM) does not cut it, and its real
// outcome is journalled for the retry.
func (a *Agent) execute(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, via string) ([][]byte, error) {
	type result struct {
		env [][]byte
		err error
	}
	done := make(chan result, 1)
	if req.Command.ChangesState() {
		// The point of no return: from here the action runs to its end
		// and its outcome is journalled, whatever happens to the requester.
		log.Info("action begun")
	}
	a.actions.Add(1)
	go func() {
		defer a.actions.Done()
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ActionTimeout)
		defer cancel()
		rep := a.run(actx, log, req)
		a.executions.Add(1)
		if req.Command.ChangesState() { // what history lists; list/status replies stay small on the OOB-I
			rep.Executed = executed(req, via, a.cfg.Now())
		}
		kind, body, err := vmsg.Encode(rep)
		if err != nil {
			a.abort(log, req.ID)
			done <- result{err: err}
			return
		}
		if err := a.cfg.Journal.Put(req.ID, joinRecord(fp, body)); err != nil {
			// The action ran; the VMS gets its answer, but a retry could run
			// it again. Tell the operator.
			log.Error("journal put failed after the action ran; a retry of this request id may run it again", "err", err)
			a.abort(log, req.ID)
		}
		env, err := a.sealer.Seal(kind, randID(), body, a.cfg.Now())
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{env: [][]byte{env}}
	}()
	select {
	case r := <-done:
		return r.env, r.err
	case <-ctx.Done():
		log.Warn("requester went away while the action runs; it runs to its end and its outcome is journalled for a retry of this request id")
		return nil, ctx.Err()
	}
}

// beginNote is what a claim records about a state change ("start app1"),
// so an agent restarted after a crash knows what may still be under way
// (InterruptedActions).
func beginNote(req *vmsg.Request) []byte {
	if !req.Command.ChangesState() || req.VM == "" {
		return nil
	}
	return []byte(req.Command.String() + " " + req.VM)
}

// Interrupted is a state change a previous agent process began and never
// finished (it crashed or was killed): libvirt may still be carrying it out.
type Interrupted struct {
	RequestID uint64
	At        time.Time // when it was begun
	Action    virt.Action
	VM        string
}

// InterruptedActions lists the state changes j holds as begun before a
// crash, from the notes their claims recorded.
func InterruptedActions(j *journal.Journal) []Interrupted {
	var out []Interrupted
	for _, r := range j.Interrupted() {
		name, vm, ok := strings.Cut(string(r.Data), " ")
		if !ok || vm == "" {
			continue
		}
		c, err := vmsg.ParseCommand(name)
		if err != nil {
			continue
		}
		act, err := actionOf(c)
		if err != nil {
			continue
		}
		out = append(out, Interrupted{RequestID: r.ID, At: r.At, Action: act, VM: vm})
	}
	return out
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

// run executes an authorized request on the hypervisor.
func (a *Agent) run(ctx context.Context, log *slog.Logger, req *vmsg.Request) *vmsg.Reply {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ActionTimeout)
	defer cancel()
	host := a.cfg.Host
	host.TimeMs = a.cfg.Now().UnixMilli()
	rep := &vmsg.Reply{RequestID: req.ID, Host: &host}
	h := a.cfg.Hypervisor
	start := time.Now()
	var err error
	switch req.Command {
	case vmsg.CmdPing:
	case vmsg.CmdList:
		var doms []virt.Domain
		doms, err = h.List(ctx)
		for _, d := range doms {
			rep.VMs = append(rep.VMs, vmState(d))
		}
	case vmsg.CmdStatus:
		var st virt.Status
		st, err = h.Status(ctx, req.VM)
		if err == nil {
			rep.VMs = []vmsg.VMState{vmState(st)}
		}
	default:
		var act virt.Action
		act, err = actionOf(req.Command)
		if err == nil {
			var state virt.State
			state, err = virt.Do(ctx, h, act, req.VM)
			if err == nil {
				vs := vmsg.VMState{Name: req.VM, State: string(state)}
				if st, serr := h.Status(ctx, req.VM); serr == nil {
					vs = vmState(st)
					vs.State = string(state) // the state the action left, as reported by it
				}
				rep.VMs = []vmsg.VMState{vs}
			}
		}
	}
	if err != nil {
		rep.Code, rep.Error = errorCode(err), err.Error()
		log.Warn("request failed on the hypervisor", "err", err, "took", time.Since(start))
		return rep
	}
	rep.OK = true
	log.Info("request done", "vms", len(rep.VMs), "took", time.Since(start))
	return rep
}

func vmState(st virt.Status) vmsg.VMState {
	return vmsg.VMState{Name: st.Name, State: string(st.State), VCPUs: uint32(st.VCPUs),
		MemoryKiB: st.MemoryKiB, UptimeSec: uint64(st.Uptime / time.Second),
		Reason: st.Reason, CPUTimeMs: uint64(st.CPUTime / time.Millisecond), Autostart: st.Autostart,
		Persistent: st.Persistent, MaxMemKiB: st.MaxMemKiB, UptimeSource: string(st.UptimeSource)}
}

func actionOf(c vmsg.Command) (virt.Action, error) {
	switch c {
	case vmsg.CmdStart:
		return virt.ActionStart, nil
	case vmsg.CmdShutdown:
		return virt.ActionShutdown, nil
	case vmsg.CmdDestroy:
		return virt.ActionDestroy, nil
	case vmsg.CmdReboot:
		return virt.ActionReboot, nil
	case vmsg.CmdSuspend:
		return virt.ActionSuspend, nil
	case vmsg.CmdResume:
		return virt.ActionResume, nil
	}
	return "", fmt.Errorf("%w: %v", virt.ErrUnknownAction, c)
}

func errorCode(err error) vmsg.ErrorCode {
	switch {
	case errors.Is(err, virt.ErrNoSuchVM):
		return vmsg.ErrNoSuchVM
	case errors.Is(err, virt.ErrUnknownAction):
		return vmsg.ErrBadRequest
	default:
		return vmsg.ErrHypervisor
	}
}

// refuse answers a refused request with a Reply and an Alert, and sends the
// alert to every sink. With fp the refusal is journalled as the request's
// outcome (the claim is released if that fails), so a duplicate gets it
// again without a second check or alert. A lockout (cause) is always
// alerted; other refusals within the caps of admit.
func (a *Agent) refuse(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp *[fpLen]byte, via string, code vmsg.ErrorCode, reason string, cause error, now time.Time) ([][]byte, error) {
	al := alert.Alert{Time: now, Host: a.hostID, Principal: req.Principal, VM: req.VM,
		Action: req.Command.String(), Reason: reason, RequestID: req.ID, Users: a.policy().AlertUsers()}
	rep := &vmsg.Reply{RequestID: req.ID, Code: code, Error: reason}
	if fp != nil {
		if _, body, err := vmsg.Encode(rep); err != nil {
			a.abort(log, req.ID)
		} else if err := a.cfg.Journal.Put(req.ID, joinRecord(*fp, body)); err != nil {
			log.Error("journal put failed", "err", err)
			a.abort(log, req.ID)
		}
	}
	out, err := a.answer(rep)
	if err != nil {
		return nil, err
	}
	if !a.admitRefusal(ctx, al, cause, now) {
		log.Info("refusal alert held back: too many this minute; it is counted in the summary alert at the minute's end")
		return out, nil
	}
	inAnswer := false
	if env, err := a.SealAlert(al); err != nil {
		a.log.Error("cannot seal alert", "err", err)
	} else {
		out = append(out, env)
		inAnswer = via == ViaOOB
	}
	a.sendAlert(ctx, al, !inAnswer)
	return out, nil
}

// sendAlert delivers al to the sinks, toQueue2 also to the Queue 2 sink,
// in the background under AlertTimeout: a slow outlet never holds up the
// answer. When MaxAlertsInFlight deliveries are already running the alert
// is dropped, counted (AlertsDropped) and logged.
func (a *Agent) sendAlert(ctx context.Context, al alert.Alert, toQueue2 bool) {
	select {
	case a.alertSlots <- struct{}{}:
	default:
		n := a.dropped.Add(1)
		a.log.Error("alert dropped: its outlets are not taking alerts (Queue 2 full or the hook stuck); see the log line above for what it was",
			"reason", al.Reason, "principal", al.Principal, "request_id", al.RequestID, "dropped_total", n)
		return
	}
	a.actions.Add(1)
	go func() {
		defer a.actions.Done()
		defer func() { <-a.alertSlots }()
		a.deliver(ctx, al, toQueue2)
	}()
}

// AlertsDropped is how many alerts were dropped because their outlets did
// not take them in time.
func (a *Agent) AlertsDropped() uint64 { return a.dropped.Load() }

func (a *Agent) deliver(ctx context.Context, al alert.Alert, toQueue2 bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.AlertTimeout)
	defer cancel()
	var sinks alert.Multi
	if a.cfg.Alerts != nil {
		sinks = append(sinks, a.cfg.Alerts)
	}
	if toQueue2 && a.cfg.Queue2 != nil {
		sinks = append(sinks, a.cfg.Queue2)
	}
	if err := sinks.Send(ctx, al); err != nil {
		n := a.dropped.Add(1)
		a.log.Error("alert not delivered to every outlet", "reason", al.Reason, "err", err, "dropped_total", n)
	}
}

func (a *Agent) badEnvelope(ctx context.Context, env []byte, via string, err error) {
	hdr, _, herr := seal.ParseHeader(env)
	attrs := []any{"via", via, "len", len(env), "err", err}
	if herr == nil {
		attrs = append(attrs, "host", hdr.HostID, "kind", hdr.Kind, "msg_id", hdr.MsgID, "step", hdr.Step)
	}
	var reason string
	switch {
	case errors.Is(err, seal.ErrAuth):
		reason = ReasonEnvelope + ": authentication failed (tampered, or sealed with another key)"
	case errors.Is(err, seal.ErrReplay):
		reason = ReasonReplay + ": message id already seen"
	default:
		a.log.Warn("envelope dropped: cannot open it (wrong host, stale time step or garbage); not answered", attrs...)
		return
	}
	a.log.Warn("envelope dropped and alerted: "+reason, attrs...)
	now := a.cfg.Now()
	al := alert.Alert{Time: now, Host: a.hostID, Action: "envelope", Reason: reason + " via " + via, Users: a.policy().AlertUsers()}
	if herr == nil {
		al.RequestID = hdr.MsgID
	}
	if a.admitEnvelope(ctx, al, now) {
		a.sendAlert(ctx, al, true)
	}
}

func (a *Agent) answer(m vmsg.Message) ([][]byte, error) {
	env, err := a.Seal(m)
	if err != nil {
		return nil, err
	}
	return [][]byte{env}, nil
}

// Journal record: SHA-256 of the request's identity, then the reply body.
const fpLen = sha256.Size

func fingerprint(r *vmsg.Request) [fpLen]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%s\x00%s", r.Command, r.Principal, r.VM)
	var fp [fpLen]byte
	h.Sum(fp[:0])
	return fp
}

func joinRecord(fp [fpLen]byte, body []byte) []byte {
	return append(fp[:len(fp):len(fp)], body...)
}

func splitRecord(rec []byte) (fp [fpLen]byte, body []byte, ok bool) {
	if len(rec) < fpLen {
		return fp, nil, false
	}
	copy(fp[:], rec)
	return fp, rec[fpLen:], true
}
