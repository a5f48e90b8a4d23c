// Package pki issues the VMM-I's certificates from a CA: one server
// certificate per host that names that host only, and one client
// certificate per principal whose subject common name is the principal.
// hvagent (tests), the lab and vmsctl share it, so every certificate in a
// lab has the same shape.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
)

// Validity of issued certificates.
const Validity = 365 * 24 * time.Hour

// CA is a certificate authority that can sign.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA makes a self-signed CA named name (ECDSA P-256), valid for
// validity, that signs end-entity certificates only (no intermediate CAs).
// usage is its certificate's key usage; it must include
// x509.KeyUsageCertSign.
func NewCA(name string, validity time.Duration, usage x509.KeyUsage) (*CA, error) {
	if usage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("pki: a CA's key usage must include certificate signing")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"ooblab"}, CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              usage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// PEM returns the CA's certificate and its key (PKCS #8) as PEM, as
// LoadCA and ParseCA read them.
func (ca *CA) PEM() (certPEM, keyPEM []byte, err error) {
	kb, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

// LoadCA reads a PEM CA certificate and its PEM key (PKCS #8, or SEC 1 "EC
// PRIVATE KEY").
func LoadCA(certFile, keyFile string) (*CA, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("pki: CA: %w", err)
	}
	kb, err := fileio.ReadSecret(keyFile) // refuses a key others may read
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	return ParseCA(cb, kb)
}

// ParseCA reads a PEM CA certificate and key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cblk, _ := pem.Decode(certPEM)
	kblk, _ := pem.Decode(keyPEM)
	if cblk == nil || kblk == nil {
		return nil, errors.New("pki: CA certificate or key is not PEM")
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CA: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("pki: CA certificate is not a CA")
	}
	var key any
	switch kblk.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kblk.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(kblk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: CA key %T cannot sign", key)
	}
	if ek, ok := s.Public().(*ecdsa.PublicKey); ok {
		if ck, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !ck.Equal(ek) {
			return nil, errors.New("pki: CA key does not match the CA certificate")
		}
	}
	return &CA{Cert: cert, Key: s}, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = sn
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(Validity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// ClientCert issues principal's client certificate for pub (subject
// common name = principal, client-auth usage). Only the public key is
// needed: the private key stays with the principal.
func (ca *CA) ClientCert(principal string, pub crypto.PublicKey) ([]byte, error) {
	if principal == "" {
		return nil, errors.New("pki: client certificate needs a principal")
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"ooblab"}, CommonName: principal},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, pub)
}

// ServerCert issues host's server certificate for pub. It names the host
// only (one DNS name, or one IP address; also, further names of the same
// host, such as its address beside its name): the certificate of one host
// does not pass for another's, even under the same CA.
func (ca *CA) ServerCert(host string, pub crypto.PublicKey, also ...string) ([]byte, error) {
	if host == "" {
		return nil, errors.New("pki: server certificate needs a host name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"ooblab"}, CommonName: host},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range append([]string{host}, also...) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, pub)
}
