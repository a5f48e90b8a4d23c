package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/challenge"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/vmsg"
)

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

	// One request id, one execution and one outcome: a state change claims
	// its id before any check. A duplicate of a request still being checked
	// or run waits here (bounded) for its outcome; one that ran before gets
	// the recorded reply, never a second run nor a second challenge, policy
	// or replay check. Reads (ping, list, status, history) claim no journal
	// id, so a VMS polling them never takes the journal's room or disk:
	// they are remembered in memory for a while (reads.go); a read whose id
	// the journal holds is answered from it.
	if req.Command.ChangesState() {
		if out, done, err := a.claim(ctx, log, req, fp, via, now); done {
			return out, err
		}
	} else if rec, ok := a.cfg.Journal.Get(req.ID); ok {
		return a.replay(log, req, fp, rec)
	} else {
		if out, done, err := a.claimRead(ctx, log, req, fp); done {
			return out, err
		}
		defer a.reads.release(req.ID) // unless answered (reads.go)
	}

	// Claimed (a state change): every way out below either records an
	// outcome (Put) or releases the id (Abort) for a later attempt.
	if req.IssuedMs != 0 {
		if d := now.Sub(req.Issued()); d > a.cfg.MaxSkew || d < -a.cfg.MaxSkew {
			log.Warn("request refused: issue time outside the allowed skew; check both clocks", "issued", req.Issued(), "skew", d)
			a.abort(log, req)
			return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrStale,
				Error: fmt.Sprintf("issue time %s is %s away from the host's clock (max %s)", req.Issued().UTC().Format(time.RFC3339), d.Round(time.Second), a.cfg.MaxSkew)})
		}
	}
	action := req.Command.String()
	vmName := req.VM
	if req.Command == vmsg.CmdList || req.Command == vmsg.CmdPing || req.Command == vmsg.CmdHistory {
		vmName = ""
	} else if vmName == "" {
		return a.record(ctx, log, req, fp, &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrBadRequest, Error: action + " needs a VM name"})
	}
	if out, done, err := a.authorize(ctx, log, req, fp, via, action, vmName, now); done {
		return out, err
	}
	if req.Command == vmsg.CmdHistory { // read-only, and not journaled itself
		return a.answer(a.history(req, via, now))
	}
	return a.execute(ctx, log, req, fp, via)
}

// authorize applies the authorization list (and a protected VM's
// challenge) to req. done says the request is answered: refused, or a
// challenge sent; otherwise it may run.
func (a *Agent) authorize(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, via, action, vmName string, now time.Time) (out [][]byte, done bool, err error) {
	d := a.policy().Decide(req.Principal, action, vmName)
	switch d.Effect {
	case policy.Allow:
	case policy.NeedChallenge:
		if req.Answer == nil {
			// Not an outcome: the same id comes back with the answer, so
			// the claim is released once the challenge exists.
			ch, err := a.chal.Issue(req.ID, req.Principal, action, vmName, now)
			a.abort(log, req)
			if err != nil {
				reason := fmt.Sprintf("%s: %v", ReasonChallenge, err)
				log.Warn("request refused: no challenge issued", "err", err)
				out, err := a.refuse(ctx, log, req, nil, via, vmsg.ErrChallengeNo, reason, err, now)
				return out, true, err
			}
			log.Info("protected VM: challenge sent, waiting for the registered user's code", "user", d.User, "expires", ch.Expiry)
			out, err := a.answer(&vmsg.Challenge{RequestID: req.ID, Nonce: ch.Nonce[:], ExpiresMs: ch.Expiry.UnixMilli(), VM: vmName, Command: req.Command})
			return out, true, err
		}
		var nonce [challenge.NonceSize]byte
		copy(nonce[:], req.Answer.Nonce)
		if err := a.chal.Verify(req.ID, req.Principal, action, vmName, nonce, req.Answer.Code, now); err != nil {
			reason := fmt.Sprintf("%s: %v", ReasonChallenge, err)
			log.Warn("request refused: challenge answer not accepted", "err", err)
			out, err := a.refuse(ctx, log, req, &fp, via, vmsg.ErrChallengeNo, reason, err, now)
			return out, true, err
		}
		log.Info("challenge answered by the registered user", "user", d.User)
	default:
		reason := fmt.Sprintf("%s: %s", ReasonDenied, d.Reason)
		log.Warn("request refused by the authorization list", "reason", d.Reason)
		out, err := a.refuse(ctx, log, req, &fp, via, vmsg.ErrDenied, reason, nil, now)
		return out, true, err
	}
	return nil, false, nil
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

// claim claims req's id in the journal. done says the request is
// answered (out, err): done before, still running, interrupted, or the
// journal cannot take it.
func (a *Agent) claim(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, via string, now time.Time) (out [][]byte, done bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, a.cfg.DuplicateWait)
	rec, claimed, err := a.cfg.Journal.BeginNote(wctx, req.ID, beginNote(req, via))
	cancel()
	switch {
	case errors.Is(err, journal.ErrInterrupted):
		out, err = a.interrupted(ctx, log, req)
	case errors.Is(err, journal.ErrInProgress):
		if ctx.Err() != nil {
			return nil, true, ctx.Err() // the requester went away; nobody to answer
		}
		log.Info("duplicate of a request still running; answered in progress", "waited", a.cfg.DuplicateWait)
		out, err = a.inProgress(req)
	case err != nil:
		out, err = a.journalFailed(ctx, log, req, err, now)
	case !claimed:
		out, err = a.replay(log, req, fp, rec)
	default:
		return nil, false, nil
	}
	return out, true, err
}

// claimRead claims a read's id in memory (reads.go). done says the
// request is answered: as before, still running, or the id is reused.
func (a *Agent) claimRead(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte) (out [][]byte, done bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, a.cfg.DuplicateWait)
	body, claimed, err := a.reads.begin(wctx, req.ID, fp)
	cancel()
	switch {
	case errors.Is(err, errReadReused):
		log.Warn("request id reused for a different request; refused")
		out, err = a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrBadRequest, Error: errReadReused.Error()})
	case err != nil:
		if ctx.Err() != nil {
			return nil, true, ctx.Err()
		}
		out, err = a.inProgress(req)
	case !claimed:
		log.Info("duplicate read: answered as before, libvirt not asked again")
		out, err = a.reseal(body)
	default:
		return nil, false, nil
	}
	return out, true, err
}

func (a *Agent) inProgress(req *vmsg.Request) ([][]byte, error) {
	return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInProgress,
		Error: "this request id is still running on the host; ask again with the same id for its outcome"})
}

// journalFailed answers a state change the journal cannot take (it cannot
// write: disk full, I/O error; or it is full): the agent does not run
// what it could not record, and says so loudly (log, alert, answer).
func (a *Agent) journalFailed(ctx context.Context, log *slog.Logger, req *vmsg.Request, err error, now time.Time) ([][]byte, error) {
	log.Error("journal cannot take this request; state changes are refused until it can (free the disk or fix the I/O error; reads are still answered)", "err", err)
	a.journalAlert(ctx, req, "state changes refused: "+err.Error(), now)
	return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInternal,
		Error: "not run: the host's request journal cannot record it (" + err.Error() + "); state changes are refused until it can"})
}

// putFailed reports an outcome the journal could not record: the id stays
// begun, so a retry is answered "interrupted" (outcome unknown) with the
// VM's state, never run again.
func (a *Agent) putFailed(ctx context.Context, log *slog.Logger, req *vmsg.Request, err error) {
	log.Error("journal could not record this outcome; a retry of this request id is answered interrupted (not run again); state changes are refused until the journal can write", "err", err)
	a.journalAlert(ctx, req, "outcome not recorded: "+err.Error(), a.cfg.Now())
}

// journalAlert alerts a journal failure, at most RefusalAlertsPerMinute a
// minute (the repeats are counted in the minute's summary).
func (a *Agent) journalAlert(ctx context.Context, req *vmsg.Request, what string, now time.Time) {
	al := alert.Alert{Time: now, Host: a.hostID, Principal: req.Principal, VM: req.VM, Action: req.Command.String(),
		Reason: ReasonJournal + ": " + what, RequestID: req.ID, Users: a.policy().AlertUsers()}
	e := alert.Event{Budget: alert.Principals, Key: "journal", Kind: ReasonJournal + ": outcomes not recorded or state changes refused"}
	if a.admit(ctx, e, al, now) {
		a.sendAlert(ctx, al, true)
	}
}

// abort releases a claimed id that got no outcome (reads claim none).
func (a *Agent) abort(log *slog.Logger, req *vmsg.Request) {
	if !req.Command.ChangesState() {
		return
	}
	if err := a.cfg.Journal.Abort(req.ID); err != nil {
		log.Error("journal abort failed", "err", err)
	}
}

// record journals rep as the outcome of req (a state change) and answers
// it.
func (a *Agent) record(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, rep *vmsg.Reply) ([][]byte, error) {
	if req.Command.ChangesState() {
		a.put(ctx, log, req, fp, rep)
	}
	return a.answer(rep)
}

// put journals rep as the outcome of the claimed req.
func (a *Agent) put(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, rep *vmsg.Reply) {
	_, body, err := vmsg.Encode(rep)
	if err != nil { // cannot happen for a Reply we built; record that much
		log.Error("reply does not encode; journalling an internal error as the outcome", "err", err)
		_, body, _ = vmsg.Encode(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInternal, Error: "reply did not encode: " + err.Error()})
	}
	if err := a.cfg.Journal.Put(req.ID, joinRecord(fp, body)); err != nil {
		a.putFailed(ctx, log, req, err)
	}
}

// interrupted answers a request whose outcome the journal does not know:
// begun before a crash, or its outcome could not be written. The VMS gets
// ErrInterrupted with the VM's state now, never a second run and never
// "failed"; when the journal holds the original request (its note), that
// answer is journalled as how it resolved, so history shows it.
func (a *Agent) interrupted(ctx context.Context, log *slog.Logger, req *vmsg.Request) ([][]byte, error) {
	rep := &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInterrupted,
		Error: "the request began before an agent restart (or its outcome could not be recorded) and its outcome is unknown; it was not run again; the VM's state is enclosed"}
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
	if n, ok := a.noteOf(req.ID); ok && len(rep.VMs) == 1 && n.matches(req) {
		rep.Executed = executed(req, n.via, n.at)
		if _, body, err := vmsg.Encode(rep); err == nil {
			if err := a.cfg.Journal.Put(req.ID, joinRecord(fingerprint(req), body)); err != nil {
				log.Error("journal could not record how an interrupted request resolved", "err", err)
			}
		}
	}
	log.Warn("request's outcome unknown (begun before a restart); not run again, answered interrupted with the VM's state", "vms", rep.VMs)
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
	return a.reseal(body)
}

// reseal seals a recorded reply body anew (fresh message id and time).
func (a *Agent) reseal(body []byte) ([][]byte, error) {
	env, err := a.sealer.Seal(vmsg.KindReply, randID(), body, a.cfg.Now())
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
