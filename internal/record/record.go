// Package record is the unit carried by the BMC buffer queues: one fragment of
// one sealed OOB message. It does no I/O.
//
// A record, as it follows the three IANA bytes of an OEM queue command
// (multi-byte integers little-endian, as IPMI does):
//
//	 0      1      2                                   10          12          14
//	+------+------+-----------------------------------+-----------+-----------+---------------
//	| ver  | flags| message id (u64, LSB first)       | frag index| frag count| payload …
//	| 0x01 |      |                                   | u16 LSB 1st| u16 LSB 1st| 0..223 bytes
//	+------+------+-----------------------------------+-----------+-----------+---------------
//
// The payload length is implicit: the rest of the IPMI request (or of the
// enclosing journal entry). One IPMI request through the Linux KCS driver
// holds at most 240 data bytes, so with 3 IANA bytes and the 14-byte header a
// fragment carries at most [MaxPayload] = 223 bytes. The fragment count is a
// u16, so a message holds at most [MaxFragments]×[MaxPayload] bytes
// (about 13.9 MiB); [Fragment] refuses anything larger with [ErrTooLarge].
//
// Flags are reserved: senders write 0, receivers ignore unknown bits.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// Version is the only record version this package writes and reads.
	Version = 1
	// HeaderLen is the fixed header before the payload.
	HeaderLen = 14
	// MaxRequestData is the IPMI request data budget through Linux KCS.
	MaxRequestData = 240
	// IANALen is the OEM/Group IANA prefix that precedes a record.
	IANALen = 3
	// MaxRecordLen is the longest encoded record.
	MaxRecordLen = MaxRequestData - IANALen
	// MaxPayload is the largest fragment payload.
	MaxPayload = MaxRecordLen - HeaderLen
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
)

// Key identifies one fragment of one message.
type Key struct {
	MsgID uint64
	Index uint16
}

// Record is one fragment.
type Record struct {
	Flags   byte
	MsgID   uint64
	Index   uint16
	Count   uint16
	Payload []byte
}

// Key returns the (message id, fragment index) pair.
func (r Record) Key() Key { return Key{r.MsgID, r.Index} }

func (r Record) String() string {
	return fmt.Sprintf("record{msg=%#x frag=%d/%d len=%d}", r.MsgID, r.Index, r.Count, len(r.Payload))
}

func (r Record) validate() error {
	if r.Count == 0 || r.Index >= r.Count {
		return fmt.Errorf("%w: index %d count %d", ErrBadFragment, r.Index, r.Count)
	}
	if len(r.Payload) > MaxPayload {
		return fmt.Errorf("%w: %d", ErrPayloadLen, len(r.Payload))
	}
	return nil
}

// Len is the encoded length.
func (r Record) Len() int { return HeaderLen + len(r.Payload) }

// AppendBinary appends the encoded record to b.
func (r Record) AppendBinary(b []byte) ([]byte, error) {
	if err := r.validate(); err != nil {
		return b, err
	}
	b = append(b, Version, r.Flags)
	b = binary.LittleEndian.AppendUint64(b, r.MsgID)
	b = binary.LittleEndian.AppendUint16(b, r.Index)
	b = binary.LittleEndian.AppendUint16(b, r.Count)
	return append(b, r.Payload...), nil
}

// MarshalBinary encodes the record.
func (r Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, r.Len()))
}

// UnmarshalBinary decodes a record. The payload is copied.
func (r *Record) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if b[0] != Version {
		return fmt.Errorf("%w: %d", ErrVersion, b[0])
	}
	n := Record{
		Flags:   b[1],
		MsgID:   binary.LittleEndian.Uint64(b[2:]),
		Index:   binary.LittleEndian.Uint16(b[10:]),
		Count:   binary.LittleEndian.Uint16(b[12:]),
		Payload: append([]byte{}, b[HeaderLen:]...),
	}
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

// Fragment splits msg into records of at most MaxPayload bytes each. An empty
// message is one record with an empty payload. Payloads alias msg.
func Fragment(msgID uint64, msg []byte) ([]Record, error) {
	if len(msg) > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(msg), MaxMessage)
	}
	n := (len(msg) + MaxPayload - 1) / MaxPayload
	if n == 0 {
		n = 1
	}
	out := make([]Record, n)
	for i := range out {
		lo := i * MaxPayload
		hi := min(lo+MaxPayload, len(msg))
		out[i] = Record{MsgID: msgID, Index: uint16(i), Count: uint16(n), Payload: msg[lo:hi:hi]}
	}
	return out, nil
}
