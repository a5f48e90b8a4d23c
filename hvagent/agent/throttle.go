package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/challenge"
)

// unproven is checkSigner's error: the request's principal is not proven
// (no, a bad or someone else's signature). Its refusal alert counts against
// the junk budget: whoever holds the host key can make any number of them.
type unproven struct{ error }

func (e unproven) Unwrap() error { return e.error }

// Alert kinds, as summaries name them.
const (
	kindDenied    = ReasonDenied + ": requests refused by the authorization list"
	kindChallenge = ReasonChallenge + ": challenge answers refused"
	kindUnproven  = ReasonDenied + ": requests whose signature did not verify (forged or unknown principal)"
	kindEnvelope  = ReasonEnvelope + ": envelopes that did not open or were replayed"
)

// admitRefusal passes al, the alert of a refused request, through the
// throttle: a refusal of a proven principal against the principals budget
// (per class and principal), one whose signature did not verify against the
// junk budget. A lockout always passes.
func (a *Agent) admitRefusal(ctx context.Context, al alert.Alert, cause error, now time.Time) bool {
	e := alert.Event{Budget: alert.Principals, Key: fmt.Sprintf("%d/%s", Class(al), al.Principal), Kind: kindDenied,
		Always: errors.Is(cause, challenge.ErrLockout)}
	var u unproven
	switch {
	case errors.As(cause, &u):
		e.Budget, e.Kind = alert.Junk, kindUnproven
	case Class(al) == ClassChallenge:
		e.Kind = kindChallenge
	}
	return a.admit(ctx, e, al, now)
}

// admitEnvelope passes al, the alert of an envelope that did not open,
// through the junk budget.
func (a *Agent) admitEnvelope(ctx context.Context, al alert.Alert, now time.Time) bool {
	return a.admit(ctx, alert.Event{Budget: alert.Junk, Kind: kindEnvelope}, al, now)
}

func (a *Agent) admit(ctx context.Context, e alert.Event, al alert.Alert, now time.Time) bool {
	a.flushAlerts(ctx, now)
	ok := a.throttle.Admit(e, al, now)
	if !ok {
		a.armFlush(ctx)
	}
	return ok
}

// flushAlerts sends the throttle's summaries of the minutes that ended by
// now, to every outlet and Queue 2.
func (a *Agent) flushAlerts(ctx context.Context, now time.Time) {
	for _, s := range a.throttle.Flush(now) {
		a.log.Warn("alerts were held back by the throttle; sending their count", "reason", s.Reason)
		a.sendAlert(ctx, s, true)
	}
}

// armFlush makes sure the summaries of the current minute go out when it
// ends, also if no other alert comes.
func (a *Agent) armFlush(ctx context.Context) {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	if a.flushing != nil {
		return
	}
	end, _ := a.throttle.Next()
	d := max(end.Sub(a.cfg.Now()), 0) + 10*time.Millisecond
	ctx = context.WithoutCancel(ctx)
	a.flushing = time.AfterFunc(d, func() {
		a.flushMu.Lock()
		a.flushing = nil
		a.flushMu.Unlock()
		a.flushAlerts(ctx, a.cfg.Now())
		if _, pending := a.throttle.Next(); pending {
			a.armFlush(ctx)
		}
	})
}

// FlushAlerts sends the summaries of the throttle's minutes that ended by
// now (the agent does it by itself when a minute with alerts held back
// ends; tests with a fake clock call it).
func (a *Agent) FlushAlerts(ctx context.Context) { a.flushAlerts(ctx, a.cfg.Now()) }

// AlertsHeld is how many alerts of budget b the throttle held back (each
// counted in a summary alert).
func (a *Agent) AlertsHeld(b alert.Budget) uint64 { return a.throttle.Held(b) }

// stopFlush stops the summaries' timer (Wait, on shutdown).
func (a *Agent) stopFlush() {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	if a.flushing != nil {
		a.flushing.Stop()
		a.flushing = nil
	}
}

func newThrottle(cfg Config) *alert.Throttle {
	return alert.NewThrottle(alert.ThrottleConfig{PerKey: cfg.RefusalAlertsPerMinute,
		Principals: cfg.RefusalAlertsTotal, Junk: cfg.EnvelopeAlertsPerMinute})
}
