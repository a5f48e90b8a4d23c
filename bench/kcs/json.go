package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/ooblab/ooblab/bench/results"
)

// writeJSON writes the figures in the bench/results format: one table with
// every BMC × measurement, one with bmcsim's ratios to each other BMC, and
// a bar plot of the 240-byte write throughput per BMC.
func writeJSON(path string, rs []*bmcRow, n int, started time.Time, load string, boot, measured time.Duration) error {
	sec := results.Section{Section: "kcs", Title: "KCS: raw system interface from a TCG guest, bmcsim vs ipmi_sim vs QEMU's ipmi-bmc-sim",
		Started: started,
		Env: map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "load before": load, "n": strconv.Itoa(n),
			"guest": fmt.Sprintf("one TCG guest, %d KCS interfaces, requests interleaved; boot %.1f s, measured %.1f s", len(rs), boot.Seconds(), measured.Seconds())}}
	rows := results.Table{ID: "rows", Title: "Round trips from /dev/ipmiK, one outstanding (devipmi; -raw: raw ioctl/poll)",
		Columns: []results.Column{
			{Name: "bytes moved"},
			{Name: "median", Unit: "µs", Better: "lower"},
			{Name: "p99", Unit: "µs", Better: "lower"},
			{Name: "throughput", Unit: "KB/s", Better: "higher"},
			{Name: "at median", Unit: "KB/s", Better: "higher"},
			{Name: "cc ≠ 0"},
		},
		Notes: []string{"ipmi_sim and ipmi-bmc-sim answer ooblab's OEM commands with a completion code (cc ≠ 0 counts them): the KCS transfer of the request bytes is the same.",
			"oemread-240 (bmcsim only: the peers have no ooblab queues): a windowed read of a full Queue 1 record, the direction a VMS's request takes; it moves the answer's bytes (bytes moved), and costs more than a write because QEMU reads the chardev a byte per main-loop iteration.",
			"Throughput: bytes moved over the time spent in that row's requests (KB = 1000 bytes); at median: bytes moved over the median round trip, which a few stalls of a loaded host move less."}}
	for _, r := range rs {
		for _, m := range measurements {
			f := r.rows[m]
			if f == nil {
				continue
			}
			var kbs, atMed *float64
			if moved(f) != 0 {
				kbs, atMed = results.V(num(f["bytes_per_s"])/1000), results.V(medianKBs(f))
			}
			rows.AddRow(r.name+" "+m, results.V(moved(f)), results.V(num(f["median_us"])), results.V(num(f["p99_us"])),
				kbs, atMed, results.V(float64(badCC(f["cc"]))))
		}
	}
	ratios := results.Table{ID: "ratios", Title: "bmcsim over each peer, same guest, same run",
		Goal: "bmcsim ≥ 0.9× QEMU's in-process ipmi-bmc-sim in throughput of 240-byte requests (oemwrite-240)",
		Columns: []results.Column{
			{Name: "throughput", Unit: "×", Better: "higher"},
			{Name: "at median", Unit: "×", Better: "higher"},
			{Name: "median", Unit: "×", Better: "lower"},
		},
		Notes: []string{"Behind ipmi-bmc-extern every answer waits for QEMU's main loop to wake on the chardev socket and read the frame one byte per iteration, then for the halted vCPU to be kicked; ipmi-bmc-sim answers inside the vCPU's own I/O exit. bmcsim and ipmi_sim (a C server) share that hop, so their ratio shows what the BMC adds and the ipmi-bmc-sim ratio mostly what the hop costs."}}
	for _, peer := range rs[1:] {
		for _, m := range measurements {
			a, b := rs[0].rows[m], peer.rows[m]
			if a == nil || b == nil {
				continue
			}
			var thr, atMed *float64
			if moved(a) != 0 {
				thr, atMed = results.V(ratio(a["bytes_per_s"], b["bytes_per_s"])), results.V(medianKBs(a)/medianKBs(b))
			}
			ratios.AddRow(fmt.Sprintf("%s/%s %s", rs[0].name, peer.name, m), thr, atMed, results.V(ratio(a["median_us"], b["median_us"])))
		}
	}
	sec.Tables = []results.Table{rows, ratios}
	plot := results.Plot{ID: "write240", Kind: "bars", Title: "240-byte KCS writes from the guest (devipmi)", YLabel: "KB/s"}
	for _, r := range rs {
		plot.Series = append(plot.Series, results.Series{Name: r.name, Y: []float64{num(r.rows["oemwrite-240"]["bytes_per_s"]) / 1000}})
	}
	sec.Plots = []results.Plot{plot}
	return sec.WriteFile(path)
}

// medianKBs is request bytes over the median round trip, in KB/s.
func medianKBs(f map[string]string) float64 {
	return moved(f) / num(f["median_us"]) * 1e6 / 1000
}

// moved is the bytes a row moves per round trip: the request's, or for a
// read row (dir=resp) the answer's.
func moved(f map[string]string) float64 {
	if f["dir"] == "resp" {
		return num(f["respbytes"])
	}
	return num(f["reqbytes"])
}

// badCC counts the answers with a completion code other than 00 in the
// guest's "cc=00:297,c1:3," field.
func badCC(s string) int {
	total := 0
	for len(s) > 0 {
		var kv string
		kv, s, _ = strings.Cut(s, ",")
		code, count, ok := strings.Cut(kv, ":")
		if !ok || code == "00" {
			continue
		}
		c, _ := strconv.Atoi(count)
		total += c
	}
	return total
}
