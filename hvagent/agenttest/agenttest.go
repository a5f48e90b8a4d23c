// Package agenttest has fakes and a VMS-side helper for tests of hvagent's
// channels: a recording alert sink, and a VMS that seals requests and opens
// answers with a host key.
package agenttest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Sink records alerts. Err, when set, is returned by Send.
type Sink struct {
	mu     sync.Mutex
	alerts []alert.Alert
	Err    error
	ch     chan struct{}
}

var _ alert.Sink = (*Sink)(nil)

// Send records a.
func (s *Sink) Send(ctx context.Context, a alert.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alerts = append(s.alerts, a)
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	return s.Err
}

// Alerts returns a copy of what was sent.
func (s *Sink) Alerts() []alert.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]alert.Alert(nil), s.alerts...)
}

// Wait waits until at least n alerts were sent or ctx ends.
func (s *Sink) Wait(ctx context.Context, n int) ([]alert.Alert, error) {
	for {
		s.mu.Lock()
		if len(s.alerts) >= n {
			a := append([]alert.Alert(nil), s.alerts...)
			s.mu.Unlock()
			return a, nil
		}
		if s.ch == nil {
			s.ch = make(chan struct{})
		}
		ch := s.ch
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("agenttest: %d alerts, want %d: %w", len(s.Alerts()), n, ctx.Err())
		}
	}
}

// VMS is the management server's side of the sealed protocol for one host.
type VMS struct {
	Key    *seal.Key
	Sealer *seal.Sealer
	Opener *seal.Opener
	Now    func() time.Time
}

// NewVMS returns a VMS for key using clock now (nil: time.Now).
func NewVMS(key *seal.Key, now func() time.Time) *VMS {
	if now == nil {
		now = time.Now
	}
	return &VMS{Key: key, Sealer: seal.NewSealer(key), Opener: seal.NewOpener(key, seal.OpenerOptions{}), Now: now}
}

// Seal seals m under a fresh random message id.
func (v *VMS) Seal(m vmsg.Message) ([]byte, error) {
	kind, body, err := vmsg.Encode(m)
	if err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return v.Sealer.Seal(kind, binary.BigEndian.Uint64(b[:]), body, v.Now())
}

// Open opens and decodes one answer.
func (v *VMS) Open(env []byte) (vmsg.Message, error) {
	hdr, body, err := v.Opener.Open(env, v.Now())
	if err != nil {
		return nil, err
	}
	return vmsg.Decode(hdr.Kind, body)
}
