package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// side is where a request came from.
type side uint8

const (
	sideNone side = iota
	sideLAN       // an authenticated RMCP+ (or v1.5) session
	sideSys       // the host's system interface (KCS), no session
)

// sideOf classifies hctx. A LAN request needs operator privilege or better
// and a session with a user (the owner of the readers it binds);
// go-ipmi's registry only demands user privilege for an unknown OEM NetFn,
// so the check is made here. A session-less request not on the system
// interface (a pre-session LAN packet) has no side.
func sideOf(hctx *handlers.HandlerContext) (side, oem.CompletionCode) {
	if hctx == nil {
		return sideNone, oem.CCInsufficientPrivilege
	}
	if hctx.Session != nil || hctx.V15Session != nil {
		var priv bmc.PrivilegeLevel
		switch {
		case hctx.Session != nil:
			priv = hctx.Session.PrivilegeLevel
		case hctx.V15Session.State == bmc.V15SessionStateActive:
			priv = hctx.V15Session.PrivilegeLevel
		}
		if priv < bmc.PrivilegeLevelOperator || userOf(hctx) == "" {
			return sideLAN, oem.CCInsufficientPrivilege
		}
		return sideLAN, oem.CCOK
	}
	if hctx.Channel != nil && hctx.Channel.Medium == bmc.ChannelMediumSystemIF {
		return sideSys, oem.CCOK
	}
	return sideNone, oem.CCInsufficientPrivilege
}

// userOf names the BMC user of a LAN request's session, the owner of the
// Queue 2 readers it binds ("" when the session has no user: refused).
func userOf(hctx *handlers.HandlerContext) string {
	switch {
	case hctx.Session != nil && hctx.Session.User != nil:
		return hctx.Session.User.Name
	case hctx.V15Session != nil && hctx.V15Session.User != nil:
		return hctx.V15Session.User.Name
	}
	return ""
}

// allowed lists the side(s) each command may arrive on.
func allowed(cmd oem.Cmd, s side) bool {
	switch cmd {
	case oem.CmdWriteQueue1, oem.CmdReadQueue2, oem.CmdReadQueue2For:
		return s == sideLAN
	case oem.CmdReadQueue1, oem.CmdReadQueue1Win, oem.CmdWriteQueue2:
		return s == sideSys
	case oem.CmdGetQueueStatus:
		return s == sideLAN || s == sideSys
	}
	return false
}

// Commands is the go-ipmi command table entry of each OEM command.
var Commands = map[oem.Cmd]types.Command{
	oem.CmdWriteQueue1:    {ID: uint8(oem.CmdWriteQueue1), NetFn: types.NetFn(oem.NetFnOEMGroupRequest), Name: "COPY_VMS_TO_BMC_BUFF_1"},
	oem.CmdReadQueue1:     {ID: uint8(oem.CmdReadQueue1), NetFn: types.NetFn(oem.NetFnOEMGroupRequest), Name: "READ_BMC_BUFF_QUEUE1"},
	oem.CmdWriteQueue2:    {ID: uint8(oem.CmdWriteQueue2), NetFn: types.NetFn(oem.NetFnOEMGroupRequest), Name: "WRITE_BMC_BUFF_QUEUE2"},
	oem.CmdReadQueue2:     {ID: uint8(oem.CmdReadQueue2), NetFn: types.NetFn(oem.NetFnOEMGroupRequest), Name: "READ_BMC_BUFF_QUEUE2"},
	oem.CmdGetQueueStatus: {ID: uint8(oem.CmdGetQueueStatus), NetFn: types.NetFn(oem.NetFnOEMGroupRequest), Name: "GET_QUEUE_STATUS"},
	oem.CmdReadQueue2For:  {ID: uint8(oem.CmdReadQueue2For), NetFn: types.NetFn(oem.NetFnOEMGroupRequest), Name: "READ_BMC_BUFF_QUEUE2_FOR"},
	oem.CmdReadQueue1Win:  {ID: uint8(oem.CmdReadQueue1Win), NetFn: types.NetFn(oem.NetFnOEMGroupRequest), Name: "READ_BMC_BUFF_QUEUE1_WINDOW"},
}

// Register installs the seven OEM commands (NetFn 0x2E, cmds 0x01-0x07) for
// enterprise number iana into reg.
//
// Completion codes: 0xD4 when the request has no side (pre-session LAN, no
// channel) or its session is below operator, and when a LAN session names
// a Queue 2 reader id (reading it, or as the requester of a Queue 1 record)
// that is bound to another BMC user, whatever the session's privilege;
// 0xD5 when the command is not
// served on that side (e.g. the host writing Queue 1); 0xC7 when the data is
// too short or the wrong length; 0xCC for another IANA or a malformed
// record; 0xC4 when the queue is full.
func (qs *Queues) Register(reg *handlers.Registry, iana uint32) {
	for cmd, c := range Commands {
		reg.Register(c, qs.Handler(cmd, oem.IANA(iana)))
	}
}

// Handler returns the handler for one OEM command.
func (qs *Queues) Handler(cmd oem.Cmd, iana oem.IANA) handlers.Handler {
	return handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, data []byte) ([]byte, types.CompletionCode, error) {
		resp, cc, err := qs.handle(cmd, iana, hctx, data)
		return resp, types.CompletionCode(cc), err
	})
}

func decodeCC(err error) oem.CompletionCode {
	if errors.Is(err, oem.ErrShort) || errors.Is(err, oem.ErrLength) {
		return oem.CCRequestDataLengthInvalid
	}
	return oem.CCInvalidDataField
}

func (qs *Queues) handle(cmd oem.Cmd, iana oem.IANA, hctx *handlers.HandlerContext, data []byte) ([]byte, oem.CompletionCode, error) {
	s, cc := sideOf(hctx)
	if cc != oem.CCOK {
		return nil, cc, nil
	}
	if !allowed(cmd, s) {
		return nil, oem.CCNotSupportedInState, nil
	}
	got, err := oem.PeekIANA(data)
	if err != nil {
		return nil, oem.CCRequestDataLengthInvalid, nil
	}
	if got != iana {
		return nil, oem.CCInvalidDataField, nil
	}
	switch cmd {
	case oem.CmdWriteQueue1, oem.CmdWriteQueue2:
		var req oem.WriteQueueRequest
		if err := req.Unpack(data); err != nil {
			return nil, decodeCC(err), nil
		}
		q := qs.q1
		if cmd == oem.CmdWriteQueue2 {
			q = qs.q2
		} else if id := req.Record.Requester; id != 0 {
			// The answer is this user's: bind the reader first.
			if cc := qs.bindCC(qs.q2.Bind(userOf(hctx), id), hctx, id); cc != oem.CCOK {
				return nil, cc, nil
			}
		}
		if req.Record.Flags&record.FlagDropped != 0 {
			return nil, oem.CCInvalidDataField, nil // only the BMC puts "alerts dropped" markers
		}
		if err := q.Write(req.Record); err != nil {
			if errors.Is(err, ErrFull) {
				return nil, oem.CCOutOfSpace, nil
			}
			qs.log.Error("queue write failed; answering 0xFF", "cmd", cmd, "err", err)
			return nil, oem.CCUnspecified, fmt.Errorf("%s: %w", cmd, err)
		}
		if cmd == oem.CmdWriteQueue1 && qs.afterWrite != nil {
			qs.afterWrite()
		}
		resp, _ := (&oem.WriteQueueResponse{IANA: iana}).Pack()
		return resp, oem.CCOK, nil

	case oem.CmdReadQueue1, oem.CmdReadQueue2:
		var req oem.ReadQueueRequest
		if err := req.Unpack(data); err != nil {
			return nil, decodeCC(err), nil
		}
		q := qs.q1
		if cmd == oem.CmdReadQueue2 {
			q = qs.q2
		}
		rec, ok, err := q.Read(req.Ack)
		return qs.readResponse(cmd, iana, rec, ok, err)

	case oem.CmdReadQueue1Win:
		var req oem.ReadQueue1WindowRequest
		if err := req.Unpack(data); err != nil {
			return nil, decodeCC(err), nil
		}
		rec, ok, err := qs.q1.ReadWindow(req.Flags&oem.WindowRewind != 0, req.Ack)
		return qs.readResponse(cmd, iana, rec, ok, err)

	case oem.CmdReadQueue2For:
		var req oem.ReadQueue2ForRequest
		if err := req.Unpack(data); err != nil {
			return nil, decodeCC(err), nil
		}
		rec, ok, err := qs.q2.ReadAs(userOf(hctx), req.Reader, req.Flags, req.Ack)
		if errors.Is(err, ErrNotOwner) {
			return nil, qs.bindCC(err, hctx, req.Reader), nil
		}
		return qs.readResponse(cmd, iana, rec, ok, err)

	case oem.CmdGetQueueStatus:
		var req oem.GetQueueStatusRequest
		if err := req.Unpack(data); err != nil {
			return nil, decodeCC(err), nil
		}
		s1, s2 := qs.Status()
		resp, _ := (&oem.GetQueueStatusResponse{IANA: iana, Queue1: s1, Queue2: s2}).Pack()
		return resp, oem.CCOK, nil
	}
	return nil, oem.CCInvalidCommand, nil
}

// bindCC answers a binding error: 0xD4 for ErrNotOwner (logged: another
// user named this reader id), 0xFF for a journal failure.
func (qs *Queues) bindCC(err error, hctx *handlers.HandlerContext, id uint32) oem.CompletionCode {
	switch {
	case err == nil:
		return oem.CCOK
	case errors.Is(err, ErrNotOwner):
		qs.log.Warn("refused a queue 2 reader id bound to another BMC user; answering 0xD4",
			"user", userOf(hctx), "reader", fmt.Sprintf("%#x", id))
		return oem.CCInsufficientPrivilege
	}
	qs.log.Error("queue 2 reader binding failed; answering 0xFF", "err", err)
	return oem.CCUnspecified
}

func (qs *Queues) readResponse(cmd oem.Cmd, iana oem.IANA, rec record.Record, ok bool, err error) ([]byte, oem.CompletionCode, error) {
	if err != nil {
		qs.log.Error("queue read failed; answering 0xFF", "cmd", cmd, "err", err)
		return nil, oem.CCUnspecified, fmt.Errorf("%s: %w", cmd, err)
	}
	r := oem.ReadQueueResponse{IANA: iana, Empty: !ok, Record: rec}
	if !ok {
		r.Record = record.Record{}
	}
	resp, err := r.Pack()
	if err != nil {
		return nil, oem.CCUnspecified, fmt.Errorf("%s: %w", cmd, err)
	}
	return resp, oem.CCOK, nil
}
