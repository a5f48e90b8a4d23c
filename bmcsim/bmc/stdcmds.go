package bmc

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
)

// The rest of the standard commands clients send (issue 23 item 5), each
// answered as IPMI v2.0 says: BMC resets that leave the host alone, ACPI
// power state, message flags and global enables over LAN, the event
// receiver, PEF (no filters, no actions), the POH counter, and user slots
// that add up (2–15 hold the configured users).

// MaxUsers is the number of user slots (1, the null user, and 2–15).
const MaxUsers = 15

// stdState is the small volatile state of these commands.
type stdState struct {
	mu            sync.Mutex
	eventReceiver [2]byte // slave address, LUN
	pefInProgress byte
	pef           [5]byte // parameters 0–4: set in progress, control, action global control, startup delay, alert startup delay
	lastSWEvent   uint16
	lastBMCEvent  uint16
	acpi          [2]byte // as last set by system software
	// Power-on hours: on-time accumulated up to pohAt.
	pohOn  time.Duration
	pohAt  time.Time
	pohWas bool
}

func (b *BMC) registerStd(r *handlers.Registry) {
	b.std = &stdState{eventReceiver: [2]byte{0x20, 0x00}, pohAt: time.Now(), pohWas: b.PowerOn()}
	b.std.pef[3], b.std.pef[4] = 60, 60 // startup delays (s), as shipped by most BMCs
	app, se, ch := types.NetFnAppRequest, types.NetFnSensorEventRequest, types.NetFnChassisRequest
	r.RegisterFunc(types.Command{ID: 0x02, NetFn: app, Name: "Cold Reset"}, b.handleBMCReset)
	r.RegisterFunc(types.Command{ID: 0x03, NetFn: app, Name: "Warm Reset"}, b.handleBMCReset)
	r.RegisterFunc(types.Command{ID: 0x06, NetFn: app, Name: "Set ACPI Power State"}, b.handleSetACPI)
	r.RegisterFunc(types.Command{ID: 0x07, NetFn: app, Name: "Get ACPI Power State"}, b.handleGetACPI)
	r.RegisterFunc(types.Command{ID: 0x2E, NetFn: app, Name: "Set BMC Global Enables"}, handleSetGlobalEnables)
	r.RegisterFunc(types.Command{ID: 0x2F, NetFn: app, Name: "Get BMC Global Enables"}, handleGetGlobalEnables)
	r.RegisterFunc(types.Command{ID: 0x30, NetFn: app, Name: "Clear Message Flags"}, handleClearMessageFlags)
	r.RegisterFunc(types.Command{ID: 0x31, NetFn: app, Name: "Get Message Flags"}, handleGetMessageFlags)
	r.RegisterFunc(types.Command{ID: 0x00, NetFn: se, Name: "Set Event Receiver"}, b.handleSetEventReceiver)
	r.RegisterFunc(types.Command{ID: 0x01, NetFn: se, Name: "Get Event Receiver"}, b.handleGetEventReceiver)
	r.RegisterFunc(types.Command{ID: 0x10, NetFn: se, Name: "Get PEF Capabilities"}, handlePEFCaps)
	r.RegisterFunc(types.Command{ID: 0x11, NetFn: se, Name: "Arm PEF Postpone Timer"}, handleArmPEF)
	r.RegisterFunc(types.Command{ID: 0x12, NetFn: se, Name: "Set PEF Configuration Parameters"}, b.handleSetPEF)
	r.RegisterFunc(types.Command{ID: 0x13, NetFn: se, Name: "Get PEF Configuration Parameters"}, b.handleGetPEF)
	r.RegisterFunc(types.Command{ID: 0x14, NetFn: se, Name: "Set Last Processed Event ID"}, b.handleSetLastEvent)
	r.RegisterFunc(types.Command{ID: 0x15, NetFn: se, Name: "Get Last Processed Event ID"}, b.handleGetLastEvent)
	r.RegisterFunc(types.Command{ID: 0x0F, NetFn: ch, Name: "Get POH Counter"}, b.handlePOH)

	users := stdUserRegistry()
	delegate := func(cmd uint8, idAt int) func(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
		return func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
			if len(req) > idAt && (req[idAt]&0x3F == 0 || req[idAt]&0x3F > MaxUsers) {
				return nil, types.CodeRequestDataFieldInvalid, nil
			}
			return users.Dispatch(ctx, hctx, uint8(app), cmd, req)
		}
	}
	r.RegisterFunc(types.Command{ID: 0x43, NetFn: app, Name: "Set User Access"}, delegate(0x43, 1))
	r.RegisterFunc(types.Command{ID: 0x44, NetFn: app, Name: "Get User Access"}, b.handleGetUserAccess(delegate(0x44, 1)))
	r.RegisterFunc(types.Command{ID: 0x45, NetFn: app, Name: "Set User Name"}, delegate(0x45, 0))
	r.RegisterFunc(types.Command{ID: 0x46, NetFn: app, Name: "Get User Name"}, b.handleGetUserName)
	r.RegisterFunc(types.Command{ID: 0x47, NetFn: app, Name: "Set User Password"}, delegate(0x47, 0))
}

// stdUserRegistry holds go-ipmi's user handlers, which keep no state of
// their own; bmcsim checks the slot number first.
var stdUserRegistry = sync.OnceValue(func() *handlers.Registry {
	r := handlers.NewRegistry()
	handlers.RegisterUserHandlers(r)
	return r
})

// handleGetUserAccess reports 15 user slots (go-ipmi: 63, while only 15
// exist), then the enabled count and the slot's access as go-ipmi does.
func (b *BMC) handleGetUserAccess(next func(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error)) func(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	return func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
		resp, cc, err := next(ctx, hctx, req)
		if cc == types.CodeOK && len(resp) >= 1 {
			resp[0] = resp[0]&0xC0 | MaxUsers
		}
		return resp, cc, err
	}
}

// handleGetUserName answers an empty slot with an empty name (16 zero
// bytes) as real BMCs do (go-ipmi: CCh, which ipmitool user list prints as
// an error).
func (b *BMC) handleGetUserName(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	id := req[0] & 0x3F
	if id == 0 || id > MaxUsers {
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	name := make([]byte, 16)
	if u, err := b.IPMI.Users.Get(id); err == nil && id != 1 {
		copy(name, u.Name)
	}
	return name, types.CodeOK, nil
}

// handleBMCReset answers Cold Reset and Warm Reset (App 02h/03h, §20.2–3):
// the BMC's volatile state returns to its power-up values (reservations,
// sets in progress, the event receiver, SOL's volatile parameters on a
// cold reset) and every RMCP+ session is dropped, after the answer went
// out; the SEL, users and boot flags are kept; the host is not touched
// (go-ipmi reset or shut down the host here).
func (b *BMC) handleBMCReset(_ context.Context, hctx *handlers.HandlerContext, _ []byte) ([]byte, types.CompletionCode, error) {
	cold := hctx != nil && hctx.Command.ID == 0x02
	b.SEL.mu.Lock()
	b.SEL.reservation = 0
	b.SEL.mu.Unlock()
	b.sdr.mu.Lock()
	b.sdr.resv = 0
	b.sdr.mu.Unlock()
	b.boot.mu.Lock()
	b.boot.inProgress, b.boot.params[0][0] = 0, 0
	b.boot.mu.Unlock()
	b.std.mu.Lock()
	b.std.eventReceiver = [2]byte{0x20, 0x00}
	b.std.pefInProgress, b.std.pef[0] = 0, 0
	b.std.mu.Unlock()
	if cold {
		b.IPMI.SOL.Config().ResetVolatile()
	}
	kind := "warm"
	if cold {
		kind = "cold"
	}
	b.log.Info("BMC reset: volatile state cleared, sessions dropped; SEL, users, boot flags and the host untouched", "kind", kind)
	if g := b.guard; g != nil {
		// Answered first (§20.2: the response may be sent before the
		// reset): the session that asked gets its completion code. The
		// sessions of the moment of the reset go; one opened after it
		// (the BMC is back) stays.
		ids := g.SessionIDs()
		time.AfterFunc(bmcResetDelay, func() { b.log.Info("BMC reset: sessions closed", "n", g.CloseSessions(ids)) })
	}
	return nil, types.CodeOK, nil
}

// bmcResetDelay is how long after answering a Cold/Warm Reset the BMC
// drops its sessions.
const bmcResetDelay = 200 * time.Millisecond

// ACPI power states (§20.6, Table 20-10).
const (
	acpiS0 = 0x00 // S0/G0 working
	acpiS5 = 0x05 // S5/G2 soft off
	acpiD0 = 0x00
)

func (b *BMC) handleSetACPI(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 2 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	b.std.mu.Lock()
	b.std.acpi = [2]byte{req[0], req[1]}
	b.std.mu.Unlock()
	return nil, types.CodeOK, nil
}

// handleGetACPI answers Get ACPI Power State from the chassis power state.
func (b *BMC) handleGetACPI(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	st := byte(acpiS5)
	if b.PowerOn() {
		st = acpiS0
	}
	return []byte{st, acpiD0}, types.CodeOK, nil
}

// Over LAN: the host's interrupt and message buffer settings live with the
// system interface (bmcsim/kcs answers these there); the LAN sees SEL
// logging enabled and no message flags.
func handleGetGlobalEnables(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	return []byte{0x08}, types.CodeOK, nil
}

func handleSetGlobalEnables(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	return nil, types.CodeOK, nil
}

func handleGetMessageFlags(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	return []byte{0x00}, types.CodeOK, nil
}

func handleClearMessageFlags(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	return nil, types.CodeOK, nil
}

func (b *BMC) handleSetEventReceiver(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 2 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	b.std.mu.Lock()
	b.std.eventReceiver = [2]byte{req[0], req[1] & 0x03}
	b.std.mu.Unlock()
	return nil, types.CodeOK, nil
}

func (b *BMC) handleGetEventReceiver(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	b.std.mu.Lock()
	defer b.std.mu.Unlock()
	return b.std.eventReceiver[:], types.CodeOK, nil
}

// handlePEFCaps answers Get PEF Capabilities (§30.1): PEF 1.5, no actions
// supported (bmcsim takes none), no event filter table entries.
func handlePEFCaps(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	return []byte{0x51, 0x00, 0x00}, types.CodeOK, nil
}

// handleArmPEF answers Arm PEF Postpone Timer: no timer runs (00h).
func handleArmPEF(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	return []byte{0x00}, types.CodeOK, nil
}

// PEF configuration parameters (§30.3, Table 30-6): 0–4 writable, 5
// (event filter entries) and 8 (alert policy entries) read as 0.
const (
	pefRevision                             = 0x11
	ccPEFNotSupported  types.CompletionCode = 0x80
	ccPEFSetInProgress types.CompletionCode = 0x81
	ccPEFReadOnlyParam types.CompletionCode = 0x82
)

func (b *BMC) handleSetPEF(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 2 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	p := req[0] & 0x7F
	switch {
	case p == 5 || p == 8:
		return nil, ccPEFReadOnlyParam, nil
	case p > 4:
		return nil, ccPEFNotSupported, nil
	case len(req) != 2:
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	b.std.mu.Lock()
	defer b.std.mu.Unlock()
	if p == 0 {
		switch req[1] & 0x03 {
		case 0x01:
			if b.std.pefInProgress == 0x01 {
				return nil, ccPEFSetInProgress, nil
			}
			b.std.pefInProgress = 0x01
		case 0x00, 0x02:
			b.std.pefInProgress = 0
		default:
			return nil, types.CodeRequestDataFieldInvalid, nil
		}
		b.std.pef[0] = b.std.pefInProgress
		return nil, types.CodeOK, nil
	}
	b.std.pef[p] = req[1]
	return nil, types.CodeOK, nil
}

func (b *BMC) handleGetPEF(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 3 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	p := req[0] & 0x7F
	if p > 8 || p == 6 || p == 7 {
		return nil, ccPEFNotSupported, nil
	}
	if req[0]&0x80 != 0 { // revision only
		return []byte{pefRevision}, types.CodeOK, nil
	}
	b.std.mu.Lock()
	defer b.std.mu.Unlock()
	if p <= 4 {
		return []byte{pefRevision, b.std.pef[p]}, types.CodeOK, nil
	}
	return []byte{pefRevision, 0x00}, types.CodeOK, nil // 5, 8: no entries
}

func (b *BMC) handleSetLastEvent(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 3 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	id := binary.LittleEndian.Uint16(req[1:3])
	b.std.mu.Lock()
	if req[0]&0x01 != 0 {
		b.std.lastBMCEvent = id
	} else {
		b.std.lastSWEvent = id
	}
	b.std.mu.Unlock()
	return nil, types.CodeOK, nil
}

// handleGetLastEvent answers Get Last Processed Event ID (§30.6): the SEL's
// most recent addition and last record, and the IDs last set.
func (b *BMC) handleGetLastEvent(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	b.SEL.mu.Lock()
	added := b.SEL.lastAdd
	last := uint16(0xFFFF)
	if n := len(b.SEL.entries); n > 0 {
		last = b.SEL.entries[n-1].id
	}
	b.SEL.mu.Unlock()
	b.std.mu.Lock()
	sw, bm := b.std.lastSWEvent, b.std.lastBMCEvent
	b.std.mu.Unlock()
	resp := binary.LittleEndian.AppendUint32(nil, added)
	resp = binary.LittleEndian.AppendUint16(resp, last)
	resp = binary.LittleEndian.AppendUint16(resp, sw)
	return binary.LittleEndian.AppendUint16(resp, bm), types.CodeOK, nil
}

// handlePOH answers Get POH Counter (§28.14): 60 minutes per count, the
// hours the host has been on while this BMC ran (sampled at each read and
// power change it sees).
func (b *BMC) handlePOH(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	on := b.PowerOn()
	s := b.std
	s.mu.Lock()
	now := time.Now()
	if s.pohWas {
		s.pohOn += now.Sub(s.pohAt)
	}
	s.pohAt, s.pohWas = now, on
	hours := uint32(s.pohOn / time.Hour)
	s.mu.Unlock()
	return binary.LittleEndian.AppendUint32([]byte{60}, hours), types.CodeOK, nil
}
