package policy

import (
	"strings"
	"testing"
)

func load(t *testing.T) *Policy {
	t.Helper()
	p, err := Load("testdata/authz.toml")
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
	for _, tt := range []struct{ name, text, want string }{
		{"bad glob", "protected = [\"[\"]", "bad pattern"},
		{"unknown key", "read_only = true", "unknown keys"},
		{"unknown action", "[principals.a]\n[[principals.a.rules]]\nactions=[\"nuke\"]\nvms=[\"*\"]", "unknown action"},
		{"empty rule", "[principals.a]\n[[principals.a.rules]]\nactions=[\"start\"]", "needs actions and vms"},
		{"unregistered user", "[principals.a]\nuser = \"zed\"", "not registered"},
		{"no secret", "[users.u]\nalerts = true", "no totp_uri"},
		{"short secret", "[users.u]\ntotp_uri = \"otpauth://totp/x?secret=GEZDG\"", "at least 10"},
		{"missing file", "[users.u]\ntotp_secret_file = \"nope.totp\"", "no such file"},
	} {
		_, err := Parse([]byte(tt.text), "testdata")
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
