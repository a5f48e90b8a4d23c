package ctl

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/pki"
	"github.com/ooblab/ooblab/internal/seal"
)

// writeSecretOnce writes a file readable by its owner only, unless it
// exists (a symbolic link there counts as existing and is not followed:
// O_EXCL).
func writeSecretOnce(path string, gen func() ([]byte, error)) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	b, err := gen()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path) // a torn secret would be kept by the next up
		return err
	}
	return f.Close()
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

// labCA returns the lab CA (creating it once) for signing hvagent certs:
// tls/ca.pem (0644) and tls/ca.key (0600), issued by internal/pki.
func labCA(dir string) (*pki.CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if _, err := os.Stat(certPath); err == nil {
		ca, err := pki.LoadCA(certPath, keyPath)
		if err != nil {
			return nil, fmt.Errorf("lab CA in %s is damaged; remove the folder: %w", dir, err)
		}
		return ca, nil
	}
	ca, err := pki.NewCA("ooblab lab CA", 5*365*24*time.Hour, x509.KeyUsageCertSign)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.PEM()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// serverCert issues hvagent's certificate for host name: it names that
// host only (internal/pki), so one host's certificate does not pass for
// another's. vmsctl dials 127.0.0.1 (the VMM-I port forward) and checks the
// name from the inventory's vmmi.server_name.
func serverCert(ca *pki.CA, name string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = ca.ServerCert(name, &key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// redfishCert issues host name's BMC Redfish certificate from the lab CA
// on every up (hdir/redfish.pem, and its key redfish.key, 0600): it names
// 127.0.0.1, where the BMC listens, and the host's name.
func redfishCert(ca *pki.CA, hdir, name string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	certPEM, err := ca.ServerCert("127.0.0.1", &key.PublicKey, name)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(hdir, "redfish.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(hdir, "redfish.pem"), certPEM, 0o644)
}

// labPrincipals are the lab's VMS principals: "vms" (everything) and
// "intern" (read only: its state changes are refused and alerted).
var labPrincipals = []string{"vms", "intern"}

// principalCreds makes each lab principal's Ed25519 key once
// (principals/NAME.key, 0600) and issues its VMM-I client certificate from
// the lab CA (principals/NAME.pem) on every up. It returns the inventory
// credentials and each principal's public key line for the policy.
func principalCreds(dir string, ca *pki.CA) ([]inventory.Credential, map[string]string, error) {
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
		cert, err := ca.ClientCert(name, k.Public())
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
