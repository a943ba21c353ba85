package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/marketd/marketd/bench"
)

// plot draws the soak's series as panels stacked in one SVG file: each
// panel is a chart of the suite's chart writer (svg.go), nested at its
// offset. The fitted line of the growth check is drawn dashed over the
// second half of RSS and goroutines.
func plot(res *bench.SoakResult, path string) error {
	unit, div := "s", 1.0
	if res.Duration >= 120 {
		unit, div = "min", 60
	}
	xLabel := "time since the first sample (" + unit + ")"
	var t, rss, brokerRSS, gor, queued, lag, p50, p99, deliv []float64
	for _, s := range res.Samples {
		t = append(t, s.T/div)
		rss = append(rss, float64(s.RSS)/(1<<20))
		brokerRSS = append(brokerRSS, float64(s.BrokerRSS)/(1<<20))
		gor = append(gor, s.Goroutines)
		queued = append(queued, s.QueuedBytes/1024)
		lag = append(lag, s.Lag)
		p50 = append(p50, float64(s.P50)/1000)
		p99 = append(p99, float64(s.P99)/1000)
		deliv = append(deliv, s.DeliveriesPS)
	}
	// The first sample has no interval behind it: no rate, no latency.
	tRate := t
	if len(t) > 1 {
		tRate, p50, p99, deliv = t[1:], p50[1:], p99[1:], deliv[1:]
	}
	fit := func(metric string, scale float64) series {
		for _, g := range res.Growth {
			if g.Metric != metric || g.Points == 0 || len(res.Samples) == 0 {
				continue
			}
			t1 := res.Samples[len(res.Samples)-1].T
			y := func(ts float64) float64 { return (g.Intercept + g.PerMinute/60*(ts-g.T0)) / scale }
			status := "ok"
			if !g.OK {
				status = "GROWTH"
			}
			return series{name: "fit, 2nd half (" + status + ")", x: []float64{g.T0 / div, t1 / div}, y: []float64{y(g.T0), y(t1)}, dashed: true}
		}
		return series{}
	}
	title := fmt.Sprintf("%d clients, %d records/s + simulator", res.Clients, res.Rate)
	panels := []lineChart{
		{title: "Memory — " + title, xLabel: xLabel, yLabel: "MiB",
			series: []series{{name: "marketd RSS", x: t, y: rss}, fit("rss_bytes", 1<<20), brokerSeries(t, brokerRSS)}},
		{title: "Server goroutines", xLabel: xLabel, yLabel: "goroutines",
			series: []series{{name: "goroutines", x: t, y: gor}, fit("goroutines", 1)}},
		{title: "Backlog: bytes queued on all connections, Kafka lag", xLabel: xLabel, yLabel: "KiB / records",
			series: []series{{name: "queued KiB", x: t, y: queued}, {name: "lag (records)", x: t, y: lag}}},
		{title: "End-to-end latency per sample interval", xLabel: xLabel, yLabel: "ms", logY: true,
			series: []series{{name: "p50", x: tRate, y: p50}, {name: "p99", x: tRate, y: p99}}},
		{title: "Deliveries to all clients", xLabel: xLabel, yLabel: "messages / s",
			series: []series{{name: "deliveries/s", x: tRate, y: deliv}}},
	}
	tmp, err := os.MkdirTemp("", "soak-plot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n",
		chartW, chartH*len(panels), chartW, chartH*len(panels))
	for i, c := range panels {
		c.series = nonEmpty(c.series)
		p := filepath.Join(tmp, fmt.Sprintf("panel%d.svg", i))
		if err := writeLineChart(p, c); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		svg, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		// Place the panel: a nested <svg> takes x and y attributes.
		b.WriteString(strings.Replace(string(svg), "<svg ", fmt.Sprintf(`<svg x="0" y="%d" `, i*chartH), 1))
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// brokerSeries is the broker's RSS, if it was sampled.
func brokerSeries(t, rss []float64) series {
	for _, v := range rss {
		if v > 0 {
			return series{name: "broker RSS", x: t, y: rss}
		}
	}
	return series{}
}

// nonEmpty drops the series without points.
func nonEmpty(ss []series) []series {
	var out []series
	for _, s := range ss {
		if len(s.x) > 0 {
			out = append(out, s)
		}
	}
	return out
}
