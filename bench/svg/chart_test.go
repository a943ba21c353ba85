package svg

import (
	"encoding/xml"
	"math"
	"strconv"
	"strings"
	"testing"
)

// element is any SVG element, with its attributes and children.
type element struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []element  `xml:",any"`
}

func (e element) attr(name string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// parse decodes an SVG document and returns its elements in document
// order, grouped by name.
func parse(t *testing.T, doc []byte) map[string][]element {
	t.Helper()
	var root element
	if err := xml.Unmarshal(doc, &root); err != nil {
		t.Fatalf("not well-formed XML: %v\n%s", err, doc)
	}
	if root.XMLName.Local != "svg" || root.attr("width") != strconv.Itoa(Width) || root.attr("height") != strconv.Itoa(Height) {
		t.Fatalf("root is <%s width=%q height=%q>, want <svg> of %d×%d", root.XMLName.Local, root.attr("width"), root.attr("height"), Width, Height)
	}
	out := map[string][]element{}
	for _, c := range root.Children {
		out[c.XMLName.Local] = append(out[c.XMLName.Local], c)
	}
	return out
}

// TestLineChart checks that each series is one polyline drawn left to
// right with a marker per point, that a logarithmic axis leaves out values
// ≤ 0, and that text is escaped.
func TestLineChart(t *testing.T) {
	c := LineChart{Title: "a < b & c", XLabel: "x", YLabel: "y", LogX: true, LogY: true, Series: []Series{
		{Name: "unsorted", X: []float64{1000, 10, 100}, Y: []float64{3, 1, 2}},
		{Name: "with zero", X: []float64{10, 100, 1000}, Y: []float64{0, 5, 50}, Dashed: true},
	}}
	els := parse(t, c.Render())
	lines := els["polyline"]
	if len(lines) != 2 {
		t.Fatalf("%d polylines, want 2", len(lines))
	}
	for i, want := range []int{3, 2} {
		pts := strings.Fields(lines[i].attr("points"))
		if len(pts) != want {
			t.Errorf("series %d: %d points %v, want %d", i, len(pts), pts, want)
		}
		prev := math.Inf(-1)
		for _, p := range pts {
			xs, _, _ := strings.Cut(p, ",")
			x, err := strconv.ParseFloat(xs, 64)
			if err != nil || x <= prev {
				t.Errorf("series %d: points %v not left to right", i, pts)
				break
			}
			prev = x
		}
	}
	if got := len(els["circle"]); got != 5 {
		t.Errorf("%d point markers, want 5", got)
	}
	if lines[0].attr("stroke-dasharray") != "" || lines[1].attr("stroke-dasharray") == "" {
		t.Errorf("dash attributes %q, %q: want only the second series dashed", lines[0].attr("stroke-dasharray"), lines[1].attr("stroke-dasharray"))
	}
	if !strings.Contains(string(c.Render()), ">a &lt; b &amp; c<") {
		t.Error("title not escaped")
	}
}

// TestBarChart checks one bar per value, none for NaN, and bar heights in
// proportion to the values on an axis from zero.
func TestBarChart(t *testing.T) {
	c := BarChart{Title: "bars", YLabel: "v", Categories: []string{"marketd", "marketd + deflate"}, Names: []string{"a", "b"},
		Values: [][]float64{{100, 200}, {math.NaN(), 50}}}
	var bars []element
	for _, r := range parse(t, c.Render())["rect"] {
		if r.attr("fill") != "white" { // the background
			bars = append(bars, r)
		}
	}
	if len(bars) != 3 {
		t.Fatalf("%d bars, want 3", len(bars))
	}
	h := make([]float64, len(bars))
	for i, b := range bars {
		h[i], _ = strconv.ParseFloat(b.attr("height"), 64)
	}
	// Bars in order: a/marketd 100, a/deflate 200, b/deflate 50.
	if math.Abs(h[1]/h[0]-2) > 0.01 || math.Abs(h[2]/h[0]-0.5) > 0.01 {
		t.Errorf("bar heights %v, want in proportion 100:200:50", h)
	}
}
