// Package vmcodec is the wire codec of QEMU's ipmi-bmc-extern chardev
// protocol (OpenIPMI lanserv's "VM" serial codec), shared by the BMC side
// (bmcsim/kcs) and QEMU's side (hvagent/sysif/chardev). It does no I/O; the
// frame layout is drawn in bmcsim/kcs's package doc.
package vmcodec

import (
	"errors"
	"fmt"
)

// Framing bytes of the VM codec.
const (
	msgEnd  = 0xA0 // ends an IPMI message
	ctrlEnd = 0xA1 // ends a control command
	escape  = 0xAA // the next byte is a framing byte with bit 4 set

	// MaxFrame is the longest unescaped frame the decoder keeps. QEMU's own
	// buffer is MAX_IPMI_MSG_SIZE (300) + 2; a longer frame is dropped whole.
	MaxFrame = 302
)

// Op is a control command byte (the byte before 0xA1).
type Op uint8

// Control commands of protocol version 1 (QEMU hw/ipmi/ipmi_bmc_extern.c,
// OpenIPMI lanserv/serial_ipmi.c "VM" codec).
const (
	OpNoAttn           Op = 0x00 // BMC→QEMU: clear SMS_ATN
	OpAttn             Op = 0x01 // BMC→QEMU: set SMS_ATN, no interrupt
	OpAttnIRQ          Op = 0x02 // BMC→QEMU: set SMS_ATN and interrupt (0→1 edge only)
	OpPowerOff         Op = 0x03 // BMC→QEMU: power the machine off
	OpReset            Op = 0x04 // BMC→QEMU: reset the machine; QEMU→BMC: the machine was reset
	OpEnableIRQ        Op = 0x05 // BMC→QEMU: enable the KCS interrupt
	OpDisableIRQ       Op = 0x06 // BMC→QEMU: disable the KCS interrupt
	OpSendNMI          Op = 0x07 // BMC→QEMU: inject an NMI
	OpCapabilities     Op = 0x08 // QEMU→BMC: capability bits follow
	OpGracefulShutdown Op = 0x09 // BMC→QEMU: ACPI power button
	OpVersion          Op = 0xFF // both ways: protocol version byte follows
)

// ProtocolVersion is the only version QEMU and OpenIPMI speak.
const ProtocolVersion = 1

// Capability bits carried by OpCapabilities.
const (
	CapPower            = 0x01
	CapReset            = 0x02
	CapIRQ              = 0x04
	CapNMI              = 0x08
	CapAttn             = 0x10
	CapGracefulShutdown = 0x20
)

func (o Op) String() string {
	switch o {
	case OpNoAttn:
		return "NOATTN"
	case OpAttn:
		return "ATTN"
	case OpAttnIRQ:
		return "ATTN_IRQ"
	case OpPowerOff:
		return "POWEROFF"
	case OpReset:
		return "RESET"
	case OpEnableIRQ:
		return "ENABLE_IRQ"
	case OpDisableIRQ:
		return "DISABLE_IRQ"
	case OpSendNMI:
		return "SEND_NMI"
	case OpCapabilities:
		return "CAPABILITIES"
	case OpGracefulShutdown:
		return "GRACEFUL_SHUTDOWN"
	case OpVersion:
		return "VERSION"
	}
	return fmt.Sprintf("OP(%#02x)", uint8(o))
}

// Decoding errors carried by Frame.Err. The frame is dropped; the stream
// resynchronises at the next end byte.
var (
	ErrTooLong     = errors.New("vmcodec: frame longer than MaxFrame")
	ErrEscapeAtEnd = errors.New("vmcodec: frame ends inside an escape")
	ErrShort       = errors.New("vmcodec: message shorter than seq+netfn+cmd+checksum")
	ErrChecksum    = errors.New("vmcodec: message checksum mismatch")
)

// FrameKind tells a message from a control command.
type FrameKind uint8

const (
	KindMessage FrameKind = iota + 1
	KindControl
)

// Frame is one decoded unit of the stream. For KindMessage, Raw holds seq,
// netfn/lun, cmd, data and checksum (verified); for KindControl it holds
// the op byte and its operands. Err is set for a dropped frame.
type Frame struct {
	Kind FrameKind
	Raw  []byte
	Err  error
}

// Seq, NetFn, LUN, Cmd and Data pick a KindMessage frame apart.
func (f Frame) Seq() uint8      { return f.Raw[0] }
func (f Frame) NetFn() uint8    { return f.Raw[1] >> 2 }
func (f Frame) LUN() uint8      { return f.Raw[1] & 3 }
func (f Frame) Cmd() uint8      { return f.Raw[2] }
func (f Frame) Data() []byte    { return f.Raw[3 : len(f.Raw)-1] }
func (f Frame) Op() Op          { return Op(f.Raw[0]) }
func (f Frame) Args() []byte    { return f.Raw[1:] }
func (f Frame) IsMessage() bool { return f.Kind == KindMessage && f.Err == nil }

// Decoder turns the byte stream into frames. The zero value is ready.
type Decoder struct {
	buf  []byte
	esc  bool
	over bool
}

// Feed consumes p and calls emit for every frame that ends in p, including
// dropped ones (Err set). Frame.Raw is a fresh copy. Empty frames (an end
// byte right after another) are skipped silently, as QEMU does.
func (d *Decoder) Feed(p []byte, emit func(Frame)) {
	for _, c := range p {
		switch c {
		case msgEnd, ctrlEnd:
			kind := KindMessage
			if c == ctrlEnd {
				kind = KindControl
			}
			f := Frame{Kind: kind}
			switch {
			case d.esc:
				f.Err = ErrEscapeAtEnd
			case d.over:
				f.Err = ErrTooLong
			case len(d.buf) == 0:
				d.reset()
				continue
			case kind == KindMessage && len(d.buf) < 4:
				f.Err = ErrShort
			case kind == KindMessage && Checksum(d.buf) != 0:
				f.Err = ErrChecksum
			}
			f.Raw = append([]byte(nil), d.buf...)
			d.reset()
			emit(f)
		case escape:
			d.esc = true
		default:
			if d.esc {
				c &^= 0x10
				d.esc = false
			}
			if len(d.buf) >= MaxFrame {
				d.over = true
				continue
			}
			d.buf = append(d.buf, c)
		}
	}
}

func (d *Decoder) reset() {
	d.buf, d.esc, d.over = d.buf[:0], false, false
}

// Checksum sums bytes; a message including its trailing checksum sums to 0.
func Checksum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}

func appendEscaped(dst []byte, c byte) []byte {
	switch c {
	case msgEnd, ctrlEnd, escape:
		return append(dst, escape, c|0x10)
	}
	return append(dst, c)
}

// AppendMessage appends the wire form of a message: seq, netfn<<2|lun, cmd,
// data, checksum, escaped, then 0xA0.
func AppendMessage(dst []byte, seq, netFnLUN, cmd uint8, data []byte) []byte {
	sum := seq + netFnLUN + cmd
	dst = appendEscaped(dst, seq)
	dst = appendEscaped(dst, netFnLUN)
	dst = appendEscaped(dst, cmd)
	for _, c := range data {
		dst = appendEscaped(dst, c)
		sum += c
	}
	dst = appendEscaped(dst, -sum)
	return append(dst, msgEnd)
}

// AppendControl appends the wire form of a control command: op, args,
// escaped, then 0xA1.
func AppendControl(dst []byte, op Op, args ...byte) []byte {
	dst = appendEscaped(dst, byte(op))
	for _, c := range args {
		dst = appendEscaped(dst, c)
	}
	return append(dst, ctrlEnd)
}
