package sim

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/ooblab/ooblab/internal/testutil"
)

// nullConn is a PacketConn that swallows writes.
type nullConn struct{}

func (nullConn) ReadFrom([]byte) (int, net.Addr, error)    { return 0, nil, io.EOF }
func (nullConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }
func (nullConn) Close() error                              { return nil }

// FuzzLANGuard feeds arbitrary datagrams through the guard's parsers (RMCP+
// header, RAKP 1/3, in-session requests) and its view of outgoing packets:
// nothing may panic, whatever arrives on the BMC's UDP port.
func FuzzLANGuard(f *testing.F) {
	for _, seed := range []string{
		// RMCP presence ping
		"06 00 ff 06 00 00 11 be 80 00 00 00",
		// RMCP+ RAKP 1 for user "admin", session 0x11223344
		"06 00 ff 07 06 12 00 00 00 00 00 00 00 00 24 00 01 00 00 00 44 33 22 11 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 14 00 00 05 61 64 6d 69 6e",
		// RAKP 3 with an error status
		"06 00 ff 07 06 14 00 00 00 00 00 00 00 00 08 00 01 0f 00 00 44 33 22 11",
		// an in-session IPMI payload for an unknown session
		"06 00 ff 07 06 c0 44 33 22 11 05 00 00 00 10 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
		// RAKP 4 (outgoing) with status 0x0d
		"06 00 ff 07 06 15 00 00 00 00 00 00 00 00 08 00 01 0d 00 00 aa bb cc dd",
	} {
		f.Add(testutil.MustUnhex(seed))
	}
	cfg := testConfig()
	if err := cfg.Normalize(); err != nil {
		f.Fatal(err)
	}
	b, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		f.Fatal(err)
	}
	g := newLANGuard(nullConn{}, b.IPMI, &b.Config, b.metrics, slog.New(slog.DiscardHandler))
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 623}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		g.inspect(pkt, addr)
		g.observe(pkt)
		g.sweep()
	})
}

// FuzzSELHandlers sends arbitrary request data to every SEL command.
func FuzzSELHandlers(f *testing.F) {
	for _, seed := range []string{
		"", "00 00 00 00 00 ff", "01 00 43 4c 52 aa", "00 00 02 00 00 00 00 20 00 04 05 01 6f 00 ff ff",
		"01 00 ff ff 00 ff", "ff ff ff ff",
	} {
		f.Add(byte(0x43), testutil.MustUnhex(seed))
	}
	s := NewSEL(8)
	r := handlers.NewRegistry()
	s.register(r)
	f.Fuzz(func(t *testing.T, cmd byte, data []byte) {
		// The system interface runs at full privilege, so every handler runs.
		hctx := &handlers.HandlerContext{Channel: &bmc.Channel{Number: 0x0F, Medium: bmc.ChannelMediumSystemIF}}
		_, cc, _ := r.Dispatch(context.Background(), hctx, uint8(types.NetFnStorageRequest), 0x40+cmd%0x20, data)
		if cc == types.CodeInsufficientPrivilege {
			t.Fatalf("privilege check stopped the fuzz input before the handler")
		}
		if len(s.Entries()) > 8 {
			t.Fatalf("SEL grew past its capacity")
		}
	})
}
