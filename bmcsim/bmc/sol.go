package bmc

// The hook points of Serial-over-LAN (bmcsim/sol). go-ipmi's server runs
// the SOL payload itself; the BMC only has to give it the serial console
// and set the SOL configuration parameters to ooblab's defaults.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/config"
)

// consoleSlot is the HAL console of a BMC with a serial port. go-ipmi reads
// the HAL's console once, when the BMC is built; the serial port (opened by
// bmcsim/app) is put in the slot afterwards.
type consoleSlot struct {
	c atomic.Pointer[hal.ConsoleHAL]
}

func (s *consoleSlot) Open(ctx context.Context) (hal.ConsoleConn, error) {
	c := s.c.Load()
	if c == nil {
		return nil, hal.ErrNotSupported // Activate Payload answers 81h
	}
	return (*c).Open(ctx)
}

// SetConsole gives the BMC its serial console (bmcsim/sol.Serial). Only a
// BMC configured with a serial address has a console slot.
func (s *BMC) SetConsole(c hal.ConsoleHAL) {
	if s.console != nil {
		s.console.c.Store(&c)
	}
}

// DeactivateSOL ends the active SOL session, if any (the idle timeout),
// with the deactivation notice, and ends its RMCP+ session (see
// endSOLOwner).
func (s *BMC) DeactivateSOL() {
	owner := s.IPMI.SOL.ActiveSessionID(1)
	s.IPMI.SOL.CloseAll()
	s.endSOLOwner(owner, "idle timeout")
}

// endSOLOwner ends the RMCP+ session whose SOL payload the BMC deactivated
// on its own account (idle timeout) or another session's (Deactivate
// Payload). The deactivation notice (SOL status bit 4) went out first, and
// FreeIPMI's ipmiconsole acts on it, but ipmitool 1.8.19 ignores it and
// would sit on a dead console, its Get Device ID keepalive still answered.
// So the session ends too, and the console gets an RMCP presence pong
// that names no IPMI support: ipmitool's SOL loop takes that for "the BMC
// closed the session" and exits at once ("SOL session closed by BMC");
// without it, it only noticed at its keepalive, ~65 s later (measured).
// Other consoles drop an unasked-for pong.
func (s *BMC) endSOLOwner(owner uint32, why string) {
	if owner == 0 {
		return
	}
	sess, err := s.IPMI.Sessions.Get(owner)
	if err != nil {
		return
	}
	addr := sess.GetAddr()
	if err := s.IPMI.Sessions.Close(owner); err != nil {
		return
	}
	s.log.Info("SOL deactivated; ended its RMCP+ session", "reason", why, "session", fmt.Sprintf("%#x", owner))
	if g := s.guard; g != nil && addr != nil {
		_, _ = g.PacketConn.WriteTo(sessionOverPong, addr)
	}
}

// sessionOverPong is an RMCP/ASF Presence Pong (DSP0136 §3.2.4.3): RMCP
// header (version 6, seq FFh, class ASF), ASF header (IANA 4542, type 40h,
// tag FFh, length 10h), IANA 4542, OEM 0, supported entities 01h (ASF 1.0,
// bit 7 "IPMI supported" clear), interactions 0, reserved.
var sessionOverPong = []byte{
	0x06, 0x00, 0xFF, 0x06,
	0x00, 0x00, 0x11, 0xBE, 0x40, 0xFF, 0x00, 0x10,
	0x00, 0x00, 0x11, 0xBE, 0x00, 0x00, 0x00, 0x00,
	0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
}

// solPayloadCmds holds go-ipmi's payload handlers, which keep their state
// in the BMC of each call's HandlerContext; registerSOL wraps one of them.
var solPayloadCmds = sync.OnceValue(func() *handlers.Registry {
	r := handlers.NewRegistry()
	handlers.RegisterPayloadHandlers(r)
	return r
})

// registerSOL wraps Deactivate Payload (App 49h): a session that
// deactivates another session's SOL payload ends that session too
// (endSOLOwner).
func (s *BMC) registerSOL(r *handlers.Registry) {
	c := types.CommandDeactivatePayload
	r.RegisterFunc(c, func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
		owner := s.IPMI.SOL.ActiveSessionID(1)
		resp, cc, err := solPayloadCmds().Dispatch(ctx, hctx, uint8(c.NetFn), c.ID, req)
		if err == nil && cc == types.CodeOK && hctx.Session != nil && owner != hctx.Session.BMCID {
			s.endSOLOwner(owner, "deactivated by another session")
		}
		return resp, cc, err
	})
}

// configureSOL sets SOL configuration parameter 2 (IPMI v2.0 Table 26-5):
// encryption and authentication forced (no plaintext SOL, whatever the
// console asks), and the least privilege that may activate the payload.
func configureSOL(b *ipmibmc.BMC, cfg *config.Config) error {
	priv, err := config.ParsePrivilege(cfg.SOLPrivilege)
	if err != nil {
		return fmt.Errorf("bmc %s: sol_privilege: %w", cfg.Name, err)
	}
	if cc := b.SOL.Config().SetParam(2, []byte{0x80 | 0x40 | uint8(priv)}); cc != types.CodeOK {
		return fmt.Errorf("bmc %s: SOL configuration: completion code %#x", cfg.Name, uint8(cc))
	}
	return nil
}
