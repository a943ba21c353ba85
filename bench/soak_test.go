package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// series returns n samples a second apart of f(t).
func series(n int, f func(t float64) float64) (t, y []float64) {
	for i := range n {
		ti := float64(i)
		t, y = append(t, ti), append(y, f(ti))
	}
	return t, y
}

// TestCheckGrowth runs the growth detector on synthetic series: steady
// ones (flat, noisy, a GC sawtooth, a warm-up ramp that levels off in the
// first half) pass; leaks (a slow line, a late ramp, goroutines piling up
// one per few seconds) fail, and too few samples fail.
func TestCheckGrowth(t *testing.T) {
	const mib = 1 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	rss := GrowthLimit{Abs: 8 * mib, Rel: 0.05}
	gor := GrowthLimit{Abs: 10, Rel: 0.01}
	tests := []struct {
		name   string
		n      int
		f      func(t float64) float64
		lim    GrowthLimit
		ok     bool
		change float64 // the expected fitted change, within 10% (0: not checked)
	}{
		{"flat", 120, func(float64) float64 { return 100 * mib }, rss, true, 0},
		{"noisy", 120, func(float64) float64 { return 100*mib + rng.Float64()*6*mib }, rss, true, 0},
		{"GC sawtooth", 120, func(t float64) float64 { return 100*mib + math.Mod(t, 17)*mib }, rss, true, 0},
		{"warm-up ramp", 120, func(t float64) float64 { return 50*mib + 50*mib*math.Min(t/50, 1) }, rss, true, 0},
		{"slow leak", 120, func(t float64) float64 { return 100*mib + t*0.5*mib }, rss, false, 29.5 * mib},
		{"late ramp", 120, func(t float64) float64 { return 100*mib + math.Max(0, t-90)*mib }, rss, false, 0},
		{"shrinking", 120, func(t float64) float64 { return 200*mib - t*mib }, rss, true, -59 * mib},
		{"goroutines steady", 120, func(t float64) float64 { return 2013 + float64(int(t)%3) }, gor, true, 0},
		{"goroutine spikes", 120, func(t float64) float64 { return 2013 + 17*float64(int(t)%8/7) }, gor, true, 0},
		{"goroutine leak", 120, func(t float64) float64 { return 2013 + t }, gor, false, 59},
		{"too few samples", 4, func(float64) float64 { return 1 }, gor, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, ys := series(tt.n, tt.f)
			g := CheckGrowth("m", ts, ys, tt.lim)
			if g.OK != tt.ok {
				t.Errorf("OK = %v, want %v: %v", g.OK, tt.ok, g)
			}
			if tt.change != 0 && math.Abs(g.Change-tt.change) > math.Abs(tt.change)/10 {
				t.Errorf("change %.4g, want %.4g: %v", g.Change, tt.change, g)
			}
			if tt.n >= 2*minGrowthPoints && g.Points != tt.n/2 {
				t.Errorf("fitted %d points, want the second half's %d", g.Points, tt.n/2)
			}
		})
	}
}

// TestFitLine checks the fit on exact, spiky and degenerate input.
func TestFitLine(t *testing.T) {
	slope, icept := fitLine([]float64{1, 2, 3, 4}, []float64{5, 7, 9, 11})
	if slope != 2 || icept != 3 {
		t.Errorf("fit = %v + %v x, want 3 + 2 x", icept, slope)
	}
	// A spike at the end (17 writer goroutines for a moment) moves nothing.
	slope, icept = fitLine([]float64{0, 1, 2, 3, 4, 5, 6}, []float64{154, 154, 154, 154, 154, 154, 171})
	if slope != 0 || icept != 154 {
		t.Errorf("fit with a spike = %v + %v x, want 154 + 0 x", icept, slope)
	}
	if slope, icept := fitLine([]float64{2, 2}, []float64{1, 3}); slope != 0 || icept != 2 {
		t.Errorf("vertical fit = %v + %v x, want 2 + 0 x", icept, slope)
	}
}

// TestSoakJudge checks that gaps, disconnects and growth fail a soak.
func TestSoakJudge(t *testing.T) {
	steady := func() *SoakResult {
		r := &SoakResult{Rate: 10, Deliveries: 100, Limits: DefaultSoakLimits}
		for i := range 40 {
			r.Samples = append(r.Samples, SoakSample{T: float64(i), RSS: 50 << 20, Goroutines: 30})
		}
		return r
	}
	r := steady()
	r.judge()
	if !r.OK() || len(r.Growth) != 4 {
		t.Fatalf("steady soak failed: %v, growth %v", r.Failures, r.Growth)
	}
	for name, spoil := range map[string]func(*SoakResult){
		"gap":        func(r *SoakResult) { r.Gaps = 1 },
		"disconnect": func(r *SoakResult) { r.Disconnects = 1 },
		"close code": func(r *SoakResult) { r.CloseCodes = map[int]int{4008: 1} },
		"error":      func(r *SoakResult) { r.Errors = 1 },
		"silence":    func(r *SoakResult) { r.Deliveries = 0 },
		"goroutine leak": func(r *SoakResult) {
			for i := range r.Samples {
				r.Samples[i].Goroutines += float64(i)
			}
		},
	} {
		r := steady()
		spoil(r)
		r.judge()
		if r.OK() {
			t.Errorf("%s: soak passed", name)
		}
	}
}

// TestSoakDefaults checks that a soak's zero configuration takes the load
// generator's defaults except its length, and samples a long soak every
// DefaultSoakSample and a short one at least minSoakSamples times.
func TestSoakDefaults(t *testing.T) {
	got := SoakConfig{}.withDefaults()
	want := Config{Duration: DefaultSoakDuration}.withDefaults()
	if got.Duration != DefaultSoakDuration || got.Clients != want.Clients || got.Mix != want.Mix || got.Symbols != want.Symbols ||
		got.Warmup != want.Warmup || got.DialConcurrency != want.DialConcurrency || got.ReadyTimeout != want.ReadyTimeout || got.Log != want.Log {
		t.Errorf("soak defaults %+v, want the load's %+v with Duration %v", got.Config, want, DefaultSoakDuration)
	}
	if want.Clients != 1 || want.Mix == "" || want.Warmup != DefaultWarmup || (Config{}).withDefaults().Duration != DefaultDuration {
		t.Errorf("load defaults %+v", (Config{}).withDefaults())
	}
	if got.Sample != DefaultSoakSample || got.Limits != DefaultSoakLimits {
		t.Errorf("soak sample %v, limits %+v: want %v, %+v", got.Sample, got.Limits, DefaultSoakSample, DefaultSoakLimits)
	}
	short := SoakConfig{Config: Config{Duration: 20 * time.Second, Clients: 7}}.withDefaults()
	if short.Duration != 20*time.Second || short.Clients != 7 || short.Sample != time.Second {
		t.Errorf("20 s soak of 7 clients: duration %v, clients %d, sample %v; want 20s, 7, 1s", short.Duration, short.Clients, short.Sample)
	}
}

// TestSoakShort runs a short soak against marketd in-process (ingest and
// WebSocket server on an embedded broker, as TestSmoke) and checks that it
// completes, samples every series, passes, and writes its CSV.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("short soak takes ~20 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	brokers := startBroker(t)
	url := startMarketd(t, brokers)
	var log strings.Builder
	const duration = 20 * time.Second
	res, err := Soak(ctx, SoakConfig{
		Config: Config{
			URL: url, Brokers: brokers, Clients: 50, Symbols: 4, Hot: 0.3, Rate: 200,
			Mix:      "3x ticker:@1; 2x book:@1:10+trades:@1; 1x ticker:*",
			Duration: duration, Warmup: time.Second, ServerPID: os.Getpid(), Log: &log,
			MetricsURL: metricsURL(url, "marketd"),
		},
		// The test process holds the clients, the producer and the race
		// detector's shadow memory too: its RSS and goroutines are not
		// only the server's. The limits only catch gross growth here.
		Limits: SoakLimits{RSS: GrowthLimit{Abs: 1 << 30}, Goroutines: GrowthLimit{Abs: 50}},
	})
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, log.String())
	}
	for _, g := range res.Growth {
		t.Log(g)
	}
	if !res.OK() {
		for _, s := range res.Samples {
			t.Log(s.line())
		}
		t.Errorf("soak failed: %v\n%s", res.Failures, log.String())
	}
	// A sample takes a tick; on a loaded machine a slow sample (the
	// metrics scrape, /proc) makes the ticker drop ticks, so fewer is fine
	// down to half: at the default 5 s sample there would be 4.
	if n := len(res.Samples); n < minSoakSamples/2 || n > minSoakSamples+1 {
		t.Errorf("%d samples in %v, want about %d", n, duration, minSoakSamples)
	}
	last := res.Samples[len(res.Samples)-1]
	if last.RSS <= 0 || last.Goroutines <= 0 || last.Open != 50 || last.DeliveriesPS <= 0 || last.P50 <= 0 || last.P50 > last.P99 {
		t.Errorf("last sample not filled in: %+v", last)
	}
	if res.Deliveries <= 0 || res.Latency.Count <= 0 || res.Produced <= 0 {
		t.Errorf("deliveries %d, latencies %d, produced %d", res.Deliveries, res.Latency.Count, res.Produced)
	}
	var buf bytes.Buffer
	if err := res.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(rows) != len(res.Samples)+1 || len(rows[0]) != len(soakCSVHeader) {
		t.Errorf("CSV: %d rows (err %v), want %d", len(rows), err, len(res.Samples)+1)
	}
}

// TestSoakCompressed runs a brief soak whose clients offer
// permessage-deflate (soak -compress): it must run, and every client read
// every compressed message, stayed connected and saw no gap.
func TestSoakCompressed(t *testing.T) {
	if testing.Short() {
		t.Skip("a soak of a few seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	brokers := startBroker(t)
	url := startMarketd(t, brokers)
	var log strings.Builder
	res, err := Soak(ctx, SoakConfig{Config: Config{
		URL: url, Brokers: brokers, Clients: 10, Rate: 100, Compress: true,
		Duration: 2 * time.Second, Warmup: 300 * time.Millisecond, ServerPID: os.Getpid(), Log: &log,
		MetricsURL: metricsURL(url, "marketd"),
	}})
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, log.String())
	}
	if res.Deliveries <= 0 || res.Unreadable != 0 || res.Gaps != 0 || res.Disconnects != 0 {
		t.Errorf("deliveries %d, unreadable %d, gaps %d, disconnects %d", res.Deliveries, res.Unreadable, res.Gaps, res.Disconnects)
	}
}
