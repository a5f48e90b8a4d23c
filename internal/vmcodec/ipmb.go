package vmcodec

// The receive message queue's framing: what the BMC pushes to the host
// through Get Message, and how the host answers through Send Message. The
// BMC side is bmcsim/kcs, the host side hvagent/sysif/chardev (and, on a
// real host, Linux's ipmi_msghandler); both build and parse these frames
// here.
//
// A Get Message response (after the completion code) is IPMB framed without
// the responder address, as Linux handle_ipmb_get_msg_cmd reads it:
//
//	+------+-----------+------+------+----------+-----+------ … ---+------+
//	| chan | netfn<<2  | sum1 | rqSA | rqSeq<<2 | cmd | data        | sum2 |
//	|      |   | rsLUN |      |      |  | rqLUN |     |             |      |
//	+------+-----------+------+------+----------+-----+------ … ---+------+
//	sum1 covers rsSA (0x20, implied) and netfn; sum2 covers rqSA..data.
//
// Linux delivers it to a process registered (IPMICTL_REGISTER_FOR_CMD) for
// netfn/cmd on that channel, but only if Get Channel Info reported the
// channel as IPMB. The process answers with a Send Message request whose
// data is the channel followed by a complete IPMB frame:
//
//	+------+------+-----------+------+------+----------+-----+---- … ---+------+
//	| chan | rsSA | netfn<<2  | sum1 | rqSA | rqSeq<<2 | cmd | cc, data | sum2 |
//	|      |      |   | rsLUN |      |      |  | rqLUN |     |          |      |
//	+------+------+-----------+------+------+----------+-----+---- … ---+------+
//	sum1 covers rsSA and netfn; sum2 covers rqSA..data. A response has netfn
//	bit 0 set and rsSA = the pushed message's rqSA.

import "errors"

// App NetFn commands of the receive message queue (IPMI v2.0 §22).
const (
	NetFnApp           = 0x06
	CmdGetMessageFlags = 0x31
	CmdGetMessage      = 0x33
	CmdSendMessage     = 0x34
	// BMCSlaveAddr is the BMC's (and the host's system interface's) IPMB
	// address.
	BMCSlaveAddr = 0x20
)

// IPMB framing errors.
var (
	ErrIPMBShort    = errors.New("vmcodec: IPMB frame too short")
	ErrIPMBChecksum = errors.New("vmcodec: IPMB frame checksum mismatch")
)

// IPMBMsg is one message of the receive message queue.
type IPMBMsg struct {
	Channel uint8
	RsSA    uint8 // responder address (Send Message; BMCSlaveAddr in Get Message)
	NetFn   uint8
	RsLUN   uint8
	RqSA    uint8 // requester address
	Seq     uint8 // 6 bits
	RqLUN   uint8
	Cmd     uint8
	Data    []byte // a response's starts with its completion code
}

// IsResponse reports whether the netfn is a response's (odd).
func (m IPMBMsg) IsResponse() bool { return m.NetFn&1 != 0 }

// AppendGetMessage appends m as a Get Message response body (after the
// completion code); m.RsSA is not carried.
func AppendGetMessage(b []byte, m IPMBMsg) []byte {
	nf := m.NetFn<<2 | m.RsLUN&3
	b = append(b, m.Channel&0x0F, nf, -(BMCSlaveAddr + nf))
	start := len(b)
	b = append(b, m.RqSA, m.Seq<<2|m.RqLUN&3, m.Cmd)
	b = append(b, m.Data...)
	return append(b, -Checksum(b[start:]))
}

// ParseGetMessage reads a Get Message response body (after the completion
// code) as Linux does: it checks only the length, not the checksums. Data
// is a copy.
func ParseGetMessage(r []byte) (IPMBMsg, error) {
	if len(r) < 7 {
		return IPMBMsg{}, ErrIPMBShort
	}
	return IPMBMsg{
		Channel: r[0] & 0x0F,
		RsSA:    BMCSlaveAddr,
		NetFn:   r[1] >> 2,
		RsLUN:   r[1] & 3,
		RqSA:    r[3],
		Seq:     r[4] >> 2,
		RqLUN:   r[4] & 3,
		Cmd:     r[5],
		Data:    append([]byte(nil), r[6:len(r)-1]...),
	}, nil
}

// AppendSendMessage appends m as a Send Message request's data.
func AppendSendMessage(b []byte, m IPMBMsg) []byte {
	b = append(b, m.Channel)
	hdr := len(b)
	b = append(b, m.RsSA, m.NetFn<<2|m.RsLUN&3)
	b = append(b, -Checksum(b[hdr:]))
	start := len(b)
	b = append(b, m.RqSA, m.Seq<<2|m.RqLUN&3, m.Cmd)
	b = append(b, m.Data...)
	return append(b, -Checksum(b[start:]))
}

// ParseSendMessage reads a Send Message request's data and checks both
// IPMB checksums. Data is a copy.
func ParseSendMessage(data []byte) (IPMBMsg, error) {
	if len(data) < 8 {
		return IPMBMsg{}, ErrIPMBShort
	}
	f := data[1:]
	if Checksum(f[:3]) != 0 || Checksum(f[3:]) != 0 {
		return IPMBMsg{}, ErrIPMBChecksum
	}
	return IPMBMsg{
		Channel: data[0] & 0x0F,
		RsSA:    f[0],
		NetFn:   f[1] >> 2,
		RsLUN:   f[1] & 3,
		RqSA:    f[3],
		Seq:     f[4] >> 2,
		RqLUN:   f[4] & 3,
		Cmd:     f[5],
		Data:    append([]byte(nil), f[6:len(f)-1]...),
	}, nil
}
