package oob

import (
	"context"

	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// AlertWriters bounds the Alerts of answers being written to Queue 2 at
// once, in the background.
const AlertWriters = 8

func isAlert(env []byte) bool {
	h, _, err := seal.ParseHeader(env)
	return err == nil && h.Kind == vmsg.KindAlert
}

// sendAlert writes env, the Alert of an answer, to the alert log in the
// background under AnswerTimeout, so the answer and its window slot never
// wait for the alert log. With AlertWriters already busy it is dropped,
// counted and logged (the SEL, the hook and the agent's log have it).
func (l *Loop) sendAlert(ctx context.Context, env []byte) {
	select {
	case l.alertWriters <- struct{}{}:
	default:
		n := l.alertsDropped.Add(1)
		l.log.Error("alert of an answer dropped: Queue 2's alert log is not taking alerts; the SEL, the hook and the agent's log still have it",
			"dropped_total", n)
		return
	}
	l.running.Add(1)
	go func() {
		defer l.running.Done()
		defer func() { <-l.alertWriters }()
		sctx, cancel := context.WithTimeout(ctx, l.cfg.AnswerTimeout)
		defer cancel()
		if err := l.sendTo(sctx, 0, env); err != nil {
			n := l.alertsDropped.Add(1)
			l.log.Error("alert of an answer dropped: could not write it to Queue 2's alert log in time; the SEL, the hook and the agent's log still have it",
				"err", err, "timeout", l.cfg.AnswerTimeout, "dropped_total", n)
		}
	}()
}
