// Package ident is who sent a request: each principal (the VMS, each
// operator) holds its own Ed25519 key pair and signs every request it
// sends; hvagent verifies the signature against the public keys its
// authorization list names for the principal the request claims. The host
// key (package seal) only keeps the request confidential and fresh on the
// link; holding it no longer lets anyone speak as a principal.
//
// What is signed (the signature travels in the request itself, vmsg field
// 10, so it is sealed with the rest of the body):
//
//	 0                       21   22     23          23+n
//	+-------------------------+----+------+-----------+------------------------------+
//	| "ooblab/request-sig/v1" | 00 | n u8 | host id   | CBOR(request without field 10)|
//	|  domain, 21 bytes       |    |      | n bytes   | core deterministic encoding   |
//	+-------------------------+----+------+-----------+------------------------------+
//
//	sig = Ed25519(principal's private key, those bytes), 64 bytes → vmsg.Request.Sig
//
// The CBOR part is vmsg.Request.SignedBytes: every field the agent acts on
// (request id, command, VM, addresses, metadata, principal, issue time, the
// challenge answer). The verifier re-encodes the decoded request, so what
// it checks is exactly what it will act on. The host id binds the signature
// to one host: a request for host A cannot be resealed for host B. Freshness
// comes from the issue time (agent: ±MaxSkew) and the request id (the
// agent's journal never runs one id twice).
//
// The same key may sign the principal's TLS client certificate handshake on
// the VMM-I (hvagent/vmmi): TLS 1.3 signs with its own context string
// ("TLS 1.3, client CertificateVerify"), so neither signature can be taken
// for the other.
//
// Key files: the private key is a PEM "PRIVATE KEY" block (PKCS #8, the
// form openssl genpkey -algorithm ed25519 writes), mode 0600. The public
// key as the authorization list names it is "ed25519:" followed by the 32
// key bytes in standard base64 (44 characters).
package ident

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Domain separates request signatures from any other use of the key.
const Domain = "ooblab/request-sig/v1"

// PublicPrefix starts a public key in text form.
const PublicPrefix = "ed25519:"

// Sentinel errors.
var (
	ErrNoSignature  = errors.New("ident: request is not signed")
	ErrBadSignature = errors.New("ident: signature does not verify with any registered key")
	ErrNoKey        = errors.New("ident: no public key registered for the principal")
	ErrKeyFormat    = errors.New("ident: malformed key")
)

// GenerateKey makes a new key pair from crypto/rand.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return priv, err
}

// FormatPublicKey is the text form of pub ("ed25519:<base64>").
func FormatPublicKey(pub ed25519.PublicKey) string {
	return PublicPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads the text form of a public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, PublicPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: public key must start with %q", ErrKeyFormat, PublicPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: public key is not base64", ErrKeyFormat)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key of %d bytes, want %d", ErrKeyFormat, len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// MarshalPrivateKey is the PEM (PKCS #8) form of priv.
func MarshalPrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey reads a PEM "PRIVATE KEY" block holding an Ed25519 key.
// Errors never quote the input.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKeyFormat)
	}
	if blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: PEM block %q, want \"PRIVATE KEY\"", ErrKeyFormat, blk.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: not a PKCS #8 key", ErrKeyFormat)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T, want an Ed25519 key", ErrKeyFormat, k)
	}
	return priv, nil
}

// LoadPrivateKey reads a key file, refusing one that others can read.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := fileio.ReadSecret(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WritePrivateKey writes priv to path with mode 0600. It refuses to
// replace an existing file unless force.
func WritePrivateKey(path string, priv ed25519.PrivateKey, force bool) error {
	b, err := MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	if !force {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s exists", path)
		}
	}
	return fileio.WriteFile(path, b, 0o600)
}

// Message is the byte string a principal signs for hostID (see the
// package doc).
func Message(hostID string, signed []byte) ([]byte, error) {
	if len(hostID) == 0 || len(hostID) > 255 {
		return nil, fmt.Errorf("ident: host id of %d bytes", len(hostID))
	}
	m := make([]byte, 0, len(Domain)+2+len(hostID)+len(signed))
	m = append(m, Domain...)
	m = append(m, 0, byte(len(hostID)))
	m = append(m, hostID...)
	return append(m, signed...), nil
}

// SignRequest signs req for hostID and stores the signature in req.Sig.
func SignRequest(priv ed25519.PrivateKey, hostID string, req *vmsg.Request) error {
	sb, err := req.SignedBytes()
	if err != nil {
		return err
	}
	m, err := Message(hostID, sb)
	if err != nil {
		return err
	}
	req.Sig = ed25519.Sign(priv, m)
	return nil
}

// VerifyRequest checks req.Sig against every key in keys (two during a
// rotation) and returns the index of the key that verified.
func VerifyRequest(keys []ed25519.PublicKey, hostID string, req *vmsg.Request) (int, error) {
	if len(keys) == 0 {
		return -1, ErrNoKey
	}
	if len(req.Sig) == 0 {
		return -1, ErrNoSignature
	}
	if len(req.Sig) != ed25519.SignatureSize {
		return -1, fmt.Errorf("%w: signature of %d bytes", ErrBadSignature, len(req.Sig))
	}
	sb, err := req.SignedBytes()
	if err != nil {
		return -1, err
	}
	m, err := Message(hostID, sb)
	if err != nil {
		return -1, err
	}
	for i, k := range keys {
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, m, req.Sig) {
			return i, nil
		}
	}
	return -1, ErrBadSignature
}
