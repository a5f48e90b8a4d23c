package seal

import (
	"bytes"
	"encoding/base32"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Issuer is the otpauth issuer of every ooblab key.
const Issuer = "ooblab"

// SecretSize is the size of an enrolled host secret in bytes.
const SecretSize = 32

// ErrKey reports an unusable key or host id.
var ErrKey = errors.New("seal: invalid key")

// Key is a host's enrolled secret: an RFC 6238 TOTP key whose otpauth
// account name is the host id. Its String and LogValue never show the secret.
type Key struct {
	k      *otp.Key
	secret []byte
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// DecodeSecret decodes a base32 TOTP secret (padding and case optional).
func DecodeSecret(s string) ([]byte, error) {
	s = strings.ToUpper(strings.TrimRight(strings.TrimSpace(s), "="))
	b, err := b32.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: secret is not base32", ErrKey)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty secret", ErrKey)
	}
	return b, nil
}

// ValidHostID reports whether id can name a host: 1-64 bytes of
// [A-Za-z0-9._-] (it goes into otpauth labels and sealed headers).
func ValidHostID(id string) error {
	if len(id) == 0 || len(id) > 64 {
		return fmt.Errorf("%w: host id length %d", ErrKey, len(id))
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: host id %q: only letters, digits, '.', '_', '-'", ErrKey, id)
		}
	}
	return nil
}

// Enroll makes a new random key for hostID (SHA1, 6 digits, 30 s).
func Enroll(hostID string) (*Key, error) { return NewKey(hostID, nil) }

// NewKey makes the key for hostID with a given secret (random when nil).
func NewKey(hostID string, secret []byte) (*Key, error) {
	if err := ValidHostID(hostID); err != nil {
		return nil, err
	}
	k, err := totp.Generate(totp.GenerateOpts{Issuer: Issuer, AccountName: hostID, SecretSize: SecretSize, Secret: secret})
	if err != nil {
		return nil, fmt.Errorf("seal: enroll %s: %w", hostID, err)
	}
	return fromOTP(k)
}

// ParseKey reads an otpauth://totp/ URI.
func ParseKey(uri string) (*Key, error) {
	k, err := otp.NewKeyFromURL(strings.TrimSpace(uri))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, redactErr(err))
	}
	if k.Type() != "totp" {
		return nil, fmt.Errorf("%w: otpauth type %q, want totp", ErrKey, k.Type())
	}
	return fromOTP(k)
}

// redactErr drops an error's text: URL parse errors quote the URI, secret included.
func redactErr(error) string { return "malformed otpauth URI" }

func fromOTP(k *otp.Key) (*Key, error) {
	if err := ValidHostID(k.AccountName()); err != nil {
		return nil, err
	}
	if k.Period() == 0 {
		return nil, fmt.Errorf("%w: period 0", ErrKey)
	}
	sec, err := DecodeSecret(k.Secret())
	if err != nil {
		return nil, err
	}
	return &Key{k: k, secret: sec}, nil
}

// HostID is the key's account name.
func (k *Key) HostID() string { return k.k.AccountName() }

// Period is the TOTP time step.
func (k *Key) Period() time.Duration { return time.Duration(k.k.Period()) * time.Second }

// URI is the otpauth:// URI. It contains the secret: store it, never log it.
func (k *Key) URI() string { return k.k.URL() }

// Secret returns a copy of the decoded secret.
func (k *Key) Secret() []byte { return bytes.Clone(k.secret) }

// Step returns the time step number of t.
func (k *Key) Step(t time.Time) uint64 {
	u := t.Unix()
	if u < 0 {
		return 0
	}
	return uint64(u) / k.k.Period()
}

// PNG renders the URI as a size×size QR code.
func (k *Key) PNG(size int) ([]byte, error) {
	img, err := k.k.Image(size, size)
	if err != nil {
		return nil, fmt.Errorf("seal: QR for %s: %w", k.HostID(), err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (k *Key) String() string { return fmt.Sprintf("seal.Key{host=%s secret=REDACTED}", k.HostID()) }

// LogValue keeps the secret out of slog output.
func (k *Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", k.HostID()), slog.String("secret", "REDACTED"))
}

// MaxRing bounds the keys of a key file: the current one and the next.
const MaxRing = 2

// ParseKeyRing reads a host key file: one otpauth:// URI per line (blank
// lines and lines starting with '#' are skipped), at most MaxRing, all for
// the same host. The first key seals; every key opens (OpenerOptions.Also).
//
// Host key rotation with no refused request on either channel:
//
//  1. VMS key file: old, new   (seals with old, opens both)
//  2. host key file: new, old  (hvagent restarted: seals with new, opens both)
//  3. VMS key file: new, old   (seals with new)
//  4. both files: new
//
// At every step each side opens what the other seals.
func ParseKeyRing(text string) ([]*Key, error) {
	var ring []*Key
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(ring) == MaxRing {
			return nil, fmt.Errorf("%w: more than %d keys in one key file", ErrKey, MaxRing)
		}
		k, err := ParseKey(line)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", len(ring)+1, err)
		}
		if len(ring) > 0 && k.HostID() != ring[0].HostID() {
			return nil, fmt.Errorf("%w: key %d is for host %q, key 1 for %q", ErrKey, len(ring)+1, k.HostID(), ring[0].HostID())
		}
		ring = append(ring, k)
	}
	if len(ring) == 0 {
		return nil, fmt.Errorf("%w: no key in the key file", ErrKey)
	}
	return ring, nil
}
