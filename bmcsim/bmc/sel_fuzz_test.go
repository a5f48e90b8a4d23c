package bmc

import (
	"context"
	"testing"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/testutil"
)

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
		hctx := &handlers.HandlerContext{Channel: &ipmibmc.Channel{Number: 0x0F, Medium: ipmibmc.ChannelMediumSystemIF}}
		_, cc, _ := r.Dispatch(context.Background(), hctx, uint8(types.NetFnStorageRequest), 0x40+cmd%0x20, data)
		if cc == types.CodeInsufficientPrivilege {
			t.Fatalf("privilege check stopped the fuzz input before the handler")
		}
		if len(s.Entries()) > 8 {
			t.Fatalf("SEL grew past its capacity")
		}
	})
}
