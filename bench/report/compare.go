package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"

	"github.com/ooblab/ooblab/bench/results"
)

// delta is one value in two runs.
type delta struct {
	key      results.Key
	unit     string
	old, new *float64
	pct      float64 // (new-old)/|old|*100; NaN when either is missing or old is 0
	verdict  string  // better, worse, ~, new, gone, changed
}

// diff lists every cell of either run, in the new run's order then the old
// run's cells the new one lacks. A change smaller than minPct percent is ~.
func diff(old, cur *results.Run, minPct float64) []delta {
	oc := map[results.Key]results.Cell{}
	for _, c := range old.Cells() {
		oc[c.Key] = c
	}
	seen := map[results.Key]bool{}
	var out []delta
	for _, c := range cur.Cells() {
		seen[c.Key] = true
		v := c.Value
		d := delta{key: c.Key, unit: c.Unit, new: &v, pct: math.NaN(), verdict: "new"}
		if o, ok := oc[c.Key]; ok {
			ov := o.Value
			d.old = &ov
			d.verdict = judge(ov, v, c.Better, minPct, &d.pct)
		}
		out = append(out, d)
	}
	for _, c := range old.Cells() {
		if !seen[c.Key] {
			v := c.Value
			out = append(out, delta{key: c.Key, unit: c.Unit, old: &v, pct: math.NaN(), verdict: "gone"})
		}
	}
	return out
}

func judge(old, cur float64, better string, minPct float64, pct *float64) string {
	if old == cur {
		*pct = 0
		return "~"
	}
	if old == 0 {
		return "changed"
	}
	*pct = (cur - old) / math.Abs(old) * 100
	if math.Abs(*pct) < minPct {
		return "~"
	}
	up := cur > old
	switch {
	case better == "lower" && !up, better == "higher" && up:
		return "better"
	case better == "lower" || better == "higher":
		return "worse"
	}
	return "changed"
}

// compareFiles prints the deltas between two results.json.
func compareFiles(w io.Writer, oldPath, newPath string, minPct float64) error {
	old, err := results.ReadRun(oldPath)
	if err != nil {
		return err
	}
	cur, err := results.ReadRun(newPath)
	if err != nil {
		return err
	}
	ds := diff(old, cur, minPct)
	fmt.Fprintf(w, "old %s (%s)\nnew %s (%s)\n\n", oldPath, old.Started.UTC().Format("2006-01-02 15:04"), newPath, cur.Started.UTC().Format("2006-01-02 15:04"))
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tTABLE\tROW\tCOLUMN\tOLD\tNEW\tCHANGE\t")
	var better, worse int
	for _, d := range ds {
		ch := d.verdict
		if !math.IsNaN(d.pct) && d.pct != 0 {
			ch = fmt.Sprintf("%+.1f%% %s", d.pct, d.verdict)
		}
		switch d.verdict {
		case "better":
			better++
		case "worse":
			worse++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", d.key.Section, d.key.Table, d.key.Row, d.key.Column,
			withUnit(d.old, d.unit), withUnit(d.new, d.unit), ch)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d values: %d better, %d worse (changes under %g%% shown as ~)\n", len(ds), better, worse, minPct)
	return nil
}

func withUnit(v *float64, unit string) string {
	if v == nil {
		return "–"
	}
	s := strconv.FormatFloat(*v, 'g', 4, 64)
	if unit != "" {
		s += " " + unit
	}
	return s
}
