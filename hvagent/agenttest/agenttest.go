// Package agenttest has fakes and a VMS-side helper for tests of hvagent's
// channels: a recording alert sink, a VMS that seals requests and opens
// answers with a host key, and the host an agent under test stands on
// ([Host]: the shared authorization list and a fake hypervisor).
package agenttest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
	"github.com/ooblab/ooblab/internal/ident"
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

// Key is principal's test key pair, derived from its name (tests only:
// anyone can derive it).
func Key(principal string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("ooblab agenttest principal key\x00" + principal))
	return ed25519.NewKeyFromSeed(seed[:])
}

// KeysLine is the policy line that registers Key(principal):
// keys = ["ed25519:…"].
func KeysLine(principal string) string {
	return fmt.Sprintf("keys = [%q]\n", ident.FormatPublicKey(Key(principal).Public().(ed25519.PublicKey)))
}

// AliceB32 is user alice's TOTP secret (base32) in [PolicyText].
const AliceB32 = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

// PolicyText is the authorization list the channel tests share: read-only
// by default, "db-*" protected, user alice (TOTP [AliceB32], alerts on),
// principal vms1 of alice allowed every action on every VM, and principal
// monitor with no rules (read-only).
var PolicyText = `
read_only_default = true
protected = ["db-*"]
[users.alice]
totp_uri = "otpauth://totp/ooblab:alice?secret=` + AliceB32 + `&issuer=ooblab"
alerts = true
[principals.vms1]
user = "alice"
` + KeysLine("vms1") + `
[[principals.vms1.rules]]
actions = ["*"]
vms = ["*"]
[principals.monitor]
` + KeysLine("monitor")

// Host is what an agent under test stands on: [PolicyText] parsed (its
// state in a temporary folder) and a fake hypervisor holding
// test:///default's running "test" plus vms, shut off.
func Host(t testing.TB, vms ...virttest.VM) (*policy.Policy, *virttest.Hypervisor) {
	t.Helper()
	pol, err := policy.Parse([]byte(PolicyText), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return pol, virttest.New(vms...)
}

// VMS is the management server's side of the sealed protocol for one host.
type VMS struct {
	Key    *seal.Key
	Sealer *seal.Sealer
	Opener *seal.Opener
	Now    func() time.Time
	// Signer returns the key that signs a request naming principal (nil:
	// sent unsigned). NewVMS sets it to Key.
	Signer func(principal string) ed25519.PrivateKey
}

// NewVMS returns a VMS for key using clock now (nil: time.Now).
func NewVMS(key *seal.Key, now func() time.Time) *VMS {
	if now == nil {
		now = time.Now
	}
	return &VMS{Key: key, Sealer: seal.NewSealer(key), Opener: seal.NewOpener(key, seal.OpenerOptions{}), Now: now, Signer: Key}
}

// Seal seals m under a fresh random message id. A request without a
// signature is signed (in a copy) with Signer(its principal) for this host.
func (v *VMS) Seal(m vmsg.Message) ([]byte, error) {
	if r, ok := m.(*vmsg.Request); ok && len(r.Sig) == 0 && v.Signer != nil {
		if k := v.Signer(r.Principal); k != nil {
			c := *r // the caller may change and resend r
			if err := ident.SignRequest(k, v.Key.HostID(), &c); err != nil {
				return nil, err
			}
			m = &c
		}
	}
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
