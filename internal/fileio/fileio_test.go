package fileio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/internal/inventory"
)

// WriteFile replaces a file that had a looser mode with the mode asked for,
// leaves no temporary file behind, and ReadSecret refuses a file others can
// read.
func TestWriteFileAndReadSecret(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecret(p); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("ReadSecret of a 0644 file: %v", err)
	}
	if err := WriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode after WriteFile: %v %v", st.Mode(), err)
	}
	if b, err := ReadSecret(p); err != nil || string(b) != "new" {
		t.Fatalf("ReadSecret: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
		t.Fatalf("%d files in the folder, want 1 (no temporary left)", len(ents))
	}
}

func TestInventoryRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "inventory.json")
	in := &inventory.Inventory{Principal: "vms", Hosts: []inventory.Host{{Name: "h1", HostID: "hv1",
		BMC: inventory.BMC{Addr: "127.0.0.1:6230", User: "admin", PasswordFile: "pw"}}}}
	if err := SaveInventory(in, p); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("inventory mode %v", st.Mode())
	}
	out, err := LoadInventory(p)
	if err != nil {
		t.Fatal(err)
	}
	if out.Dir != filepath.Dir(p) || out.Hosts[0].BMC.CipherSuite != 17 || out.Path("pw") != filepath.Join(out.Dir, "pw") {
		t.Fatalf("loaded %+v", out)
	}
}
