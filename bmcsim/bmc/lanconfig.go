package bmc

import (
	"context"
	"sync"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/lan"
)

// Get and Set LAN Configuration Parameters (Transport 02h and 01h, IPMI
// v2.0 §23.1–23.2) for parameter 26, Bad Password Threshold, the LAN
// channel's login policy (bmcsim/lan/lanparams.go): `ipmitool lan print`
// shows it and `ipmitool lan set <ch> bad_pass_thresh …` sets it. Every
// other Get goes to go-ipmi's handler; every other Set is "parameter not
// supported" (80h), as before.

const (
	lanParamRevision = 0x11
	ccParamNotSupp   = types.CompletionCode(0x80)
)

// stdTransportRegistry holds go-ipmi's own Transport handlers (stateless,
// shared by every BMC of the process, like stdAppRegistry).
var stdTransportRegistry = sync.OnceValue(func() *handlers.Registry {
	r := handlers.NewRegistry()
	handlers.RegisterTransportHandlers(r)
	return r
})

func (b *BMC) registerLANConfig(r *handlers.Registry) {
	r.RegisterFunc(types.CommandGetLanConfigParam, b.handleGetLANConfig)
	r.RegisterFunc(types.CommandSetLanConfigParam, b.handleSetLANConfig)
}

func (b *BMC) handleGetLANConfig(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 2 || req[1] != lan.ParamBadPassword {
		return stdTransportRegistry().Dispatch(ctx, hctx, uint8(types.NetFnTransportRequest), 0x02, req)
	}
	if len(req) < 4 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	if !lanChannel(hctx, req[0]&0x0F) {
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	if req[0]&0x80 != 0 {
		return []byte{lanParamRevision}, types.CodeOK, nil
	}
	return append([]byte{lanParamRevision}, lan.EncodeBadPassword(b.books.Logins.Policy())...), types.CodeOK, nil
}

// handleSetLANConfig sets parameter 26 from an administrator's LAN
// session. The system interface may not: a process on the host must not
// loosen the LAN channel's defence against password guessing.
func (b *BMC) handleSetLANConfig(_ context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 2 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	if hctx == nil || hctx.Session == nil || hctx.Session.PrivilegeLevel < ipmibmc.PrivilegeLevelAdministrator {
		return nil, types.CodeInsufficientPrivilege, nil
	}
	if !lanChannel(hctx, req[0]&0x0F) {
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	if req[1] != lan.ParamBadPassword {
		return nil, ccParamNotSupp, nil
	}
	p, err := lan.DecodeBadPassword(req[2:])
	if err != nil {
		if len(req[2:]) < 6 {
			return nil, types.CodeRequestDataLengthInvalid, nil
		}
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	b.books.Logins.SetPolicy(p)
	b.log.Info("LAN bad password threshold set", "threshold", p.Threshold,
		"attempt_reset_interval", p.Reset.String(), "user_lockout_interval", p.Slowdown.String(),
		"session", hctx.Session.BMCID)
	return nil, types.CodeOK, nil
}

// lanChannel reports whether n (0Eh: this channel) names a LAN channel.
func lanChannel(hctx *handlers.HandlerContext, n uint8) bool {
	if hctx == nil || hctx.BMC == nil {
		return false
	}
	if n == 0x0E {
		if hctx.Channel == nil {
			return false
		}
		n = hctx.Channel.Number
	}
	ch, err := hctx.BMC.Channels.Get(n)
	return err == nil && ch.Medium == ipmibmc.ChannelMediumLAN
}
