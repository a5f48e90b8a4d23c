package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

// newCA is a CA read back through ParseCA from a key in keyType's format.
func newCA(t testing.TB, keyType string) *CA {
	t.Helper()
	made, err := NewCA("test CA", time.Hour, x509.KeyUsageCertSign)
	if err != nil {
		t.Fatal(err)
	}
	var kb []byte
	if keyType == "EC PRIVATE KEY" {
		kb, _ = x509.MarshalECPrivateKey(made.Key.(*ecdsa.PrivateKey))
	} else {
		kb, _ = x509.MarshalPKCS8PrivateKey(made.Key)
	}
	ca, err := ParseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: made.Cert.Raw}), pem.EncodeToMemory(&pem.Block{Type: keyType, Bytes: kb}))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parse(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServerCertNamesOneHost: h1's certificate verifies as h1 only — not
// as h2, not as the loopback address every lab host is reached through.
func TestServerCertNamesOneHost(t *testing.T) {
	for _, kt := range []string{"EC PRIVATE KEY", "PRIVATE KEY"} {
		ca := newCA(t, kt)
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		b, err := ca.ServerCert("h1", pub)
		if err != nil {
			t.Fatal(err)
		}
		c := parse(t, b)
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		opts := func(name string) x509.VerifyOptions {
			return x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		}
		if _, err := c.Verify(opts("h1")); err != nil {
			t.Fatalf("h1: %v", err)
		}
		for _, other := range []string{"h2", "localhost", "127.0.0.1", "10.0.2.15"} {
			if _, err := c.Verify(opts(other)); err == nil {
				t.Fatalf("h1's certificate verifies for %s", other)
			}
		}
		// Not usable as a client certificate.
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			t.Fatal("server certificate verifies for client auth")
		}
	}
}

func TestClientCert(t *testing.T) {
	ca := newCA(t, "PRIVATE KEY")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	b, err := ca.ClientCert("vms", pub)
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, b)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "vms" || !c.PublicKey.(ed25519.PublicKey).Equal(pub) {
		t.Fatalf("subject %q", c.Subject.CommonName)
	}
	if _, err := ca.ClientCert("", pub); err == nil {
		t.Fatal("certificate without a principal")
	}
	// A mismatched CA key is refused.
	other := newCA(t, "PRIVATE KEY")
	kb, _ := x509.MarshalPKCS8PrivateKey(other.Key)
	if _, err := ParseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})); err == nil {
		t.Fatal("CA with another CA's key accepted")
	}
}

func FuzzParseCA(f *testing.F) {
	ca := newCA(f, "PRIVATE KEY")
	kb, _ := x509.MarshalPKCS8PrivateKey(ca.Key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
	f.Add(certPEM, keyPEM)
	f.Add(certPEM, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("x"), keyPEM)
	f.Fuzz(func(t *testing.T, c, k []byte) {
		got, err := ParseCA(c, k)
		if err == nil && (got.Cert == nil || got.Key == nil || !got.Cert.IsCA) {
			t.Fatal("CA without certificate, key or CA flag")
		}
	})
}

// TestNewCA: the CA's certificate carries the key usage asked for and the
// name, its PEM reads back through ParseCA, and a CA that could not sign
// certificates is refused.
func TestNewCA(t *testing.T) {
	for _, usage := range []x509.KeyUsage{x509.KeyUsageCertSign, x509.KeyUsageCertSign | x509.KeyUsageCRLSign} {
		ca, err := NewCA("ooblab lab CA", time.Hour, usage)
		if err != nil {
			t.Fatal(err)
		}
		if ca.Cert.KeyUsage != usage || ca.Cert.Subject.CommonName != "ooblab lab CA" || !ca.Cert.IsCA {
			t.Fatalf("usage %v: CA certificate usage %v, name %q, CA %v", usage, ca.Cert.KeyUsage, ca.Cert.Subject.CommonName, ca.Cert.IsCA)
		}
		cpem, kpem, err := ca.PEM()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCA(cpem, kpem)
		if err != nil || !back.Cert.Equal(ca.Cert) {
			t.Fatalf("PEM round trip: %v", err)
		}
	}
	if _, err := NewCA("no signer", time.Hour, x509.KeyUsageDigitalSignature); err == nil {
		t.Fatal("CA without certificate signing accepted")
	}
}
