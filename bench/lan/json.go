package main

import (
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/ooblab/ooblab/bench/results"
)

// report collects the rows of the run for -json (bench/results format):
// one table with every target row and the ratio rows, and a latency
// distribution plot per concurrency.
type report struct {
	sec   results.Section
	table results.Table
	extra []results.Table          // the ipmitool exec table
	dists map[int][]results.Series // by concurrency
	concs []int
}

func newReport(mode string, warm, dur time.Duration) *report {
	return &report{
		sec: results.Section{Section: "lan", Title: "LAN: bmcsim vs OpenIPMI ipmi_sim, in-session RMCP+ Get Device ID",
			Started: time.Now(), Env: map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "client": mode,
				"window": fmt.Sprintf("%v warm-up + %v measured per row", warm, dur)}},
		table: results.Table{ID: "rows", Title: "In-session requests over loopback UDP, one outstanding per session",
			Goal: "bmcsim ≥ ipmi_sim (ratio ≥ 1 in req/s) at 1, 4 and 16 sessions",
			Columns: []results.Column{
				{Name: "suite"}, {Name: "sessions"},
				{Name: "req/s", Unit: "1/s", Better: "higher"},
				{Name: "median", Unit: "µs", Better: "lower"},
				{Name: "p99", Unit: "µs", Better: "lower"},
				{Name: "errors", Better: "lower"},
				{Name: "server µs/req", Unit: "µs", Better: "lower"},
			},
			Notes: []string{"Ratio rows (A/B) divide A's figure by B's measured in the same run: req/s above 1 and latency below 1 favour A."}},
		dists: map[int][]results.Series{},
	}
}

func usF(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func (p *report) add(r *result) {
	var per *float64
	if r.serverCPU >= 0 && r.n > 0 {
		per = results.V(float64(r.serverCPU.Microseconds()) / float64(r.n))
	}
	p.table.AddRow(fmt.Sprintf("%s suite %d, %d sessions", r.t.label, r.t.suite, r.conc),
		results.V(float64(r.t.suite)), results.V(float64(r.conc)), results.V(r.rate()),
		results.V(usF(r.pct(0.5))), results.V(usF(r.pct(0.99))), results.V(float64(r.errs)), per)
	if _, ok := p.dists[r.conc]; !ok {
		p.concs = append(p.concs, r.conc)
	}
	p.dists[r.conc] = append(p.dists[r.conc], results.Series{
		Name: fmt.Sprintf("%s s%d", r.t.label, r.t.suite), Y: quantiles(r.lat, 1000)})
}

func (p *report) ratio(a, b string, conc int, ra, rb *result) {
	var per *float64
	if ra.serverCPU > 0 && rb.serverCPU > 0 {
		per = results.V((ra.serverCPU.Seconds() / float64(ra.n)) / (rb.serverCPU.Seconds() / float64(rb.n)))
	}
	p.table.AddRow(fmt.Sprintf("%s/%s, %d sessions", a, b, conc), nil, results.V(float64(conc)),
		results.V(ra.rate()/rb.rate()), results.V(float64(ra.pct(0.5))/float64(rb.pct(0.5))),
		results.V(float64(ra.pct(0.99))/float64(rb.pct(0.99))), nil, per)
}

// quantiles thins sorted latencies to at most n evenly spaced quantiles (µs),
// enough for a box plot and small enough for results.json.
func quantiles(sorted []time.Duration, n int) []float64 {
	if len(sorted) <= n {
		out := make([]float64, len(sorted))
		for i, d := range sorted {
			out[i] = usF(d)
		}
		return out
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = usF(sorted[i*(len(sorted)-1)/(n-1)])
	}
	return out
}

func (p *report) write(path string) error {
	p.sec.Tables = append([]results.Table{p.table}, p.extra...)
	for _, c := range p.concs {
		p.sec.Plots = append(p.sec.Plots, results.Plot{ID: "latency-c" + strconv.Itoa(c), Kind: "box", YLabel: "µs (log)", LogY: true,
			Title: fmt.Sprintf("Get Device ID latency, %d session(s)", c), Series: p.dists[c]})
	}
	return p.sec.WriteFile(path)
}
