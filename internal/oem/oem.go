// Package oem is the codec for ooblab's OEM/Group IPMI commands that move
// records through the BMC's two buffer queues. It does no I/O: bmcsim,
// hvagent and vmsctl share these Pack/Unpack functions.
//
// Every request uses NetFn 0x2E (OEM/Group request), every response NetFn
// 0x2F, and both begin with the IANA enterprise number, 3 bytes LSB first
// (default 32473 = D9 7E 00, reserved for documentation by RFC 5612).
// Multi-byte integers are little-endian, as elsewhere in IPMI. A record is
// the encoding of package record (14-byte header + up to 223 payload bytes).
//
//	0x01 WriteQueue1 (LAN, operator+)      0x03 WriteQueue2 (system interface)
//	  request:  IANA[3] | record[14..237]
//	  response: cc | IANA[3]
//
//	0x02 ReadQueue1 (system interface)     0x04 ReadQueue2 (LAN, operator+)
//	  request:  IANA[3]                          read the head, acknowledge nothing
//	        or  IANA[3] | msgid u64 | frag u16   acknowledge the record last read
//	  response: cc | IANA[3] | 0x00 | record     the head of the queue
//	        or  cc | IANA[3] | 0x01              the queue is empty
//
//	0x06 ReadQueue2For (LAN, operator+): a read of Queue 2 by one requester
//	  request:  IANA[3] | reader id u32 | flags u8                read, ack nothing
//	        or  IANA[3] | reader id u32 | flags u8 | msgid u64 | frag u16
//	  flags:    bit 0 set: the alert log too (records addressed to 0);
//	            bit 1 set (with bit 0 only): a durable follower, whose
//	            cursor the BMC keeps for its follower TTL (bmcsim 24 h)
//	            while it does not read; without it a follower is
//	            forgotten, like a command reader, after the reader TTL
//	            (1 min). A BMC that predates bit 1 refuses it with 0xCC.
//	            Other bits reserved, sent 0, refused with 0xCC when set
//	  response: as 0x04: the reader's oldest record, or "empty"
//
//	0x07 ReadQueue1Window (system interface): Queue 1 with several messages
//	  in flight (a window); acknowledgement by key, anywhere in the queue
//	  request:  IANA[3] | flags u8                                read on
//	        or  IANA[3] | flags u8 | msgid u64 | frag u16         ack that record, read on
//	  flags:    bit 0 set: rewind (read again from the oldest record);
//	            other bits reserved, sent 0, refused with 0xCC when set
//	  response: as 0x02: the oldest record not yet handed out since the
//	            last rewind (the BMC keeps that cursor), or "empty"
//
//	0x05 GetQueueStatus (both sides)
//	  request:  IANA[3]
//	  response: cc | IANA[3] | queue 1 status[8] | queue 2 status[8]
//	  status:   depth u16 | capacity u16 | age of oldest record in ms u32
//
// A read is two-phase: the head stays queued until the next read carries its
// (msg id, frag index) as acknowledgement; a missing or stale ack returns the
// same head again. On Queue 2 a reader sees only the records addressed to
// its reader id (record version 2, see package record) and, when it asks,
// the alert log (records addressed to 0), each from its own cursor; an ack
// that names another reader's record is ignored. 0x04 is reader 0 with the
// alert log: the version 1 behaviour, kept for older VMS software. Reader id
// 0 in 0x06 is refused with 0xCC. Completion codes beyond 0x00: 0xC4 queue full, 0xC7 bad
// request length, 0xCC invalid data (bad IANA or record), 0xD4 not authorized
// (no session, privilege below operator), 0xD5 command not allowed on the
// side it arrived on.
package oem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ooblab/ooblab/internal/record"
)

// NetFn is an IPMI network function code.
type NetFn uint8

const (
	NetFnOEMGroupRequest  NetFn = 0x2E
	NetFnOEMGroupResponse NetFn = 0x2F
)

func (n NetFn) String() string {
	switch {
	case n == NetFnOEMGroupRequest:
		return "OEM/Group request (0x2E)"
	case n == NetFnOEMGroupResponse:
		return "OEM/Group response (0x2F)"
	case n >= 0x30 && n <= 0x3F:
		return fmt.Sprintf("controller-specific OEM (%#02x)", uint8(n))
	case n&1 == 1:
		return fmt.Sprintf("response NetFn %#02x", uint8(n))
	default:
		return fmt.Sprintf("request NetFn %#02x", uint8(n))
	}
}

// Cmd is an ooblab OEM command number under NetFn 0x2E.
type Cmd uint8

const (
	CmdWriteQueue1    Cmd = 0x01 // COPY_VMS_TO_BMC_BUFF_1
	CmdReadQueue1     Cmd = 0x02 // READ_BMC_BUFF_QUEUE1
	CmdWriteQueue2    Cmd = 0x03 // WRITE_BMC_BUFF_QUEUE2
	CmdReadQueue2     Cmd = 0x04 // READ_BMC_BUFF_QUEUE2
	CmdGetQueueStatus Cmd = 0x05 // GET_QUEUE_STATUS
	CmdReadQueue2For  Cmd = 0x06 // READ_BMC_BUFF_QUEUE2_FOR (one requester's records)
	CmdReadQueue1Win  Cmd = 0x07 // READ_BMC_BUFF_QUEUE1_WINDOW (several records in flight)

	// CmdQueue1Notify is pushed by the BMC into the host's receive message
	// queue (raising SMS_ATN) when Queue 1 gains records, so an agent
	// registered for it with IPMICTL_REGISTER_FOR_CMD wakes at once instead
	// of polling. Data: IANA (3 bytes) ‖ Queue 1 depth (u16 LE). The agent
	// answers completion code 0 with no data; the BMC ignores the answer.
	CmdQueue1Notify Cmd = 0x10
)

// Queue1Notify is the data of CmdQueue1Notify.
type Queue1Notify struct {
	IANA  IANA
	Depth uint16
}

// Pack encodes n.
func (n Queue1Notify) Pack() []byte {
	b := n.IANA.append(nil)
	return append(b, byte(n.Depth), byte(n.Depth>>8))
}

// Unpack decodes n.
func (n *Queue1Notify) Unpack(b []byte) error {
	if len(b) < 5 {
		return ErrShort
	}
	iana, err := PeekIANA(b)
	if err != nil {
		return err
	}
	n.IANA = iana
	n.Depth = uint16(b[3]) | uint16(b[4])<<8
	return nil
}

func (c Cmd) String() string {
	switch c {
	case CmdWriteQueue1:
		return "WriteQueue1"
	case CmdReadQueue1:
		return "ReadQueue1"
	case CmdWriteQueue2:
		return "WriteQueue2"
	case CmdReadQueue2:
		return "ReadQueue2"
	case CmdGetQueueStatus:
		return "GetQueueStatus"
	case CmdReadQueue2For:
		return "ReadQueue2For"
	case CmdReadQueue1Win:
		return "ReadQueue1Window"
	case CmdQueue1Notify:
		return "Queue1Notify"
	}
	return fmt.Sprintf("Cmd(%#02x)", uint8(c))
}

// CompletionCode is an IPMI completion code.
type CompletionCode uint8

const (
	CCOK                       CompletionCode = 0x00
	CCNodeBusy                 CompletionCode = 0xC0 // try again later
	CCInvalidCommand           CompletionCode = 0xC1
	CCTimeout                  CompletionCode = 0xC3 // QEMU: the BMC did not answer in time
	CCOutOfSpace               CompletionCode = 0xC4 // queue full
	CCRequestDataLengthInvalid CompletionCode = 0xC7
	CCInvalidDataField         CompletionCode = 0xCC // bad IANA, bad record
	CCInsufficientPrivilege    CompletionCode = 0xD4 // no session / below operator
	CCNotReady                 CompletionCode = 0xD2 // BMC initializing; QEMU: no BMC connected
	CCNotSupportedInState      CompletionCode = 0xD5 // wrong side for this command
	CCUnspecified              CompletionCode = 0xFF
)

func (c CompletionCode) String() string {
	switch c {
	case CCOK:
		return "OK (0x00)"
	case CCNodeBusy:
		return "node busy (0xC0)"
	case CCInvalidCommand:
		return "invalid command (0xC1)"
	case CCTimeout:
		return "timeout (0xC3)"
	case CCNotReady:
		return "BMC not ready (0xD2)"
	case CCOutOfSpace:
		return "out of space: queue full (0xC4)"
	case CCRequestDataLengthInvalid:
		return "request data length invalid (0xC7)"
	case CCInvalidDataField:
		return "invalid data field (0xCC)"
	case CCInsufficientPrivilege:
		return "insufficient privilege (0xD4)"
	case CCNotSupportedInState:
		return "not supported in present state (0xD5)"
	case CCUnspecified:
		return "unspecified error (0xFF)"
	}
	switch {
	case c >= 0x01 && c <= 0x7E:
		return fmt.Sprintf("OEM completion code (%#02x)", uint8(c))
	case c >= 0x80 && c <= 0xBE:
		return fmt.Sprintf("command-specific completion code (%#02x)", uint8(c))
	}
	return fmt.Sprintf("generic completion code (%#02x)", uint8(c))
}

// Transient reports whether a request answered c may succeed if sent again
// as is: the BMC was busy, did not answer in time, or is not there for now
// (QEMU answers the host 0xD2 while its BMC restarts, 0xC3 when one died
// mid-request). Out of space (0xC4) is a retry too, but a caller waits for
// a reader to make room, so it is not counted here.
func (c CompletionCode) Transient() bool {
	return c == CCNodeBusy || c == CCTimeout || c == CCNotReady
}

// Error carries a non-zero completion code; find it with errors.As.
type Error struct {
	Cmd  Cmd
	Code CompletionCode
}

func (e *Error) Error() string { return fmt.Sprintf("oem %s: %s", e.Cmd, e.Code) }

// Check returns nil for CCOK and an *Error otherwise.
func Check(cmd Cmd, cc CompletionCode) error {
	if cc == CCOK {
		return nil
	}
	return &Error{Cmd: cmd, Code: cc}
}

// Sentinel decode errors.
var (
	ErrShort     = errors.New("oem: data too short")
	ErrLength    = errors.New("oem: data length invalid")
	ErrBadStatus = errors.New("oem: unknown read status")
	ErrIANA      = errors.New("oem: IANA enterprise number mismatch")
	ErrReader    = errors.New("oem: reader id 0 or reserved read flags")
)

// IANA is a 20-bit-ish enterprise number carried in 3 bytes.
type IANA uint32

// DefaultIANA is the documentation enterprise number (RFC 5612).
const DefaultIANA IANA = 32473

// DefaultManufacturerID is the manufacturer bmcsim's Get Device ID reports
// unless configured (bmcsim/config): 49622, the OpenBMC project's. The
// kcs-guest program tells bmcsim from other BMCs by it.
const DefaultManufacturerID = 49622

// MaxIANA is the largest number that fits 3 bytes.
const MaxIANA IANA = 0xFFFFFF

func (i IANA) append(b []byte) []byte { return append(b, byte(i), byte(i>>8), byte(i>>16)) }

func readIANA(b []byte) (IANA, []byte, error) {
	if len(b) < 3 {
		return 0, nil, fmt.Errorf("%w: %d bytes, need the 3 IANA bytes", ErrShort, len(b))
	}
	return IANA(b[0]) | IANA(b[1])<<8 | IANA(b[2])<<16, b[3:], nil
}

// PeekIANA returns the IANA number at the start of data.
func PeekIANA(data []byte) (IANA, error) {
	i, _, err := readIANA(data)
	return i, err
}

// ReadStatus is the byte after IANA in a read response.
type ReadStatus uint8

const (
	StatusRecord ReadStatus = 0x00
	StatusEmpty  ReadStatus = 0x01
)

// Ack acknowledges the record last read.
type Ack struct {
	MsgID uint64
	Index uint16
}

// AckLen is the encoded length of an Ack.
const AckLen = 10

// WriteQueueRequest is the request of CmdWriteQueue1 and CmdWriteQueue2.
type WriteQueueRequest struct {
	IANA   IANA
	Record record.Record
}

func (r *WriteQueueRequest) Pack() ([]byte, error) {
	b := r.IANA.append(make([]byte, 0, 3+r.Record.Len()))
	return r.Record.AppendBinary(b)
}

func (r *WriteQueueRequest) Unpack(data []byte) error {
	i, rest, err := readIANA(data)
	if err != nil {
		return err
	}
	rec, err := record.Parse(rest)
	if err != nil {
		return fmt.Errorf("oem: write queue: %w", err)
	}
	r.IANA, r.Record = i, rec
	return nil
}

// WriteQueueResponse is the response of the write commands.
type WriteQueueResponse struct{ IANA IANA }

func (r *WriteQueueResponse) Pack() ([]byte, error) { return r.IANA.append(nil), nil }

func (r *WriteQueueResponse) Unpack(data []byte) error {
	i, err := readIANAOnly(data)
	if err != nil {
		return err
	}
	r.IANA = i
	return nil
}

// readIANAOnly decodes data that must be exactly the IANA number.
func readIANAOnly(data []byte) (IANA, error) {
	i, rest, err := readIANA(data)
	if err != nil {
		return 0, err
	}
	if len(rest) != 0 {
		return 0, fmt.Errorf("%w: %d trailing bytes", ErrLength, len(rest))
	}
	return i, nil
}

// ReadQueueRequest is the request of CmdReadQueue1 and CmdReadQueue2.
type ReadQueueRequest struct {
	IANA IANA
	Ack  *Ack // nil: acknowledge nothing
}

func (r *ReadQueueRequest) Pack() ([]byte, error) {
	b := r.IANA.append(make([]byte, 0, 3+AckLen))
	if r.Ack != nil {
		b = binary.LittleEndian.AppendUint64(b, r.Ack.MsgID)
		b = binary.LittleEndian.AppendUint16(b, r.Ack.Index)
	}
	return b, nil
}

func (r *ReadQueueRequest) Unpack(data []byte) error {
	i, rest, err := readIANA(data)
	if err != nil {
		return err
	}
	var ack *Ack
	switch len(rest) {
	case 0:
	case AckLen:
		ack = &Ack{MsgID: binary.LittleEndian.Uint64(rest), Index: binary.LittleEndian.Uint16(rest[8:])}
	default:
		return fmt.Errorf("%w: read request with %d bytes after IANA, want 0 or %d", ErrLength, len(rest), AckLen)
	}
	r.IANA, r.Ack = i, ack
	return nil
}

// ReadFlags are the flags of a ReadQueue2For request.
type ReadFlags uint8

const (
	// ReadAlertLog asks for the records addressed to every reader (the
	// alert log) besides the reader's own.
	ReadAlertLog ReadFlags = 0x01
	// ReadDurable (only with ReadAlertLog) asks the BMC to keep this
	// follower's cursor, and the alert log records it has not read, while
	// it does not read for up to the BMC's follower TTL, so a later read
	// with the same reader id resumes where it was. Without it a follower
	// is forgotten after the reader TTL and stops holding the log.
	ReadDurable    ReadFlags = 0x02
	readFlagsKnown           = ReadAlertLog | ReadDurable
)

// valid reports whether f holds only known bits, ReadDurable only with
// ReadAlertLog.
func (f ReadFlags) valid() bool {
	return f&^readFlagsKnown == 0 && (f&ReadDurable == 0 || f&ReadAlertLog != 0)
}

// ReadQueue2ForRequest is the request of CmdReadQueue2For.
type ReadQueue2ForRequest struct {
	IANA   IANA
	Reader uint32 // never 0
	Flags  ReadFlags
	Ack    *Ack // nil: acknowledge nothing
}

// readForLen is the length of a ReadQueue2For request without its ack.
const readForLen = 3 + 4 + 1

func (r *ReadQueue2ForRequest) Pack() ([]byte, error) {
	if r.Reader == 0 || !r.Flags.valid() {
		return nil, fmt.Errorf("%w: reader %d flags %#02x", ErrReader, r.Reader, uint8(r.Flags))
	}
	b := r.IANA.append(make([]byte, 0, readForLen+AckLen))
	b = binary.LittleEndian.AppendUint32(b, r.Reader)
	b = append(b, byte(r.Flags))
	if r.Ack != nil {
		b = binary.LittleEndian.AppendUint64(b, r.Ack.MsgID)
		b = binary.LittleEndian.AppendUint16(b, r.Ack.Index)
	}
	return b, nil
}

func (r *ReadQueue2ForRequest) Unpack(data []byte) error {
	i, rest, err := readIANA(data)
	if err != nil {
		return err
	}
	if len(rest) != 5 && len(rest) != 5+AckLen {
		return fmt.Errorf("%w: read-for request with %d bytes after IANA, want 5 or %d", ErrLength, len(rest), 5+AckLen)
	}
	n := ReadQueue2ForRequest{IANA: i, Reader: binary.LittleEndian.Uint32(rest), Flags: ReadFlags(rest[4])}
	if n.Reader == 0 || !n.Flags.valid() {
		return fmt.Errorf("%w: reader %d flags %#02x", ErrReader, n.Reader, uint8(n.Flags))
	}
	if rest = rest[5:]; len(rest) == AckLen {
		n.Ack = &Ack{MsgID: binary.LittleEndian.Uint64(rest), Index: binary.LittleEndian.Uint16(rest[8:])}
	}
	*r = n
	return nil
}

// WindowFlags are the flags of a ReadQueue1Window request.
type WindowFlags uint8

const (
	// WindowRewind starts the read again at the oldest record of Queue 1
	// (after a restart of the reader, or a read whose answer was lost).
	WindowRewind     WindowFlags = 0x01
	windowFlagsKnown             = WindowRewind
)

// ReadQueue1WindowRequest is the request of CmdReadQueue1Win.
type ReadQueue1WindowRequest struct {
	IANA  IANA
	Flags WindowFlags
	Ack   *Ack // nil: acknowledge nothing
}

func (r *ReadQueue1WindowRequest) Pack() ([]byte, error) {
	if r.Flags&^windowFlagsKnown != 0 {
		return nil, fmt.Errorf("%w: window flags %#02x", ErrReader, uint8(r.Flags))
	}
	b := r.IANA.append(make([]byte, 0, 4+AckLen))
	b = append(b, byte(r.Flags))
	if r.Ack != nil {
		b = binary.LittleEndian.AppendUint64(b, r.Ack.MsgID)
		b = binary.LittleEndian.AppendUint16(b, r.Ack.Index)
	}
	return b, nil
}

func (r *ReadQueue1WindowRequest) Unpack(data []byte) error {
	i, rest, err := readIANA(data)
	if err != nil {
		return err
	}
	if len(rest) != 1 && len(rest) != 1+AckLen {
		return fmt.Errorf("%w: window read with %d bytes after IANA, want 1 or %d", ErrLength, len(rest), 1+AckLen)
	}
	n := ReadQueue1WindowRequest{IANA: i, Flags: WindowFlags(rest[0])}
	if n.Flags&^windowFlagsKnown != 0 {
		return fmt.Errorf("%w: window flags %#02x", ErrReader, uint8(n.Flags))
	}
	if rest = rest[1:]; len(rest) == AckLen {
		n.Ack = &Ack{MsgID: binary.LittleEndian.Uint64(rest), Index: binary.LittleEndian.Uint16(rest[8:])}
	}
	*r = n
	return nil
}

// ReadQueueResponse is the response of the read commands.
type ReadQueueResponse struct {
	IANA   IANA
	Empty  bool
	Record record.Record // valid when !Empty
}

func (r *ReadQueueResponse) Pack() ([]byte, error) {
	b := r.IANA.append(make([]byte, 0, 4+r.Record.Len()))
	if r.Empty {
		return append(b, byte(StatusEmpty)), nil
	}
	return r.Record.AppendBinary(append(b, byte(StatusRecord)))
}

func (r *ReadQueueResponse) Unpack(data []byte) error {
	i, rest, err := readIANA(data)
	if err != nil {
		return err
	}
	if len(rest) < 1 {
		return fmt.Errorf("%w: read response without status", ErrShort)
	}
	switch ReadStatus(rest[0]) {
	case StatusEmpty:
		if len(rest) != 1 {
			return fmt.Errorf("%w: empty read response with %d trailing bytes", ErrLength, len(rest)-1)
		}
		*r = ReadQueueResponse{IANA: i, Empty: true}
		return nil
	case StatusRecord:
		rec, err := record.Parse(rest[1:])
		if err != nil {
			return fmt.Errorf("oem: read response: %w", err)
		}
		*r = ReadQueueResponse{IANA: i, Record: rec}
		return nil
	}
	return fmt.Errorf("%w: %#02x", ErrBadStatus, rest[0])
}

// GetQueueStatusRequest is the request of CmdGetQueueStatus.
type GetQueueStatusRequest struct{ IANA IANA }

func (r *GetQueueStatusRequest) Pack() ([]byte, error) { return r.IANA.append(nil), nil }

func (r *GetQueueStatusRequest) Unpack(data []byte) error {
	i, err := readIANAOnly(data)
	if err != nil {
		return err
	}
	r.IANA = i
	return nil
}

// QueueStatus describes one queue. OldestAge is carried in whole
// milliseconds, saturating at 2^32-1 ms (~49 days).
type QueueStatus struct {
	Depth     uint16
	Capacity  uint16
	OldestAge time.Duration
}

// QueueStatusLen is the encoded length of one QueueStatus.
const QueueStatusLen = 8

func (s QueueStatus) append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, s.Depth)
	b = binary.LittleEndian.AppendUint16(b, s.Capacity)
	ms := s.OldestAge.Milliseconds()
	ms = max(0, min(ms, 0xFFFFFFFF))
	return binary.LittleEndian.AppendUint32(b, uint32(ms))
}

func readStatus(b []byte) QueueStatus {
	return QueueStatus{
		Depth:     binary.LittleEndian.Uint16(b),
		Capacity:  binary.LittleEndian.Uint16(b[2:]),
		OldestAge: time.Duration(binary.LittleEndian.Uint32(b[4:])) * time.Millisecond,
	}
}

// GetQueueStatusResponse is the response of CmdGetQueueStatus.
type GetQueueStatusResponse struct {
	IANA   IANA
	Queue1 QueueStatus
	Queue2 QueueStatus
}

func (r *GetQueueStatusResponse) Pack() ([]byte, error) {
	b := r.IANA.append(make([]byte, 0, 3+2*QueueStatusLen))
	return r.Queue2.append(r.Queue1.append(b)), nil
}

func (r *GetQueueStatusResponse) Unpack(data []byte) error {
	i, rest, err := readIANA(data)
	if err != nil {
		return err
	}
	if len(rest) != 2*QueueStatusLen {
		return fmt.Errorf("%w: status response with %d bytes after IANA, want %d", ErrLength, len(rest), 2*QueueStatusLen)
	}
	*r = GetQueueStatusResponse{IANA: i, Queue1: readStatus(rest), Queue2: readStatus(rest[QueueStatusLen:])}
	return nil
}

// CheckIANA returns ErrIANA (wrapped) unless got == want.
func CheckIANA(got, want IANA) error {
	if got != want {
		return fmt.Errorf("%w: got %d, want %d", ErrIANA, got, want)
	}
	return nil
}
