package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Clock faults are loud. The envelope's window (seal: T-1..T+1 of 30 s
// steps) is the clock tolerance: clocks less than one step apart always
// agree, 30-59 s apart sometimes, a minute or more never. An envelope the
// opener refuses as stale is opened again over ±ClockReportRange
// (seal.Opener.OpenSkewed): if it is an authentic request with a valid
// signature, it is not served but answered ErrClockSkew — sealed in the
// sender's own time step, so a VMS whose clock is off can read it — with
// the host's clock in Host.TimeMs and the offset in words, and alerted
// ("clock skew: …", class ClassClock) within the refusal caps.
//
// What this costs the replay defences: nothing is run and nothing enters
// the replay window or the journal, so a replay of such an envelope gets
// the same answer again (and an alert, capped); the answer tells whoever
// sent it the host's clock, nothing more. An old envelope captured and
// replayed within ClockReportRange reads as a clock fault, which the alert
// says; one older than that is dropped unanswered as before. Junk costs
// what it did: one key derivation and one AES-GCM open.

// ReasonClock starts the reason of a clock fault alert.
const ReasonClock = "clock skew"

// ClassClock is the alert class of ReasonClock (oem.AlertClock).
const ClassClock byte = 0x08

// ClockReportRange is how far off a clock may be and still get a
// clock-skew answer instead of silence.
const ClockReportRange = time.Hour

// clockFault answers an envelope the opener refused with openErr when it
// is a stale but authentic, signed request (see above); nil otherwise (the
// caller then drops it as before).
func (a *Agent) clockFault(ctx context.Context, env []byte, via string, openErr error) [][]byte {
	if !errors.Is(openErr, seal.ErrStale) {
		return nil
	}
	now := a.cfg.Now()
	key := a.cfg.Key
	hdr, body, err := a.opener.OpenSkewed(env, now, uint64(ClockReportRange/key.Period()))
	if err != nil || hdr.Kind != vmsg.KindRequest {
		return nil
	}
	req, err := vmsg.DecodeRequest(body)
	if err != nil {
		return nil
	}
	log := a.log.With("via", via, "request_id", req.ID, "principal", req.Principal, "command", req.Command.String(), "vm", req.VM)
	if err := a.checkSigner(ctx, req); err != nil {
		log.Warn("stale envelope with a request whose principal is not proven; not answered", "err", err)
		return nil
	}
	tol := key.Period()
	var text, reason string
	cur, step := key.Step(now), hdr.Step
	if step+1 >= cur && step <= cur+1 {
		// In the window, refused because this host's clock went back past
		// message ids the opener may have forgotten.
		text = "not run: this host's clock went back while hvagent ran; its envelopes are refused until the clock gets back to where it was (restart hvagent to accept them at once)"
		reason = fmt.Sprintf("%s: this host's clock went back; %s's requests are refused until it catches up", ReasonClock, req.Principal)
	} else {
		// The host's clock minus the VMS's, transit included; without an
		// issue time, from the time steps.
		off := now.Sub(req.Issued())
		if req.IssuedMs == 0 {
			off = time.Duration(int64(cur)-int64(step)) * tol
		}
		dir, vmsDir := "ahead of", "behind"
		if off < 0 {
			dir, vmsDir = "behind", "ahead of"
		}
		secs := int64((off.Abs() + time.Second/2) / time.Second)
		text = fmt.Sprintf("not run: this host's clock is %d s %s the request's issue time; requests are served only when the VMS's and the host's clocks agree within %d s", secs, dir, int(tol/time.Second))
		reason = fmt.Sprintf("%s: %s's request came from a clock %d s %s this host's (a clock fault on the VMS or this host, or an old request replayed); not run", ReasonClock, req.Principal, secs, vmsDir)
	}
	host := a.cfg.Host
	host.TimeMs = now.UnixMilli()
	kind, b, err := vmsg.Encode(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrClockSkew, Error: text, Host: &host})
	if err != nil {
		return nil
	}
	// A copy of a request that already ran (its answer lost, then a clock
	// stepped) is not "not run": it gets its recorded outcome, as any
	// duplicate does, in the sender's step.
	head := "request not run: "
	if rec, ok := a.cfg.Journal.Get(req.ID); ok {
		if fp, body, ok := splitRecord(rec); ok && fp == fingerprint(req) {
			kind, b = vmsg.KindReply, body
			head = "request answered from the journal (it ran before), not run again: "
			reason = strings.TrimSuffix(reason, "; not run") + "; this request id ran before: answered from the journal"
		}
	} else if running, ok := a.begun(req); ok {
		// Begun by an earlier copy: never "not run".
		rep := &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInProgress, Host: &host,
			Error: "still running on the host; ask again with the same request id for its outcome"}
		head = "request still running (begun by an earlier copy), not run again: "
		reason = strings.TrimSuffix(reason, "; not run") + "; this request id is still running"
		if !running {
			rep.Code = vmsg.ErrInterrupted
			rep.Error = "the request began before an agent restart (or its outcome could not be recorded) and its outcome is unknown; it was not run again"
			head = "request interrupted (begun before a restart), not run again: "
			reason = strings.TrimSuffix(reason, "; this request id is still running") + "; this request id was interrupted by an agent restart"
		}
		if k, body, err := vmsg.Encode(rep); err == nil {
			kind, b = k, body
		}
	}
	out, err := a.sealer.SealStep(kind, randID(), b, step)
	if err != nil {
		return nil
	}
	if !req.Command.ChangesState() {
		// A read (ping, list, status, history) changes nothing, and a
		// stale one is as often late as skewed: QEMU's user network takes
		// a VMM-I connection while the guest is off and hands its bytes
		// over when it is back, a paused agent reads what waited in its
		// socket. The VMS has the loud answer; no alert to a person.
		log.Warn(head+reason+"; check NTP on both (a read: logged, not alerted)", "issued", req.Issued(), "step", step, "host_step", cur)
		return [][]byte{out}
	}
	log.Error(head+reason+"; check NTP on both", "issued", req.Issued(), "step", step, "host_step", cur)
	al := alert.Alert{Time: now, Host: a.hostID, Principal: req.Principal, VM: req.VM, Action: req.Command.String(),
		Reason: reason, RequestID: req.ID, Users: a.policy().AlertUsers()}
	e := alert.Event{Budget: alert.Principals, Key: fmt.Sprintf("%d/%s", ClassClock, req.Principal), Kind: ReasonClock + ": requests from a clock too far off"}
	if a.admit(ctx, e, al, now) {
		a.sendAlert(ctx, al, false) // the VMS has the answer; Queue 2 would seal it in the host's step
	}
	return [][]byte{out}
}

// begun says whether a copy of req was begun (its claim journalled, with
// a note naming req) and has no result: running, or interrupted by a
// restart. Only clock faults ask: the normal path's claim handles both.
func (a *Agent) begun(req *vmsg.Request) (running, ok bool) {
	b, at, running, ok := a.cfg.Journal.Begun(req.ID)
	if !ok {
		return false, false
	}
	n, ok := parseNote(b, at)
	return running, ok && n.matches(req)
}
