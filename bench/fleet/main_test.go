package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bench/results"
)

func TestSection(t *testing.T) {
	ms := []*measure{
		{n: 10, rssIdle: 12, rssHosts: 13, rssSt: 16, rssAgents: 27, bmcUp: 20 * time.Millisecond, hostsUp: 10 * time.Millisecond,
			status: []time.Duration{30e6, 20e6, 25e6}, list: []time.Duration{31e6}, answered: 10, listed: 10},
		{n: 1000, rssIdle: 78, rssHosts: 100, rssSt: 160, rssAgents: 70, bmcUp: time.Second, hostsUp: time.Second,
			status: []time.Duration{1.7e9, 1.5e9, 2.1e9}, list: []time.Duration{1.6e9, 1.5e9}, answered: 1000, listed: 999},
	}
	sec := section(ms, options{runs: 3})
	if err := sec.Validate(); err != nil {
		t.Fatal(err)
	}
	cells := map[string]float64{}
	for _, c := range (&results.Run{Sections: []results.Section{*sec}}).Cells() {
		cells[c.Key.String()] = c.Value
	}
	for k, want := range map[string]float64{
		"fleet/scale/1000 BMCs/RSS per BMC":        163.84, // 160 MiB / 1000 in KiB
		"fleet/scale/1000 BMCs/host status median": 1.7,
		"fleet/scale/1000 BMCs/host status max":    2.1,
		"fleet/scale/1000 BMCs/vm list median":     1.55,
		"fleet/scale/1000 BMCs/listed":             999,
		"fleet/scale/10 BMCs/host status median":   0.025,
	} {
		if got, ok := cells[k]; !ok || got < want-1e-9 || got > want+1e-9 {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if len(sec.Plots) != 2 || len(sec.Plots[1].Series) != 2 || sec.Plots[1].Series[0].X[1] != 1000 {
		t.Errorf("plots %+v", sec.Plots)
	}
	var b bytes.Buffer
	printTable(&b, sec)
	if !strings.Contains(b.String(), "host status median (s)") || !strings.Contains(b.String(), "1000") {
		t.Errorf("text table:\n%s", b.String())
	}
}
