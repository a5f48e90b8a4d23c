package ctl

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/internal/ident"
)

// TestLabSecrets: the lab's principal keys, client certificates, host
// certificates and policy fit together as hvagent and vmsctl check them.
func TestLabSecrets(t *testing.T) {
	dir := t.TempDir()
	ca, err := labCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Cert.Subject.CommonName != "ooblab lab CA" || ca.Cert.KeyUsage != x509.KeyUsageCertSign {
		t.Fatalf("lab CA %q, key usage %v", ca.Cert.Subject.CommonName, ca.Cert.KeyUsage)
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca.key": 0o600} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %v", name, fi, err, mode)
		}
	}
	// A second up loads the same CA, also from a lab made before the CA
	// key was written as PKCS #8 (SEC 1 "EC PRIVATE KEY").
	if again, err := labCA(dir); err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("lab CA not kept across ups: %v", err)
	}
	sec1, err := x509.MarshalECPrivateKey(ca.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600)
	if again, err := labCA(dir); err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("lab CA with a SEC 1 key: %v", err)
	}
	creds, pubs, err := principalCreds(dir, ca)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "operator.key"), []byte("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n"), 0o600)
	pol, err := policy.ParseFor([]byte(labPolicy(pubs)), dir, "h1")
	if err != nil {
		t.Fatalf("lab policy: %v", err)
	}
	// One host group (default): every lab host takes the one operator
	// key, whose code 'vmsctl user code ops' prints.
	if ops, ok := pol.User("ops"); pol.Group() != policy.DefaultGroup || !ok || string(ops.Secret) != "Hello!\xde\xad\xbe\xefHello!\xde\xad\xbe\xef" {
		t.Fatalf("lab policy: group %q, ops %+v", pol.Group(), ops)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, c := range creds {
		k, err := ident.LoadPrivateKey(filepath.Join(dir, c.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if ks := pol.Keys(c.Principal); len(ks) != 1 || !ks[0].Equal(k.Public()) {
			t.Fatalf("%s: policy keys %v", c.Principal, ks)
		}
		b, _ := os.ReadFile(filepath.Join(dir, c.CertFile))
		blk, _ := pem.Decode(b)
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("%s client certificate: %v", c.Principal, err)
		}
		if cert.Subject.CommonName != c.Principal || !cert.PublicKey.(ed25519.PublicKey).Equal(k.Public()) {
			t.Fatalf("%s: certificate for %q", c.Principal, cert.Subject.CommonName)
		}
	}
	// A second up keeps the keys.
	_, pubs2, err := principalCreds(dir, ca)
	if err != nil || pubs2["vms"] != pubs["vms"] {
		t.Fatalf("keys changed across ups: %v", err)
	}
	// Host certificates name their host only.
	h1, _, err := serverCert(ca, "h1")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(h1)
	c1, _ := x509.ParseCertificate(blk.Bytes)
	for name, want := range map[string]bool{"h1": true, "h2": false, "127.0.0.1": false, "localhost": false} {
		_, err := c1.Verify(x509.VerifyOptions{Roots: roots, DNSName: name})
		if (err == nil) != want {
			t.Errorf("h1's certificate for %q: err %v", name, err)
		}
	}
}
