package main

import (
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/ooblab/ooblab/bench/results"
)

// row is one message size's figures.
type row struct {
	size             int
	sealed, raw, rt  *series
	crypto           time.Duration
	envLen, nRecords int
	rawRecords       int
}

func usOf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// oobSection is the -json output: one table (a row per size and kind, and
// the sealed/unsealed ratio), KB/s against size for every kind (unsealed
// through the same path is the ceiling sealing is measured against), and
// the latency distribution of each kind per size.
func oobSection(rows []row, journal string) *results.Section {
	sec := &results.Section{Section: "oob", Title: "OOB-I: sealed vs unsealed messages VMS → BMC → system interface (in-process)",
		Started: time.Now(), Env: map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "queues": journal, "load": results.LoadAvg()}}
	t := results.Table{ID: "messages", Title: "One message in flight, sealed and unsealed interleaved",
		Columns: []results.Column{
			{Name: "size", Unit: "B"}, {Name: "n"}, {Name: "records"},
			{Name: "median", Unit: "µs", Better: "lower"}, {Name: "p99", Unit: "µs", Better: "lower"},
			{Name: "throughput", Unit: "KB/s", Better: "higher"},
		},
		Notes: []string{"unsealed: the same bytes through the same path, no seal or open (the ceiling for sealed). " +
			"seal+open: CPU only, no I/O. round trip: vmsctl/client's OOB-I Exchange with a small sealed Reply. " +
			"sealed/unsealed rows divide the sealed figures by the unsealed ones."}}
	kinds := []struct {
		name string
		get  func(r row) *series
		recs func(r row) int
	}{
		{"sealed", func(r row) *series { return r.sealed }, func(r row) int { return r.nRecords }},
		{"unsealed", func(r row) *series { return r.raw }, func(r row) int { return r.rawRecords }},
		{"round trip", func(r row) *series { return r.rt }, func(r row) int { return r.nRecords }},
	}
	var lines []results.Series
	for _, k := range kinds {
		lines = append(lines, results.Series{Name: k.name})
	}
	for _, r := range rows {
		for i, k := range kinds {
			s := k.get(r)
			if s == nil || len(s.lat) == 0 {
				continue
			}
			t.AddRow(fmt.Sprintf("%d B %s", r.size, k.name), results.V(float64(r.size)), results.V(float64(len(s.lat))),
				results.V(float64(k.recs(r))), results.V(usOf(s.q(0.5))), results.V(usOf(s.q(0.99))), results.V(s.rate()/1000))
			lines[i].X = append(lines[i].X, float64(r.size))
			lines[i].Y = append(lines[i].Y, s.rate()/1000)
		}
		if len(r.sealed.lat) > 0 && len(r.raw.lat) > 0 {
			t.AddRow(fmt.Sprintf("%d B sealed/unsealed", r.size), results.V(float64(r.size)), nil, nil,
				results.V(float64(r.sealed.q(0.5))/float64(r.raw.q(0.5))), results.V(float64(r.sealed.q(0.99))/float64(r.raw.q(0.99))),
				results.V(r.sealed.rate()/r.raw.rate()))
		}
		t.AddRow(fmt.Sprintf("%d B seal+open alone", r.size), results.V(float64(r.size)), nil, nil, results.V(usOf(r.crypto)), nil, nil)
	}
	sec.Tables = append(sec.Tables, t)
	sec.Plots = append(sec.Plots, results.Plot{ID: "throughput", Title: "OOB-I payload throughput by message size (unsealed = ceiling of the path)",
		Kind: "lines", XLabel: "message size (B)", YLabel: "KB/s", LogX: true, Series: lines})
	for _, r := range rows {
		var dist []results.Series
		for _, k := range kinds {
			if s := k.get(r); s != nil && len(s.lat) > 0 {
				y := make([]float64, len(s.lat))
				for i, d := range s.lat {
					y[i] = usOf(d)
				}
				dist = append(dist, results.Series{Name: k.name, Y: y})
			}
		}
		sec.Plots = append(sec.Plots, results.Plot{ID: "latency-" + strconv.Itoa(r.size), Kind: "box", LogY: true,
			Title: fmt.Sprintf("OOB-I latency, %d B messages", r.size), YLabel: "µs (log)", Series: dist})
	}
	return sec
}

// rateRow is one request-rate measurement: per-round rates of one and of
// many requesters, with the host taking work per request.
type rateRow struct {
	work             time.Duration
	one, multi       []float64
	many             int
	oneLat, multiLat *series // per-request latency
}

// rateTable is the request-rate table of the -json output.
func rateTable(rr []rateRow) results.Table {
	t := results.Table{ID: "rate", Title: "OOB-I request rate: 1 vs several requesters sharing one channel (pipelined OOB-I)",
		Columns: []results.Column{
			{Name: "host work", Unit: "ms"}, {Name: "requesters"},
			{Name: "rate", Unit: "req/s", Better: "higher"}, {Name: "ratio to 1"},
		},
		Notes: []string{"small sealed pings through vmsctl/client's OOB-I channel (one RMCP+ session, window 8) and hvagent's loop " +
			"(window 8); host work: time the host takes per request, standing for the hypervisor call. Median of interleaved rounds. Goal: ratio ≥3 at 8 requesters."}}
	for _, r := range rr {
		one, multi := median(r.one), median(r.multi)
		ms := float64(r.work) / float64(time.Millisecond)
		t.AddRow(fmt.Sprintf("work %v, 1 requester", r.work), results.V(ms), results.V(1), results.V(one), results.V(1))
		t.AddRow(fmt.Sprintf("work %v, %d requesters", r.work, r.many), results.V(ms), results.V(float64(r.many)), results.V(multi), results.V(multi/one))
	}
	return t
}
