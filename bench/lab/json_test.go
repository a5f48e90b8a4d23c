package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	br "github.com/ooblab/ooblab/bench/results"
	"github.com/ooblab/ooblab/lab/ctl"
)

func TestLabSection(t *testing.T) {
	up := func(label string, hosts int, boot, total time.Duration) upRun {
		return upRun{label: label, hosts: hosts, load: "1.0 1.0 1.0", wall: total + time.Second, stages: []ctl.StageTiming{
			{Stage: "guest image (cached)", Elapsed: time.Second}, {Stage: "guest boot", Elapsed: boot}, {Stage: "total", Elapsed: total}}}
	}
	r := &results{
		ups: []upRun{up("warm", 1, 8*time.Second, 10*time.Second), up("warm", 3, 18*time.Second, 21*time.Second)},
		rtt: &rttResult{vmmi: stats{n: 3, median: 16 * time.Millisecond, p99: 20 * time.Millisecond},
			oob: stats{n: 3, median: 23 * time.Millisecond, p99: 40 * time.Millisecond}, load: "1",
			vmmiLat: []time.Duration{15e6, 16e6, 20e6}, oobLat: []time.Duration{22e6, 23e6, 40e6}},
		failover: []failoverRun{{budget: 0, total: 369 * time.Millisecond}, {budget: 0, total: 372 * time.Millisecond}},
		kcs: &kcsResult{rows: map[string]map[string]string{
			"oemwrite-240": {"median_us": "590", "p99_us": "900", "bytes_per_s": "400000"},
			"oemread-240":  {"median_us": "1600", "p99_us": "3000", "bytes_per_s": "150000", "dir": "resp"}}},
		payload: &payloadResult{metaBytes: 16384, sealedBytes: 16500, records: 75, lat: stats{n: 10, median: 100 * time.Millisecond, p99: 120 * time.Millisecond}},
		notes:   []string{"a note"},
	}
	sec := labSection(&config{n: 3}, r)
	path := filepath.Join(t.TempDir(), "lab.json")
	if err := sec.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := br.ReadSection(path)
	if err != nil {
		t.Fatal(err)
	}
	cells := map[string]float64{}
	for _, c := range (&br.Run{Sections: []br.Section{*got}}).Cells() {
		cells[c.Key.String()] = c.Value
	}
	for key, want := range map[string]float64{
		"lab/up/guest boot/warm 1 host":                                     8,
		"lab/up/total/warm 3 hosts":                                         21,
		"lab/up/total/3 hosts / 1 host":                                     2.1,
		"lab/up/wall (ctl.Up call)/warm 1 host":                             11,
		"lab/rtt/oob-i − vmm-i/median":                                      7,
		"lab/rtt/vmm-i/n":                                                   3,
		"lab/failover/budget default/max":                                   372,
		"lab/payload/raw KCS oemwrite-240/throughput":                       400000,
		"lab/payload/sealed, 16384 B metadata (n=10)/throughput":            165000,
		"lab/payload/raw KCS oemread-240/throughput":                        150000,
		"lab/payload/sealed, 16384 B metadata (n=10)/share of ceiling":      110,
		"lab/payload/sealed, 16384 B metadata (n=10)/share of oemwrite-240": 41.25,
	} {
		if v, ok := cells[key]; !ok || v < want-1e-9 || v > want+1e-9 {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	var ids []string
	for _, p := range got.Plots {
		ids = append(ids, p.ID+":"+p.Kind)
	}
	if s := strings.Join(ids, " "); s != "up-0:bars up-1:bars rtt-latency:box payload:bars" {
		t.Errorf("plots %s", s)
	}
	// A run that failed before anything was measured still writes a valid
	// (empty) section.
	if err := labSection(&config{}, &results{}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestCPUTicks(t *testing.T) {
	a, err := cpuTicks([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for { // burn CPU until the kernel counted a tick more
		b, err := cpuTicks([]int{os.Getpid()})
		if err != nil {
			t.Fatal(err)
		}
		if b > a {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("utime+stime stayed at %d ticks", a)
		}
	}
	if _, err := cpuTicks([]int{1 << 30}); err == nil {
		t.Error("a pid that does not exist gave no error")
	}
}
