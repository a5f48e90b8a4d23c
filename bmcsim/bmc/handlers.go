package bmc

import (
	"context"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
)

// registerExtras adds the commands go-ipmi v0.9.1's reference BMC lacks but
// ipmitool and FreeIPMI users run every day.
func (b *BMC) registerExtras(r *handlers.Registry) {
	b.SEL.register(r)
	b.registerSOL(r)       // sol.go
	b.registerLANConfig(r) // lanconfig.go
	app := types.NetFnAppRequest
	r.RegisterFunc(types.Command{ID: 0x37, NetFn: app, Name: "Get System GUID"}, b.handleSystemGUID)
	r.RegisterFunc(types.Command{ID: 0x41, NetFn: app, Name: "Get Channel Access"}, handleGetChannelAccess)
	r.RegisterFunc(types.Command{ID: 0x42, NetFn: app, Name: "Get Channel Info"}, b.handleGetChannelInfo)
	r.RegisterFunc(types.Command{ID: 0x59, NetFn: app, Name: "Get System Info Parameters"}, b.handleSystemInfo)

	// Sensors, SDR repository, DCMI, boot options and chassis control,
	// the other standard commands: sdr.go, dcmi.go, bootopts.go, stdcmds.go.
	b.sdr = newSDRRepo(b)
	b.registerSDR(r)
	b.registerDCMI(r)
	b.boot = newBootOpts()
	b.registerBootOptions(r)
	b.registerStd(r)
}

// handleSystemInfo answers Get System Info Parameters (App 59h, §22.14a):
// the system name is the BMC's name; firmware and OS names describe the lab.
func (b *BMC) handleSystemInfo(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 4 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	const rev = 0x11
	if req[0]&0x80 != 0 {
		return []byte{rev}, types.CodeOK, nil
	}
	var str string
	switch req[1] {
	case 0x00: // set in progress
		return []byte{rev, 0x00}, types.CodeOK, nil
	case 0x01:
		str = "ooblab bmcsim"
	case 0x02:
		str = b.Config.Name
	case 0x03, 0x04:
		str = "Linux"
	default:
		return nil, types.CodeParameterNotSupported, nil
	}
	set := int(req[2])
	// Set 0 carries encoding and length, then 14 bytes; later sets 16 each.
	block := make([]byte, 16)
	if set == 0 {
		block[0], block[1] = 0x00, byte(len(str)) // ASCII+Latin1
		copy(block[2:], str)
	} else if off := 14 + (set-1)*16; off < len(str) {
		copy(block, str[off:])
	} else {
		return nil, types.CodeParameterOutOfRange, nil
	}
	return append([]byte{rev, byte(set)}, block...), types.CodeOK, nil
}

func (b *BMC) handleSystemGUID(_ context.Context, hctx *handlers.HandlerContext, _ []byte) ([]byte, types.CompletionCode, error) {
	g := hctx.BMC.GUID
	return append([]byte(nil), g[:]...), types.CodeOK, nil
}

// handleGetChannelAccess answers Get Channel Access (App 41h, §22.23) from
// the channel store: access mode, per-message and user-level authentication,
// PEF alerting and the privilege limit.
func handleGetChannelAccess(_ context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 2 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	n := req[0] & 0x0F
	if n == 0x0E && hctx.Channel != nil {
		n = hctx.Channel.Number
	}
	switch req[1] >> 6 {
	case 0x01, 0x02: // non-volatile, volatile
	default:
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	ch, err := hctx.BMC.Channels.Get(n)
	if err != nil {
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	if ch.Medium == ipmibmc.ChannelMediumSystemIF {
		// Session-less channels have no access settings (§22.23 note).
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	var b1 byte = byte(ch.AccessMode) & 0x07
	if !ch.PEFAlerts {
		b1 |= 0x20
	}
	if !ch.PerMessageAuth {
		b1 |= 0x10
	}
	if !ch.UserLevelAuth {
		b1 |= 0x08
	}
	return []byte{b1, byte(ch.MaxPrivilege) & 0x0F}, types.CodeOK, nil
}

// handleGetChannelInfo wraps go-ipmi's Get Channel Info. For a channel
// number that is not implemented go-ipmi answers CCh with no data, and
// FreeIPMI 1.6's bmc-info (which walks channels 0–0Bh) then prints
// uninitialized records; bmcsim answers such channels with medium type
// "reserved", which every client skips as "no channel here".
func (b *BMC) handleGetChannelInfo(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	n := req[0] & 0x0F
	if n == 0x0E && hctx.Channel != nil {
		n = hctx.Channel.Number
	}
	if _, err := hctx.BMC.Channels.Get(n); err != nil && n != 0x0E {
		return []byte{n, 0, 0, 0, 0xF2, 0x1B, 0x00, 0, 0}, types.CodeOK, nil
	}
	return b.stdChannelInfo.Handle(ctx, hctx, req)
}
