package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
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
	// The request journal cannot write: state changes are refused.
	ReasonJournal = "journal unwritable"
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
	ClassJournal   byte = 0x09
)

// Class maps an alert's reason to its class number.
func Class(a alert.Alert) byte {
	for _, c := range []struct {
		p string
		c byte
	}{{ReasonDenied, ClassDenied}, {ReasonChallenge, ClassChallenge}, {ReasonEnvelope, ClassEnvelope}, {ReasonReplay, ClassReplay},
		{ReasonLocal, ClassLocal}, {ReasonGuest, ClassGuest}, {ReasonCrash, ClassCrash}, {ReasonClock, ClassClock}, {ReasonJournal, ClassJournal}} {
		if len(a.Reason) >= len(c.p) && a.Reason[:len(c.p)] == c.p {
			return c.c
		}
	}
	return ClassOther
}

// SealAlert seals al as an Alert message (for a Queue 2 sink).
func (a *Agent) SealAlert(al alert.Alert) ([]byte, error) {
	return a.Seal(toVMsgAlert(al))
}

func toVMsgAlert(al alert.Alert) *vmsg.Alert {
	return &vmsg.Alert{TimeMs: al.Time.UnixMilli(), Host: al.Host, Principal: al.Principal,
		VM: al.VM, Action: al.Action, Reason: al.Reason}
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
	if fp != nil && req.Command.ChangesState() {
		a.put(ctx, log, req, *fp, rep)
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
