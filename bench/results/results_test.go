package results

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
)

func TestPercentileMedian(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tt := range []struct{ p, want float64 }{{50, 5}, {99, 10}, {10, 1}, {0, 1}, {100, 10}} {
		if got := Percentile(s, tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p, got, tt.want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) || !math.IsNaN(Median(nil)) {
		t.Error("empty input should give NaN")
	}
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v", got)
	}
	in := []float64{4, 1, 3, 2}
	if got := Median(in); got != 2.5 || in[0] != 4 {
		t.Errorf("median even = %v, input %v (must stay unsorted)", got, in)
	}
}

func TestSectionRoundTrip(t *testing.T) {
	s := Section{Section: "x", Title: "X", Tables: []Table{{ID: "t", Title: "T",
		Columns: []Column{{Name: "a", Unit: "s", Better: "lower"}, {Name: "b"}}}},
		Plots: []Plot{{ID: "p", Kind: "lines", Series: []Series{{Name: "s", X: []float64{1, 2}, Y: []float64{3, 4}}}}}}
	s.Tables[0].AddRow("r1", V(1.5), V(math.NaN()))
	path := filepath.Join(t.TempDir(), "x.json")
	if err := s.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSection(path)
	if err != nil {
		t.Fatal(err)
	}
	r := got.Tables[0].Rows[0]
	if *r.Values[0] != 1.5 || r.Values[1] != nil {
		t.Errorf("row after round trip: %v %v", r.Values[0], r.Values[1])
	}
	cells := (&Run{Sections: []Section{*got}}).Cells()
	if len(cells) != 1 || cells[0].Key.String() != "x/t/r1/a" || cells[0].Unit != "s" || cells[0].Better != "lower" {
		t.Errorf("cells %+v", cells)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		s    Section
		want string
	}{
		{"no name", Section{}, "without a name"},
		{"dup table", Section{Section: "x", Tables: []Table{{ID: "t"}, {ID: "t"}}}, "repeated"},
		{"ragged", Section{Section: "x", Tables: []Table{{ID: "t", Columns: []Column{{Name: "a"}}, Rows: []Row{{Label: "r"}}}}}, "0 values for 1"},
		{"kind", Section{Section: "x", Plots: []Plot{{ID: "p", Kind: "pie"}}}, "kind"},
		{"xy", Section{Section: "x", Plots: []Plot{{ID: "p", Kind: "lines", Series: []Series{{X: []float64{1}}}}}}, "1 x for 0 y"},
	} {
		if err := tt.s.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("AddRow with the wrong width did not panic")
		}
	}()
	(&Table{ID: "t", Columns: []Column{{Name: "a"}}}).AddRow("r")
}
