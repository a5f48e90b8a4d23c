package ident

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// An approval answers a protected VM's challenge without a shared secret:
// the operator's own Ed25519 key signs what the challenge is for, and the
// host holds only the operator's public key (hvagent/policy
// approval_keys). The signed message is
//
//	ApprovalDomain ‖ 0x00
//	‖ len ‖ host id      (one length byte each, then the bytes)
//	‖ len ‖ principal    (who sent the request)
//	‖ len ‖ action       ("start", "destroy", …)
//	‖ len ‖ VM
//	‖ request id         (8 bytes, big endian)
//	‖ nonce              (the challenge's 16 random bytes)
//
// so an approval is good for one challenge of one request on one host,
// and for nothing else: another host, VM, action, principal or request
// (or a second challenge of the same one) needs another signature.
//
// The token the operator hands over is the signature in unpadded
// base64url with the prefix ApprovalPrefix ("ap1." then 86 characters).

// ApprovalDomain separates approvals from every other Ed25519 signature
// (requests are signed under Domain).
const ApprovalDomain = "ooblab/approval/v1"

// ApprovalPrefix starts every approval token.
const ApprovalPrefix = "ap1."

// ErrBadApproval is returned for a token that is malformed or not signed
// by any of the keys for the approval it claims to be.
var ErrBadApproval = errors.New("ident: approval not valid for this challenge")

// Approval is what an approval token signs.
type Approval struct {
	HostID    string
	Principal string
	Action    string
	VM        string
	RequestID uint64
	Nonce     []byte
}

// Message returns the bytes an operator signs for a.
func (a Approval) Message() ([]byte, error) {
	m := make([]byte, 0, len(ApprovalDomain)+1+4+len(a.HostID)+len(a.Principal)+len(a.Action)+len(a.VM)+8+len(a.Nonce))
	m = append(m, ApprovalDomain...)
	m = append(m, 0)
	for _, f := range []struct{ name, v string }{{"host id", a.HostID}, {"principal", a.Principal}, {"action", a.Action}, {"vm", a.VM}} {
		if len(f.v) > 255 {
			return nil, fmt.Errorf("ident: approval %s of %d bytes", f.name, len(f.v))
		}
		if f.name != "vm" && f.v == "" {
			return nil, fmt.Errorf("ident: approval without %s", f.name)
		}
		m = append(m, byte(len(f.v)))
		m = append(m, f.v...)
	}
	if len(a.Nonce) != 16 {
		return nil, fmt.Errorf("ident: approval nonce of %d bytes, want 16", len(a.Nonce))
	}
	m = binary.BigEndian.AppendUint64(m, a.RequestID)
	return append(m, a.Nonce...), nil
}

// SignApproval returns the approval token for a.
func SignApproval(priv ed25519.PrivateKey, a Approval) (string, error) {
	m, err := a.Message()
	if err != nil {
		return "", err
	}
	return ApprovalPrefix + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, m)), nil
}

// IsApprovalToken reports whether s has the form of an approval token (it
// may still be wrong).
func IsApprovalToken(s string) bool { return strings.HasPrefix(s, ApprovalPrefix) }

// VerifyApproval checks token against keys (two during a rotation) and
// returns the index of the key that signed it.
func VerifyApproval(keys []ed25519.PublicKey, a Approval, token string) (int, error) {
	if len(keys) == 0 {
		return -1, ErrNoKey
	}
	raw, ok := strings.CutPrefix(token, ApprovalPrefix)
	if !ok {
		return -1, fmt.Errorf("%w: not an approval token (want %s…)", ErrBadApproval, ApprovalPrefix)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(raw) // one text per signature
	if err != nil || len(sig) != ed25519.SignatureSize {
		return -1, fmt.Errorf("%w: malformed token", ErrBadApproval)
	}
	m, err := a.Message()
	if err != nil {
		return -1, err
	}
	for i, k := range keys {
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, m, sig) {
			return i, nil
		}
	}
	return -1, ErrBadApproval
}
