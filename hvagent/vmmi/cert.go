package vmmi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/pki"
)

var syscallEMFILE = syscall.EMFILE

// LoadTLS reads a PEM certificate (chain) and key for the server.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("vmmi: TLS key %s has mode %v; make it 0600", keyFile, fi.Mode().Perm())
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("vmmi: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS13}, nil
}

// CertFiles names what GenerateCert wrote.
type CertFiles struct {
	CA, CAKey, Cert, Key string
}

// GenerateCert writes a self-signed lab CA (ca.pem, ca.key) and a server
// certificate it signs for hosts (server.pem, server.key) into dir: ECDSA
// P-256, keys mode 0600. hosts are DNS names or IP addresses; the server
// certificate is valid for one year, the CA for ten. For the lab only: a
// production host gets its certificate from the site's CA.
func GenerateCert(dir string, hosts []string) (CertFiles, error) {
	if len(hosts) == 0 {
		return CertFiles{}, errors.New("vmmi: no host names for the certificate")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return CertFiles{}, err
	}
	ca, err := pki.NewCA("ooblab lab CA", 10*365*24*time.Hour, x509.KeyUsageCertSign|x509.KeyUsageCRLSign)
	if err != nil {
		return CertFiles{}, err
	}
	caPEM, caKeyPEM, err := ca.PEM()
	if err != nil {
		return CertFiles{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, err
	}
	certPEM, err := ca.ServerCert(hosts[0], &key.PublicKey, hosts[1:]...)
	if err != nil {
		return CertFiles{}, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return CertFiles{}, err
	}
	f := CertFiles{CA: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca.key"),
		Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server.key")}
	for _, w := range []struct {
		path string
		pem  []byte
		mode os.FileMode
	}{
		{f.CAKey, caKeyPEM, 0o600},
		{f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600},
		{f.CA, caPEM, 0o644},
		{f.Cert, certPEM, 0o644},
	} {
		if err := fileio.WriteFile(w.path, w.pem, w.mode); err != nil {
			return CertFiles{}, err
		}
	}
	return f, nil
}

// IssueClientCert signs a client certificate for principal (package
// internal/pki) for pub with the CA that GenerateCert wrote into files, and
// returns it as PEM. The principal's private key never leaves the VMS.
func IssueClientCert(files CertFiles, principal string, pub crypto.PublicKey) ([]byte, error) {
	ca, err := pki.LoadCA(files.CA, files.CAKey)
	if err != nil {
		return nil, err
	}
	return ca.ClientCert(principal, pub)
}
