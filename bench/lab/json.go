package main

import (
	"fmt"
	"runtime"
	"strconv"
	"time"

	br "github.com/ooblab/ooblab/bench/results"
)

// labSection is the -json output: the four tables of the text report with
// their goals, and plots of the start-up stages, the round-trip latency per
// channel and the payload against the raw KCS ceiling. What was not
// measured (a run that failed half-way) is left out.
func labSection(c *config, r *results) *br.Section {
	sec := &br.Section{Section: "lab", Title: "Lab: start-up, vm status VMM-I vs OOB-I, failover, sealed payload vs raw KCS",
		Started: time.Now(), Env: map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "n": strconv.Itoa(c.n)}, Notes: r.notes}
	sec.Tables = append(sec.Tables, upTable(r.ups)...)
	sec.Plots = append(sec.Plots, upPlots(r.ups)...)
	if r.rtt != nil {
		sec.Tables = append(sec.Tables, rttTable(r.rtt))
		sec.Plots = append(sec.Plots, br.Plot{ID: "rtt-latency", Title: "vm status round trip per channel", Kind: "box",
			YLabel: "ms (log)", LogY: true, Series: rttSeries(r.rtt)})
	}
	if len(r.failover) > 0 {
		sec.Tables = append(sec.Tables, failoverTable(r.failover))
	}
	if t, p, ok := payloadTable(r.payload, r.kcs); ok {
		sec.Tables = append(sec.Tables, t)
		sec.Plots = append(sec.Plots, p)
	}
	return sec
}

func msF(d time.Duration) float64 { return float64(d) / 1e6 }

func msList(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = msF(d)
	}
	return out
}

func upName(u upRun) string {
	if u.hosts == 1 {
		return u.label + " 1 host"
	}
	return fmt.Sprintf("%s %d hosts", u.label, u.hosts)
}

// upTable: a row per stage, a column per `lab up` run, and 3 hosts / 1 host.
func upTable(ups []upRun) []br.Table {
	if len(ups) == 0 {
		return nil
	}
	keys := stageKeys(ups)
	warm1, warm3 := warmRuns(ups)
	t := br.Table{ID: "up", Title: "lab up, per stage, to ready (both channels answer)",
		Goal: fmt.Sprintf("cold ≤ %v; warm 1 host ≤ %v; warm 3 hosts ≤ %.0f× 1 host (total)", goalCold, goalWarm, goalRatio3)}
	for _, u := range ups {
		t.Columns = append(t.Columns, br.Column{Name: upName(u), Unit: "s", Better: "lower"})
	}
	if warm1 != nil && warm3 != nil {
		t.Columns = append(t.Columns, br.Column{Name: "3 hosts / 1 host", Unit: "×", Better: "lower"})
	}
	row := func(label string, get func(u upRun) (time.Duration, bool)) {
		var vs []*float64
		for _, u := range ups {
			if d, ok := get(u); ok {
				vs = append(vs, br.V(d.Seconds()))
			} else {
				vs = append(vs, nil)
			}
		}
		if warm1 != nil && warm3 != nil {
			a, ok1 := get(*warm3)
			b, ok2 := get(*warm1)
			if ok1 && ok2 && b > time.Millisecond {
				vs = append(vs, br.V(a.Seconds()/b.Seconds()))
			} else {
				vs = append(vs, nil)
			}
		}
		t.AddRow(label, vs...)
	}
	for _, k := range keys {
		row(k, func(u upRun) (time.Duration, bool) { return stageOf(u, k) })
	}
	row("wall (ctl.Up call)", func(u upRun) (time.Duration, bool) { return u.wall, true })
	for _, u := range ups {
		t.Notes = append(t.Notes, fmt.Sprintf("%s: load average before %s.", upName(u), u.load))
	}
	return []br.Table{t}
}

// upPlots: one bar chart of stages per `lab up` run (total left out: it
// would dwarf the stages).
func upPlots(ups []upRun) []br.Plot {
	var out []br.Plot
	for i, u := range ups {
		p := br.Plot{ID: "up-" + strconv.Itoa(i), Title: "lab up stages, " + upName(u), Kind: "bars", YLabel: "s"}
		for _, s := range u.stages {
			if stageKey(s.Stage) == "total" {
				continue
			}
			p.Series = append(p.Series, br.Series{Name: stageKey(s.Stage), Y: []float64{s.Elapsed.Seconds()}})
		}
		if len(p.Series) > 0 {
			out = append(out, p)
		}
	}
	return out
}

func rttTable(r *rttResult) br.Table {
	t := br.Table{ID: "rtt", Title: "vm status round trip (Client.Do), interleaved",
		Goal: fmt.Sprintf("oob-i ≤ vmm-i + %v (median)", goalOOBOver),
		Columns: []br.Column{{Name: "median", Unit: "ms", Better: "lower"}, {Name: "p99", Unit: "ms", Better: "lower"},
			{Name: "min", Unit: "ms", Better: "lower"}, {Name: "max", Unit: "ms", Better: "lower"}, {Name: "n"}},
		Notes: []string{fmt.Sprintf("oob-i: %.1f queue-2 reads per request; load average before %s.", r.oobReads, r.load)}}
	for _, x := range []struct {
		n string
		s stats
	}{{"vmm-i", r.vmmi}, {"oob-i", r.oob}} {
		t.AddRow(x.n, br.V(msF(x.s.median)), br.V(msF(x.s.p99)), br.V(msF(x.s.min)), br.V(msF(x.s.max)), br.V(float64(x.s.n)))
	}
	t.AddRow("oob-i − vmm-i", br.V(msF(r.oob.median-r.vmmi.median)), br.V(msF(r.oob.p99-r.vmmi.p99)), nil, nil, nil)
	if r.redfish.n > 0 {
		x := r.redfish
		t.AddRow("oob-i (redfish)", br.V(msF(x.median)), br.V(msF(x.p99)), br.V(msF(x.min)), br.V(msF(x.max)), br.V(float64(x.n)))
		t.AddRow("oob-i (redfish) − vmm-i", br.V(msF(x.median-r.vmmi.median)), br.V(msF(x.p99-r.vmmi.p99)), nil, nil, nil)
		t.Notes = append(t.Notes, fmt.Sprintf("oob-i (redfish): the same queues through the BMC's Redfish OEM action, Queue 2 pushed on its SSE stream; goal ≤ vmm-i + %v (median).", goalRedfishOver))
	}
	return t
}

func failoverTable(runs []failoverRun) br.Table {
	t := br.Table{ID: "failover", Title: "failover: unplug VMM-I → first vm status answer over OOB-I (auto client)",
		Goal:    fmt.Sprintf("≤ %v (max)", goalFail),
		Columns: []br.Column{{Name: "median", Unit: "ms", Better: "lower"}, {Name: "max", Unit: "ms", Better: "lower"}, {Name: "n"}}}
	by := map[time.Duration][]time.Duration{}
	var order []time.Duration
	for _, f := range runs {
		if _, ok := by[f.budget]; !ok {
			order = append(order, f.budget)
		}
		by[f.budget] = append(by[f.budget], f.total)
	}
	for _, b := range order {
		s := summarize(by[b])
		t.AddRow("budget "+budgetName(b), br.V(msF(s.median)), br.V(msF(s.max)), br.V(float64(s.n)))
	}
	return t
}

// payloadTable: the raw KCS rows, the sealed request and its share of the
// ceiling of its own path (oemread-240: BMC to guest) and of the write
// ceiling (oemwrite-240), and a bar chart of the same.
func payloadTable(p *payloadResult, k *kcsResult) (br.Table, br.Plot, bool) {
	if p == nil && k == nil {
		return br.Table{}, br.Plot{}, false
	}
	ceil := k.ceilings()
	t := br.Table{ID: "payload", Title: "sealed payload over OOB-I (VMS → queue 1 → guest KCS → hvagent) vs raw KCS ceiling",
		Goal: fmt.Sprintf("sealed ≥ %.0f%% of the raw ceiling of the same path (%s)", goalShare*100, ceil.sameName),
		Columns: []br.Column{{Name: "median", Unit: "µs", Better: "lower"}, {Name: "p99", Unit: "µs", Better: "lower"},
			{Name: "throughput", Unit: "B/s", Better: "higher"}, {Name: "share of ceiling", Unit: "%", Better: "higher"},
			{Name: "share of oemwrite-240", Unit: "%", Better: "higher"}},
		Notes: []string{"The ceiling of the same path is oemread-240: the guest reading full Queue 1 records, the way a VMS's request reaches hvagent. " +
			"It is lower than oemwrite-240 (the guest writing, the way answers go) because QEMU's ipmi-bmc-extern reads the BMC's answer from the chardev a byte per main-loop iteration."}}
	pl := br.Plot{ID: "payload", Title: "payload throughput vs the raw KCS ceiling", Kind: "bars", YLabel: "KB/s"}
	num := func(s string) *float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil
		}
		return br.V(v)
	}
	if k != nil {
		for _, m := range kcsRows {
			f := k.rows[m]
			if f == nil {
				continue
			}
			bps := num(f["bytes_per_s"])
			t.AddRow("raw KCS "+m, num(f["median_us"]), num(f["p99_us"]), bps, nil, nil)
			if bps != nil && (m == "oemwrite-240" || m == "oemread-240") {
				pl.Series = append(pl.Series, br.Series{Name: m, Y: []float64{*bps / 1000}})
			}
		}
	}
	share := func(rate, of float64) *float64 {
		if of <= 0 {
			return nil
		}
		return br.V(100 * rate / of)
	}
	if p != nil && p.lat.median > 0 {
		sealedRate := float64(p.sealedBytes) / p.lat.median.Seconds()
		t.AddRow(fmt.Sprintf("sealed, %d B metadata (n=%d)", p.metaBytes, p.lat.n), br.V(float64(p.lat.median)/1e3),
			br.V(float64(p.lat.p99)/1e3), br.V(sealedRate), share(sealedRate, ceil.same), share(sealedRate, ceil.write))
		pl.Series = append(pl.Series, br.Series{Name: "sealed OOB-I", Y: []float64{sealedRate / 1000}})
		if p.small > 0 && p.lat.median > p.small {
			marginal := float64(p.sealedBytes-p.smallSealed) / (p.lat.median - p.small).Seconds()
			t.AddRow("sealed, marginal (minus a small status)", br.V(float64(p.lat.median-p.small)/1e3), nil, br.V(marginal),
				share(marginal, ceil.same), share(marginal, ceil.write))
			pl.Series = append(pl.Series, br.Series{Name: "sealed marginal", Y: []float64{marginal / 1000}})
		}
		t.Notes = append(t.Notes, fmt.Sprintf("write retries %d, queue-1-full waits %d; load average before %s.", p.writeRetries, p.fullWaits, p.load))
	}
	return t, pl, len(t.Rows) > 0
}

// kcsRows are the raw KCS rows the lab bench shows.
var kcsRows = []string{"getdeviceid", "oemread-empty", "oemwrite-240", "oemwrite-240-raw", "oemread-240", "oemread-240-raw"}

// ceilings are the raw KCS ceilings in bytes per second: same is the one
// of the sealed request's path (oemread-240; oemwrite-240 when the guest
// reported no read row), write the guest-to-BMC one (oemwrite-240). Zero:
// not measured.
type ceilings struct {
	same, write float64
	sameName    string
}

func (k *kcsResult) ceilings() ceilings {
	c := ceilings{sameName: "oemread-240"}
	if k == nil {
		return c
	}
	rate := func(m string) float64 {
		v, _ := strconv.ParseFloat(k.rows[m]["bytes_per_s"], 64)
		return v
	}
	c.write, c.same = rate("oemwrite-240"), rate("oemread-240")
	if c.same == 0 {
		c.same, c.sameName = c.write, "oemwrite-240 (no read row)"
	}
	return c
}

// rttSeries are the round-trip samples per channel; the Redfish OOB-I only
// when it was measured.
func rttSeries(r *rttResult) []br.Series {
	s := []br.Series{{Name: "vmm-i", Y: msList(r.vmmiLat)}, {Name: "oob-i", Y: msList(r.oobLat)}}
	if len(r.redfishLat) > 0 {
		s = append(s, br.Series{Name: "oob-i (redfish)", Y: msList(r.redfishLat)})
	}
	return s
}
