package bmc

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/command/storage"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/sensors"
)

// sdrRepo is the BMC's SDR repository (IPMI v2.0 §33): record 1 is the
// BMC's own Management Controller Device Locator, records 2… the sensors of
// bmcsim/sensors (shared by every BMC). Its readings come from a
// sensors.Model that follows the QEMU host.
//
//	Get SDR request:  reservation(2 LE) record_id(2 LE) offset(1) bytes(1, FFh = to the end)
//	Get SDR response: next_record_id(2 LE) record_data[offset : offset+bytes]
type sdrRepo struct {
	mc    []byte // record 1
	model *sensors.Model

	mu    sync.Mutex
	resv  uint16
	added uint32 // most recent addition: when the BMC started
}

// hostSource is what the sensors read of the managed host: the chassis
// power state and the CPU time of the QEMU process (its pidfile).
type hostSource struct {
	b   *BMC
	pid *sensors.PidFile // nil without qemu_pidfile
}

func (h hostSource) PowerOn() bool { return h.b.PowerOn() }

func (h hostSource) CPUTime() (time.Duration, bool) {
	if h.pid == nil {
		return 0, false
	}
	return h.pid.CPUTime()
}

func newSDRRepo(b *BMC) *sdrRepo {
	src := hostSource{b: b}
	if b.Config.QEMUPidFile != "" {
		src.pid = &sensors.PidFile{Path: b.Config.QEMUPidFile}
	}
	h := fnv.New32a()
	h.Write([]byte(b.Config.Name))
	r := &sdrRepo{
		mc: types.PackMCLocator(types.MCLocatorPackOpts{
			RecordID: 1, DeviceSupport: 0x8E, Name: trim16("bmcsim " + b.Config.Name),
		}),
		added: uint32(time.Now().Unix()),
	}
	r.model = sensors.NewModel(src, h.Sum32(), func(e sensors.Event) { b.SEL.Add(selEvent(e)) })
	return r
}

// selEvent is the SEL record of a sensor event (§32.1, type 02h): generator
// 20h (the BMC), event message revision 04h.
func selEvent(e sensors.Event) [16]byte {
	var rec [16]byte
	rec[2] = 0x02
	rec[7], rec[8] = 0x20, 0x00
	rec[9] = 0x04
	rec[10] = uint8(e.Sensor.Type)
	rec[11] = e.Sensor.Number
	rec[12] = e.Type
	if e.Deassert {
		rec[12] |= 0x80
	}
	copy(rec[13:], e.Data[:])
	return rec
}

// record returns the record with id (0000h: first, FFFFh: last) and the ID
// of the next one (FFFFh after the last).
func (r *sdrRepo) record(id uint16) (rec []byte, next uint16, ok bool) {
	recs := sensors.Records()
	last := uint16(len(recs) + 1)
	switch id {
	case 0x0000:
		id = 1
	case 0xFFFF:
		id = last
	}
	if id < 1 || id > last {
		return nil, 0, false
	}
	next = id + 1
	if id == last {
		next = 0xFFFF
	}
	if id == 1 {
		return r.mc, next, true
	}
	return recs[id-2], next, true
}

func (b *BMC) registerSDR(r *handlers.Registry) {
	s := b.sdr
	st, se := types.NetFnStorageRequest, types.NetFnSensorEventRequest
	r.RegisterFunc(types.Command{ID: 0x20, NetFn: st, Name: "Get SDR Repository Info"}, s.handleInfo)
	r.RegisterFunc(types.Command{ID: 0x21, NetFn: st, Name: "Get SDR Repository Allocation Info"}, s.handleAllocInfo)
	r.RegisterFunc(types.Command{ID: 0x22, NetFn: st, Name: "Reserve SDR Repository"}, s.handleReserve)
	r.RegisterFunc(types.Command{ID: 0x23, NetFn: st, Name: "Get SDR"}, s.handleGetSDR)
	r.RegisterFunc(types.Command{ID: 0x23, NetFn: se, Name: "Get Sensor Reading Factors"}, s.handleFactors)
	r.RegisterFunc(types.Command{ID: 0x25, NetFn: se, Name: "Get Sensor Hysteresis"}, s.handleHysteresis)
	r.RegisterFunc(types.Command{ID: 0x27, NetFn: se, Name: "Get Sensor Thresholds"}, s.handleThresholds)
	r.RegisterFunc(types.Command{ID: 0x29, NetFn: se, Name: "Get Sensor Event Enable"}, s.handleEventEnable)
	r.RegisterFunc(types.Command{ID: 0x2A, NetFn: se, Name: "Re-arm Sensor Events"}, s.handleRearm)
	r.RegisterFunc(types.Command{ID: 0x2B, NetFn: se, Name: "Get Sensor Event Status"}, s.handleEventStatus)
	r.RegisterFunc(types.Command{ID: 0x2D, NetFn: se, Name: "Get Sensor Reading"}, s.handleReading)
	r.RegisterFunc(types.Command{ID: 0x2F, NetFn: se, Name: "Get Sensor Type"}, s.handleSensorType)
}

func (s *sdrRepo) handleInfo(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	resp := &storage.GetSDRRepoInfoResponse{
		SDRVersion:             0x51,
		RecordCount:            uint16(len(sensors.Records()) + 1),
		FreeSpaceBytes:         0x0000, // read-only repository: full
		MostRecentAdditionTime: time.Unix(int64(s.added), 0),
		MostRecentEraseTime:    time.Unix(0, 0),
		SDROperationSupport: storage.SDROperationSupport{
			SupportNonModalSDRRepoUpdate: true, // 01b: non-modal (nothing updates it)
			SupportReserveSDRRepo:        true,
			SupportGetSDRRepoAllocInfo:   true,
		},
	}
	return resp.Pack(), types.CodeOK, nil
}

func (s *sdrRepo) handleAllocInfo(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	n := uint16(len(sensors.Records()) + 1)
	resp := &storage.GetSDRRepoAllocInfoResponse{
		PossibleAllocUnits: n, AllocUnitsSize: 64, FreeAllocUnits: 0, LargestFreeBlock: 0, MaximumRecordSize: 1,
	}
	return resp.Pack(), types.CodeOK, nil
}

// handleReserve answers Reserve SDR Repository (§33.11): a new reservation
// cancels the previous one.
func (s *sdrRepo) handleReserve(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	s.mu.Lock()
	s.resv++
	if s.resv == 0 {
		s.resv = 1
	}
	id := s.resv
	s.mu.Unlock()
	return binary.LittleEndian.AppendUint16(nil, id), types.CodeOK, nil
}

// handleGetSDR answers Get SDR (§33.12) with any read size: FFh reads to
// the end of the record, a size past the end returns what is left (no
// CAh: ipmitool would retry every smaller size). A partial read (offset
// above 0) needs the current reservation (C5h otherwise, as does a stale
// reservation given with offset 0); an offset past the record is C9h and a
// missing record CBh.
func (s *sdrRepo) handleGetSDR(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 6 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	if len(req) > 6 {
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	resv := binary.LittleEndian.Uint16(req[0:2])
	id := binary.LittleEndian.Uint16(req[2:4])
	off, n := int(req[4]), int(req[5])
	s.mu.Lock()
	cur := s.resv
	s.mu.Unlock()
	if (off > 0 || resv != 0) && resv != cur {
		return nil, types.CodeReservationCanceled, nil
	}
	rec, next, ok := s.record(id)
	if !ok {
		return nil, types.CodeRequestedDataNotPresent, nil
	}
	if off > len(rec) {
		return nil, types.CodeParameterOutOfRange, nil
	}
	end := len(rec)
	if n != 0xFF && off+n < end {
		end = off + n
	}
	resp := make([]byte, 2, 2+end-off)
	binary.LittleEndian.PutUint16(resp, next)
	return append(resp, rec[off:end]...), types.CodeOK, nil
}

// sensor returns the sensor the request's first byte names: C7h/C6h for a
// bad length, CBh for no such sensor.
func sensorOf(req []byte, size int) (*sensors.Def, types.CompletionCode) {
	if len(req) < size {
		return nil, types.CodeRequestDataTruncated
	}
	if len(req) > size {
		return nil, types.CodeRequestDataLengthInvalid
	}
	d, ok := sensors.Lookup(req[0])
	if !ok {
		return nil, types.CodeRequestedDataNotPresent
	}
	return d, types.CodeOK
}

// handleReading answers Get Sensor Reading (§35.14): reading, flags (event
// messages and scanning enabled), then the threshold comparison status
// (or discrete states 0–7) and byte 4 (states 8–14; reserved bit 7 set).
func (s *sdrRepo) handleReading(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	d, cc := sensorOf(req, 1)
	if cc != types.CodeOK {
		return nil, cc, nil
	}
	r, _ := s.model.Read(d.Number)
	flags := byte(0xC0)
	if r.Unavailable {
		flags |= 0x20
	}
	if d.Discrete {
		return []byte{0x00, flags, byte(r.Status), byte(r.Status>>8) | 0x80}, types.CodeOK, nil
	}
	return []byte{r.Raw, flags, byte(r.Status) | 0xC0, 0x80}, types.CodeOK, nil
}

// handleThresholds answers Get Sensor Thresholds (§35.9): readable mask,
// then LNC, LCR, LNR, UNC, UCR, UNR (raw).
func (s *sdrRepo) handleThresholds(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	d, cc := sensorOf(req, 1)
	if cc != types.CodeOK {
		return nil, cc, nil
	}
	if d.Discrete {
		return nil, types.CodeIllegalCommand, nil
	}
	t := d.ThresholdRaw()
	return append([]byte{d.ThresholdMask()}, t[:]...), types.CodeOK, nil
}

// handleHysteresis answers Get Sensor Hysteresis (§35.7): positive and
// negative-going hysteresis (raw).
func (s *sdrRepo) handleHysteresis(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	d, cc := sensorOf(req, 2)
	if cc != types.CodeOK {
		return nil, cc, nil
	}
	if d.Discrete {
		return nil, types.CodeIllegalCommand, nil
	}
	rec := sensors.Records()[d.Number-1]
	return []byte{rec[42], rec[43]}, types.CodeOK, nil
}

// handleFactors answers Get Sensor Reading Factors (§35.5): the sensors are
// linear, so one set of factors serves every reading (next reading FFh).
func (s *sdrRepo) handleFactors(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	d, cc := sensorOf(req, 2)
	if cc != types.CodeOK {
		return nil, cc, nil
	}
	if d.Discrete {
		return nil, types.CodeIllegalCommand, nil
	}
	return append([]byte{0xFF}, d.Factors()...), types.CodeOK, nil
}

// handleEventEnable answers Get Sensor Event Enable (§35.11): every event
// the record declares is enabled.
func (s *sdrRepo) handleEventEnable(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	d, cc := sensorOf(req, 1)
	if cc != types.CodeOK {
		return nil, cc, nil
	}
	m := d.EventMask()
	if d.Discrete {
		m = 1<<sensors.StateWorking | 1<<sensors.StateSoftOff
	}
	return []byte{0xC0, byte(m), byte(m >> 8), byte(m), byte(m >> 8)}, types.CodeOK, nil
}

// handleEventStatus answers Get Sensor Event Status (§35.13): the events
// asserted now (threshold sensors auto re-arm, so a returned crossing
// clears its bit).
func (s *sdrRepo) handleEventStatus(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	d, cc := sensorOf(req, 1)
	if cc != types.CodeOK {
		return nil, cc, nil
	}
	st, _ := s.model.Asserted(d.Number)
	var ev uint16
	if d.Discrete {
		ev = st
	} else {
		for t := 0; t < 6; t++ {
			if st&(1<<t) != 0 {
				ev |= 1 << sensors.EventOffset(t)
			}
		}
	}
	return []byte{0xC0, byte(ev), byte(ev >> 8), 0x00, 0x00}, types.CodeOK, nil
}

func (s *sdrRepo) handleRearm(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 2 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	if _, ok := sensors.Lookup(req[0]); !ok {
		return nil, types.CodeRequestedDataNotPresent, nil
	}
	return nil, types.CodeOK, nil
}

// handleSensorType answers Get Sensor Type (§35.16).
func (s *sdrRepo) handleSensorType(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	d, cc := sensorOf(req, 1)
	if cc != types.CodeOK {
		return nil, cc, nil
	}
	rt := byte(types.EventReadingTypeThreshold)
	if d.Discrete {
		rt = byte(types.EventReadingTypeSensorSpecific)
	}
	return []byte{byte(d.Type), rt}, types.CodeOK, nil
}

// Sensors returns the BMC's sensor model (admin pins, tests).
func (b *BMC) Sensors() *sensors.Model { return b.sdr.model }
