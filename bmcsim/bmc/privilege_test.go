package bmc

import (
	"testing"

	"github.com/bougou/go-ipmi/pkg/types"
)

// TestSOLPrivilege: Activate Payload (SOL) at USER or OPERATOR privilege is
// answered 0xD4 (insufficient privilege) under the default sol_privilege
// (administrator): the host's serial console is a root login prompt. An
// ADMINISTRATOR session gets past the check (here to 0x81: no serial
// port is attached). sol_privilege "operator" lets an operator through.
func TestSOLPrivilege(t *testing.T) {
	activate := []byte{0x01, 0x01, 0xC0, 0x00, 0x00, 0x00} // SOL, instance 1, encrypted+authenticated
	for _, tt := range []struct {
		solPriv    string
		user, pass string
		priv       types.PrivilegeLevel
		refused    bool
	}{
		{"", "viewer", "s3cret-view", types.PrivilegeLevelUser, true},
		{"", "op", "s3cret-op", types.PrivilegeLevelOperator, true},
		{"", "admin", "s3cret-admin", types.PrivilegeLevelAdministrator, false},
		{"operator", "viewer", "s3cret-view", types.PrivilegeLevelUser, true},
		{"operator", "op", "s3cret-op", types.PrivilegeLevelOperator, false},
	} {
		t.Run(tt.user+"/sol_privilege="+tt.solPriv, func(t *testing.T) {
			cfg := testConfig()
			cfg.Serial = "127.0.0.1:0" // a console slot, with no port attached
			cfg.SOLPrivilege = tt.solPriv
			l := startLAN(t, cfg)
			c := dialConsole(t, "127.0.0.1", l.port, 0x500)
			c.login(tt.user, tt.pass, tt.priv)
			cc, _, err := c.do(0x06, 0x48, activate)
			if err != nil {
				t.Fatal(err)
			}
			if (cc == 0xD4) != tt.refused {
				t.Errorf("Activate Payload (SOL) as %s: completion code %#02x, refused want %v", tt.user, cc, tt.refused)
			}
		})
	}
}

// TestSessionPrivilegeIsTheLogins: a USER account that names no maximum
// privilege in Open Session (go-ipmi reads that as ADMINISTRATOR) and USER
// in RAKP 1 runs at USER: administrator commands are answered 0xD4, and Set
// Session Privilege cannot raise it (go-ipmi v0.9.1 ran such a session at
// ADMINISTRATOR).
func TestSessionPrivilegeIsTheLogins(t *testing.T) {
	l := startLAN(t, testConfig())
	c := dialConsole(t, "127.0.0.1", l.port, 0x600)
	c.login("viewer", "s3cret-view", types.PrivilegeLevelUser)
	pw := make([]byte, 16)
	copy(pw, "taken-over")
	for _, tt := range []struct {
		what      string
		netFn     uint8
		cmd       uint8
		data      []byte
		wantNotOK bool
	}{
		{"Set Session Privilege ADMINISTRATOR", 0x06, 0x3B, []byte{0x04}, true},
		{"Set User Password of admin", 0x06, 0x47, append([]byte{0x02, 0x02}, pw...), true},
		{"Chassis Control power off", 0x00, 0x02, []byte{0x00}, true},
		{"Get Device ID", 0x06, 0x01, nil, false},
	} {
		cc, _, err := c.do(tt.netFn, tt.cmd, tt.data)
		if err != nil {
			t.Fatalf("%s: %v", tt.what, err)
		}
		if (cc != 0) != tt.wantNotOK {
			t.Errorf("%s as a USER: completion code %#02x", tt.what, cc)
		}
	}
	if u, err := l.IPMI.Users.Get(2); err != nil || !u.VerifyPassword([]byte("s3cret-admin")) {
		t.Errorf("admin's password changed by a USER session (%v)", err)
	}
}
