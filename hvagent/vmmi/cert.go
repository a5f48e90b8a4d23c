package vmmi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

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
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"ooblab"}, CommonName: "ooblab lab CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return CertFiles{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return CertFiles{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"ooblab"}, CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return CertFiles{}, err
	}
	f := CertFiles{CA: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca.key"),
		Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server.key")}
	for _, w := range []struct {
		path  string
		typ   string
		bytes func() ([]byte, error)
		mode  os.FileMode
	}{
		{f.CAKey, "PRIVATE KEY", func() ([]byte, error) { return x509.MarshalPKCS8PrivateKey(caKey) }, 0o600},
		{f.Key, "PRIVATE KEY", func() ([]byte, error) { return x509.MarshalPKCS8PrivateKey(key) }, 0o600},
		{f.CA, "CERTIFICATE", func() ([]byte, error) { return caDER, nil }, 0o644},
		{f.Cert, "CERTIFICATE", func() ([]byte, error) { return der, nil }, 0o644},
	} {
		b, err := w.bytes()
		if err != nil {
			return CertFiles{}, err
		}
		if err := writeFile(w.path, pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: b}), w.mode); err != nil {
			return CertFiles{}, err
		}
	}
	return f, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// writeFile writes atomically with mode (also when the file existed with
// a looser one).
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
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
