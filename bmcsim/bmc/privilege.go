package bmc

import (
	"context"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
)

// clampPrivilege is registry middleware that holds an RMCP+ session to
// the privilege its login earned. go-ipmi v0.9.1 activates a session at
// the maximum privilege the console named in Open Session (ADMINISTRATOR
// when it names none), and checks only RAKP 1's requested role against the
// user's limit: a USER account that asks for ADMINISTRATOR in Open Session
// and USER in RAKP 1 ran every command at ADMINISTRATOR (SOL, user
// management, the OOB-I queues), and could Set Session Privilege up to
// it. The cap is the lower of the role RAKP 1 asked for (the level the
// RAKP codes were computed over) and the user's limit on the session's
// channel as it was at login (go-ipmi keeps that snapshot with the
// session); the session's maximum and current privilege are lowered to it
// before the command's privilege is checked. The server holds the
// session's ProcMu while it runs a request, as go-ipmi's own Set Session
// Privilege does when it writes these fields.
func clampPrivilege(next handlers.Handler) handlers.Handler {
	return handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
		if hctx != nil && hctx.Session != nil {
			clampSession(hctx.Session)
		}
		return next.Handle(ctx, hctx, req)
	})
}

// clampSession lowers sess's maximum and current privilege to what its
// user and RAKP 1 role allow (see clampPrivilege).
func clampSession(sess *ipmibmc.Session) {
	if sess.MaxPrivilege == 0 {
		return // not from a handshake (every Open Session sets it): an in-process caller's
	}
	limit := ipmibmc.PrivilegeLevel(sess.Role & 0x0F)
	if limit == 0 || limit > sess.MaxPrivilege {
		limit = sess.MaxPrivilege
	}
	if u := sess.User; u != nil {
		a, ok := u.ChannelAccess[sess.Channel]
		switch {
		case !ok || !a.Enabled || a.MaxPrivilege == ipmibmc.PrivilegeLevelNoAccess:
			limit = ipmibmc.PrivilegeLevelCallback
		case a.MaxPrivilege < limit:
			limit = a.MaxPrivilege
		}
	}
	if sess.MaxPrivilege > limit {
		sess.MaxPrivilege = limit
	}
	if sess.PrivilegeLevel > limit {
		sess.PrivilegeLevel = limit
	}
}
