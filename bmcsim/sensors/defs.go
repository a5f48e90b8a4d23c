// Package sensors is the sensor model of a simulated BMC: the sensors every
// bmcsim BMC has, their SDR records, and readings that follow the QEMU host.
//
// The records are IPMI v2.0 Full Sensor Records (§43.1, type 01h) for the
// threshold sensors and one Compact Sensor Record (§43.2, type 02h) for the
// discrete host power state, packed with go-ipmi's types.SDRFull/SDRCompact.
// A threshold sensor's reading is one raw byte; clients convert it with the
// record's linear formula (§36.3):
//
//	value = (M × raw + B × 10^Bexp) × 10^Rexp
//
//	#  name            type        unit  M  B    Bexp Rexp  range           thresholds (LNR LCR LNC | UNC UCR UNR)
//	1  CPU Temp        temp 01h    °C    1  0    0    0     0 … 255         -  -  -  | 80 90 95
//	2  Inlet Temp      temp 01h    °C    5  -40  1    -1    -40 … 87.5      -  5  10 | 40 45 50
//	3  Fan 1           fan 04h     RPM   60 0    0    0     0 … 15300       -  300 600 | -  -  -
//	4  Fan 2           fan 04h     RPM   60 0    0    0     0 … 15300       -  300 600 | -  -  -
//	5  PSU Input Power PSU 08h     W     2  0    0    0     0 … 510         -  -  -  | 400 450 -
//	6  12V Rail        volt 02h    V     7  0    0    -2    0 … 17.85       -  10.78 11.41 | 12.6 13.23 -
//	7  Host Power      ACPI 22h    discrete: offset 0 S0/G0 working, 5 S5/G2 soft-off
//
// Every BMC shares the same records (package-level, built once); only the
// readings are per BMC (Model).
package sensors

import (
	"math"
	"sync"

	"github.com/bougou/go-ipmi/pkg/types"
)

// Threshold indexes, in the order of Get Sensor Thresholds' response and of
// the status bits of Get Sensor Reading (§35.14, §35.9).
const (
	LNC = iota
	LCR
	LNR
	UNC
	UCR
	UNR
)

// Def describes one sensor. For a threshold sensor Thresholds[i] is the
// threshold in the sensor's unit, NaN when the sensor has none.
type Def struct {
	Number     uint8
	Name       string
	Type       types.SensorType
	Entity     uint8
	Unit       types.SensorUnitType
	M, B       int16
	BExp, RExp int8
	Thresholds [6]float64
	// Hysteresis in the sensor's unit (both directions).
	Hysteresis float64
	// Standby sensors read while the host is off (inlet, PSU input); the
	// others' lower thresholds are not armed then: a stopped fan on a
	// powered-off host is no fault.
	Standby  bool
	Discrete bool
}

// The sensor numbers.
const (
	CPUTemp   = 1
	InletTemp = 2
	Fan1      = 3
	Fan2      = 4
	PSUPower  = 5
	Rail12V   = 6
	HostPower = 7
)

var nan = math.NaN()

// Defs are the sensors of every BMC, by number (Defs[i].Number == i+1).
var Defs = []Def{
	{Number: CPUTemp, Name: "CPU Temp", Type: types.SensorTypeTemperature, Entity: 0x03, Unit: types.SensorUnitType_DegreesC,
		M: 1, Thresholds: [6]float64{nan, nan, nan, 80, 90, 95}, Hysteresis: 2},
	{Number: InletTemp, Name: "Inlet Temp", Type: types.SensorTypeTemperature, Entity: 0x37, Unit: types.SensorUnitType_DegreesC,
		M: 5, B: -40, BExp: 1, RExp: -1, Thresholds: [6]float64{10, 5, nan, 40, 45, 50}, Hysteresis: 2, Standby: true},
	{Number: Fan1, Name: "Fan 1", Type: types.SensorTypeFan, Entity: 0x1D, Unit: types.SensorUnitType_RPM,
		M: 60, Thresholds: [6]float64{600, 300, nan, nan, nan, nan}, Hysteresis: 120},
	{Number: Fan2, Name: "Fan 2", Type: types.SensorTypeFan, Entity: 0x1D, Unit: types.SensorUnitType_RPM,
		M: 60, Thresholds: [6]float64{600, 300, nan, nan, nan, nan}, Hysteresis: 120},
	{Number: PSUPower, Name: "PSU Input Power", Type: types.SensorTypePowerSupply, Entity: 0x0A, Unit: types.SensorUnitType_Watts,
		M: 2, Thresholds: [6]float64{nan, nan, nan, 400, 450, nan}, Hysteresis: 10, Standby: true},
	{Number: Rail12V, Name: "12V Rail", Type: types.SensorTypeVoltage, Entity: 0x07, Unit: types.SensorUnitType_Volts,
		M: 7, RExp: -2, Thresholds: [6]float64{11.41, 10.78, nan, 12.6, 13.23, nan}, Hysteresis: 0.14},
	{Number: HostPower, Name: "Host Power", Type: types.SensorTypeSystemACPIPowerState, Entity: 0x07, Discrete: true},
}

// Lookup returns the sensor with number n.
func Lookup(n uint8) (*Def, bool) {
	if n == 0 || int(n) > len(Defs) {
		return nil, false
	}
	return &Defs[n-1], true
}

// ByName returns the sensor named name (exactly, as in the SDR).
func ByName(name string) (*Def, bool) {
	for i := range Defs {
		if Defs[i].Name == name {
			return &Defs[i], true
		}
	}
	return nil, false
}

// Value converts a raw reading to the sensor's unit.
func (d *Def) Value(raw uint8) float64 {
	return (float64(d.M)*float64(raw) + float64(d.B)*math.Pow10(int(d.BExp))) * math.Pow10(int(d.RExp))
}

// Raw converts a value to the nearest raw reading, clamped to 0…255.
func (d *Def) Raw(v float64) uint8 {
	x := (v/math.Pow10(int(d.RExp)) - float64(d.B)*math.Pow10(int(d.BExp))) / float64(d.M)
	x = math.Round(x)
	switch {
	case math.IsNaN(x) || x < 0:
		return 0
	case x > 255:
		return 255
	}
	return uint8(x)
}

// hystRaw is the hysteresis in raw counts.
func (d *Def) hystRaw() uint8 {
	return uint8(math.Round(d.Hysteresis / (float64(d.M) * math.Pow10(int(d.RExp)))))
}

// ThresholdMask is the readable (and event) threshold mask: bit i set when
// Thresholds[i] exists.
func (d *Def) ThresholdMask() uint8 {
	var m uint8
	for i, t := range d.Thresholds {
		if !math.IsNaN(t) && !d.Discrete {
			m |= 1 << i
		}
	}
	return m
}

// ThresholdRaw returns the thresholds as raw bytes (0 where absent).
func (d *Def) ThresholdRaw() [6]uint8 {
	var r [6]uint8
	for i, t := range d.Thresholds {
		if !math.IsNaN(t) {
			r[i] = d.Raw(t)
		}
	}
	return r
}

// EventMask is the threshold event mask (§35.11 order): going-low events of
// the lower thresholds (offsets 0, 2, 4), going-high of the upper (7, 9, 11).
func (d *Def) EventMask() uint16 {
	var m uint16
	tm := d.ThresholdMask()
	for i := 0; i < 6; i++ {
		if tm&(1<<i) != 0 {
			m |= 1 << EventOffset(i)
		}
	}
	return m
}

// EventOffset is the event offset (§42.1, Table 42-2) of crossing threshold
// i in its direction of concern: LNC going low 0, LCR 2, LNR 4, UNC going
// high 7, UCR 9, UNR 0Bh.
func EventOffset(i int) uint8 {
	if i < UNC {
		return uint8(2 * i)
	}
	return uint8(2*(i-UNC) + 7)
}

// Discrete states of the Host Power sensor (sensor type 22h offsets).
const (
	StateWorking = 0 // S0/G0
	StateSoftOff = 5 // S5/G2
)

// records are the SDR records of the sensors, built once for every BMC.
var records = sync.OnceValue(func() [][]byte {
	out := make([][]byte, 0, len(Defs))
	for i := range Defs {
		out = append(out, Defs[i].pack(uint16(Defs[i].Number)+1))
	}
	return out
})

// Records returns the sensors' SDR records (record IDs 2…8, after the BMC's
// own Management Controller locator, ID 1). Callers must not modify them.
func Records() [][]byte { return records() }

func (d *Def) pack(id uint16) []byte {
	name := []byte(d.Name)
	tl := types.TypeLength(0xC0 | byte(len(name)))
	init := types.SensorInitialization{InitScanning: true, InitEvents: true, EventGenerationEnabled: true, SensorScanningEnabled: true}
	if d.Discrete {
		var m types.Mask
		m.Discrete.Assert.State_0, m.Discrete.Assert.State_5 = true, true
		m.Discrete.Deassert = m.Discrete.Assert
		m.Discrete.Reading = m.Discrete.Assert
		c := &types.SDRCompact{
			GeneratorID: 0x0020, SensorNumber: types.SensorNumber(d.Number), SensorEntityID: types.EntityID(d.Entity),
			SensorInitialization:   init,
			SensorCapabilities:     types.SensorCapabilities{AutoRearm: true, EventMessageControl: 0x00},
			SensorType:             d.Type,
			SensorEventReadingType: types.EventReadingTypeSensorSpecific,
			Mask:                   m,
			SensorUnit:             types.SensorUnit{AnalogDataFormat: types.SensorAnalogUnitFormat_NotAnalog},
			IDStringTypeLength:     tl, IDStringBytes: name,
		}
		return c.Pack(id)
	}
	init.InitThresholds, init.InitHysteresis = true, true
	f := &types.SDRFull{
		GeneratorID: 0x0020, SensorNumber: types.SensorNumber(d.Number), SensorEntityID: types.EntityID(d.Entity),
		SensorInitialization: init,
		// Auto re-arm; hysteresis and thresholds readable (01b); per-threshold event control (00b).
		SensorCapabilities:     types.SensorCapabilities{AutoRearm: true, HysteresisAccess: 0x01, ThresholdAccess: 0x01},
		SensorType:             d.Type,
		SensorEventReadingType: types.EventReadingTypeThreshold,
		Mask:                   d.mask(),
		SensorUnit:             types.SensorUnit{AnalogDataFormat: types.SensorAnalogUnitFormat_Unsigned, BaseUnit: d.Unit},
		LinearizationFunc:      types.LinearizationFunc_Linear,
		ReadingFactors:         types.ReadingFactors{M: d.M, B: d.B, B_Exp: d.BExp, R_Exp: d.RExp},
		SensorMaxReadingRaw:    0xFF,
		SensorMinReadingRaw:    0x00,
		PositiveHysteresisRaw:  d.hystRaw(),
		NegativeHysteresisRaw:  d.hystRaw(),
		IDStringTypeLength:     tl, IDStringBytes: name,
	}
	r := d.ThresholdRaw()
	f.LNC_Raw, f.LCR_Raw, f.LNR_Raw, f.UNC_Raw, f.UCR_Raw, f.UNR_Raw = r[LNC], r[LCR], r[LNR], r[UNC], r[UCR], r[UNR]
	return f.Pack(id)
}

// mask fills the threshold masks: which thresholds are readable (and
// compared), and the going-low/going-high events of each.
func (d *Def) mask() types.Mask {
	var m types.Mask
	t := &m.Threshold
	tm := d.ThresholdMask()
	set := func(i int, low, high *bool, ret *bool) {
		if tm&(1<<i) == 0 {
			return
		}
		*ret = true
		if i < UNC {
			*low = true
		} else {
			*high = true
		}
	}
	set(LNC, &t.LNC.Low_Assert, &t.LNC.High_Assert, &t.LNC.StatusReturned)
	set(LCR, &t.LCR.Low_Assert, &t.LCR.High_Assert, &t.LCR.StatusReturned)
	set(LNR, &t.LNR.Low_Assert, &t.LNR.High_Assert, &t.LNR.StatusReturned)
	set(UNC, &t.UNC.Low_Assert, &t.UNC.High_Assert, &t.UNC.StatusReturned)
	set(UCR, &t.UCR.Low_Assert, &t.UCR.High_Assert, &t.UCR.StatusReturned)
	set(UNR, &t.UNR.Low_Assert, &t.UNR.High_Assert, &t.UNR.StatusReturned)
	set(LNC, &t.LNC.Low_Deassert, &t.LNC.High_Deassert, &t.LNC.StatusReturned)
	set(LCR, &t.LCR.Low_Deassert, &t.LCR.High_Deassert, &t.LCR.StatusReturned)
	set(LNR, &t.LNR.Low_Deassert, &t.LNR.High_Deassert, &t.LNR.StatusReturned)
	set(UNC, &t.UNC.Low_Deassert, &t.UNC.High_Deassert, &t.UNC.StatusReturned)
	set(UCR, &t.UCR.Low_Deassert, &t.UCR.High_Deassert, &t.UCR.StatusReturned)
	set(UNR, &t.UNR.Low_Deassert, &t.UNR.High_Deassert, &t.UNR.StatusReturned)
	// Readable threshold mask (record byte 19; none settable, byte 20).
	// go-ipmi v0.9.1 packs its Settable fields into byte 19 and Readable
	// into byte 20, the other way round from §43.1 (ipmitool printed
	// "Settable Thresholds: unc ucr unr" and no readable ones): set
	// Settable to get the spec's readable bits.
	t.LNC.Settable, t.LCR.Settable, t.LNR.Settable = tm&1 != 0, tm&2 != 0, tm&4 != 0
	t.UNC.Settable, t.UCR.Settable, t.UNR.Settable = tm&8 != 0, tm&16 != 0, tm&32 != 0
	return m
}

// Factors returns the 6 bytes of the record's conversion factors (M, M/tol,
// B, B/accuracy, accuracy/direction, Rexp/Bexp: record bytes 25–30), as Get
// Sensor Reading Factors answers them.
func (d *Def) Factors() []byte {
	rec := records()[d.Number-1]
	return rec[24:30]
}
