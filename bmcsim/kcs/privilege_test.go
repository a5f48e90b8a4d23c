package kcs

import (
	"context"
	"net"
	"testing"

	"github.com/bougou/go-ipmi/pkg/bmc"

	"github.com/ooblab/ooblab/internal/testutil"

	"github.com/ooblab/ooblab/internal/vmcodec"
)

// TestSystemInterfaceAdminCommands: by default the host's system interface
// cannot set a LAN user's password or name, change access, or clear the
// SEL (0xD4), and the user's password stays; what hvagent uses still
// works. With WithAdminCommands(true) the password is set.
func TestSystemInterfaceAdminCommands(t *testing.T) {
	// What hvagent sends is never refused: the OEM queue commands, Add SEL
	// Entry (alerts), Get Device ID, the message queue.
	for _, c := range [][2]uint8{{0x2e, 0x01}, {0x2e, 0x02}, {0x2e, 0x03}, {0x2e, 0x05}, {0x2e, 0x07},
		{0x0a, 0x44}, {0x0a, 0x40}, {0x06, 0x01}, {0x06, 0x33}, {0x06, 0x34}, {0x06, 0x35}} {
		if AdminCommand(c[0], c[1]) {
			t.Errorf("netfn %#02x cmd %#02x (hvagent uses it) is an admin command", c[0], c[1])
		}
	}
	pw16 := func(s string) []byte { b := make([]byte, 16); copy(b, s); return b }
	setPassword := append([]byte{0x02, 0x02}, pw16("host-chose-this")...) // user 2, set password
	for _, tt := range []struct {
		name  string
		admin bool
		netfn uint8
		cmd   uint8
		data  []byte
		want  uint8 // completion code
	}{
		{"Set User Password", false, 0x06, 0x47, setPassword, 0xd4},
		{"Set User Name", false, 0x06, 0x45, append([]byte{0x03}, pw16("evil")...), 0xd4},
		{"Set User Access", false, 0x06, 0x43, []byte{0x81, 0x02, 0x0f, 0x00}, 0xd4},
		{"Set Channel Access", false, 0x06, 0x40, []byte{0x01, 0x42, 0x44}, 0xd4},
		{"Set LAN Configuration Parameters", false, 0x0c, 0x01, []byte{0x01, 0x03, 10, 0, 0, 9}, 0xd4},
		{"Set SOL Configuration Parameters", false, 0x0c, 0x21, []byte{0x01, 0x02, 0x01}, 0xd4},
		{"Clear SEL", false, 0x0a, 0x47, []byte{0x00, 0x00, 'C', 'L', 'R', 0xaa}, 0xd4},
		{"Delete SEL Entry", false, 0x0a, 0x46, []byte{0x00, 0x00, 0x01, 0x00}, 0xd4},
		{"Get Device ID", false, 0x06, 0x01, nil, 0x00},
		{"Set User Password, system_interface_admin", true, 0x06, 0x47, setPassword, 0x00},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBMC()
			if _, err := b.Users.Add(2, "vms"); err != nil {
				t.Fatal(err)
			}
			_ = b.Users.Update(2, func(u *bmc.User) error { u.SetPassword([]byte("vms-password")); u.Enabled = true; return nil })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := New(b, nil, testutil.Logger(t), WithAdminCommands(tt.admin))
			testutil.Serve(t, "Serve", func(ctx context.Context) error { return s.Serve(ctx, ln) })
			q := dialRaw(t, ln.Addr().String())
			q.expect("hello", "ff 01")
			q.send(testutil.Hex(vmcodec.AppendMessage(nil, 7, tt.netfn<<2, tt.cmd, tt.data)))
			f := q.next()
			if f.NetFn() != tt.netfn|1 || f.Cmd() != tt.cmd || len(f.Data()) == 0 {
				t.Fatalf("answer %x", f.Raw)
			}
			if cc := f.Data()[0]; cc != tt.want {
				t.Errorf("completion code %#02x, want %#02x", cc, tt.want)
			}
			u, err := b.Users.Get(2)
			if err != nil {
				t.Fatal(err)
			}
			if changed := !u.VerifyPassword([]byte("vms-password")); changed != (tt.admin && tt.want == 0) {
				t.Errorf("password changed: %v", changed)
			}
		})
	}
}
