// Package clienttest is a fake client.Channel for tests of code that drives
// hvagent through vmsctl/client: it plays the agent with a function and
// records every request it was given, without keys, sockets or a BMC.
package clienttest

import (
	"context"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

var _ client.Channel = (*Fake)(nil)

// Call is one request the fake received.
type Call struct {
	Host string
	Req  vmsg.Request
}

// Fake is a Channel whose answers come from Handle.
type Fake struct {
	// ChannelName is reported by Name and in answers (default "vmm-i").
	ChannelName string
	// Latency is reported in answers.
	Latency time.Duration
	// Handle answers a request: a *vmsg.Reply or *vmsg.Challenge, or an
	// error (a transport failure). It may block until ctx ends to play a
	// host that does not answer. Nil answers every request with OK.
	Handle func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error)

	mu     sync.Mutex
	calls  []Call
	alerts map[string][]*vmsg.Alert
	closes int
}

// Name implements client.Channel.
func (f *Fake) Name() string {
	if f.ChannelName == "" {
		return client.ViaVMMI
	}
	return f.ChannelName
}

// Exchange implements client.Channel.
func (f *Fake) Exchange(ctx context.Context, t *client.Target, req *vmsg.Request) (*client.Answer, error) {
	f.mu.Lock()
	f.calls = append(f.calls, Call{Host: t.Name(), Req: *req})
	f.mu.Unlock()
	var m vmsg.Message = &vmsg.Reply{RequestID: req.ID, OK: true}
	if f.Handle != nil {
		var err error
		m, err = f.Handle(ctx, t.Name(), req)
		if err != nil {
			return nil, err
		}
	}
	return &client.Answer{Msg: m, Via: f.Name(), Latency: f.Latency}, nil
}

// Alerts implements client.Channel.
func (f *Fake) Alerts(ctx context.Context, t *client.Target) ([]*vmsg.Alert, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.alerts[t.Name()]
	delete(f.alerts, t.Name())
	return a, nil
}

// PushAlert queues an alert for host.
func (f *Fake) PushAlert(host string, a *vmsg.Alert) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.alerts == nil {
		f.alerts = map[string][]*vmsg.Alert{}
	}
	f.alerts[host] = append(f.alerts[host], a)
}

// Close implements client.Channel. It only counts: a Fake stays usable, so
// one Fake can serve several clients in a test.
func (f *Fake) Close() error {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	return nil
}

// Closes is how many times Close was called.
func (f *Fake) Closes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closes
}

// Calls returns a copy of the requests received so far.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Timeout is a Handle that never answers: it waits for ctx to end.
func Timeout(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
