package ctl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ooblab/ooblab/internal/seal"
)

// writeSecret writes a file readable by its owner only, unless it exists.
func writeSecretOnce(path string, gen func() ([]byte, error)) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b, err := gen()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func randomPassword() ([]byte, error) {
	b := make([]byte, 15)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	// 20 URL-safe characters: the IPMI v2.0 password limit.
	return []byte(base64.RawURLEncoding.EncodeToString(b)), nil
}

func enrollKey(id string) func() ([]byte, error) {
	return func() ([]byte, error) {
		k, err := seal.Enroll(id)
		if err != nil {
			return nil, err
		}
		return []byte(k.URI() + "\n"), nil
	}
}

// labCA returns the lab CA (creating it once) for signing hvagent certs.
func labCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if cb, err := os.ReadFile(certPath); err == nil {
		kb, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, nil, err
		}
		cblk, _ := pem.Decode(cb)
		kblk, _ := pem.Decode(kb)
		if cblk == nil || kblk == nil {
			return nil, nil, fmt.Errorf("lab CA in %s is damaged; remove the folder", dir)
		}
		cert, err := x509.ParseCertificate(cblk.Bytes)
		if err != nil {
			return nil, nil, err
		}
		key, err := x509.ParseECPrivateKey(kblk.Bytes)
		return cert, key, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ooblab lab CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(5 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// serverCert issues hvagent's certificate for name, valid for 127.0.0.1
// (the VMM-I port forward) and the guest address.
func serverCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 2, 15)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// policyTOML is the lab's authorization list: the VMS principal may do
// anything; db* VMs are protected (a challenge answered with the operator's
// TOTP code); "intern" may only read; alerts go to the operator.
const policyTOML = `# ooblab lab authorization list (see hvagent/policy).
read_only_default = true
protected = ["db*"]

[users.ops]
totp_secret_file = "operator.key"
alerts = true

[principals.vms]
user = "ops"

[[principals.vms.rules]]
actions = ["*"]
vms = ["*"]

[principals.intern]
user = "ops"
`
