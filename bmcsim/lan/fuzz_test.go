package lan

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/metrics"
	"github.com/ooblab/ooblab/internal/testutil"
)

// nullConn is a PacketConn that swallows writes.
type nullConn struct{}

func (nullConn) ReadFrom([]byte) (int, net.Addr, error)    { return 0, nil, io.EOF }
func (nullConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }
func (nullConn) Close() error                              { return nil }

// FuzzLANGuard feeds arbitrary datagrams through the guard's parsers (RMCP+
// header, RAKP 1/3 in, RAKP 2/4 out, in-session requests) and its login
// book: nothing may panic, whatever arrives on the BMC's UDP port or goes
// out of it. With live set, a RAKP 1/3 or RAKP 2/4 names a session the BMC
// holds (its BMC ID and console ID are patched in), so that the handshake
// accounting runs; src picks the source address among four.
func FuzzLANGuard(f *testing.F) {
	for _, seed := range []struct {
		hex  string
		live bool
	}{
		// RMCP presence ping
		{"06 00 ff 06 00 00 11 be 80 00 00 00", false},
		// RMCP+ RAKP 1 for user "admin", session 0x11223344
		{"06 00 ff 07 06 12 00 00 00 00 00 00 00 00 24 00 01 00 00 00 44 33 22 11 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 14 00 00 05 61 64 6d 69 6e", true},
		// RAKP 1 for an unknown user "mallory"
		{"06 00 ff 07 06 12 00 00 00 00 00 00 00 00 26 00 01 00 00 00 44 33 22 11 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 14 00 00 07 6d 61 6c 6c 6f 72 79", true},
		// RAKP 1 whose name length runs past the payload
		{"06 00 ff 07 06 12 00 00 00 00 00 00 00 00 1c 00 01 00 00 00 44 33 22 11 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 14 00 00 11", true},
		// RAKP 3 with an error status
		{"06 00 ff 07 06 14 00 00 00 00 00 00 00 00 08 00 01 0f 00 00 44 33 22 11", true},
		// RAKP 3 with status 0 and a 16-byte code
		{"06 00 ff 07 06 14 00 00 00 00 00 00 00 00 18 00 01 00 00 00 44 33 22 11 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", true},
		// an in-session IPMI payload for an unknown session
		{"06 00 ff 07 06 c0 44 33 22 11 05 00 00 00 10 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", false},
		// RAKP 2 (outgoing) with status 0x0a, unauthorized role
		{"06 00 ff 07 06 13 00 00 00 00 00 00 00 00 08 00 01 0a 00 00 aa bb cc dd", true},
		// RAKP 4 (outgoing) with status 0x0d
		{"06 00 ff 07 06 15 00 00 00 00 00 00 00 00 08 00 01 0d 00 00 aa bb cc dd", true},
		// RAKP 4 (outgoing) with status 0
		{"06 00 ff 07 06 15 00 00 00 00 00 00 00 00 18 00 01 00 00 00 aa bb cc dd 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", true},
		// Open Session Request, suite 17, console ID 0xa0a1a2a3
		{"06 00 ff 07 06 10 00 00 00 00 00 00 00 00 20 00 01 04 00 00 a3 a2 a1 a0 00 00 00 08 03 00 00 00 01 00 00 08 04 00 00 00 02 00 00 08 01 00 00 00", false},
		// Open Session Response (outgoing), status 0, BMC session 0x11223344
		{"06 00 ff 07 06 11 00 00 00 00 00 00 00 00 24 00 01 00 04 00 a3 a2 a1 a0 44 33 22 11 00 00 00 08 03 00 00 00 01 00 00 08 04 00 00 00 02 00 00 08 01 00 00 00", false},
		// Open Session Response (outgoing), status 01h, truncated after the console ID
		{"06 00 ff 07 06 11 00 00 00 00 00 00 00 00 08 00 01 01 00 00 a3 a2 a1 a0", false},
	} {
		f.Add(testutil.MustUnhex(seed.hex), seed.live, uint8(0))
	}
	cfg := config.Config{Name: "t1", LAN: "127.0.0.1:0",
		Users: []config.User{{Name: "admin", Password: "s3cret-admin", Privilege: "administrator"}}}
	if err := cfg.Normalize(); err != nil {
		f.Fatal(err)
	}
	b := guardedBMC(f, cfg)
	m := metrics.New(nil)
	g := newTestGuard(b, &cfg, m)
	var live *bmc.Session
	var err error
	f.Fuzz(func(t *testing.T, pkt []byte, patch bool, src uint8) {
		addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1+src%4), Port: 623}
		if live == nil || !sessionHeld(b, live.BMCID) {
			live, err = b.Sessions.Allocate(0xa0a1a2a3, types.AuthAlg_HMAC_SHA256,
				types.IntegrityAlg_HMAC_SHA256_128, types.CryptAlg_AES_CBC_128, bmc.PrivilegeLevelAdministrator, 1)
			if err != nil {
				t.Fatalf("allocate a session: %v", err)
			}
		}
		pkt = bytes.Clone(pkt)
		if patch && IsRMCPPlus(pkt) && len(pkt) >= PayloadOffset+8 {
			switch pkt[5] & 0x3F {
			case PayloadRAKP1, PayloadRAKP3:
				binary.LittleEndian.PutUint32(pkt[PayloadOffset+4:], live.BMCID)
			case PayloadRAKP2, PayloadRAKP4:
				binary.LittleEndian.PutUint32(pkt[PayloadOffset+4:], live.ConsoleID)
			}
		}
		g.inspect(pkt, addr)
		g.observe(pkt, addr)
		// Sweep as if the auth timeout had passed: it ends what is pending.
		later := func() time.Time { return time.Now().Add(cfg.AuthTimeout.Duration + time.Second) }
		g.logins.now, g.slots.now = later, later
		g.Sweep()
		g.logins.now, g.slots.now = time.Now, time.Now
		g.logins.mu.Lock()
		n := len(g.logins.pending)
		g.logins.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d handshakes still pending after a sweep past the auth timeout", n)
		}
		g.slots.mu.Lock()
		defer g.slots.mu.Unlock()
		for ip, k := range g.slots.halfOpen {
			if k < 0 {
				t.Fatalf("half-open count of %s is %d", ip, k)
			}
		}
		if len(g.slots.opening) != 0 {
			t.Fatalf("%d Open Sessions still counted a second after they were passed", len(g.slots.opening))
		}
	})
}

// newTestGuard is a guard over b that writes nowhere, with fresh books,
// and wired like bmcsim's BMC: the store's removal hook tells the slots.
func newTestGuard(b *bmc.BMC, cfg *config.Config, m *metrics.Metrics) *Guard {
	books := Books{Logins: NewLogins(cfg), Slots: NewSlots(cfg), Replies: NewReplyCache(cfg.Name, m)}
	b.Sessions.SetOnRemove(books.Slots.Removed)
	return NewGuard(nullConn{}, b, cfg, m, books, slog.New(slog.DiscardHandler))
}

// FuzzBadPassword decodes LAN parameter 26 data (Set LAN Configuration
// Parameters from the network): whatever it accepts encodes back to the
// same bytes.
func FuzzBadPassword(f *testing.F) {
	for _, seed := range []string{"00 05 06 00 06 00", "01 03 0c 00 1e 00", "00 00 00 00 00 00", "01 ff ff ff ff ff", "02 05 06 00 06 00", "00 05 06 00 06", ""} {
		f.Add(testutil.MustUnhex(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeBadPassword(b)
		if err != nil {
			return
		}
		if got := EncodeBadPassword(p); !bytes.Equal(got, b) {
			t.Fatalf("% x decoded to %+v, encodes to % x", b, p, got)
		}
	})
}

// guardedBMC is the go-ipmi BMC a guard stands in front of, with cfg's
// users (what the guard asks of it: users by name, and sessions).
func guardedBMC(t testing.TB, cfg config.Config) *bmc.BMC {
	t.Helper()
	b := bmc.New(bmc.DeviceInfo{}, [16]byte{}, mock.New(), bmc.WithV15Disabled())
	for i, u := range cfg.Users {
		priv, _ := config.ParsePrivilege(u.Privilege)
		id := uint8(i + 2)
		if _, err := b.Users.Add(id, u.Name); err != nil {
			t.Fatal(err)
		}
		_ = b.Users.Update(id, func(x *bmc.User) error {
			x.SetPassword([]byte(u.Password))
			x.Enabled = true
			x.ChannelAccess[1] = bmc.UserChannelAccess{MaxPrivilege: priv, Enabled: true}
			return nil
		})
	}
	return b
}

func sessionHeld(b *bmc.BMC, id uint32) bool {
	_, err := b.Sessions.Get(id)
	return err == nil
}
