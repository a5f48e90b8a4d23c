// Command report turns the figures the bench programs wrote (one
// bench/results Section per program) into bench/report.md, PNG plots and
// bench/results.json, and compares two results.json side by side.
//
//	go run ./bench/report -sections DIR -out bench    # report.md, results.json, plots/*.png
//	go run ./bench/report -compare OLD.json NEW.json  # the deltas, cell by cell
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	var (
		sections = flag.String("sections", "", "folder of section files (*.json) written by the bench programs")
		out      = flag.String("out", "bench", "folder for report.md, results.json and plots/")
		compare  = flag.Bool("compare", false, "compare two results.json given as arguments: OLD NEW")
		minPct   = flag.Float64("min", 5, "with -compare: a change under this many percent is shown as ~")
	)
	flag.Parse()
	if *compare {
		if flag.NArg() != 2 {
			fmt.Fprintln(os.Stderr, "report -compare OLD.json NEW.json")
			os.Exit(2)
		}
		if err := compareFiles(os.Stdout, flag.Arg(0), flag.Arg(1), *minPct); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		return
	}
	if *sections == "" {
		fmt.Fprintln(os.Stderr, "report: give -sections DIR (or -compare OLD NEW)")
		os.Exit(2)
	}
	if err := build(*sections, *out); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}
