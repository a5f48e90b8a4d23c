package bmc

import (
	"context"
	"encoding/binary"
	"math"

	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/sensors"
)

// DCMI (Data Center Manageability Interface v1.5, NetFn 2Ch group
// extension DCh): every request and response starts with the group
// extension identification DCh.
//
//	Get DCMI Capabilities Info (01h)  rq: DC param        rs: DC 01 05 02 data…
//	Get Power Reading (02h)           rq: DC 01 00 00     rs: DC cur(2) min(2) max(2) avg(2) time(4) period_ms(4) state(1)
//	Get Power Limit (03h)             rs: 80h (no power limit is set)
//	Get DCMI Sensor Info (07h)        rq: DC 01 entity instance start  rs: DC total n record_ids(2 each)
//	Get Temperature Readings (10h)    rq: DC 01 entity instance start  rs: DC total n (temp instance)…
//
// The power figures come from the PSU Input Power sensor's model
// (bmcsim/sensors): statistics since the BMC's first sensor read.
const dcmiGroup = 0xDC

// DCMI completion codes (DCMI v1.5 Table 6-2).
const (
	dcmiParamNotSupported types.CompletionCode = 0x80 // capabilities: parameter not supported
	dcmiNoPowerLimit      types.CompletionCode = 0x80 // Get Power Limit: no active limit
)

func (b *BMC) registerDCMI(r *handlers.Registry) {
	g := types.NetFnGroupExtensionRequest
	r.RegisterFunc(types.Command{ID: 0x01, NetFn: g, Name: "Get DCMI Capabilities Info"}, b.handleDCMICaps)
	r.RegisterFunc(types.Command{ID: 0x02, NetFn: g, Name: "Get Power Reading"}, b.handlePowerReading)
	r.RegisterFunc(types.Command{ID: 0x03, NetFn: g, Name: "Get Power Limit"}, handlePowerLimit)
	r.RegisterFunc(types.Command{ID: 0x07, NetFn: g, Name: "Get DCMI Sensor Info"}, handleDCMISensorInfo)
	r.RegisterFunc(types.Command{ID: 0x10, NetFn: g, Name: "Get Temperature Readings"}, b.handleTempReadings)
}

// dcmiRequest checks the group extension byte and the length.
func dcmiRequest(req []byte, size int) types.CompletionCode {
	switch {
	case len(req) < size:
		return types.CodeRequestDataTruncated
	case len(req) > size:
		return types.CodeRequestDataLengthInvalid
	case req[0] != dcmiGroup:
		return types.CodeRequestDataFieldInvalid
	}
	return types.CodeOK
}

// handleDCMICaps answers Get DCMI Capabilities Info (DCMI §6.1.1),
// conformance 1.5, parameter revision 02h.
func (b *BMC) handleDCMICaps(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if cc := dcmiRequest(req, 2); cc != types.CodeOK {
		return nil, cc, nil
	}
	var data []byte
	switch req[1] {
	case 0x01: // supported capabilities
		// Mandatory: identification, SEL logging, chassis power,
		// temperature monitor; optional: power management; access:
		// primary LAN (RMCP+), in-band KCS and SOL when configured.
		access := byte(0x08)
		if b.Config.KCS != "" {
			access |= 0x01
		}
		if b.Config.Serial != "" {
			access |= 0x10
		}
		data = []byte{0x0F, 0x01, access}
	case 0x02: // mandatory platform attributes
		// SEL: entries (12 bits) with automatic rollover (bit 15: the
		// oldest record is dropped); identification: GUID; temperature
		// monitoring: inlet and CPU, sampling frequency 1 s.
		sel := uint16(512) | 0x8000
		data = []byte{byte(sel), byte(sel >> 8), 0x01, 0x03, 0x01}
	case 0x03: // optional platform attributes: power management by the BMC (20h), channel 0
		data = []byte{0x40, 0x00}
	case 0x04: // manageability access: primary LAN channel 1, no secondary, no serial
		data = []byte{0x01, 0xFF, 0xFF}
	case 0x05: // enhanced system power statistics: no rolling averages
		data = []byte{0x00}
	default:
		return nil, dcmiParamNotSupported, nil
	}
	return append([]byte{dcmiGroup, 0x01, 0x05, 0x02}, data...), types.CodeOK, nil
}

// handlePowerReading answers Get Power Reading (DCMI §6.6.1), mode 01h
// (system power statistics): the PSU input power now, its minimum,
// maximum and average over the statistics period, the SEL clock, the
// period in milliseconds, and "power measurement active" (bit 6).
func (b *BMC) handlePowerReading(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if cc := dcmiRequest(req, 4); cc != types.CodeOK {
		return nil, cc, nil
	}
	if req[1] != 0x01 {
		return nil, types.CodeRequestDataFieldInvalid, nil // enhanced statistics (02h) not supported
	}
	st := b.sdr.model.Power()
	resp := make([]byte, 18)
	resp[0] = dcmiGroup
	le := binary.LittleEndian
	le.PutUint16(resp[1:], watts(st.Now))
	le.PutUint16(resp[3:], watts(st.Min))
	le.PutUint16(resp[5:], watts(st.Max))
	le.PutUint16(resp[7:], watts(st.Avg))
	le.PutUint32(resp[9:], b.SEL.Time())
	le.PutUint32(resp[13:], uint32(min(st.Period.Milliseconds(), math.MaxUint32)))
	resp[17] = 0x40
	return resp, types.CodeOK, nil
}

func watts(v float64) uint16 { return uint16(math.Round(max(0, min(v, 65535)))) }

// handlePowerLimit answers Get Power Limit: no limit is ever set.
func handlePowerLimit(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if cc := dcmiRequest(req, 3); cc != types.CodeOK {
		return nil, cc, nil
	}
	return nil, dcmiNoPowerLimit, nil
}

// DCMI temperature entity IDs (DCMI §6.7.1) and the sensors behind them.
var dcmiEntities = map[byte]uint8{
	0x40: sensors.InletTemp, 0x37: sensors.InletTemp,
	0x41: sensors.CPUTemp, 0x03: sensors.CPUTemp,
}

// dcmiTempRequest checks a temperature request of Get DCMI Sensor Info
// or Get Temperature Readings (DCh, sensor type, entity, instance, start)
// and returns the sensor behind it; a request with no instance to report
// has its whole answer in done, a bad one its code in cc.
func dcmiTempRequest(req []byte) (n uint8, done []byte, cc types.CompletionCode) {
	if cc := dcmiRequest(req, 5); cc != types.CodeOK {
		return 0, nil, cc
	}
	if req[1] != byte(types.SensorTypeTemperature) {
		return 0, nil, types.CodeRequestDataFieldInvalid
	}
	n, ok := dcmiEntities[req[2]]
	if !ok {
		// The baseboard (42h) has no temperature sensor here.
		return 0, []byte{dcmiGroup, 0, 0}, types.CodeOK
	}
	instance, start := req[3], req[4]
	if instance > 1 || (instance == 0 && start > 1) {
		return 0, []byte{dcmiGroup, 1, 0}, types.CodeOK
	}
	return n, nil, types.CodeOK
}

// handleDCMISensorInfo answers Get DCMI Sensor Info (DCMI §6.5.2) for
// temperature sensors: the SDR record IDs of the inlet and CPU sensors.
func handleDCMISensorInfo(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	n, done, cc := dcmiTempRequest(req)
	if done != nil || cc != types.CodeOK {
		return done, cc, nil
	}
	// Record ID of sensor n is n+1 (record 1 is the BMC's locator).
	return []byte{dcmiGroup, 1, 1, n + 1, 0}, types.CodeOK, nil
}

// handleTempReadings answers Get Temperature Readings (DCMI §6.7.3): the
// inlet (40h) and CPU (41h) temperatures, one instance each, in whole
// degrees, sign in bit 7; the baseboard (42h) has none.
func (b *BMC) handleTempReadings(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	n, done, cc := dcmiTempRequest(req)
	if done != nil || cc != types.CodeOK {
		return done, cc, nil
	}
	r, _ := b.sdr.model.Read(n)
	v := math.Round(r.Value)
	t := byte(min(math.Abs(v), 127))
	if v < 0 {
		t |= 0x80
	}
	return []byte{dcmiGroup, 1, 1, t, 1}, types.CodeOK, nil
}
