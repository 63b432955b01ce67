package main

import (
	"fmt"
	"image/color"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

type chart struct{ Title, File string }

// charts draws the PNGs for whatever parts of the run produced data.
func (r *report) charts(dir string) ([]chart, error) {
	var out []chart
	save := func(p *plot.Plot, file string) error {
		if err := p.Save(7*vg.Inch, 4*vg.Inch, filepath.Join(dir, file)); err != nil {
			return err
		}
		out = append(out, chart{Title: p.Title.Text, File: file})
		return nil
	}
	if w := r.Wrk; w != nil {
		vals := make(plotter.Values, len(wrkVariants))
		for i, v := range wrkVariants {
			vals[i] = w.median(v)
		}
		p, err := bars("HTTP auth overhead under wrk (same handler, same token)", "requests/s (median round)", wrkVariants, vals)
		if err != nil {
			return nil, err
		}
		if err := save(p, "wrk-throughput.png"); err != nil {
			return nil, err
		}
		p = plot.New()
		p.Title.Text = "Latency under wrk by percentile"
		p.Y.Label.Text = "latency (ms)"
		labels := []string{"50%", "75%", "90%", "99%"}
		for i, v := range wrkVariants {
			xy := make(plotter.XYs, len(labels))
			for j, l := range labels {
				xy[j] = plotter.XY{X: float64(j), Y: float64(w.Latency[v][l]) / 1e6}
			}
			line, pts, err := plotter.NewLinePoints(xy)
			if err != nil {
				return nil, err
			}
			line.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
			p.Add(line, pts)
			p.Legend.Add(v, line, pts)
		}
		p.Legend.Top, p.Legend.Left = true, true
		p.NominalX(labels...)
		if err := save(p, "wrk-latency.png"); err != nil {
			return nil, err
		}
	}
	if g := r.Go; g != nil {
		names := []string{"Validate/baseline-go-jwt-middleware", "Validate/authz-cold", "Validate/authz-cached"}
		var labels []string
		var vals plotter.Values
		for _, n := range names {
			if s, ok := g.Results[n]; ok && s.NsOp > 0 {
				labels = append(labels, n[len("Validate/"):])
				vals = append(vals, 1e9/s.NsOp)
			}
		}
		if len(vals) > 0 {
			p, err := bars("Token validation (go test -bench)", "validations/s (one core)", labels, vals)
			if err != nil {
				return nil, err
			}
			if err := save(p, "validate-throughput.png"); err != nil {
				return nil, err
			}
		}
	}
	if s := r.Stack; s != nil && len(s.Stages) > 0 {
		labels := make([]string, len(s.Stages))
		vals := make(plotter.Values, len(s.Stages))
		for i, st := range s.Stages {
			labels[i], vals[i] = st.Name, st.RPS
		}
		p, err := bars(fmt.Sprintf("Stack throughput, %d clients", s.Clients), "successful requests/s", labels, vals)
		if err != nil {
			return nil, err
		}
		if err := save(p, "stack-throughput.png"); err != nil {
			return nil, err
		}
		var series []cdfSeries
		for _, st := range s.Stages {
			series = append(series, cdfSeries{st.Name, st.Lat})
		}
		if p, err := cdf("Stack request latency distribution", series, 0); err != nil {
			return nil, err
		} else if err := save(p, "stack-latency.png"); err != nil {
			return nil, err
		}
	}
	if s := r.Stack; s != nil && s.Invoice != nil && len(s.Invoice.Invoice) > 0 {
		iv := s.Invoice
		p, err := cdf(fmt.Sprintf("Order → invoice latency, %d clients (target p99 < 50 ms)", iv.Clients),
			[]cdfSeries{{"201 → invoice listed", iv.Invoice}, {"POST /v1/orders", iv.Create}, {"end to end", iv.E2E}}, 50*time.Millisecond)
		if err != nil {
			return nil, err
		}
		if err := save(p, "order-invoice-latency.png"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func bars(title, ylabel string, labels []string, vals plotter.Values) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	b, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	b.Color = plotutil.Color(0)
	b.LineStyle.Width = 0
	p.Add(b, plotter.NewGrid())
	p.NominalX(labels...)
	return p, nil
}

type cdfSeries struct {
	name string
	d    []time.Duration // sorted
}

// cdf plots cumulative distributions (x in ms, log scale) and, if mark > 0,
// a vertical line at mark.
func cdf(title string, series []cdfSeries, mark time.Duration) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of requests ≤ x"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	lo, hi := 1e9, 0.0
	for i, s := range series {
		if len(s.d) == 0 {
			continue
		}
		// At most ~500 points per line: enough for the shape, small files.
		step := max(1, len(s.d)/500)
		var xy plotter.XYs
		for j := 0; j < len(s.d); j += step {
			x := max(float64(s.d[j])/1e6, 0.01)
			xy = append(xy, plotter.XY{X: x, Y: float64(j+1) / float64(len(s.d))})
		}
		last := max(float64(s.d[len(s.d)-1])/1e6, 0.01)
		xy = append(xy, plotter.XY{X: last, Y: 1})
		lo, hi = min(lo, xy[0].X), max(hi, last)
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	if mark > 0 {
		x := float64(mark) / 1e6
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: 1}})
		if err != nil {
			return nil, err
		}
		l.Color = color.RGBA{R: 200, A: 255}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add("target", l)
		hi = max(hi, x)
	}
	if hi > 0 {
		p.X.Min, p.X.Max = lo, hi
	}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Left, p.Legend.Top = true, true
	return p, nil
}
