package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/bench/results"
)

func TestBuildReport(t *testing.T) {
	out := t.TempDir()
	if err := build("testdata/sections", out); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(md)
	for _, want := range []string{
		"## LAN: bmcsim vs ipmi_sim, in-session RMCP+",
		"| | req/s (1/s) | p50 (µs) | p99 (µs) |",
		"| bmcsim c=1 | 9000 | 105 | 240 |",
		"| ipmi_sim c=1 | 8000 | 118 | – |", // null cell
		"| ratio c=1 | 1.125 | 0.89 | – |",
		"Goal: bmcsim ≥ ipmi_sim at 1, 4 and 16 sessions.",
		"| 1000 BMCs | 148.1 | 3.714 |",
		"![latency per target](plots/lan-latency.png)",
		"![RSS](plots/fleet-rss.png)",
		"![stages](plots/fleet-stages.png)",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report.md lacks %q\n%s", want, s)
		}
	}
	// lan comes before fleet whatever the file names' order.
	if strings.Index(s, "## LAN") > strings.Index(s, "## Fleet") {
		t.Error("sections out of order")
	}
	for _, p := range []string{"lan-latency.png", "fleet-rss.png", "fleet-stages.png"} {
		b, err := os.ReadFile(filepath.Join(out, "plots", p))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s is not a PNG", p)
		}
	}
	run, err := results.ReadRun(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Sections) != 2 || run.Sections[0].Section != "lan" || run.Sections[1].Section != "fleet" {
		t.Fatalf("results.json sections %+v", run.Sections)
	}
	if got := run.Started.Format("15:04"); got != "10:00" {
		t.Errorf("run started %s, want the earliest section's 10:00", got)
	}
	if n := len(run.Cells()); n != 11 { // 3×3 lan minus 2 nulls, plus 2×2 fleet
		t.Errorf("%d cells, want 11", n)
	}
}

func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := build(dir, t.TempDir()); err == nil || !strings.Contains(err.Error(), "no section files") {
		t.Errorf("empty folder: %v", err)
	}
	bad := `{"section":"x","title":"x","tables":[{"id":"t","title":"t","columns":[{"name":"a"}],"rows":[{"label":"r","values":[1,2]}]}]}`
	os.WriteFile(filepath.Join(dir, "x.json"), []byte(bad), 0o644)
	if err := build(dir, t.TempDir()); err == nil || !strings.Contains(err.Error(), "2 values for 1 columns") {
		t.Errorf("ragged row: %v", err)
	}
	dup := t.TempDir()
	ok := `{"section":"x","title":"x","tables":[]}`
	os.WriteFile(filepath.Join(dup, "a.json"), []byte(ok), 0o644)
	os.WriteFile(filepath.Join(dup, "b.json"), []byte(ok), 0o644)
	if err := build(dup, t.TempDir()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("section twice: %v", err)
	}
}

func TestDiff(t *testing.T) {
	old, err := results.ReadRun("testdata/old.json")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := results.ReadRun("testdata/new.json")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]delta{}
	for _, d := range diff(old, cur, 5) {
		got[d.key.Row+"/"+d.key.Column] = d
	}
	for _, tt := range []struct {
		key, verdict string
		pct          float64 // NaN: none
	}{
		{"10 BMCs/RSS", "~", 100.0 / 126},               // +0.79%: under 5%
		{"10 BMCs/host status", "~", 0},                 // equal
		{"1000 BMCs/RSS", "better", -20},                // lower is better
		{"1000 BMCs/host status", "worse", 50},          // higher time is worse
		{"1000 BMCs/answered", "~", -1},                 // -1% under the threshold
		{"100 BMCs/RSS", "gone", math.NaN()},            // dropped from the new run
		{"2000 BMCs/RSS", "new", math.NaN()},            // only in the new run
		{"2000 BMCs/answered", "new", math.NaN()},       //
		{"2000 BMCs/host status", "absent", math.NaN()}, // null in the new run: no cell
	} {
		d, ok := got[tt.key]
		if tt.verdict == "absent" {
			if ok {
				t.Errorf("%s: a null cell compared: %+v", tt.key, d)
			}
			continue
		}
		if !ok {
			t.Errorf("%s: missing", tt.key)
			continue
		}
		if d.verdict != tt.verdict {
			t.Errorf("%s: verdict %q, want %q", tt.key, d.verdict, tt.verdict)
		}
		if math.IsNaN(tt.pct) != math.IsNaN(d.pct) || (!math.IsNaN(tt.pct) && math.Abs(d.pct-tt.pct) > 0.01) {
			t.Errorf("%s: change %v%%, want %v%%", tt.key, d.pct, tt.pct)
		}
	}
	if len(got) != 11 {
		t.Errorf("%d deltas, want 11 (9 new-run cells + 2 gone)", len(got))
	}
}

func TestCompareFiles(t *testing.T) {
	var b bytes.Buffer
	if err := compareFiles(&b, "testdata/old.json", "testdata/new.json", 5); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{"-20.0% better", "+50.0% worse", "gone", "new", "11 values: 1 better, 1 worse"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if err := compareFiles(&b, "testdata/old.json", "testdata/missing.json", 5); err == nil {
		t.Error("missing file accepted")
	}
}

func TestAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"Fleet: bmcsim --fleet N, N hosts":    "fleet-bmcsim---fleet-n-n-hosts",
		"OOB-I: VMS → BMC (in-process)":       "oob-i-vms--bmc-in-process",
		"LAN: bmcsim vs ipmi_sim, in-session": "lan-bmcsim-vs-ipmi_sim-in-session",
	} {
		if got := anchor(in); got != want {
			t.Errorf("anchor(%q) = %q, want %q", in, got, want)
		}
	}
}
