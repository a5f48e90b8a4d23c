// Package alert fans an alert out to every configured sink: the agent's
// log, a hook command, and (written elsewhere against [Sink]) an alert
// message on Queue 2 and a SEL entry on the BMC.
//
// An alert is raised when a request fails the authorization list or the
// challenge, or when a VM changes state without hvagent (package watch);
// it is addressed to the registered user(s) who get alerts.
package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Alert is one event worth a human's attention.
type Alert struct {
	Time      time.Time `json:"time"`
	Host      string    `json:"host"`
	Principal string    `json:"principal"`
	VM        string    `json:"vm,omitempty"`
	Action    string    `json:"action"`
	Reason    string    `json:"reason"`
	RequestID uint64    `json:"request_id,omitempty"`
	// Users are the registered users to notify.
	Users []string `json:"users,omitempty"`
}

func (a Alert) String() string {
	// The reason names the class ("denied: …", "unauthorized local change: …").
	return fmt.Sprintf("%s: %s by %q on VM %q: %s", a.Host, a.Action, a.Principal, a.VM, a.Reason)
}

// Sink delivers alerts somewhere. Send must honour ctx and be safe for
// concurrent use.
type Sink interface {
	Send(ctx context.Context, a Alert) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, a Alert) error

// Send calls f.
func (f SinkFunc) Send(ctx context.Context, a Alert) error { return f(ctx, a) }

// Log writes alerts to a logger at level Warn.
type Log struct {
	Logger *slog.Logger
}

var _ Sink = Log{}

// Send logs a.
func (l Log) Send(ctx context.Context, a Alert) error {
	l.Logger.LogAttrs(ctx, slog.LevelWarn, "alerting registered users (request refused, or a VM changed behind the agent's back)",
		slog.Time("alert_time", a.Time),
		slog.String("host", a.Host),
		slog.String("principal", a.Principal),
		slog.String("vm", a.VM),
		slog.String("action", a.Action),
		slog.String("reason", a.Reason),
		slog.Uint64("request_id", a.RequestID),
		slog.Any("users", a.Users),
	)
	return nil
}

// Multi sends to every sink concurrently and joins their errors. One
// failing sink does not stop the others.
type Multi []Sink

var _ Sink = Multi(nil)

// Send sends a to every sink and waits for all.
func (m Multi) Send(ctx context.Context, a Alert) error {
	errs := make([]error, len(m))
	var wg sync.WaitGroup
	for i, s := range m {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(ctx, a); err != nil {
				errs[i] = fmt.Errorf("alert sink %d (%T): %w", i, s, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
