package sensors

import (
	"math"
	"sync"
	"time"
)

// Source is what the sensors follow: the managed host's power state and
// the CPU time its QEMU process has used. Both are asked at most once per
// SampleEvery, and only when someone reads a sensor.
type Source interface {
	// PowerOn reports whether the host runs.
	PowerOn() bool
	// CPUTime is the CPU time (user+system) the QEMU process has used;
	// ok is false when it is not known (no QEMU, no pid).
	CPUTime() (d time.Duration, ok bool)
}

// SampleEvery is the least interval between two samples of the Source:
// reads in between see the last sample (a client walking every sensor
// costs one /proc read, not one per sensor).
const SampleEvery = time.Second

// How the analog sensors move (docs/bmcsim.md, "Sensors"): each relaxes
// towards a target set by power and load (0 idle … 1 one host CPU busy)
// with its own time constant.
const (
	ambient     = 24.0 // inlet, °C
	cpuIdle     = 38.0 // CPU Temp on, idle
	cpuLoad     = 40.0 // added at full load
	cpuTau      = 20 * time.Second
	fanIdle     = 3000.0 // RPM, follows CPU Temp
	fanPerC     = 110.0
	fanTau      = 4 * time.Second
	powerOff    = 8.0  // W, standby
	powerIdle   = 95.0 // W
	powerLoad   = 160.0
	powerTau    = 2 * time.Second
	railOn      = 12.1
	railTau     = 500 * time.Millisecond
	ambientTau  = 60 * time.Second
	noiseBucket = time.Second
)

// Model holds one BMC's sensor readings. It does nothing between reads:
// Read advances it by the time elapsed since the last one. Methods are
// safe for concurrent use.
type Model struct {
	mu  sync.Mutex
	src Source
	now func() time.Time

	started    bool
	sampling   bool  // a reader is asking the Source, without the lock
	last       int64 // UnixNano of the last advance
	lastCPU    time.Duration
	cpuOK      bool
	on         bool
	load       float32
	val        [6]float32 // analog sensors 1–6
	pinned     uint8      // bit n-1: sensor n pinned
	pin        [6]float32
	asserted   [6]uint8 // threshold i asserted: bit i
	powerSeen  bool     // reportedOn is set
	reportedOn bool     // the Host Power state of the last evaluation
	onEvent    func(Event)
	seed       uint32

	// Power statistics (DCMI Get Power Reading) since the first read:
	// minimum, maximum and the integral of the PSU input power, exact for
	// the model's exponential moves between reads.
	statStart  int64
	pMin, pMax float32
	pIntegral  float64 // W·s
}

// Event is a sensor event for the SEL (§29.7 event message fields).
type Event struct {
	Sensor   *Def
	Deassert bool
	// Type is the event/reading type code: 01h threshold, 6Fh sensor-specific.
	Type uint8
	Data [3]byte
}

// NewModel returns a model of src. onEvent (may be nil) receives threshold
// crossings and returns, and Host Power state changes; it is called without
// the model's lock held.
func NewModel(src Source, seed uint32, onEvent func(Event)) *Model {
	return &Model{src: src, now: time.Now, onEvent: onEvent, seed: seed | 1}
}

// SetClock replaces time.Now (tests).
func (m *Model) SetClock(now func() time.Time) {
	m.mu.Lock()
	m.now = now
	m.mu.Unlock()
}

// Reading is one sensor's state as Get Sensor Reading answers it.
type Reading struct {
	Raw   uint8
	Value float64
	// Status: threshold sensors, bit i = threshold i asserted; Host Power,
	// bit n = state offset n.
	Status      uint16
	Unavailable bool
}

// Read advances the model to now and returns sensor n's reading.
func (m *Model) Read(n uint8) (Reading, bool) {
	d, ok := Lookup(n)
	if !ok {
		return Reading{}, false
	}
	evs := m.advance()
	m.mu.Lock()
	r := m.readingLocked(d)
	m.mu.Unlock()
	m.emit(evs)
	return r, true
}

// Asserted returns which thresholds of sensor n are asserted (bit i) and,
// for Host Power, the current state bit; advances the model first.
func (m *Model) Asserted(n uint8) (uint16, bool) {
	r, ok := m.Read(n)
	return r.Status, ok
}

func (m *Model) readingLocked(d *Def) Reading {
	if d.Discrete {
		st := uint16(1 << StateSoftOff)
		if m.on {
			st = 1 << StateWorking
		}
		return Reading{Status: st}
	}
	i := d.Number - 1
	v := m.outputLocked(i)
	raw := d.Raw(v)
	return Reading{Raw: raw, Value: d.Value(raw), Status: uint16(m.asserted[i])}
}

// outputLocked is sensor i's value as read: the model value plus a little
// noise that changes once per noiseBucket (so the several reads of one
// client walk agree), or the pinned value.
func (m *Model) outputLocked(i uint8) float64 {
	if m.pinned&(1<<i) != 0 {
		return float64(m.pin[i])
	}
	v := float64(m.val[i])
	amp := [6]float64{0.5, 0.25, 40, 1.5, 0.03, 0}[i]
	if i == Fan1-1 || i == Fan2-1 {
		if v < 100 {
			amp = 0 // a stopped fan does not jitter
		}
	}
	return v + amp*m.noise(i)
}

// noise is a deterministic value in [-1, 1) for sensor i and the current
// bucket.
func (m *Model) noise(i uint8) float64 {
	x := uint32(m.last/int64(noiseBucket)) ^ m.seed ^ uint32(i)*0x9E3779B9
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	x *= 0x2545F491
	x ^= x >> 15
	return float64(x)/float64(1<<31) - 1
}

// advance brings the model to now and returns the events it caused.
func (m *Model) advance() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		// The first read samples under the lock: every reader needs it.
		m.start(m.now().UnixNano())
		return m.evaluateLocked()
	}
	if m.sampling || time.Duration(m.now().UnixNano()-m.last) < SampleEvery {
		return nil // the last sample stands (another reader is taking the next)
	}
	// Sample without the lock: the power state may cost a QMP round trip
	// (up to 300 ms), which concurrent reads need not wait for.
	m.sampling = true
	m.mu.Unlock()
	on := m.src.PowerOn()
	cpu, ok := m.src.CPUTime()
	m.mu.Lock()
	m.sampling = false
	now := m.now().UnixNano()
	dt := time.Duration(now - m.last)
	var load float64
	if ok && m.cpuOK && cpu >= m.lastCPU && dt > 0 {
		load = min(1, float64(cpu-m.lastCPU)/float64(dt))
	}
	if !on {
		load = 0
	}
	m.lastCPU, m.cpuOK = cpu, ok
	m.load = float32(load)
	m.on = on
	m.last = now
	m.relax(dt, on, load)
	return m.evaluateLocked()
}

func (m *Model) start(now int64) {
	m.started = true
	m.last = now
	m.statStart = now
	defer func() { m.pMin, m.pMax = m.val[PSUPower-1], m.val[PSUPower-1] }()
	m.on = m.src.PowerOn()
	m.lastCPU, m.cpuOK = m.src.CPUTime()
	m.val[InletTemp-1] = ambient
	m.val[PSUPower-1] = powerOff
	if m.on {
		m.val[CPUTemp-1] = cpuIdle
		m.val[Fan1-1] = fanIdle
		m.val[Fan2-1] = fanIdle * 0.97
		m.val[PSUPower-1] = powerIdle
		m.val[Rail12V-1] = railOn
	} else {
		m.val[CPUTemp-1] = ambient + 2
	}
}

// relax moves every analog sensor towards its target over dt.
func (m *Model) relax(dt time.Duration, on bool, load float64) {
	step := func(i int, target float64, tau time.Duration) {
		k := math.Exp(-float64(dt) / float64(tau))
		m.val[i] = float32(target + (float64(m.val[i])-target)*k)
	}
	p0 := float64(m.val[PSUPower-1])
	defer func() { m.powerStats(dt, p0, on, load) }()
	step(InletTemp-1, ambient+1.5*load, ambientTau)
	if on {
		step(CPUTemp-1, cpuIdle+cpuLoad*load, cpuTau)
		fan := fanIdle + fanPerC*max(0, float64(m.val[CPUTemp-1])-cpuIdle)
		step(Fan1-1, fan, fanTau)
		step(Fan2-1, fan*0.97, fanTau)
		step(PSUPower-1, powerIdle+powerLoad*load, powerTau)
		step(Rail12V-1, railOn, railTau)
	} else {
		step(CPUTemp-1, float64(m.val[InletTemp-1])+2, cpuTau)
		step(Fan1-1, 0, fanTau)
		step(Fan2-1, 0, fanTau)
		step(PSUPower-1, powerOff, powerTau)
		step(Rail12V-1, 0, railTau)
	}
}

// powerStats adds the interval dt, in which the PSU input power moved
// from p0 towards its target, to the power statistics.
func (m *Model) powerStats(dt time.Duration, p0 float64, on bool, load float64) {
	target, tau := powerOff, powerTau
	if on {
		target = powerIdle + powerLoad*load
	}
	sec, tauSec := dt.Seconds(), tau.Seconds()
	// ∫ target + (p0-target)·e^(-t/τ) dt over [0, dt]
	m.pIntegral += target*sec + (p0-target)*tauSec*(1-math.Exp(-sec/tauSec))
	p1 := m.val[PSUPower-1]
	m.pMin, m.pMax = min(m.pMin, p1), max(m.pMax, p1)
}

// PowerStats is the PSU input power as DCMI Get Power Reading reports it:
// now, and the minimum, maximum and average since the first read over
// period. Pinning the sensor does not change the statistics' past.
type PowerStats struct {
	Now, Min, Max, Avg float64
	Period             time.Duration
}

// Power advances the model and returns the power statistics.
func (m *Model) Power() PowerStats {
	evs := m.advance()
	m.mu.Lock()
	cur := m.outputLocked(PSUPower - 1)
	st := PowerStats{Now: cur, Min: min(float64(m.pMin), cur), Max: max(float64(m.pMax), cur),
		Period: time.Duration(m.last - m.statStart)}
	st.Avg = cur
	if st.Period > 0 {
		st.Avg = m.pIntegral / st.Period.Seconds()
	}
	m.mu.Unlock()
	m.emit(evs)
	return st
}

// Load is the host CPU load (0…1) of the last sample.
func (m *Model) Load() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return float64(m.load)
}

// Pin holds sensor n at v until Release; the crossing it causes is
// reported at once. Host Power cannot be pinned.
func (m *Model) Pin(n uint8, v float64) bool {
	d, ok := Lookup(n)
	if !ok || d.Discrete {
		return false
	}
	evs := m.advance()
	m.mu.Lock()
	m.pinned |= 1 << (n - 1)
	m.pin[n-1] = float32(v)
	evs = append(evs, m.evaluateLocked()...)
	m.mu.Unlock()
	m.emit(evs)
	return true
}

// Release lets sensor n follow the model again.
func (m *Model) Release(n uint8) bool {
	d, ok := Lookup(n)
	if !ok || d.Discrete {
		return false
	}
	evs := m.advance()
	m.mu.Lock()
	m.pinned &^= 1 << (n - 1)
	evs = append(evs, m.evaluateLocked()...)
	m.mu.Unlock()
	m.emit(evs)
	return true
}

func (m *Model) emit(evs []Event) {
	if m.onEvent == nil {
		return
	}
	for _, e := range evs {
		m.onEvent(e)
	}
}

// evaluateLocked compares each threshold sensor's reading with its
// thresholds (with hysteresis, in raw counts as a BMC compares) and the
// host's power state with the last reported one, and returns the events.
func (m *Model) evaluateLocked() []Event {
	var evs, off []Event
	for i := range Defs {
		d := &Defs[i]
		if d.Discrete {
			continue
		}
		raw := d.Raw(m.outputLocked(uint8(i)))
		thr := d.ThresholdRaw()
		h := d.hystRaw()
		mask := d.ThresholdMask()
		was := m.asserted[i]
		now := was
		for t := 0; t < 6; t++ {
			if mask&(1<<t) == 0 {
				continue
			}
			bit := uint8(1 << t)
			armed := d.Standby || m.on || t >= UNC || m.pinned&(1<<i) != 0
			var assert, clear bool
			if t < UNC {
				assert = raw <= thr[t]
				clear = int(raw) > int(thr[t])+int(h)
			} else {
				assert = raw >= thr[t]
				clear = int(raw) < int(thr[t])-int(h)
			}
			switch {
			case !armed:
				now &^= bit
			case was&bit == 0 && assert:
				now |= bit
			case was&bit != 0 && clear:
				now &^= bit
			}
			if now&bit != was&bit {
				e := Event{Sensor: d, Type: 0x01, Deassert: now&bit == 0}
				// Data 1: trigger reading in data 2, threshold in data 3.
				e.Data = [3]byte{0x50 | EventOffset(t), raw, thr[t]}
				if e.Deassert {
					off = append(off, e)
				} else {
					evs = append(evs, e)
				}
			}
		}
		// Returns in the order a falling (rising) reading passes them:
		// UCR before UNC, LCR before LNC.
		for j := len(off) - 1; j >= 0; j-- {
			evs = append(evs, off[j])
		}
		off = off[:0]
		m.asserted[i] = now
	}
	d, _ := Lookup(HostPower)
	st := uint8(StateSoftOff)
	if m.on {
		st = StateWorking
	}
	if m.powerSeen && m.reportedOn != m.on {
		evs = append(evs, Event{Sensor: d, Type: 0x6F, Data: [3]byte{st, 0xFF, 0xFF}})
	}
	m.powerSeen, m.reportedOn = true, m.on
	return evs
}
