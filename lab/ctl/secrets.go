package ctl

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/pki"
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

// serverCert issues hvagent's certificate for host name: it names that
// host only (internal/pki), so one host's certificate does not pass for
// another's. vmsctl dials 127.0.0.1 (the VMM-I port forward) and checks the
// name from the inventory's vmmi.server_name.
func serverCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = (&pki.CA{Cert: ca, Key: caKey}).ServerCert(name, &key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// labPrincipals are the lab's VMS principals: "vms" (everything) and
// "intern" (read only: its state changes are refused and alerted).
var labPrincipals = []string{"vms", "intern"}

// principalCreds makes each lab principal's Ed25519 key once
// (principals/NAME.key, 0600) and issues its VMM-I client certificate from
// the lab CA (principals/NAME.pem) on every up. It returns the inventory
// credentials and each principal's public key line for the policy.
func principalCreds(dir string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]inventory.Credential, map[string]string, error) {
	pdir := filepath.Join(dir, "principals")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, nil, err
	}
	var creds []inventory.Credential
	pubs := map[string]string{}
	for _, name := range labPrincipals {
		keyFile := filepath.Join(pdir, name+".key")
		if _, err := os.Stat(keyFile); err != nil {
			k, err := ident.GenerateKey()
			if err != nil {
				return nil, nil, err
			}
			if err := ident.WritePrivateKey(keyFile, k, false); err != nil {
				return nil, nil, err
			}
		}
		k, err := ident.LoadPrivateKey(keyFile)
		if err != nil {
			return nil, nil, err
		}
		cert, err := (&pki.CA{Cert: ca, Key: caKey}).ClientCert(name, k.Public())
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(pdir, name+".pem"), cert, 0o644); err != nil {
			return nil, nil, err
		}
		pubs[name] = ident.FormatPublicKey(k.Public().(ed25519.PublicKey))
		creds = append(creds, inventory.Credential{Principal: name,
			KeyFile: filepath.Join("principals", name+".key"), CertFile: filepath.Join("principals", name+".pem")})
	}
	return creds, pubs, nil
}

// labPolicy is the lab's authorization list: the VMS principal may do
// anything; db* VMs are protected (a challenge answered with the operator's
// TOTP code); "intern" may only read; alerts go to the operator. pubs are
// the principals' public keys (principalCreds).
func labPolicy(pubs map[string]string) string {
	return fmt.Sprintf(policyTOML, pubs["vms"], pubs["intern"])
}

const policyTOML = `# ooblab lab authorization list (see hvagent/policy).
read_only_default = true
protected = ["db*"]

[users.ops]
totp_secret_file = "operator.key"
alerts = true

[principals.vms]
user = "ops"
keys = [%q]

[[principals.vms.rules]]
actions = ["*"]
vms = ["*"]

[principals.intern]
user = "ops"
keys = [%q]
`
