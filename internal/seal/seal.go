// Package seal is the OOB "TOTP-cipher": it seals a vmsg body for one host
// with a key that changes every TOTP time step. It does no I/O; time is
// always passed in.
//
// Key for step T (T = unix seconds / period, period 30 s by default):
//
//	K_T = HKDF-SHA256(secret = decoded TOTP secret, salt = nil,
//	                  info = "ooblab/oob-i/v1" ‖ host id ‖ T as u64 big-endian) → 32 bytes
//
// Envelope (integers big-endian):
//
//	 0    2     3      4       5          5+n        13+n        21+n        33+n
//	+----+-----+------+-------+----------+-----------+-----------+-----------+--------------------+
//	|"OB"| ver | kind | n u8  | host id  | T u64     | msg id u64| nonce[12] | AES-256-GCM(K_T,   |
//	|4f42| 01  |      |       | n bytes  |           |           |           | body) ‖ tag[16]    |
//	+----+-----+------+-------+----------+-----------+-----------+-----------+--------------------+
//	 \________________ header: associated data, in clear ______/
//
// An Opener accepts T-1..T+1 of its own clock and remembers every message id
// it accepted until its step has left that window, so a replay is refused
// (ErrReplay) and anything older is refused as stale (ErrStale). So clocks
// that differ by less than one period (30 s) always agree, by 30-59 s
// sometimes (it depends on where both are in their step), by a whole
// minute never. OpenSkewed opens an envelope refused as stale from a wider
// range, to tell a clock fault from junk: what it opens must not be acted
// on, only answered (SealStep seals the answer in the sender's step). A stray
// reader of the BMC queues sees only the header. During a host key rotation
// an Opener also tries the other key of the host's key file
// (OpenerOptions.Also, ParseKeyRing).
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

const (
	Version   = 1
	NonceLen  = 12
	TagLen    = 16
	Info      = "ooblab/oob-i/v1"
	minHeader = 2 + 1 + 1 + 1 + 8 + 8
)

var magic = [2]byte{'O', 'B'}

// Sentinel errors.
var (
	ErrTruncated    = errors.New("seal: envelope truncated")
	ErrHeader       = errors.New("seal: bad envelope header")
	ErrHostMismatch = errors.New("seal: envelope for another host")
	ErrStale        = errors.New("seal: time step outside T-1..T+1")
	ErrAuth         = errors.New("seal: authentication failed")
	ErrReplay       = errors.New("seal: message id already seen")
	ErrWindowFull   = errors.New("seal: replay window full")
)

// Header is the clear part of an envelope.
type Header struct {
	Version byte
	Kind    vmsg.Kind
	HostID  string
	Step    uint64
	MsgID   uint64
}

func (h Header) append(b []byte) []byte {
	b = append(b, magic[0], magic[1], h.Version, byte(h.Kind), byte(len(h.HostID)))
	b = append(b, h.HostID...)
	b = binary.BigEndian.AppendUint64(b, h.Step)
	return binary.BigEndian.AppendUint64(b, h.MsgID)
}

// ParseHeader reads the clear header (e.g. to route by host id) and returns
// its length. It authenticates nothing.
func ParseHeader(env []byte) (Header, int, error) {
	if len(env) < minHeader {
		return Header{}, 0, fmt.Errorf("%w: %d bytes", ErrTruncated, len(env))
	}
	if env[0] != magic[0] || env[1] != magic[1] {
		return Header{}, 0, fmt.Errorf("%w: magic % x", ErrHeader, env[:2])
	}
	if env[2] != Version {
		return Header{}, 0, fmt.Errorf("%w: version %d", ErrHeader, env[2])
	}
	kind := vmsg.Kind(env[3])
	if !kind.Valid() {
		return Header{}, 0, fmt.Errorf("%w: kind %d", ErrHeader, env[3])
	}
	n := int(env[4])
	hl := minHeader + n
	if len(env) < hl {
		return Header{}, 0, fmt.Errorf("%w: %d bytes, header needs %d", ErrTruncated, len(env), hl)
	}
	return Header{
		Version: env[2],
		Kind:    kind,
		HostID:  string(env[5 : 5+n]),
		Step:    binary.BigEndian.Uint64(env[5+n:]),
		MsgID:   binary.BigEndian.Uint64(env[13+n:]),
	}, hl, nil
}

func stepAEAD(key *Key, step uint64) (cipher.AEAD, error) {
	info := make([]byte, 0, len(Info)+len(key.HostID())+8)
	info = append(info, Info...)
	info = append(info, key.HostID()...)
	info = binary.BigEndian.AppendUint64(info, step)
	k, err := hkdf.Key(sha256.New, key.secret, nil, string(info), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Sealer seals messages to one host. It is safe for concurrent use.
type Sealer struct {
	key  *Key
	rand io.Reader
}

// NewSealer returns a Sealer for key's host.
func NewSealer(key *Key) *Sealer { return &Sealer{key: key, rand: rand.Reader} }

// Seal returns the envelope of body, of the given kind and message id, for
// the time step of now. Message ids must not repeat within a few steps.
func (s *Sealer) Seal(kind vmsg.Kind, msgID uint64, body []byte, now time.Time) ([]byte, error) {
	return s.SealStep(kind, msgID, body, s.key.Step(now))
}

// SealStep is Seal in time step step: an answer to a sender whose clock is
// off (see OpenSkewed) is sealed in the sender's step, so it can open it.
func (s *Sealer) SealStep(kind vmsg.Kind, msgID uint64, body []byte, step uint64) ([]byte, error) {
	if !kind.Valid() {
		return nil, fmt.Errorf("%w: kind %d", ErrHeader, kind)
	}
	h := Header{Version: Version, Kind: kind, HostID: s.key.HostID(), Step: step, MsgID: msgID}
	aead, err := stepAEAD(s.key, h.Step)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	out := h.append(make([]byte, 0, minHeader+len(h.HostID)+NonceLen+len(body)+TagLen))
	hl := len(out)
	out = out[:hl+NonceLen]
	if _, err := io.ReadFull(s.rand, out[hl:]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return aead.Seal(out, out[hl:hl+NonceLen], body, out[:hl]), nil
}

// OpenerOptions bound an Opener's replay window.
type OpenerOptions struct {
	// MaxSeen caps remembered message ids (default 65536: the ids of three
	// time steps, ~90 s, at 700 messages/s sustained; a few MB at most).
	// When full of ids still inside the window, Open refuses with
	// ErrWindowFull rather than forget one that could then be replayed.
	// (4096, the old default, refused a pipelined VMS's answers after
	// ~10 s at 500 requests/s.)
	MaxSeen int
	// Also are more keys of the same host that open envelopes too: the
	// previous or next key during a host key rotation (see KeyRing).
	Also []*Key
}

// Opener opens envelopes sealed to its host. It is safe for concurrent use.
type Opener struct {
	key  *Key
	also []*Key
	max  int
	mu   sync.Mutex
	seen map[uint64]uint64 // msg id → step
	// pruned is the highest step pruned at: ids age out only when the
	// step moves, so one prune per step is enough (not one per Open). It
	// never goes back: an Open whose clock reads an earlier step (a caller
	// that read time.Now before another took mu, or a wall clock stepped
	// back) is judged against it, so an id forgotten by a prune cannot be
	// replayed.
	pruned uint64
}

// NewOpener returns an Opener for key's host.
func NewOpener(key *Key, opt OpenerOptions) *Opener {
	if opt.MaxSeen <= 0 {
		opt.MaxSeen = 1 << 16
	}
	var also []*Key
	for _, k := range opt.Also {
		if k != nil && k.HostID() == key.HostID() {
			also = append(also, k)
		}
	}
	return &Opener{key: key, also: also, max: opt.MaxSeen, seen: map[uint64]uint64{}}
}

// Open authenticates and decrypts env at now, returning its header and body.
func (o *Opener) Open(env []byte, now time.Time) (Header, []byte, error) {
	h, hl, err := ParseHeader(env)
	if err != nil {
		return Header{}, nil, err
	}
	if h.HostID != o.key.HostID() {
		return Header{}, nil, fmt.Errorf("%w: %q, this is %q", ErrHostMismatch, h.HostID, o.key.HostID())
	}
	cur := o.key.Step(now)
	if h.Step+1 < cur || h.Step > cur+1 {
		return Header{}, nil, fmt.Errorf("%w: step %d, now %d", ErrStale, h.Step, cur)
	}
	body, err := o.decrypt(env, h, hl)
	if err != nil {
		return Header{}, nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.prune(cur)
	if h.Step+1 < o.pruned { // its id may have been forgotten already
		return Header{}, nil, fmt.Errorf("%w: step %d, window at %d", ErrStale, h.Step, o.pruned)
	}
	if _, ok := o.seen[h.MsgID]; ok {
		return Header{}, nil, fmt.Errorf("%w: msg %#x", ErrReplay, h.MsgID)
	}
	if len(o.seen) >= o.max {
		return Header{}, nil, fmt.Errorf("%w: %d ids", ErrWindowFull, len(o.seen))
	}
	o.seen[h.MsgID] = h.Step
	return h, body, nil
}

// decrypt authenticates and decrypts env (header h of hl bytes) with the
// key of h.Step, trying every key of the host.
func (o *Opener) decrypt(env []byte, h Header, hl int) ([]byte, error) {
	if len(env) < hl+NonceLen+TagLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrTruncated, len(env))
	}
	for _, k := range append([]*Key{o.key}, o.also...) {
		aead, err := stepAEAD(k, h.Step)
		if err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
		if body, err := aead.Open(nil, env[hl:hl+NonceLen], env[hl+NonceLen:], env[:hl]); err == nil {
			return body, nil
		}
	}
	return nil, fmt.Errorf("%w: msg %#x", ErrAuth, h.MsgID)
}

// OpenSkewed authenticates and decrypts an envelope Open refused as stale,
// if its step is at most maxSteps from now's: one sealed by a sender whose
// clock is off (or a capture replayed within that range). It takes no
// message id into the replay window and so proves nothing about
// freshness: the caller must not act on the body, only answer it (sealed
// with SealStep in h.Step) and report the clock fault. An envelope in the
// normal window that Open refused as stale (this opener's clock went back
// past ids it may have forgotten) opens here too. Its cost for junk is
// Open's: one key derivation and one AES-GCM open.
func (o *Opener) OpenSkewed(env []byte, now time.Time, maxSteps uint64) (Header, []byte, error) {
	h, hl, err := ParseHeader(env)
	if err != nil {
		return Header{}, nil, err
	}
	if h.HostID != o.key.HostID() {
		return Header{}, nil, fmt.Errorf("%w: %q, this is %q", ErrHostMismatch, h.HostID, o.key.HostID())
	}
	cur := o.key.Step(now)
	if h.Step+maxSteps < cur || h.Step > cur+maxSteps {
		return Header{}, nil, fmt.Errorf("%w: step %d, now %d, beyond ±%d", ErrStale, h.Step, cur, maxSteps)
	}
	body, err := o.decrypt(env, h, hl)
	if err != nil {
		return Header{}, nil, err
	}
	return h, body, nil
}

// prune forgets ids whose step can no longer be accepted at step cur.
func (o *Opener) prune(cur uint64) {
	if cur <= o.pruned {
		return
	}
	o.pruned = cur
	for id, s := range o.seen {
		if s+1 < cur {
			delete(o.seen, id)
		}
	}
}

// Seen reports how many message ids the replay window holds.
func (o *Opener) Seen() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seen)
}
