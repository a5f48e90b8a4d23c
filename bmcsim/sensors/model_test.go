package sensors

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
)

// fakeHost is a Source whose power and CPU time the test sets.
type fakeHost struct {
	mu  sync.Mutex
	on  bool
	cpu time.Duration
	ok  bool
	n   int // samples taken
}

var _ Source = (*fakeHost)(nil)

func (h *fakeHost) PowerOn() bool { h.mu.Lock(); defer h.mu.Unlock(); h.n++; return h.on }
func (h *fakeHost) CPUTime() (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cpu, h.ok
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) step(d time.Duration) { c.t = c.t.Add(d) }
func newTestModel(h *fakeHost, evs *[]Event) (*Model, *clock) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	m := NewModel(h, 7, func(e Event) { *evs = append(*evs, e) })
	m.SetClock(c.now)
	return m, c
}

func value(t *testing.T, m *Model, n uint8) float64 {
	t.Helper()
	r, ok := m.Read(n)
	if !ok {
		t.Fatalf("no sensor %d", n)
	}
	return r.Value
}

// TestLoadRaisesAndPowerOffLowers: CPU temperature, fans and power follow
// the QEMU process's CPU use, smoothly, and fall when the host is off.
func TestLoadRaisesAndPowerOffLowers(t *testing.T) {
	h := &fakeHost{on: true, ok: true}
	var evs []Event
	m, c := newTestModel(h, &evs)
	idleCPU, idlePower, idleFan := value(t, m, CPUTemp), value(t, m, PSUPower), value(t, m, Fan1)
	if idleCPU < 36 || idleCPU > 40 || idlePower < 90 || idlePower > 100 {
		t.Fatalf("idle: CPU %v °C, power %v W", idleCPU, idlePower)
	}
	// One host CPU busy for 10 s: the CPU heats towards 78 °C (τ 20 s).
	var prev float64 = idleCPU
	for i := 0; i < 10; i++ {
		c.step(time.Second)
		h.cpu += time.Second
		v := value(t, m, CPUTemp)
		if v < prev-1.5 {
			t.Errorf("CPU Temp fell under load: %v after %v", v, prev)
		}
		if v > prev+4 {
			t.Errorf("CPU Temp jumped %v → %v in 1 s", prev, v)
		}
		prev = v
	}
	if v := value(t, m, CPUTemp); v < idleCPU+10 {
		t.Errorf("CPU Temp after 10 s of full load: %v, want ≥ %v", v, idleCPU+10)
	}
	if v := value(t, m, PSUPower); v < idlePower+100 {
		t.Errorf("PSU power under load: %v W, idle %v W", v, idlePower)
	}
	if v := value(t, m, Fan1); v < idleFan+500 {
		t.Errorf("Fan 1 under load: %v RPM, idle %v", v, idleFan)
	}
	if l := m.Load(); l < 0.99 {
		t.Errorf("load %v, want 1", l)
	}
	// Off: fans stop, the rail drops, power falls to standby, CPU cools.
	h.on = false
	for i := 0; i < 60; i++ {
		c.step(time.Second)
		value(t, m, CPUTemp)
	}
	if v := value(t, m, Fan1); v != 0 {
		t.Errorf("Fan 1 a minute after power off: %v RPM", v)
	}
	if v := value(t, m, Rail12V); v > 0.1 {
		t.Errorf("12V Rail off: %v V", v)
	}
	if v := value(t, m, PSUPower); v > 12 {
		t.Errorf("PSU power off: %v W", v)
	}
	if v := value(t, m, CPUTemp); v > 40 {
		t.Errorf("CPU Temp a minute after power off: %v", v)
	}
	// A stopped fan on a powered-off host is no fault; the power state
	// change is an event of the Host Power sensor.
	var power int
	for _, e := range evs {
		if e.Sensor.Number == HostPower {
			power++
			if e.Type != 0x6F || e.Data[0] != StateSoftOff {
				t.Errorf("Host Power event %+v", e)
			}
			continue
		}
		if e.Sensor.Number == Fan1 || e.Sensor.Number == Fan2 || e.Sensor.Number == Rail12V {
			t.Errorf("event of %s while off: %+v", e.Sensor.Name, e)
		}
	}
	if power != 1 {
		t.Errorf("%d Host Power events, want 1", power)
	}
}

// TestLazy: reads within SampleEvery of the last sample do not ask the
// host again, and nothing runs between reads.
func TestLazy(t *testing.T) {
	h := &fakeHost{on: true, ok: true}
	var evs []Event
	m, c := newTestModel(h, &evs)
	for n := uint8(1); n <= 7; n++ {
		m.Read(n)
	}
	c.step(SampleEvery / 2)
	for n := uint8(1); n <= 7; n++ {
		m.Read(n)
	}
	if h.n != 1 {
		t.Errorf("%d samples for 14 reads within %v, want 1", h.n, SampleEvery)
	}
	c.step(time.Hour)
	m.Read(CPUTemp)
	if h.n != 2 {
		t.Errorf("%d samples after an hour's gap, want 2", h.n)
	}
}

// TestThresholdEvents: a pinned value past a threshold asserts it once
// (event data: offset, reading, threshold); the return deasserts only past
// the hysteresis.
func TestThresholdEvents(t *testing.T) {
	h := &fakeHost{on: true}
	var evs []Event
	m, _ := newTestModel(h, &evs)
	m.Read(InletTemp)
	evs = nil
	m.Pin(InletTemp, 48) // past UNC 40 and UCR 45
	if len(evs) != 2 {
		t.Fatalf("events %+v, want UNC and UCR assertions", evs)
	}
	d, _ := Lookup(InletTemp)
	for i, want := range [][3]byte{{0x57, d.Raw(48), d.Raw(40)}, {0x59, d.Raw(48), d.Raw(45)}} {
		if evs[i].Deassert || evs[i].Type != 0x01 || evs[i].Data != want {
			t.Errorf("event %d: %+v, want assertion %x", i, evs[i], want)
		}
	}
	if st, _ := m.Asserted(InletTemp); st != 1<<UNC|1<<UCR {
		t.Errorf("asserted %06b", st)
	}
	evs = nil
	m.Pin(InletTemp, 44) // under UCR but within its hysteresis (2 °C)
	if len(evs) != 0 {
		t.Errorf("events within the hysteresis: %+v", evs)
	}
	m.Pin(InletTemp, 42.5) // past UCR's hysteresis, above UNC
	if len(evs) != 1 || !evs[0].Deassert || evs[0].Data[0] != 0x59 {
		t.Errorf("events %+v, want UCR deassertion", evs)
	}
	evs = nil
	m.Release(InletTemp)
	if len(evs) != 1 || !evs[0].Deassert || evs[0].Data[0] != 0x57 {
		t.Errorf("events on release %+v, want UNC deassertion", evs)
	}
	if m.Pin(HostPower, 1) || m.Pin(99, 1) {
		t.Error("pinned a discrete or unknown sensor")
	}
}

// TestRecordsParse: go-ipmi's own SDR parser reads the records back with
// the conversion factors and thresholds of Defs.
func TestRecordsParse(t *testing.T) {
	for i, rec := range Records() {
		d := &Defs[i]
		sdr, err := types.ParseSDR(rec, 0)
		if err != nil {
			t.Fatalf("%s: %v", d.Name, err)
		}
		if d.Discrete {
			if sdr.Compact == nil || string(sdr.Compact.IDStringBytes) != d.Name {
				t.Errorf("%s: %+v", d.Name, sdr)
			}
			continue
		}
		f := sdr.Full
		if f == nil || string(f.IDStringBytes) != d.Name || uint8(f.SensorNumber) != d.Number {
			t.Fatalf("%s: %+v", d.Name, sdr)
		}
		for _, raw := range []uint8{0, 17, 128, 255} {
			if got, want := f.ConvertReading(raw), d.Value(raw); got-want > 1e-9 || want-got > 1e-9 {
				t.Errorf("%s raw %d: go-ipmi %v, Def %v", d.Name, raw, got, want)
			}
		}
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		line string
		want time.Duration
		err  bool
	}{
		{"4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 3 0 100 0 0", 1750 * time.Millisecond, false},
		{"7 (a) b) (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0", 70 * time.Millisecond, false},
		{"7 (short) R 1 2", 0, true},
		{"no paren", 0, true},
		{"7 (x) R 1 7 7 0 -1 0 0 0 0 0 -3 4", 0, true},
	} {
		got, err := ParseStat([]byte(tc.line))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseStat(%q) = %v, %v; want %v, err %v", tc.line, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 3 0 100 0 0"))
	f.Add([]byte("7 (a) b) (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseStat(b)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU time %v", d)
		}
	})
}

// TestPidFile reads this test process's own CPU time through a pidfile.
func TestPidFile(t *testing.T) {
	path := t.TempDir() + "/qemu.pid"
	p := &PidFile{Path: path}
	if _, ok := p.CPUTime(); ok {
		t.Fatal("CPU time without a pidfile")
	}
	if err := writeFile(path, pidString()); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.CPUTime(); !ok {
		t.Fatal("no CPU time of this process")
	}
}

// BenchmarkFleetModels is the memory of 1,000 BMCs' sensor models, each
// read once (started): bytes/BMC is reported.
func BenchmarkFleetModels(b *testing.B) {
	const n = 1000
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ms := make([]*Model, n)
		for j := range ms {
			ms[j] = NewModel(&fakeHost{on: true}, uint32(j), nil)
			ms[j].Read(CPUTemp)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/BMC")
		runtime.KeepAlive(ms)
	}
}

// TestModelFollowsRealProcess: with a pidfile naming this test process,
// the model's load is the process's CPU share as getrusage(2) measures it
// over the same interval (a busy goroutine makes it non-zero; how much CPU
// it gets depends on the machine's load).
func TestModelFollowsRealProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: spends 2 s of CPU")
	}
	path := t.TempDir() + "/qemu.pid"
	if err := writeFile(path, pidString()); err != nil {
		t.Fatal(err)
	}
	m := NewModel(&procHost{pid: &PidFile{Path: path}}, 1, nil)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // one CPU busy
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	defer func() { close(stop); <-done }()
	var cpu [2]time.Duration
	var wall [2]time.Time
	for i := 0; i < 2; i++ {
		if i > 0 {
			// Measuring CPU use needs time to pass: a sample per SampleEvery.
			time.Sleep(SampleEvery + 100*time.Millisecond)
		}
		value(t, m, CPUTemp)
		cpu[i], wall[i] = rusage(t), time.Now()
	}
	want := float64(cpu[1]-cpu[0]) / float64(wall[1].Sub(wall[0]))
	if l := m.Load(); l < 0.01 || l > want+0.15 || l < want-0.15 {
		t.Errorf("load %.3f from /proc, getrusage says %.3f", l, want)
	}
}

type procHost struct{ pid *PidFile }

func (procHost) PowerOn() bool                     { return true }
func (h *procHost) CPUTime() (time.Duration, bool) { return h.pid.CPUTime() }

// slowHost is a Source whose PowerOn blocks until released (a QMP query
// to a busy QEMU).
type slowHost struct {
	entered, release chan struct{}
	calls            int
}

func (h *slowHost) PowerOn() bool {
	h.calls++
	if h.calls > 1 { // the first read's sample passes
		h.entered <- struct{}{}
		<-h.release
	}
	return true
}
func (h *slowHost) CPUTime() (time.Duration, bool) { return 0, false }

// TestSlowSourceDoesNotBlockReads: while one reader waits for the host,
// other reads answer from the last sample.
func TestSlowSourceDoesNotBlockReads(t *testing.T) {
	h := &slowHost{entered: make(chan struct{}), release: make(chan struct{})}
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	m := NewModel(h, 1, nil)
	m.SetClock(c.now)
	m.Read(CPUTemp)
	c.step(2 * SampleEvery)
	first := make(chan struct{})
	go func() { m.Read(CPUTemp); close(first) }()
	<-h.entered // the first reader is asking the host
	done := make(chan struct{})
	go func() { m.Read(Fan1); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a read waited for another reader's host query")
	}
	close(h.release)
	<-first
}
