// Package results is the figures format every bench program writes (one
// Section per program, -json FILE) and bench/report reads: tables for the
// markdown report and for run-to-run comparison, plots for the PNGs.
//
//	{"section": "fleet", "title": "…", "env": {"cpus": "2", …},
//	 "tables": [{"id": "scale", "title": "…", "goal": "…",
//	             "columns": [{"name": "RSS", "unit": "MiB", "better": "lower"}, …],
//	             "rows": [{"label": "1000 BMCs", "values": [77.6, …]}, …]}],
//	 "plots": [{"id": "growth", "kind": "lines", "x_label": "BMCs", "y_label": "MiB",
//	            "series": [{"name": "RSS", "x": [10, 100, 1000], "y": [12.6, 20.3, 77.6]}]}]}
//
// A cell a row lacks is null (JSON has no NaN). A value is identified across
// runs by section, table id, row label and column name (Key), so two runs
// compare cell by cell even when rows were added or dropped.
package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Section is one bench program's figures.
type Section struct {
	Section string            `json:"section"` // short id: lan, kcs, lab, oob, fleet
	Title   string            `json:"title"`
	Started time.Time         `json:"started"`
	Env     map[string]string `json:"env,omitempty"` // CPUs, load, versions: what the figures depend on
	Tables  []Table           `json:"tables"`
	Plots   []Plot            `json:"plots,omitempty"`
	Notes   []string          `json:"notes,omitempty"`
}

// Table is one table of the report.
type Table struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Goal    string   `json:"goal,omitempty"` // the goal, in words, shown under the table
	Columns []Column `json:"columns"`
	Rows    []Row    `json:"rows"`
	Notes   []string `json:"notes,omitempty"`
}

// Column names one column of values.
type Column struct {
	Name   string `json:"name"`
	Unit   string `json:"unit,omitempty"`
	Better string `json:"better,omitempty"` // "lower", "higher" or "" (neither: a count, a setting)
}

// Row is one row: a label and one value per column (nil: none).
type Row struct {
	Label  string     `json:"label"`
	Values []*float64 `json:"values"`
}

// Plot is one PNG of the report.
type Plot struct {
	ID     string   `json:"id"`
	Title  string   `json:"title"`
	Kind   string   `json:"kind"` // "lines" (x/y series), "box" (a distribution per series), "bars" (one y per series)
	XLabel string   `json:"x_label,omitempty"`
	YLabel string   `json:"y_label,omitempty"`
	LogX   bool     `json:"log_x,omitempty"`
	LogY   bool     `json:"log_y,omitempty"`
	Series []Series `json:"series"`
}

// Series is one line (X, Y), one distribution (Y: the samples), or one bar
// (Y[0]).
type Series struct {
	Name string    `json:"name"`
	X    []float64 `json:"x,omitempty"`
	Y    []float64 `json:"y"`
}

// Run is bench/results.json: every section of one `make bench`.
type Run struct {
	Started  time.Time         `json:"started"`
	Env      map[string]string `json:"env,omitempty"`
	Sections []Section         `json:"sections"`
}

// V makes a table value; NaN and ±Inf (no figure) become nil.
func V(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

// AddRow appends a row; it panics when the value count differs from the
// column count (a bench program bug, caught by its first run).
func (t *Table) AddRow(label string, values ...*float64) {
	if len(values) != len(t.Columns) {
		panic(fmt.Sprintf("results: table %s row %q has %d values for %d columns", t.ID, label, len(values), len(t.Columns)))
	}
	t.Rows = append(t.Rows, Row{Label: label, Values: values})
}

// Validate reports what makes s unusable by the report: no name, tables
// without an id, rows whose width differs from the columns, duplicate ids.
func (s *Section) Validate() error {
	if s.Section == "" {
		return errors.New("results: section without a name")
	}
	ids := map[string]bool{}
	for _, t := range s.Tables {
		if t.ID == "" || ids[t.ID] {
			return fmt.Errorf("results: section %s: table id %q empty or repeated", s.Section, t.ID)
		}
		ids[t.ID] = true
		for _, r := range t.Rows {
			if len(r.Values) != len(t.Columns) {
				return fmt.Errorf("results: section %s table %s row %q: %d values for %d columns", s.Section, t.ID, r.Label, len(r.Values), len(t.Columns))
			}
		}
	}
	pids := map[string]bool{}
	for _, p := range s.Plots {
		if p.ID == "" || pids[p.ID] {
			return fmt.Errorf("results: section %s: plot id %q empty or repeated", s.Section, p.ID)
		}
		pids[p.ID] = true
		switch p.Kind {
		case "lines", "box", "bars":
		default:
			return fmt.Errorf("results: section %s plot %s: kind %q (want lines, box or bars)", s.Section, p.ID, p.Kind)
		}
		for _, se := range p.Series {
			if p.Kind == "lines" && len(se.X) != len(se.Y) {
				return fmt.Errorf("results: section %s plot %s series %q: %d x for %d y", s.Section, p.ID, se.Name, len(se.X), len(se.Y))
			}
		}
	}
	return nil
}

// WriteFile writes s as indented JSON.
func (s *Section) WriteFile(path string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadSection reads one section file.
func ReadSection(path string) (*Section, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseSection(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseSection decodes and validates one section.
func ParseSection(b []byte) (*Section, error) {
	var s Section
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// ReadRun reads a results.json.
func ReadRun(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := ParseRun(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseRun decodes and validates a results.json.
func ParseRun(b []byte) (*Run, error) {
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	for i := range r.Sections {
		if err := r.Sections[i].Validate(); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// Key names one value across runs.
type Key struct{ Section, Table, Row, Column string }

func (k Key) String() string { return k.Section + "/" + k.Table + "/" + k.Row + "/" + k.Column }

// Cell is one value with what it needs for a comparison.
type Cell struct {
	Key
	Value  float64
	Unit   string
	Better string
}

// Cells lists every non-nil value of r in report order.
func (r *Run) Cells() []Cell {
	var out []Cell
	for _, s := range r.Sections {
		for _, t := range s.Tables {
			for _, row := range t.Rows {
				for i, v := range row.Values {
					if v == nil {
						continue
					}
					c := t.Columns[i]
					out = append(out, Cell{Key: Key{s.Section, t.ID, row.Label, c.Name}, Value: *v, Unit: c.Unit, Better: c.Better})
				}
			}
		}
	}
	return out
}

// Percentile returns the p-th percentile (0..100) of sorted samples by the
// nearest-rank method, NaN when there are none.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Median sorts a copy of v and returns its median (mean of the middle two
// when even), NaN when empty.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// LoadAvg is the machine's 1, 5 and 15 minute load averages as
// /proc/loadavg gives them ("0.52 0.58 0.59"), or "?": every section
// prints it beside figures taken on a shared machine.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
