package results

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// seeds are the report's fixture files and a few broken shapes.
func seeds(f *testing.F) {
	for _, glob := range []string{"../report/testdata/*.json", "../report/testdata/sections/*.json"} {
		paths, _ := filepath.Glob(glob)
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	for _, s := range []string{
		`{}`, `{"sections":[{"section":"x","tables":[{"id":"t","columns":[{"name":"a"}],"rows":[{"label":"r","values":[null]}]}]}]}`,
		`{"section":"x","tables":[{"id":"t","columns":[],"rows":[{"label":"r","values":[1]}]}]}`,
		`{"section":"x","plots":[{"id":"p","kind":"lines","series":[{"x":[1,2],"y":[1]}]}]}`,
	} {
		f.Add([]byte(s))
	}
}

// FuzzParse: whatever a file holds, parsing never panics, and what parses
// lists its cells and survives a round trip with the same cells.
func FuzzParse(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseSection(b); err == nil {
			r := &Run{Sections: []Section{*s}}
			n := len(r.Cells())
			out, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			s2, err := ParseSection(out)
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if m := len((&Run{Sections: []Section{*s2}}).Cells()); m != n {
				t.Fatalf("round trip: %d cells, was %d", m, n)
			}
		}
		if r, err := ParseRun(b); err == nil {
			_ = r.Cells()
		}
	})
}
