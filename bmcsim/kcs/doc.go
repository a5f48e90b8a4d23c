// Package kcs is the BMC side of QEMU's ipmi-bmc-extern chardev protocol
// (OpenIPMI lanserv's "VM" serial codec). QEMU's isa-ipmi-kcs device gives
// the guest a real KCS interface; every request the guest's ipmi_si driver
// writes into it travels over a TCP stream to this package, which answers it
// from a go-ipmi handlers.Registry and drives QEMU back with control
// commands (attention, interrupt enable, power).
//
// Wire format (both directions), one frame at a time:
//
//	message:  +-----+-----------+-----+------ … ------+-----+------+
//	          | seq | netfn<<2  | cmd | data (request)| sum | 0xA0 |
//	          |     |   | lun   |     | cc, data (rsp)|     |      |
//	          +-----+-----------+-----+------ … ------+-----+------+
//	          sum: two's complement, seq..data+sum add up to 0 (mod 256)
//	          a response echoes seq and sets netfn bit 0 (request netfn+1)
//
//	control:  +----+-- … --+------+
//	          | op | args  | 0xA1 |
//	          +----+-- … --+------+
//
//	escape:   0xA0, 0xA1 and 0xAA inside a frame are sent as 0xAA, byte|0x10;
//	          the receiver clears bit 4 of the byte after 0xAA.
//
// Control ops (see Op): QEMU opens with VERSION 1 (ff 01 a1) and
// CAPABILITIES (08 3f a1 in QEMU 7.2: power, reset, irq, nmi, attn,
// graceful shutdown) and sends RESET (04 a1) when the guest resets. The
// BMC sends VERSION on connect, ENABLE_IRQ/DISABLE_IRQ (05/06) when the host
// changes BMC Global Enables bit 0, ATTN/ATTN_IRQ/NOATTN (01/02/00) for
// SMS_ATN, and POWEROFF/RESET/SEND_NMI/GRACEFUL_SHUTDOWN (03/04/07/09).
// QEMU reads this chardev one byte at a time (can_receive returns 1), which
// matters: its receive loop drops the rest of a read after a control command.
//
// The receive message queue. Push queues a message "from IPMB channel 0" and
// raises SMS_ATN. The host driver then sends Get Message Flags (bit 0 set),
// and Get Message until it answers 0x80; it answers a message with Send
// Message. Both carry IPMB frames, drawn and built in internal/vmcodec
// (ipmb.go). Linux delivers a pushed message to a process registered for
// netfn/cmd only if Get Channel Info reported channel 0 as IPMB, so New adds
// an IPMB channel 0 to the BMC when none is configured.
// The codec itself (framing, escaping, checksums) is internal/vmcodec,
// shared with QEMU's side in hvagent/sysif/chardev.
package kcs
