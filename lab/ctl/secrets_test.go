package ctl

import (
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
	ca, caKey, err := labCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	creds, pubs, err := principalCreds(dir, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "operator.key"), []byte("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n"), 0o600)
	pol, err := policy.Parse([]byte(labPolicy(pubs)), dir)
	if err != nil {
		t.Fatalf("lab policy: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
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
	_, pubs2, err := principalCreds(dir, ca, caKey)
	if err != nil || pubs2["vms"] != pubs["vms"] {
		t.Fatalf("keys changed across ups: %v", err)
	}
	// Host certificates name their host only.
	h1, _, err := serverCert(ca, caKey, "h1")
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
