package chardev

// The VM codec of QEMU's ipmi-bmc-extern chardev, QEMU's side. This is a
// deliberate small copy of bmcsim/kcs's codec (hvagent and bmcsim do not
// import each other); the fuzz target in bmcsim/kcs covers the same rules.
//
//	message: seq, netfn<<2|lun, cmd, data…, checksum, 0xA0
//	control: op, args…, 0xA1
//	0xA0, 0xA1, 0xAA inside a frame travel as 0xAA, byte|0x10

const (
	msgEnd   = 0xA0
	ctrlEnd  = 0xA1
	escape   = 0xAA
	maxFrame = 302
)

// Op is a control command of the protocol.
type Op uint8

// Control commands (QEMU hw/ipmi/ipmi_bmc_extern.c).
const (
	OpNoAttn           Op = 0x00
	OpAttn             Op = 0x01
	OpAttnIRQ          Op = 0x02
	OpPowerOff         Op = 0x03
	OpReset            Op = 0x04
	OpEnableIRQ        Op = 0x05
	OpDisableIRQ       Op = 0x06
	OpSendNMI          Op = 0x07
	OpCapabilities     Op = 0x08
	OpGracefulShutdown Op = 0x09
	OpVersion          Op = 0xFF
)

// QEMU72Caps is what QEMU 7.2 announces: power, reset, irq, nmi, attn,
// graceful shutdown.
const QEMU72Caps = 0x3F

func (o Op) String() string {
	names := map[Op]string{OpNoAttn: "NOATTN", OpAttn: "ATTN", OpAttnIRQ: "ATTN_IRQ",
		OpPowerOff: "POWEROFF", OpReset: "RESET", OpEnableIRQ: "ENABLE_IRQ",
		OpDisableIRQ: "DISABLE_IRQ", OpSendNMI: "SEND_NMI", OpCapabilities: "CAPABILITIES",
		OpGracefulShutdown: "GRACEFUL_SHUTDOWN", OpVersion: "VERSION"}
	if n, ok := names[o]; ok {
		return n
	}
	return "OP(" + string("0123456789abcdef"[o>>4]) + string("0123456789abcdef"[o&15]) + ")"
}

type frame struct {
	ctrl bool
	raw  []byte
	bad  string
}

type decoder struct {
	buf       []byte
	esc, over bool
}

func (d *decoder) feed(p []byte, emit func(frame)) {
	for _, c := range p {
		switch c {
		case msgEnd, ctrlEnd:
			f := frame{ctrl: c == ctrlEnd}
			switch {
			case d.esc:
				f.bad = "ends inside an escape"
			case d.over:
				f.bad = "too long"
			case len(d.buf) == 0:
				d.buf, d.esc, d.over = d.buf[:0], false, false
				continue
			case !f.ctrl && len(d.buf) < 5:
				f.bad = "too short for a response"
			case !f.ctrl && sum(d.buf) != 0:
				f.bad = "bad checksum"
			}
			f.raw = append([]byte(nil), d.buf...)
			d.buf, d.esc, d.over = d.buf[:0], false, false
			emit(f)
		case escape:
			d.esc = true
		default:
			if d.esc {
				c &^= 0x10
				d.esc = false
			}
			if len(d.buf) >= maxFrame {
				d.over = true
				continue
			}
			d.buf = append(d.buf, c)
		}
	}
}

func sum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}

func esc(dst []byte, c byte) []byte {
	if c == msgEnd || c == ctrlEnd || c == escape {
		return append(dst, escape, c|0x10)
	}
	return append(dst, c)
}

func appendMessage(dst []byte, seq, netFnLUN, cmd uint8, data []byte) []byte {
	s := seq + netFnLUN + cmd
	dst = esc(esc(esc(dst, seq), netFnLUN), cmd)
	for _, c := range data {
		dst = esc(dst, c)
		s += c
	}
	return append(esc(dst, -s), msgEnd)
}

func appendControl(dst []byte, op Op, args ...byte) []byte {
	dst = esc(dst, byte(op))
	for _, c := range args {
		dst = esc(dst, c)
	}
	return append(dst, ctrlEnd)
}
