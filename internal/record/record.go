// Package record is the unit carried by the BMC buffer queues: one fragment of
// one sealed OOB message. It does no I/O.
//
// A record, as it follows the three IANA bytes of an OEM queue command
// (multi-byte integers little-endian, as IPMI does), comes in two versions.
// Version 1 carries no requester id (Requester 0):
//
//	 0      1      2                                   10          12          14
//	+------+------+-----------------------------------+-----------+-----------+---------------
//	| ver  | flags| message id (u64, LSB first)       | frag index| frag count| payload …
//	| 0x01 |      |                                   | u16 LSB 1st| u16 LSB 1st| 0..223 bytes
//	+------+------+-----------------------------------+-----------+-----------+---------------
//
// Version 2 adds the requester id after the flags; it is written whenever
// Requester is not 0:
//
//	 0      1      2               6                       14          16          18
//	+------+------+---------------+-----------------------+-----------+-----------+-----------
//	| ver  | flags| requester id  | message id            | frag index| frag count| payload …
//	| 0x02 |      | u32 LSB first | u64 LSB first         | u16       | u16       | 0..219 bytes
//	+------+------+---------------+-----------------------+-----------+-----------+-----------
//
// The requester id names one reader of Queue 2 (a VMS process, chosen at
// random by it, never 0). On Queue 1 it says who asked; the host addresses
// the answer's records to the same id on Queue 2, and the BMC hands those
// records to that reader only. Requester 0 on Queue 2 means "every reader":
// the alert log (see bmcsim/queue and docs/oob-i.md).
//
// The payload length is implicit: the rest of the IPMI request (or of the
// enclosing journal entry). One IPMI request through the Linux KCS driver
// holds at most 240 data bytes, so with 3 IANA bytes and the 14-byte (18-byte)
// header a fragment carries at most [MaxPayload] = 223 ([MaxPayloadV2] = 219)
// bytes. The fragment count is a u16, so a message holds at most
// [MaxFragments]×[MaxPayload] bytes (about 13.9 MiB); [Fragment] refuses
// anything larger with [ErrTooLarge].
//
// Flags: bit 0 ([FlagDropped]) marks a record the BMC itself put in the
// Queue 2 alert log: a one-fragment message whose payload is a u32 LE count
// of alert log messages it dropped before this point (the log was full, or
// they outlived its retention unread). See [DroppedMarker]. Other bits are
// reserved: senders write 0, receivers ignore unknown bits.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// Version is the record version without a requester id.
	Version = 1
	// VersionAddressed is the record version with a requester id.
	VersionAddressed = 2
	// HeaderLen is the version 1 header before the payload.
	HeaderLen = 14
	// HeaderLenV2 is the version 2 header (with the requester id).
	HeaderLenV2 = 18
	// MaxRequestData is the IPMI request data budget through Linux KCS.
	MaxRequestData = 240
	// IANALen is the OEM/Group IANA prefix that precedes a record.
	IANALen = 3
	// MaxRecordLen is the longest encoded record.
	MaxRecordLen = MaxRequestData - IANALen
	// MaxPayload is the largest fragment payload of a version 1 record.
	MaxPayload = MaxRecordLen - HeaderLen
	// MaxPayloadV2 is the largest fragment payload of a version 2 record.
	MaxPayloadV2 = MaxRecordLen - HeaderLenV2
	// MaxFragments is the largest fragment count (u16).
	MaxFragments = 0xFFFF
	// MaxMessage is the largest message Fragment accepts.
	MaxMessage = MaxFragments * MaxPayload
)

// Sentinel errors.
var (
	ErrShort        = errors.New("record: shorter than header")
	ErrVersion      = errors.New("record: unknown version")
	ErrBadFragment  = errors.New("record: fragment index/count invalid")
	ErrPayloadLen   = errors.New("record: payload longer than MaxPayload")
	ErrTooLarge     = errors.New("record: message too large")
	ErrInconsistent = errors.New("record: fragment inconsistent with message")
	ErrBusy         = errors.New("record: reassembler full")
	ErrRequester    = errors.New("record: version 2 record with requester id 0")
)

// Key identifies one fragment of one message.
type Key struct {
	MsgID uint64
	Index uint16
}

// Record is one fragment.
type Record struct {
	Flags byte
	// Requester is the requester id (0: none; see the package doc). A
	// record with a Requester encodes as version 2.
	Requester uint32
	MsgID     uint64
	Index     uint16
	Count     uint16
	Payload   []byte
}

// Key returns the (message id, fragment index) pair.
func (r Record) Key() Key { return Key{r.MsgID, r.Index} }

func (r Record) String() string {
	if r.Requester != 0 {
		return fmt.Sprintf("record{to=%#x msg=%#x frag=%d/%d len=%d}", r.Requester, r.MsgID, r.Index, r.Count, len(r.Payload))
	}
	return fmt.Sprintf("record{msg=%#x frag=%d/%d len=%d}", r.MsgID, r.Index, r.Count, len(r.Payload))
}

// headerLen is the encoded header length for r's version.
func (r Record) headerLen() int {
	if r.Requester != 0 {
		return HeaderLenV2
	}
	return HeaderLen
}

// maxPayload is the payload limit for r's version.
func (r Record) maxPayload() int { return MaxRecordLen - r.headerLen() }

func (r Record) validate() error {
	if r.Count == 0 || r.Index >= r.Count {
		return fmt.Errorf("%w: index %d count %d", ErrBadFragment, r.Index, r.Count)
	}
	if len(r.Payload) > r.maxPayload() {
		return fmt.Errorf("%w: %d", ErrPayloadLen, len(r.Payload))
	}
	return nil
}

// Len is the encoded length.
func (r Record) Len() int { return r.headerLen() + len(r.Payload) }

// AppendBinary appends the encoded record to b.
func (r Record) AppendBinary(b []byte) ([]byte, error) {
	if err := r.validate(); err != nil {
		return b, err
	}
	if r.Requester != 0 {
		b = append(b, VersionAddressed, r.Flags)
		b = binary.LittleEndian.AppendUint32(b, r.Requester)
	} else {
		b = append(b, Version, r.Flags)
	}
	b = binary.LittleEndian.AppendUint64(b, r.MsgID)
	b = binary.LittleEndian.AppendUint16(b, r.Index)
	b = binary.LittleEndian.AppendUint16(b, r.Count)
	return append(b, r.Payload...), nil
}

// MarshalBinary encodes the record.
func (r Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, r.Len()))
}

// UnmarshalBinary decodes a record of either version. The payload is
// copied. A version 2 record with requester id 0 is refused (ErrRequester):
// it would not encode back to the same bytes.
func (r *Record) UnmarshalBinary(b []byte) error {
	if len(b) < 1 {
		return fmt.Errorf("%w: empty", ErrShort)
	}
	var n Record
	switch b[0] {
	case Version:
		if len(b) < HeaderLen {
			return fmt.Errorf("%w: %d bytes", ErrShort, len(b))
		}
		n.Flags = b[1]
		b = b[2:]
	case VersionAddressed:
		if len(b) < HeaderLenV2 {
			return fmt.Errorf("%w: %d bytes", ErrShort, len(b))
		}
		n.Flags = b[1]
		n.Requester = binary.LittleEndian.Uint32(b[2:])
		if n.Requester == 0 {
			return ErrRequester
		}
		b = b[6:]
	default:
		return fmt.Errorf("%w: %d", ErrVersion, b[0])
	}
	n.MsgID = binary.LittleEndian.Uint64(b)
	n.Index = binary.LittleEndian.Uint16(b[8:])
	n.Count = binary.LittleEndian.Uint16(b[10:])
	n.Payload = append([]byte{}, b[12:]...)
	if err := n.validate(); err != nil {
		return err
	}
	*r = n
	return nil
}

// Parse decodes a record.
func Parse(b []byte) (Record, error) {
	var r Record
	err := r.UnmarshalBinary(b)
	return r, err
}

// Fragment splits msg into version 1 records (no requester id) of at most
// MaxPayload bytes each. An empty message is one record with an empty
// payload. Payloads alias msg.
func Fragment(msgID uint64, msg []byte) ([]Record, error) { return FragmentFor(0, msgID, msg) }

// FragmentFor splits msg into records carrying requester id req (version 2
// records of at most MaxPayloadV2 bytes when req is not 0).
func FragmentFor(req uint32, msgID uint64, msg []byte) ([]Record, error) {
	per := MaxPayload
	if req != 0 {
		per = MaxPayloadV2
	}
	if len(msg) > MaxFragments*per {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(msg), MaxFragments*per)
	}
	n := (len(msg) + per - 1) / per
	if n == 0 {
		n = 1
	}
	out := make([]Record, n)
	for i := range out {
		lo := i * per
		hi := min(lo+per, len(msg))
		out[i] = Record{Requester: req, MsgID: msgID, Index: uint16(i), Count: uint16(n), Payload: msg[lo:hi:hi]}
	}
	return out, nil
}
