package ctl

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/fileio"
)

// TestLabBMCUsers: the lab's bmcsim.toml gives each BMC the VMS's account at
// OPERATOR (the least privilege the queues work with), not administrator,
// and an administrator account for the serial console; the inventory's
// OOB-I user is the operator one and its console user the administrator.
func TestLabBMCUsers(t *testing.T) {
	dir := t.TempDir()
	hs := HostState{Name: "h1", BMCLAN: "127.0.0.1:6230", BMCKCS: "127.0.0.1:6330", BMCSerial: "127.0.0.1:6430",
		BMCRedfish: "127.0.0.1:6630", RunDir: filepath.Join(dir, "h1", "qemu")}
	path := filepath.Join(dir, "bmcsim.toml")
	if err := os.WriteFile(path, []byte(hostBMCConfig(hs, filepath.Join(dir, "h1"))), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.BMCs) != 1 {
		t.Fatalf("%d BMCs", len(f.BMCs))
	}
	privs := map[string]string{}
	for _, u := range f.BMCs[0].Users {
		privs[u.Name] = u.Privilege
		if u.Password != "" || u.PasswordFile != filepath.Join(dir, "h1", "bmc-"+u.Name+".password") {
			t.Errorf("user %s: password %q, file %q", u.Name, u.Password, u.PasswordFile)
		}
	}
	inv := inventoryBMC(hs)
	if got := privs[inv.User]; got != "operator" {
		t.Errorf("the inventory's BMC user %q is %q on the BMC, want operator", inv.User, got)
	}
	if got := privs[inv.ConsoleUser]; got != "administrator" {
		t.Errorf("the inventory's console user %q is %q on the BMC, want administrator", inv.ConsoleUser, got)
	}
	if inv.PasswordFile != filepath.Join("h1", "bmc-vms.password") || inv.ConsolePasswordFile != filepath.Join("h1", "bmc-admin.password") {
		t.Errorf("inventory password files %q, %q", inv.PasswordFile, inv.ConsolePasswordFile)
	}
	if c := f.BMCs[0]; c.Redfish != hs.BMCRedfish || c.RedfishCert != filepath.Join(dir, "h1", "redfish.pem") || c.RedfishKey != filepath.Join(dir, "h1", "redfish.key") {
		t.Errorf("redfish %q cert %q key %q", c.Redfish, c.RedfishCert, c.RedfishKey)
	}
	if inv.Redfish != "https://127.0.0.1:6630" || inv.RedfishCAFile != filepath.Join("tls", "ca.pem") {
		t.Errorf("inventory redfish %q, CA %q", inv.Redfish, inv.RedfishCAFile)
	}
	if f.BMCs[0].SOLPrivilege != "" || f.BMCs[0].SystemInterfaceAdmin {
		t.Errorf("the lab weakens a bmcsim default: sol_privilege %q, system_interface_admin %v", f.BMCs[0].SOLPrivilege, f.BMCs[0].SystemInterfaceAdmin)
	}
}

// TestLabRedfishCert: the BMC's Redfish certificate chains to the lab CA
// for 127.0.0.1 and the host's name, and its key is private.
func TestLabRedfishCert(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := labCA(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	if err := redfishCert(ca, dir, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := fileio.ReadSecret(filepath.Join(dir, "redfish.key")); err != nil {
		t.Errorf("key file: %v", err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "redfish.pem"), filepath.Join(dir, "redfish.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	caPEM, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, name := range []string{"127.0.0.1", "h1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
}
