package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestHistogramQuantiles compares the histogram's quantiles with the exact
// ones of a sorted sample: within the bucket resolution of 1/64.
func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100_000)
	for i := range vals {
		vals[i] = int64(r.ExpFloat64() * 800) // µs, long tail
		h.RecordMicros(vals[i])
	}
	slices.Sort(vals)
	s := h.Snapshot()
	if s.Count() != int64(len(vals)) {
		t.Fatalf("count = %d, want %d", s.Count(), len(vals))
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := s.Quantile(q)
		if diff := float64(got-exact) / float64(max(exact, 1)); diff > 0.04 || diff < -0.04 {
			t.Errorf("q%.3f = %d, exact %d", q, got, exact)
		}
	}
	if s.Quantile(0.5) > s.Quantile(0.99) || s.Quantile(0.99) > s.Quantile(0.999) || s.Quantile(0.999) > s.Max() {
		t.Errorf("quantiles not ordered: %d %d %d %d", s.Quantile(0.5), s.Quantile(0.99), s.Quantile(0.999), s.Max())
	}
}

func TestHistogramSmallAndHuge(t *testing.T) {
	var h Histogram
	for _, v := range []int64{-5, 0, 1, 63, 64, 65, 1 << 20, 1 << 50} {
		h.RecordMicros(v)
	}
	s := h.Snapshot()
	if got := s.Quantile(0); got != 0 {
		t.Errorf("min = %d", got)
	}
	if got := s.Quantile(0.5); got != 63 && got != 64 {
		t.Errorf("median = %d, want 63 or 64", got)
	}
	if s.Max() < 1<<40 {
		t.Errorf("max = %d, want the top bucket", s.Max())
	}
	var empty HistSnapshot
	if empty.Quantile(0.99) != 0 || empty.Max() != 0 {
		t.Error("empty histogram not 0")
	}
}

func TestParseProc(t *testing.T) {
	stat := []byte("1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 1000 200 18446744073709551615")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu.Seconds() != 3.25 {
		t.Errorf("cpu = %v, %v; want 3.25s", cpu, err)
	}
	rss, err := parseStatusRSS([]byte("Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    2048 kB\nThreads: 3\n"))
	if err != nil || rss != 2048<<10 {
		t.Errorf("rss = %d, %v", rss, err)
	}
	w, r, wc, err := parseIO([]byte("rchar: 1\nwchar: 2\nsyscr: 30\nsyscw: 40\nread_bytes: 0\n"))
	if err != nil || w != 40 || r != 30 || wc != 2 {
		t.Errorf("io = %d %d %d %v", w, r, wc, err)
	}
	if _, _, _, err := parseIO([]byte("rchar: 1\n")); err == nil {
		t.Error("io without syscw accepted")
	}
	busy, err := parseCPUBusy([]byte("cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 1 50 900 7 2 3 4 0 0\ncpu1 9 9 9 9 9 9 9 9 0 0\n"), 0)
	if err != nil || busy.Seconds() != 1.60 {
		t.Errorf("cpu0 busy = %v, %v; want 1.6s", busy, err)
	}
	if _, err := parseCPUBusy([]byte("cpu0 1 2\n"), 0); err == nil {
		t.Error("short cpu line accepted")
	}
	if _, err := ReadCPUBusy(0); err != nil {
		t.Error(err)
	}
	self, err := ReadProc(0)
	if err != nil || self.RSS <= 0 || self.CPU < 0 {
		t.Errorf("ReadProc(self) = %+v, %v", self, err)
	}
}
