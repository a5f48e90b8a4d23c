package fileio

import (
	"errors"
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

// WriteFile replaces a symbolic link at path; the file it points to is
// left alone.
func TestWriteFileDoesNotFollowLinks(t *testing.T) {
	dir := t.TempDir()
	target, link := filepath.Join(dir, "target"), filepath.Join(dir, "link")
	os.WriteFile(target, []byte("keep"), 0o644)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(link, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("target written: %q", b)
	}
	if st, err := os.Lstat(link); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Fatalf("link not replaced by a 0600 file: %v %v", st.Mode(), err)
	}
}

// ReadSecret refuses what is not a regular file, and names the fix for a
// loose mode.
func TestReadSecretRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadSecret(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a folder: %v", err)
	}
	p := filepath.Join(dir, "s")
	os.WriteFile(p, []byte("x"), 0o640)
	os.Chmod(p, 0o640)
	if _, err := ReadSecret(p); !errors.Is(err, ErrLooseMode) || !strings.Contains(err.Error(), "chmod 600 "+p) {
		t.Fatalf("0640: %v", err)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"vms", "ops", "h1", "db-h1.prod", "A_b"} {
		if err := CheckName("x", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "../x", "a/b", `a\b`, ".hidden", "-flag", "a b", "a@b", "é", strings.Repeat("a", 65), "a\x00"} {
		if err := CheckName("x", bad); !errors.Is(err, ErrBadName) {
			t.Errorf("%q accepted", bad)
		}
	}
}
