package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/internal/fileio"
)

// testdata copies testdata/ to a temporary folder with mode 0600 (git
// keeps 0644, which a secret file may not have).
func testdata(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("testdata", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func load(t *testing.T) *Policy {
	t.Helper()
	p, err := Load(filepath.Join(testdata(t), "authz.toml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

func TestDecide(t *testing.T) {
	p := load(t)
	tests := []struct {
		principal, action, vm string
		want                  Effect
		user                  string
		reason                string // substring
	}{
		{"vms1", "start", "web1", Allow, "", ""},
		{"vms1", "destroy", "anything", Allow, "", ""},
		{"vms1", "status", "db-main", Allow, "", ""}, // read-only: no challenge
		{"vms1", "list", "", Allow, "", ""},
		{"vms1", "shutdown", "db-main", NeedChallenge, "alice", "protected"},
		{"vms1", "resume", "prod-web1", NeedChallenge, "alice", "protected"},
		{"ops", "start", "web7", Allow, "", ""},
		{"ops", "reboot", "prod-web1", NeedChallenge, "bob", "protected"},
		{"ops", "destroy", "web7", Deny, "", "no rule"},
		{"ops", "start", "db-main", Deny, "", "no rule"},
		{"ops", "start", "webserver/x", Deny, "", "no rule"}, // * does not cross /
		{"ops", "status", "db-main", Allow, "", ""},
		{"monitor", "list", "", Allow, "", ""},
		{"monitor", "ping", "", Allow, "", ""},
		{"monitor", "start", "web1", Deny, "", "no rule"},
		{"mallory", "status", "web1", Deny, "", "unknown principal"},
		{"mallory", "start", "web1", Deny, "", "unknown principal"},
		{"", "list", "", Deny, "", "unknown principal"},
		{"vms1", "format-disk", "web1", Deny, "", "unknown action"},
	}
	for _, tt := range tests {
		d := p.Decide(tt.principal, tt.action, tt.vm)
		if d.Effect != tt.want || d.User != tt.user || !strings.Contains(d.Reason, tt.reason) {
			t.Errorf("Decide(%q, %q, %q) = %+v, want %v user %q reason ~%q",
				tt.principal, tt.action, tt.vm, d, tt.want, tt.user, tt.reason)
		}
	}
}

func TestReadOnlyNotDefault(t *testing.T) {
	p, err := Parse([]byte(`
[principals.monitor]
[principals.reader]
[[principals.reader.rules]]
actions = ["status", "list"]
vms = ["web*"]
`), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		principal, action, vm string
		want                  Effect
	}{
		{"monitor", "list", "", Deny},
		{"monitor", "status", "web1", Deny},
		{"reader", "list", "", Allow},
		{"reader", "status", "web1", Allow},
		{"reader", "status", "db1", Deny},
		{"reader", "ping", "", Deny},
	} {
		if d := p.Decide(tt.principal, tt.action, tt.vm); d.Effect != tt.want {
			t.Errorf("Decide(%q, %q, %q) = %v, want %v", tt.principal, tt.action, tt.vm, d, tt.want)
		}
	}
}

func TestProtectedWithoutUserDenies(t *testing.T) {
	p, err := Parse([]byte(`
protected = ["db*"]
[principals.anon]
[[principals.anon.rules]]
actions = ["*"]
vms = ["*"]
`), ".")
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decide("anon", "start", "db1")
	if d.Effect != Deny || !strings.Contains(d.Reason, "no registered user") {
		t.Fatalf("Decide = %+v", d)
	}
	if d := p.Decide("anon", "start", "web1"); d.Effect != Allow {
		t.Fatalf("Decide(unprotected) = %+v", d)
	}
}

func TestUsers(t *testing.T) {
	p := load(t)
	a, ok := p.User("alice")
	if !ok || string(a.Secret) != "Hello!\xde\xad\xbe\xefHello!\xde\xad\xbe\xef" || !a.Alerts {
		t.Fatalf("alice = %+v", a)
	}
	b, ok := p.UserOf("ops")
	if !ok || b.Name != "bob" || string(b.Secret) != "12345678901234567890" || b.Alerts {
		t.Fatalf("UserOf(ops) = %+v", b)
	}
	if _, ok := p.UserOf("monitor"); ok {
		t.Fatal("monitor has no user")
	}
	if got := p.AlertUsers(); len(got) != 1 || got[0] != "alice" {
		t.Fatalf("AlertUsers = %v", got)
	}
	if !p.Protected("prod-db") || p.Protected("web1") || !p.KnownPrincipal("monitor") || p.KnownPrincipal("x") {
		t.Fatal("Protected/KnownPrincipal")
	}
}

func TestParseErrors(t *testing.T) {
	dir := testdata(t)
	for _, tt := range []struct{ name, text, want string }{
		{"bad glob", "protected = [\"[\"]", "bad pattern"},
		{"unknown key", "read_only = true", "unknown keys"},
		{"unknown action", "[principals.a]\n[[principals.a.rules]]\nactions=[\"nuke\"]\nvms=[\"*\"]", "unknown action"},
		{"empty rule", "[principals.a]\n[[principals.a.rules]]\nactions=[\"start\"]", "needs actions and vms"},
		{"unregistered user", "[principals.a]\nuser = \"zed\"", "not registered"},
		{"no secret", "[users.u]\nalerts = true", "no totp_uri"},
		{"both modes", "[users.u]\ntotp_secret_file = \"alice.totp\"\napproval_keys = [\"" + testPub + "\"]", "not both"},
		{"group and all", "[groups]\na = [\"h1\"]\n[users.u]\ntotp_secret_file = \"alice.totp\"\ntotp_group_files = { a = \"alice.totp\" }", "not both"},
		{"unknown group", "[users.u]\ntotp_group_files = { a = \"alice.totp\" }", "no host group \"a\""},
		{"bad group name", "[groups]\n\"../x\" = [\"h1\"]", "host group"},
		{"bad approval key", "[users.u]\napproval_keys = [\"ed25519:xx\"]", "approval key 1"},
		{"short secret", "[users.u]\ntotp_uri = \"otpauth://totp/x?secret=GEZDG\"", "at least 10"},
		{"missing file", "[users.u]\ntotp_secret_file = \"nope.totp\"", "no such file"},
	} {
		_, err := Parse([]byte(tt.text), dir)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want ~%q", tt.name, err, tt.want)
		}
	}
}

func TestKeys(t *testing.T) {
	k1 := "ed25519:" + strings.Repeat("A", 43) + "="
	k2 := "ed25519:" + strings.Repeat("B", 42) + "A="
	p, err := Parse([]byte(`
[principals.vms]
keys = ["`+k1+`", "`+k2+`"]
[principals.monitor]
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Keys("vms"); len(got) != 2 || got[0][0] != 0 || got[1][0] != 0x04 {
		t.Fatalf("vms keys %v", got)
	}
	if got := p.Keys("monitor"); got != nil {
		t.Fatalf("monitor has keys %v", got)
	}
	for _, tt := range []struct{ text, want string }{
		{`[principals.a]` + "\n" + `keys = ["ssh-ed25519 AAAA"]`, "malformed key"},
		{`[principals.a]` + "\n" + `keys = ["` + k1 + `"]` + "\n" + `[principals.b]` + "\n" + `keys = ["` + k1 + `"]`, "also registered"},
		{`[principals.a]` + "\n" + `keys = ["` + k1 + `", "` + k1 + `"]`, "also registered"},
		{`[principals.a]` + "\n" + `keys = ["` + k1 + `","` + k2 + `","` + k1 + `","` + k2 + `","` + k1 + `"]`, "at most"},
	} {
		if _, err := Parse([]byte(tt.text), t.TempDir()); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err %v, want ~%q", tt.text, err, tt.want)
		}
	}
}

const testPub = "ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="

// writeSecret writes a secret file with mode.
func writeSecret(t *testing.T, dir, name, text string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

const groupPolicy = `
protected = ["db*"]
[groups]
prod = ["db-h*"]
lab = ["h1", "h2"]
[users.ops]
totp_group_files = { prod = "ops@prod.totp", lab = "ops@lab.totp" }
[users.carol]
approval_keys = ["` + testPub + `"]
[principals.vms]
user = "ops"
[[principals.vms.rules]]
actions = ["*"]
vms = ["*"]
[principals.auto]
user = "carol"
[[principals.auto.rules]]
actions = ["*"]
vms = ["*"]
`

// A host reads only its own group's TOTP key: a host of group lab never
// holds prod's, and a host in no group (default) holds neither and denies
// protected changes it cannot have answered.
func TestGroups(t *testing.T) {
	dir := t.TempDir()
	writeSecret(t, dir, "ops@prod.totp", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n", 0o600) // "1234567890…"
	writeSecret(t, dir, "ops@lab.totp", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n", 0o600)  // "Hello!…"
	for _, tt := range []struct {
		host, group, secret string
	}{
		{"db-h1", "prod", "12345678901234567890"},
		{"h2", "lab", "Hello!\xde\xad\xbe\xefHello!\xde\xad\xbe\xef"},
		{"h9", DefaultGroup, ""},
		{"", DefaultGroup, ""},
	} {
		p, err := ParseFor([]byte(groupPolicy), dir, tt.host)
		if err != nil {
			t.Fatalf("%s: %v", tt.host, err)
		}
		u, _ := p.User("ops")
		if p.Group() != tt.group || string(u.Secret) != tt.secret {
			t.Errorf("%s: group %q secret %q, want %q %q", tt.host, p.Group(), u.Secret, tt.group, tt.secret)
		}
		d := p.Decide("vms", "start", "db1")
		if want := map[bool]Effect{true: NeedChallenge, false: Deny}[tt.secret != ""]; d.Effect != want {
			t.Errorf("%s: %v, want %v", tt.host, d, want)
		}
		if c, _ := p.User("carol"); len(c.ApprovalKeys) != 1 || c.Secret != nil || !c.CanAnswer() {
			t.Errorf("%s: carol %+v", tt.host, c)
		}
		if d := p.Decide("auto", "start", "db1"); d.Effect != NeedChallenge || d.User != "carol" {
			t.Errorf("%s: approval user: %v", tt.host, d)
		}
	}
	// A lab host's policy loads although prod's key file is absent there.
	os.Remove(filepath.Join(dir, "ops@prod.totp"))
	if _, err := ParseFor([]byte(groupPolicy), dir, "h1"); err != nil {
		t.Fatalf("prod's key read on a lab host: %v", err)
	}
	if _, err := ParseFor([]byte(groupPolicy+"[groups.x]\n"), dir, "h1"); err == nil {
		t.Fatal("[groups.x] as a table accepted")
	}
	if _, err := ParseFor([]byte(strings.Replace(groupPolicy, `lab = ["h1", "h2"]`, `lab = ["h1", "db-h1"]`, 1)), dir, "db-h1"); err == nil || !strings.Contains(err.Error(), "one group per host") {
		t.Fatalf("a host in two groups: %v", err)
	}
}

// A secret file (or a policy holding a totp_uri) that its group or others
// may read is refused with the mode and the fix.
func TestSecretMode(t *testing.T) {
	dir := t.TempDir()
	writeSecret(t, dir, "ops@lab.totp", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n", 0o644)
	_, err := ParseFor([]byte(groupPolicy), dir, "h1")
	if !errors.Is(err, fileio.ErrLooseMode) || !strings.Contains(err.Error(), "0644") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("0644 TOTP file: %v", err)
	}
	writeSecret(t, dir, "inline.toml", "[users.bob]\ntotp_uri = \"otpauth://totp/ooblab:bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ooblab\"\n", 0o640)
	if _, err := Load(filepath.Join(dir, "inline.toml")); !errors.Is(err, fileio.ErrLooseMode) {
		t.Fatalf("0640 policy with a totp_uri: %v", err)
	}
	os.Chmod(filepath.Join(dir, "inline.toml"), 0o600)
	if _, err := Load(filepath.Join(dir, "inline.toml")); err != nil {
		t.Fatal(err)
	}
}
