package main

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/ooblab/ooblab/bench/results"
)

// drawPlot renders p as a PNG at path.
func drawPlot(p results.Plot, path string) error {
	pl := plot.New()
	pl.Title.Text = p.Title
	pl.X.Label.Text = p.XLabel
	pl.Y.Label.Text = p.YLabel
	pl.Add(plotter.NewGrid())
	if len(p.Series) == 0 {
		return fmt.Errorf("no series")
	}
	switch p.Kind {
	case "lines":
		for i, s := range p.Series {
			xys := make(plotter.XYs, 0, len(s.X))
			for j := range s.X {
				if (p.LogX && s.X[j] <= 0) || (p.LogY && s.Y[j] <= 0) {
					continue // no place on a log axis
				}
				xys = append(xys, plotter.XY{X: s.X[j], Y: s.Y[j]})
			}
			l, pts, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
			l.Dashes, pts.Shape = plotutil.Dashes(i), plotutil.Shape(i)
			pl.Add(l, pts)
			pl.Legend.Add(s.Name, l, pts)
		}
		pl.Legend.Top, pl.Legend.Left = true, true
		if !p.LogY {
			// From zero, with headroom for the legend above the data.
			pl.Y.Min = min(pl.Y.Min, 0)
			pl.Y.Max += (pl.Y.Max - pl.Y.Min) * 0.3
		}
	case "box":
		names := make([]string, len(p.Series))
		w := vg.Points(20)
		for i, s := range p.Series {
			names[i] = s.Name
			if len(s.Y) == 0 {
				continue
			}
			b, err := plotter.NewBoxPlot(w, float64(i), plotter.Values(s.Y))
			if err != nil {
				return err
			}
			b.FillColor = withAlpha(plotutil.Color(i), 0x60)
			pl.Add(b)
		}
		pl.NominalX(names...)
	case "bars":
		names := make([]string, len(p.Series))
		vals := make(plotter.Values, len(p.Series))
		for i, s := range p.Series {
			names[i] = s.Name
			if len(s.Y) > 0 {
				vals[i] = s.Y[0]
			}
		}
		b, err := plotter.NewBarChart(vals, vg.Points(24))
		if err != nil {
			return err
		}
		b.Color = plotutil.Color(0)
		pl.Add(b)
		pl.NominalX(names...)
	default:
		return fmt.Errorf("kind %q", p.Kind)
	}
	if p.LogX {
		pl.X.Scale, pl.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
	}
	if p.LogY {
		pl.Y.Scale, pl.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
	}
	return pl.Save(7*vg.Inch, 4*vg.Inch, path)
}

func withAlpha(c color.Color, a uint8) color.Color {
	r, g, b, _ := c.RGBA()
	return color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: a}
}
