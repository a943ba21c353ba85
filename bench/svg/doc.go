// Package svg draws the benchmark plots as SVG: line charts on linear or
// logarithmic axes and grouped bar charts, each with a legend. It is just
// enough for bench/cmd/suite and bench/cmd/soak, and keeps the repository
// free of a plotting dependency.
//
// Every chart has the same size (Width × Height pixels). Rendering is pure:
// a chart value in, the SVG document's bytes out; the same chart always
// gives the same bytes, so regenerated plots differ only where the data do.
//
// The package is a leaf: it imports only the standard library. Charts are
// plain values with no shared state, safe to render from any goroutine.
package svg
