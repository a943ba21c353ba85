package svg

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Width and Height are the size of every chart, in pixels.
const (
	Width, Height = 720, 420
)

// The plot area's margins: the legend sits in the right one.
const (
	marginL, marginR, marginT, marginB = 80, 190, 40, 55
)

// palette colours the series (or bars) in order, repeating after the last.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e", "#8c564b"}

// Series is one line of a line chart: the points (X[i], Y[i]), drawn from
// left to right whatever their order.
type Series struct {
	Name   string    // legend entry
	X, Y   []float64 // coordinates, of equal length
	Dashed bool      // draw the line dashed
}

// LineChart is a line chart. On a logarithmic axis, points with a value
// ≤ 0 on it are left out.
type LineChart struct {
	Title, XLabel, YLabel string   // heading and axis labels
	LogX, LogY            bool     // logarithmic axes
	Series                []Series // the lines, coloured in order
}

// Render returns c as an SVG document.
func (c LineChart) Render() []byte {
	var xs, ys []float64
	for _, s := range c.Series {
		xs, ys = append(xs, s.X...), append(ys, s.Y...)
	}
	xlo, xhi := bounds(xs, c.LogX, false)
	ylo, yhi := bounds(ys, c.LogY, true)
	xa := axis{lo: xlo, hi: xhi, log: c.LogX, px0: marginL, px1: Width - marginR}
	ya := axis{lo: ylo, hi: yhi, log: c.LogY, px0: Height - marginB, px1: marginT}
	var d doc
	d.begin(c.Title, c.XLabel, c.YLabel)
	d.yAxis(ya)
	for _, t := range xa.ticks() {
		x := xa.pos(t)
		d.f(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x, marginT, x, Height-marginB)
		d.f(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, Height-marginB+16, human(t))
	}
	for i, s := range c.Series {
		color := palette[i%len(palette)]
		// Draw each line from left to right.
		order := make([]int, len(s.X))
		for j := range order {
			order[j] = j
		}
		slices.SortFunc(order, func(a, b int) int { return cmp.Compare(s.X[a], s.X[b]) })
		var pts []string
		for _, j := range order {
			if (c.LogY && s.Y[j] <= 0) || (c.LogX && s.X[j] <= 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xa.pos(s.X[j]), ya.pos(s.Y[j])))
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		d.f(`<polyline fill="none" stroke="%s" stroke-width="2.5"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		for _, p := range pts {
			x, y, _ := strings.Cut(p, ",")
			d.f(`<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`+"\n", x, y, color)
		}
		d.legend(i, s.Name, color, s.Dashed)
	}
	return d.end()
}

// BarChart is a grouped bar chart: one group per category, one bar per
// series in each group, on a linear axis from zero. A category's label is
// broken into lines before each " + ".
type BarChart struct {
	Title, YLabel string      // heading and y-axis label
	Categories    []string    // the groups, left to right
	Names         []string    // the series, in the legend
	Values        [][]float64 // Values[series][category]; NaN: no bar
}

// Render returns c as an SVG document.
func (c BarChart) Render() []byte {
	var all []float64
	for _, v := range c.Values {
		all = append(all, v...)
	}
	ylo, yhi := bounds(all, false, true)
	ya := axis{lo: ylo, hi: yhi, px0: Height - marginB, px1: marginT}
	var d doc
	d.begin(c.Title, "", c.YLabel)
	d.yAxis(ya)
	groupW := float64(Width-marginL-marginR) / float64(len(c.Categories))
	barW := groupW * 0.8 / float64(len(c.Names))
	for ci, cat := range c.Categories {
		gx := marginL + groupW*float64(ci)
		// One line per " + " part: "marketd", "+ deflate", "+ takeover".
		for li, line := range strings.SplitAfter(cat, " + ") {
			if li > 0 {
				line = "+ " + line
			}
			d.f(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+groupW/2, Height-marginB+16+12*li, esc(strings.TrimSuffix(line, " + ")))
		}
		for si := range c.Names {
			v := c.Values[si][ci]
			if math.IsNaN(v) {
				continue
			}
			x := gx + groupW*0.1 + barW*float64(si)
			y0, y1 := ya.pos(0), ya.pos(v)
			d.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y1, barW-2, y0-y1, palette[si%len(palette)])
			d.f(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", x+barW/2-1, y1-3, human(v))
		}
	}
	for si, n := range c.Names {
		d.legend(si, n, palette[si%len(palette)], false)
	}
	return d.end()
}

// axis maps values to pixels along one axis.
type axis struct {
	lo, hi float64
	log    bool
	px0    float64 // pixel of lo
	px1    float64 // pixel of hi
}

func (a axis) pos(v float64) float64 {
	if a.log {
		v, lo, hi := math.Log10(math.Max(v, 1e-12)), math.Log10(a.lo), math.Log10(a.hi)
		return a.px0 + (v-lo)/(hi-lo)*(a.px1-a.px0)
	}
	return a.px0 + (v-a.lo)/(a.hi-a.lo)*(a.px1-a.px0)
}

// ticks returns tick values: powers of ten (and 2, 5 between) on a log
// axis, about six round steps on a linear one.
func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		for e := math.Floor(math.Log10(a.lo)); e <= math.Ceil(math.Log10(a.hi)); e++ {
			for _, m := range []float64{1, 2, 5} {
				if v := m * math.Pow(10, e); v >= a.lo*0.999 && v <= a.hi*1.001 {
					out = append(out, v)
				}
			}
		}
		return out
	}
	step := niceStep((a.hi - a.lo) / 6)
	for v := math.Ceil(a.lo/step) * step; v <= a.hi*1.0001; v += step {
		out = append(out, v)
	}
	return out
}

// niceStep returns the smallest of 1, 2, 2.5, 5 or 10 times a power of ten
// that is at least raw.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// bounds returns a range covering vals with some room; a log range snaps
// to powers of ten. With zero, a linear range includes 0.
func bounds(vals []float64, log, zero bool) (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if log && v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if math.IsInf(lo, 0) {
		return 1, 10
	}
	if log {
		return math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)+1e-9))
	}
	if zero {
		lo = math.Min(lo, 0)
	}
	if hi == lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 6)
	return math.Floor(lo/step) * step, math.Ceil(hi*1.05/step) * step
}

// human formats a tick or bar value briefly: 1.5k, 2M, 0.05.
func human(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return trimZero(fmt.Sprintf("%.1f", v/1e6)) + "M"
	case a >= 1e3:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "k"
	case a >= 1 || a == 0:
		return trimZero(fmt.Sprintf("%.1f", v))
	}
	return fmt.Sprintf("%.2g", v)
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }

// esc escapes s for SVG text and attribute values.
func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// doc is an SVG document being written.
type doc struct{ b strings.Builder }

func (d *doc) f(format string, args ...any) { fmt.Fprintf(&d.b, format, args...) }

// begin opens the document with the title and the axis labels.
func (d *doc) begin(title, xLabel, yLabel string) {
	d.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", Width, Height, Width, Height)
	d.f(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	d.f(`<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, esc(title))
	d.f(`<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", marginL+(Width-marginL-marginR)/2, Height-12, esc(xLabel))
	d.f(`<text transform="translate(18,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", marginT+(Height-marginT-marginB)/2, esc(yLabel))
}

// legend draws the i-th legend entry.
func (d *doc) legend(i int, name, color string, dashed bool) {
	x, y := Width-marginR+15, marginT+10+i*20
	dash := ""
	if dashed {
		dash = ` stroke-dasharray="6,4"`
	}
	d.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"%s/>`+"\n", x, y, x+24, y, color, dash)
	d.f(`<text x="%d" y="%d">%s</text>`+"\n", x+30, y+4, esc(name))
}

// yAxis draws the y axis with its grid lines and the x axis line.
func (d *doc) yAxis(ya axis) {
	for _, t := range ya.ticks() {
		y := ya.pos(t)
		d.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, y, Width-marginR, y)
		d.f(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, y+4, human(t))
	}
	d.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", marginL, marginT, marginL, Height-marginB)
	d.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", marginL, Height-marginB, Width-marginR, Height-marginB)
}

// end closes the document and returns its bytes.
func (d *doc) end() []byte {
	d.f("</svg>\n")
	return []byte(d.b.String())
}
