package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/marketd/marketd/bench"
	"github.com/marketd/marketd/bench/svg"
)

// plot draws the soak's series as panels stacked in one SVG file: each
// panel is a line chart of package svg, nested at its offset. The fitted
// line of the growth check is drawn dashed over the second half of RSS and
// goroutines.
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
	fit := func(metric string, scale float64) svg.Series {
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
			return svg.Series{Name: "fit, 2nd half (" + status + ")", X: []float64{g.T0 / div, t1 / div}, Y: []float64{y(g.T0), y(t1)}, Dashed: true}
		}
		return svg.Series{}
	}
	title := fmt.Sprintf("%d clients, %d records/s + simulator", res.Clients, res.Rate)
	panels := []svg.LineChart{
		{Title: "Memory — " + title, XLabel: xLabel, YLabel: "MiB",
			Series: []svg.Series{{Name: "marketd RSS", X: t, Y: rss}, fit("rss_bytes", 1<<20), brokerSeries(t, brokerRSS)}},
		{Title: "Server goroutines", XLabel: xLabel, YLabel: "goroutines",
			Series: []svg.Series{{Name: "goroutines", X: t, Y: gor}, fit("goroutines", 1)}},
		{Title: "Backlog: bytes queued on all connections, Kafka lag", XLabel: xLabel, YLabel: "KiB / records",
			Series: []svg.Series{{Name: "queued KiB", X: t, Y: queued}, {Name: "lag (records)", X: t, Y: lag}}},
		{Title: "End-to-end latency per sample interval", XLabel: xLabel, YLabel: "ms", LogY: true,
			Series: []svg.Series{{Name: "p50", X: tRate, Y: p50}, {Name: "p99", X: tRate, Y: p99}}},
		{Title: "Deliveries to all clients", XLabel: xLabel, YLabel: "messages / s",
			Series: []svg.Series{{Name: "deliveries/s", X: tRate, Y: deliv}}},
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n",
		svg.Width, svg.Height*len(panels), svg.Width, svg.Height*len(panels))
	for i, c := range panels {
		c.Series = nonEmpty(c.Series)
		// Place the panel: a nested <svg> takes x and y attributes.
		b.WriteString(strings.Replace(string(c.Render()), "<svg ", fmt.Sprintf(`<svg x="0" y="%d" `, i*svg.Height), 1))
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// brokerSeries is the broker's RSS, if it was sampled.
func brokerSeries(t, rss []float64) svg.Series {
	for _, v := range rss {
		if v > 0 {
			return svg.Series{Name: "broker RSS", X: t, Y: rss}
		}
	}
	return svg.Series{}
}

// nonEmpty drops the series without points.
func nonEmpty(ss []svg.Series) []svg.Series {
	var out []svg.Series
	for _, s := range ss {
		if len(s.X) > 0 {
			out = append(out, s)
		}
	}
	return out
}
