package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/internal/fileio"
)

// --user takes the password from a file only: one in the flag itself
// (seen by anyone in the process list) is refused without being echoed.
func TestUserFlagNoPasswordInArgv(t *testing.T) {
	for _, s := range []string{"admin:hunter2", "admin:hunter2:operator", "admin:", "admin:@", "admin:@:operator"} {
		_, err := ParseUserFlag(s)
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "@FILE") {
			t.Errorf("%q: %v", s, err)
		}
	}
	u, err := ParseUserFlag("vms:@/etc/pw:operator")
	if err != nil || u.PasswordFile != "/etc/pw" || u.Password != "" || u.Privilege != "operator" {
		t.Fatalf("@FILE: %+v %v", u, err)
	}
	if u, err := ParseUserFlag("vms:@/etc/pw"); err != nil || u.Privilege != "administrator" {
		t.Fatalf("@FILE without privilege: %+v %v", u, err)
	}
}

// A password_file others may read is refused with the mode and the fix.
func TestPasswordFileMode(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	c := Config{Name: "h", LAN: "127.0.0.1:0", Users: []User{{Name: "vms", PasswordFile: pw}}, CipherSuites: []int{17}}
	if err := c.Normalize(); err != nil || c.Users[0].Password != "s3cret" {
		t.Fatalf("0600: %v %+v", err, c.Users)
	}
	os.Chmod(pw, 0o644)
	c = Config{Name: "h", LAN: "127.0.0.1:0", Users: []User{{Name: "vms", PasswordFile: pw}}, CipherSuites: []int{17}}
	if err := c.Normalize(); !errors.Is(err, fileio.ErrLooseMode) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("0644 password file: %v", err)
	}
}

// A config file that holds a password itself must be 0600 too.
func TestConfigWithPasswordMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bmcsim.toml")
	os.WriteFile(p, []byte("[[bmc]]\nname = \"h\"\nlan = \"127.0.0.1:0\"\n[[bmc.user]]\nname = \"a\"\npassword = \"pw\"\n"), 0o644)
	if _, err := LoadFile(p); !errors.Is(err, fileio.ErrLooseMode) {
		t.Fatalf("0644 config with a password: %v", err)
	}
	os.Chmod(p, 0o600)
	if _, err := LoadFile(p); err != nil {
		t.Fatal(err)
	}
}
