package bmc

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
)

// SEL is the System Event Log: a bounded list of 16-byte records (IPMI v2.0
// §31). The oldest record is dropped when it is full and the overflow flag
// raised, as real BMCs do.
//
//	record: id(2 LE) type(1) timestamp(4 LE) generator(2) evm_rev(1)
//	        sensor_type(1) sensor_num(1) event_dir_type(1) event_data(3)
type SEL struct {
	mu          sync.Mutex
	entries     []selEntry
	nextID      uint16
	capacity    int
	reservation uint16
	lastAdd     uint32
	lastErase   uint32
	overflow    bool
	offset      time.Duration // Set SEL Time minus the real clock
	now         func() time.Time
	onAdd       func(rec [16]byte)
}

type selEntry struct {
	id  uint16
	rec [16]byte
}

// NewSEL returns an empty SEL holding at most capacity records.
func NewSEL(capacity int) *SEL {
	return &SEL{capacity: capacity, nextID: 1, now: time.Now}
}

// Time is the SEL clock (seconds since 1970).
func (s *SEL) Time() uint32 {
	return uint32(s.now().Add(s.offset).Unix())
}

// Add stores a record and returns its ID. Bytes 0–1 (ID) are assigned; for
// timestamped records (type 0x02 and OEM 0xC0–0xDF) bytes 3–6 get the time.
func (s *SEL) Add(rec [16]byte) uint16 {
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	if s.nextID == 0 || s.nextID == 0xFFFF {
		s.nextID = 1
	}
	binary.LittleEndian.PutUint16(rec[0:2], id)
	t := s.Time()
	if rec[2] == 0x02 || (rec[2] >= 0xC0 && rec[2] <= 0xDF) {
		binary.LittleEndian.PutUint32(rec[3:7], t)
	}
	if len(s.entries) >= s.capacity {
		s.entries = s.entries[1:]
		s.overflow = true
	}
	s.entries = append(s.entries, selEntry{id: id, rec: rec})
	s.lastAdd = t
	cb := s.onAdd
	s.mu.Unlock()
	if cb != nil {
		cb(rec)
	}
	return id
}

// AddOEM stores an OEM timestamped record (type 0xC0) with manufacturer id
// iana and six bytes of OEM data; hvagent alerts arrive this way.
func (s *SEL) AddOEM(iana uint32, data [6]byte) uint16 {
	var rec [16]byte
	rec[2] = 0xC0
	rec[7], rec[8], rec[9] = byte(iana), byte(iana>>8), byte(iana>>16)
	copy(rec[10:], data[:])
	return s.Add(rec)
}

// Entries returns a copy of the stored records, oldest first.
func (s *SEL) Entries() [][16]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][16]byte, len(s.entries))
	for i, e := range s.entries {
		out[i] = e.rec
	}
	return out
}

func (s *SEL) checkReservation(r uint16) bool {
	// Reservation 0 is allowed for reads of whole records (spec §31.4.1).
	return r == s.reservation && r != 0
}

func (s *SEL) register(r *handlers.Registry) {
	storage := types.NetFnStorageRequest
	r.RegisterFunc(types.Command{ID: 0x40, NetFn: storage, Name: "Get SEL Info"}, s.handleInfo)
	r.RegisterFunc(types.Command{ID: 0x41, NetFn: storage, Name: "Get SEL Allocation Info"}, s.handleAllocInfo)
	r.RegisterFunc(types.Command{ID: 0x42, NetFn: storage, Name: "Reserve SEL"}, s.handleReserve)
	r.RegisterFunc(types.Command{ID: 0x43, NetFn: storage, Name: "Get SEL Entry"}, s.handleGetEntry)
	r.RegisterFunc(types.Command{ID: 0x44, NetFn: storage, Name: "Add SEL Entry"}, s.handleAddEntry)
	r.RegisterFunc(types.Command{ID: 0x46, NetFn: storage, Name: "Delete SEL Entry"}, s.handleDelete)
	r.RegisterFunc(types.Command{ID: 0x47, NetFn: storage, Name: "Clear SEL"}, s.handleClear)
	r.RegisterFunc(types.Command{ID: 0x48, NetFn: storage, Name: "Get SEL Time"}, s.handleGetTime)
	r.RegisterFunc(types.Command{ID: 0x49, NetFn: storage, Name: "Set SEL Time"}, s.handleSetTime)
	r.RegisterFunc(types.Command{ID: 0x5C, NetFn: storage, Name: "Get SEL Time UTC Offset"}, s.handleGetUTCOffset)
}

func (s *SEL) handleInfo(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := make([]byte, 14)
	resp[0] = 0x51 // SEL version 1.5/2.0
	binary.LittleEndian.PutUint16(resp[1:3], uint16(len(s.entries)))
	binary.LittleEndian.PutUint16(resp[3:5], uint16((s.capacity-len(s.entries))*16))
	binary.LittleEndian.PutUint32(resp[5:9], s.lastAdd)
	binary.LittleEndian.PutUint32(resp[9:13], s.lastErase)
	// Operation support: delete (bit 3), reserve (bit 1), allocation info (bit 0).
	resp[13] = 0x0B
	if s.overflow {
		resp[13] |= 0x80
	}
	return resp, types.CodeOK, nil
}

func (s *SEL) handleAllocInfo(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	free := uint16(s.capacity - len(s.entries))
	resp := make([]byte, 9)
	binary.LittleEndian.PutUint16(resp[0:2], uint16(s.capacity))
	binary.LittleEndian.PutUint16(resp[2:4], 16)
	binary.LittleEndian.PutUint16(resp[4:6], free)
	binary.LittleEndian.PutUint16(resp[6:8], free)
	resp[8] = 16
	return resp, types.CodeOK, nil
}

func (s *SEL) handleReserve(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reservation++
	if s.reservation == 0 {
		s.reservation = 1
	}
	return binary.LittleEndian.AppendUint16(nil, s.reservation), types.CodeOK, nil
}

func (s *SEL) handleGetEntry(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 6 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	resv := binary.LittleEndian.Uint16(req[0:2])
	id := binary.LittleEndian.Uint16(req[2:4])
	off, n := int(req[4]), int(req[5])
	s.mu.Lock()
	defer s.mu.Unlock()
	if off != 0 && !s.checkReservation(resv) {
		return nil, types.CodeReservationCanceled, nil
	}
	if len(s.entries) == 0 {
		return nil, types.CodeRequestedDataNotPresent, nil
	}
	idx := -1
	switch id {
	case 0x0000:
		idx = 0
	case 0xFFFF:
		idx = len(s.entries) - 1
	default:
		for i, e := range s.entries {
			if e.id == id {
				idx = i
				break
			}
		}
	}
	if idx < 0 {
		return nil, types.CodeRequestedDataNotPresent, nil
	}
	next := uint16(0xFFFF)
	if idx+1 < len(s.entries) {
		next = s.entries[idx+1].id
	}
	rec := s.entries[idx].rec
	if off > 16 {
		return nil, types.CodeParameterOutOfRange, nil
	}
	end := 16
	if n != 0xFF && off+n < 16 {
		end = off + n
	}
	resp := binary.LittleEndian.AppendUint16(nil, next)
	return append(resp, rec[off:end]...), types.CodeOK, nil
}

func (s *SEL) handleAddEntry(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 16 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	if len(req) > 16 {
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	var rec [16]byte
	copy(rec[:], req)
	id := s.Add(rec)
	return binary.LittleEndian.AppendUint16(nil, id), types.CodeOK, nil
}

func (s *SEL) handleDelete(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 4 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	resv := binary.LittleEndian.Uint16(req[0:2])
	id := binary.LittleEndian.Uint16(req[2:4])
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.checkReservation(resv) {
		return nil, types.CodeReservationCanceled, nil
	}
	for i, e := range s.entries {
		if e.id == id || (id == 0 && i == 0) || (id == 0xFFFF && i == len(s.entries)-1) {
			s.entries = append(s.entries[:i], s.entries[i+1:]...)
			s.lastErase = s.Time()
			return binary.LittleEndian.AppendUint16(nil, e.id), types.CodeOK, nil
		}
	}
	return nil, types.CodeRequestedDataNotPresent, nil
}

func (s *SEL) handleClear(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 6 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	if req[2] != 'C' || req[3] != 'L' || req[4] != 'R' {
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	resv := binary.LittleEndian.Uint16(req[0:2])
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.checkReservation(resv) {
		return nil, types.CodeReservationCanceled, nil
	}
	switch req[5] {
	case 0xAA:
		s.entries = nil
		s.overflow = false
		s.lastErase = s.Time()
	case 0x00:
	default:
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	return []byte{0x01}, types.CodeOK, nil // erasure completed
}

func (s *SEL) handleGetTime(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	return binary.LittleEndian.AppendUint32(nil, s.Time()), types.CodeOK, nil
}

func (s *SEL) handleSetTime(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 4 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	want := time.Unix(int64(binary.LittleEndian.Uint32(req)), 0)
	s.mu.Lock()
	s.offset = want.Sub(s.now())
	s.mu.Unlock()
	return nil, types.CodeOK, nil
}

func (s *SEL) handleGetUTCOffset(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	return []byte{0xFF, 0x07}, types.CodeOK, nil // 0x7FF: unspecified
}
