package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/redfish"
	"github.com/ooblab/ooblab/internal/pki"
	"github.com/ooblab/ooblab/internal/testutil"
)

func redfishConfig() config.Config {
	return config.Config{Name: "h1", LAN: "127.0.0.1:0", Redfish: "127.0.0.1:0",
		Users: []config.User{
			{Name: "admin", Password: "pw-0123456", Privilege: "administrator"},
			{Name: "long", Password: "01234567890123456789", Privilege: "user"},
		}}
}

// TestRedfishCertFromFiles: with redfish_cert/redfish_key the service
// presents that certificate (a client trusting only the issuing CA gets
// in); a key file others may read is refused.
func TestRedfishCertFromFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour, x509.KeyUsageCertSign)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certPEM, err := ca.ServerCert("127.0.0.1", &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "rf.pem"), filepath.Join(dir, "rf.key")
	_ = os.WriteFile(certFile, certPEM, 0o644)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644)
	cfg := redfishConfig()
	cfg.RedfishCert, cfg.RedfishKey = certFile, keyFile
	if _, err := NewHost(cfg, HostOptions{}); err == nil || !strings.Contains(err.Error(), "redfish") {
		t.Fatalf("a world-readable key: %v, want refused", err)
	}
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(cfg, HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() }) // after Serve's cleanup stopped it
	testutil.Serve(t, "Serve", h.Serve)
	caPEM, _, _ := ca.PEM()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + h.RedfishAddr() + "/redfish/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("OData-Version") != "4.0" {
		t.Errorf("service root: %d %v", resp.StatusCode, resp.Header)
	}
	// No plain HTTP.
	plain, err := http.Get("http://" + h.RedfishAddr() + "/redfish/v1")
	if err == nil {
		plain.Body.Close()
		if plain.StatusCode == 200 {
			t.Error("plain HTTP served the service root")
		}
	}
}

// TestRedfishSelfSignedLogged: without a certificate the BMC makes one and
// logs its SHA-256 fingerprint.
func TestRedfishSelfSignedLogged(t *testing.T) {
	var logs testutil.SyncBuffer
	h, err := NewHost(redfishConfig(), HostOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fp := redfish.Fingerprint(h.RedfishCert.Raw)
	if !strings.Contains(logs.String(), "cert_sha256="+fp) {
		t.Errorf("fingerprint %s not in the log:\n%s", fp, logs.String())
	}
}

// TestRedfishPasswordCheck: the IPMI user table compares 20 bytes; a
// longer password sharing them, or one padded with NULs, must not pass.
func TestRedfishPasswordCheck(t *testing.T) {
	h, err := NewHost(redfishConfig(), HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rb := &redfishBackend{b: h.BMC}
	for _, tc := range []struct {
		user, pw string
		ok       bool
	}{
		{"admin", "pw-0123456", true},
		{"admin", "pw-0123456\x00", false},
		{"admin", "pw-012345", false},
		{"long", "01234567890123456789", true},
		{"long", "01234567890123456789x", false},
		{"nobody", "pw-0123456", false},
		{"", "", false},
	} {
		if _, ok := rb.Authenticate(tc.user, tc.pw); ok != tc.ok {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", tc.user, tc.pw, ok, tc.ok)
		}
	}
	a, ok := rb.Authenticate("long", "01234567890123456789")
	if !ok || a.Role != redfish.RoleReadOnly {
		t.Errorf("USER privilege gave %+v", a)
	}
}
