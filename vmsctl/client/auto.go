package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// AutoOptions tune the auto channel. Zero values take defaults.
type AutoOptions struct {
	// Budget bounds reaching the agent over VMM-I, not the action: a ping
	// sent beside the request on the same connection must be answered
	// within it; if it is not, or VMM-I cannot connect or send, or the
	// connection dies, the request goes to the OOB-I with the same request
	// id (default 300 ms).
	Budget time.Duration
	// Liveness is how often, while the agent runs an accepted request
	// whose answer has not come, VMM-I is pinged to check it still
	// reaches the agent (default 1 s).
	Liveness time.Duration
	// Backoff is how long VMM-I is skipped after a failure (default 5 s);
	// it doubles with each further failure up to MaxBackoff (default 60 s).
	Backoff, MaxBackoff time.Duration
	// NoProbe disables the background VMM-I probe (a ping) that runs while
	// VMM-I is skipped, so a recovered link is noticed before the backoff
	// ends.
	NoProbe bool
}

func (o *AutoOptions) defaults() {
	if o.Budget <= 0 {
		o.Budget = 300 * time.Millisecond
	}
	if o.Liveness <= 0 {
		o.Liveness = time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = 5 * time.Second
	}
	if o.MaxBackoff < o.Backoff {
		o.MaxBackoff = max(60*time.Second, o.Backoff)
	}
}

// Health is the auto channel's view of one host's VMM-I.
type Health struct {
	// Healthy is false from a failure until VMM-I answers again.
	Healthy bool `json:"healthy"`
	// Until is the end of the current skip period.
	Until time.Time `json:"until,omitzero"`
	// Failures counts consecutive failures.
	Failures int    `json:"failures,omitempty"`
	LastErr  string `json:"last_error,omitempty"`
	// Latency is the last VMM-I answer's latency.
	Latency time.Duration `json:"latency,omitempty"`
	// Seen is false until VMM-I was tried at all.
	Seen bool `json:"seen"`
}

// Auto tries the primary channel (VMM-I) within a short budget and falls
// back to the secondary (OOB-I) with the same request id. After a primary
// failure the host's primary is skipped for a backoff period, during which a
// background ping probes it; the first answer, probe or request, makes it
// primary again.
type Auto struct {
	Primary, Fallback Channel
	opt               AutoOptions
	log               *slog.Logger
	now               func() time.Time

	mu      sync.Mutex
	health  map[string]*Health
	probing map[string]bool
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

var _ Channel = (*Auto)(nil)

// NewAuto returns the auto channel over primary and fallback.
func NewAuto(primary, fallback Channel, opt AutoOptions, log *slog.Logger) *Auto {
	opt.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Auto{Primary: primary, Fallback: fallback, opt: opt, log: log, now: time.Now,
		health: map[string]*Health{}, probing: map[string]bool{}, ctx: ctx, cancel: cancel}
}

// Name is ViaAuto.
func (a *Auto) Name() string { return ViaAuto }

// Health returns the host's VMM-I health.
func (a *Auto) Health(host string) Health {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h, ok := a.health[host]; ok {
		return *h
	}
	return Health{Healthy: true}
}

func (a *Auto) h(host string) *Health {
	h, ok := a.health[host]
	if !ok {
		h = &Health{Healthy: true}
		a.health[host] = h
	}
	return h
}

func (a *Auto) ok(host string, lat time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.h(host)
	if !h.Healthy {
		a.log.Info("VMM-I answers again; using it first", "host", host)
	}
	*h = Health{Healthy: true, Latency: lat, Seen: true}
}

func (a *Auto) fail(host string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.h(host)
	h.Seen = true
	h.Failures++
	back := a.opt.Backoff
	for i := 1; i < h.Failures && back < a.opt.MaxBackoff; i++ {
		back *= 2
	}
	back = min(back, a.opt.MaxBackoff)
	if h.Healthy {
		a.log.Warn("VMM-I failed; using OOB-I", "host", host, "skip", back, "err", err)
	}
	h.Healthy, h.Until, h.LastErr = false, a.now().Add(back), err.Error()
}

// usePrimary says whether to try the primary now.
func (a *Auto) usePrimary(host string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.h(host)
	return h.Healthy || !a.now().Before(h.Until)
}

// Exchange implements Channel.
//
// VMM-I first, with the caller's deadline, not the budget: an action may take
// seconds and must not be sent twice because it is slow. Beside the request,
// not after it, a ping on the same connection asks whether VMM-I reaches
// the agent (requests run concurrently there, so a slow action does not
// hold it up); answered within the budget, the request is waited for, with
// a ping again every Liveness. A VMM-I that cannot connect or send, a
// connection that dies, or a ping unanswered within the budget sends the
// request to the OOB-I with the same request id: one budget after the
// start at most. If the agent got it over VMM-I, it answers from its
// journal (or when the running action ends) instead of running it again.
//
// A failure that may have left the request with the host (either channel
// delivered it, or cannot tell) wraps ErrNoAnswer, never ErrNotDelivered;
// ErrUnreachable with ErrNotDelivered only when neither delivered it.
func (a *Auto) Exchange(ctx context.Context, t *Target, req *vmsg.Request) (*Answer, error) {
	var perr error
	sent := []string{}
	if a.usePrimary(t.Name()) {
		ans, err, delivered := a.primary(ctx, t, req)
		if err == nil {
			a.ok(t.Name(), ans.Latency)
			ans.Executed = a.Primary.Name()
			return ans, nil
		}
		if ctx.Err() != nil {
			if delivered {
				return nil, err // ErrNoAnswer, or may have been delivered
			}
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		a.fail(t.Name(), err)
		perr = err
		if delivered {
			sent = append(sent, a.Primary.Name())
		}
	} else {
		a.probe(t)
	}
	ans, err := a.Fallback.Exchange(ctx, t, req)
	if err != nil {
		if perr == nil {
			perr = errors.New("skipped after recent failure")
		}
		both := label(a.Primary.Name(), perr) + "; " + label(a.Fallback.Name(), err)
		switch {
		case len(sent) > 0 && (errors.Is(perr, ErrNoAnswer) || errors.Is(err, ErrNoAnswer)),
			len(sent) == 0 && errors.Is(err, ErrNoAnswer):
			// A channel carried it: the host has it.
			return nil, fmt.Errorf("%w: %s", ErrNoAnswer, both)
		case len(sent) > 0, !errors.Is(err, ErrNotDelivered):
			return nil, errors.New(both) // may have been delivered
		case errors.Is(err, ErrUnauthorized):
			return nil, fmt.Errorf("%w: %w: %s", ErrNotDelivered, ErrUnauthorized, both)
		}
		return nil, fmt.Errorf("%w: %w: %s", ErrUnreachable, ErrNotDelivered, both)
	}
	if len(sent) == 0 { // VMM-I never had it: the OOB-I carried it
		ans.Executed = a.Fallback.Name()
	}
	ans.Sent = append(sent, a.Fallback.Name())
	return ans, nil
}

// primary runs req over the primary as described at Exchange. delivered is
// false when the request surely never reached the agent over it (no
// connection, or nothing sent).
func (a *Auto) primary(ctx context.Context, t *Target, req *vmsg.Request) (ans *Answer, err error, delivered bool) {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		ans *Answer
		err error
	}
	done := make(chan result, 1)
	go func() {
		ans, err := a.Primary.Exchange(pctx, t, req)
		done <- result{ans, err}
	}()
	// settle gives up on the request and learns whether it was sent: a
	// dial or TLS handshake still hanging on a cut link returns
	// ErrNotDelivered once cancelled, and then the OOB-I alone carries the
	// request (the answer must not claim "sent over both").
	// why is the reason it was given up, nil for the caller's deadline
	// (which the request's own error says).
	giveUp := fmt.Sprintf("ping unanswered within %v", a.opt.Budget)
	settle := func(why error) (*Answer, error, bool) {
		cancel()
		tm := time.NewTimer(a.opt.Budget)
		defer tm.Stop()
		select {
		case r := <-done:
			if r.err == nil { // it answered meanwhile after all
				return r.ans, nil, true
			}
			switch {
			case why == nil:
				return nil, r.err, !errors.Is(r.err, ErrNotDelivered)
			case errors.Is(r.err, ErrNotDelivered):
				return nil, fmt.Errorf("%w (given up: %s)", r.err, giveUp), false
			}
			return nil, fmt.Errorf("%w (given up: %v)", r.err, why), true
		case <-tm.C: // still stuck: it may have been sent
		}
		if why == nil {
			why = ctx.Err()
		}
		return nil, why, true
	}
	pings := make(chan error, 1)
	pinging := false
	ping := func() {
		pinging = true
		go func() { pings <- a.ping(pctx, t) }()
	}
	defer func() { // no ping outlives the exchange
		cancel()
		if pinging {
			<-pings
		}
	}()
	ping() // beside the request, not after it
	again := time.NewTimer(a.opt.Liveness)
	again.Stop()
	defer again.Stop()
	for {
		select {
		case r := <-done:
			return r.ans, r.err, r.err == nil || !errors.Is(r.err, ErrNotDelivered)
		case <-ctx.Done():
			return settle(nil)
		case err := <-pings:
			pinging = false
			if err != nil {
				return settle(fmt.Errorf("%s: %s", giveUp, bare(err)))
			}
			again.Reset(a.opt.Liveness) // reachable: wait, asking again later
		case <-again.C:
			ping()
		}
	}
}

// label is a channel's error for a line about both: named by the channel
// once, without the delivery words the line's head says.
func label(name string, err error) string {
	msg := bare(err)
	if strings.HasPrefix(msg, name) {
		return msg
	}
	return name + ": " + msg
}

// bare is err's text without a leading delivery sentinel's.
func bare(err error) string {
	msg := err.Error()
	for _, w := range []error{ErrNotDelivered, ErrNoAnswer} {
		msg = strings.TrimPrefix(msg, w.Error()+": ")
	}
	return msg
}

// ping asks the agent over the primary, within the budget.
func (a *Auto) ping(ctx context.Context, t *Target) error {
	ctx, cancel := context.WithTimeout(ctx, a.opt.Budget)
	defer cancel()
	p := &vmsg.Request{ID: NewID(), Command: vmsg.CmdPing, IssuedMs: a.now().UnixMilli()}
	if t.Inv != nil {
		p.Principal = t.Inv.Principal
	}
	_, err := a.Primary.Exchange(ctx, t, p)
	return err
}

// probe pings the primary in the background, once at a time per host.
func (a *Auto) probe(t *Target) {
	if a.opt.NoProbe {
		return
	}
	a.mu.Lock()
	if a.probing[t.Name()] || a.ctx.Err() != nil {
		a.mu.Unlock()
		return
	}
	a.probing[t.Name()] = true
	a.wg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.probing, t.Name())
			a.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(a.ctx, a.opt.Budget)
		defer cancel()
		ping := &vmsg.Request{ID: NewID(), Command: vmsg.CmdPing, Principal: "", IssuedMs: a.now().UnixMilli()}
		if t.Inv != nil {
			ping.Principal = t.Inv.Principal
		}
		ans, err := a.Primary.Exchange(ctx, t, ping)
		if err != nil {
			if a.ctx.Err() == nil {
				a.log.Debug("VMM-I probe failed", "host", t.Name(), "err", err)
			}
			return
		}
		a.ok(t.Name(), ans.Latency)
	}()
}

// Alerts implements Channel: alerts from both channels.
func (a *Auto) Alerts(ctx context.Context, t *Target) ([]*vmsg.Alert, error) {
	x, err1 := a.Primary.Alerts(ctx, t)
	y, err2 := a.Fallback.Alerts(ctx, t)
	return append(x, y...), errors.Join(err1, err2)
}

// Close stops probes; the channels themselves are closed by their owner.
func (a *Auto) Close() error {
	a.mu.Lock()
	a.cancel()
	a.mu.Unlock()
	a.wg.Wait()
	return nil
}
