package bench

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"
)

// The soak: the load generator's clients and producer held steady for a
// long time while a sampler records the target's memory, goroutines,
// queued bytes, Kafka lag and the clients' latency every few seconds. A
// leak shows as growth over the run, which a robust linear fit of the second half
// of the samples measures (the first half holds the warm-up: heaps, pools
// and rings filling to their working size).

// Soak defaults.
const (
	DefaultSoakDuration = 10 * time.Minute
	DefaultSoakSample   = 5 * time.Second
	// minSoakSamples is the number of samples DefaultSoakSample is shrunk
	// to give a short soak, so that its second half has enough points.
	minSoakSamples = 20
	minSoakSample  = 250 * time.Millisecond
	// minGrowthPoints is the fewest samples a growth fit is made of.
	minGrowthPoints = 3
	// maxMissedSamples in a row (the target's /metrics unreachable or too
	// slow) fail the soak.
	maxMissedSamples = 3
)

// errProcessGone marks a sample that found the server or broker process gone.
var errProcessGone = errors.New("process gone")

// GrowthLimit bounds the growth of one series over the second half of a
// soak: the fitted change must stay below max(Abs, Rel × the series' mean
// over that half).
type GrowthLimit struct {
	Abs float64 `json:"abs"`
	Rel float64 `json:"rel"`
}

// allowed returns the largest change the limit lets pass for a series of
// the given mean.
func (l GrowthLimit) allowed(mean float64) float64 { return math.Max(l.Abs, l.Rel*math.Abs(mean)) }

// SoakLimits are the growth limits of a soak. A zero field takes its value
// from DefaultSoakLimits.
type SoakLimits struct {
	RSS         GrowthLimit `json:"rss_bytes"`
	Goroutines  GrowthLimit `json:"goroutines"`
	QueuedBytes GrowthLimit `json:"queued_bytes"`
	Lag         GrowthLimit `json:"lag_records"`
}

// DefaultSoakLimits: over the second half of the run, the server's RSS may
// grow by 8 MiB or 5%, whichever is more; its goroutines by 10 or 1%; the
// bytes queued on all connections by 4 MiB (one client's hard limit); the
// Kafka lag by 5,000 records. A leak of a few hundred bytes per delivery,
// a goroutine per connection, or a target falling behind its input all
// pass these within minutes.
var DefaultSoakLimits = SoakLimits{
	RSS:         GrowthLimit{Abs: 8 << 20, Rel: 0.05},
	Goroutines:  GrowthLimit{Abs: 10, Rel: 0.01},
	QueuedBytes: GrowthLimit{Abs: 4 << 20},
	Lag:         GrowthLimit{Abs: 5000},
}

func (l SoakLimits) withDefaults() SoakLimits {
	def := func(v *GrowthLimit, d GrowthLimit) {
		if *v == (GrowthLimit{}) {
			*v = d
		}
	}
	def(&l.RSS, DefaultSoakLimits.RSS)
	def(&l.Goroutines, DefaultSoakLimits.Goroutines)
	def(&l.QueuedBytes, DefaultSoakLimits.QueuedBytes)
	def(&l.Lag, DefaultSoakLimits.Lag)
	return l
}

// SoakConfig configures a soak.
type SoakConfig struct {
	// Config is the load, as for Run: target, clients, mix, symbols, rate.
	// Duration is the length of the soak (default DefaultSoakDuration),
	// Warmup the load before the first sample. ServerPID (for RSS) and
	// MetricsURL (for goroutines, queued bytes and lag) are required.
	Config
	// Sample is the time between samples. Default DefaultSoakSample, or
	// less in a short soak: at least 20 samples are taken.
	Sample time.Duration
	// Extra names symbols outside the universe that the mix subscribes to
	// (a simulator's markets, say): the soak waits until the target knows
	// them before the clients connect.
	Extra []string
	// Limits bounds growth; a zero field means its DefaultSoakLimits.
	Limits SoakLimits
	// BrokerPID, if set, is the Kafka broker's process: its RSS is sampled
	// too, but not judged (a broker that keeps the log in memory grows
	// with the input by design).
	BrokerPID int
}

// SoakSample is one sample of a soak. Rates and latencies are over the
// time since the previous sample; counts are since the soak started.
type SoakSample struct {
	T            float64 `json:"t_s"` // since the first sample
	RSS          int64   `json:"rss_bytes"`
	BrokerRSS    int64   `json:"broker_rss_bytes,omitempty"`
	Goroutines   float64 `json:"goroutines"`
	QueuedBytes  float64 `json:"queued_bytes"`
	Lag          float64 `json:"lag_records"`
	DeliveriesPS float64 `json:"deliveries_per_s"`
	P50          int64   `json:"latency_p50_us"`
	P99          int64   `json:"latency_p99_us"`
	Open         int     `json:"open_clients"`
	Gaps         int64   `json:"gaps"`
	Errors       int64   `json:"errors"`
}

// Growth is the growth of one series over the second half of a soak.
type Growth struct {
	Metric string `json:"metric"`
	// Points is the number of samples fitted.
	Points int `json:"points"`
	// PerMinute is the slope of the fitted line; Change the line's
	// rise across the fitted span; Mean the series' mean over it.
	PerMinute float64 `json:"per_minute"`
	Change    float64 `json:"change"`
	Mean      float64 `json:"mean"`
	// Allowed is the largest change the limit lets pass.
	Allowed float64 `json:"allowed"`
	OK      bool    `json:"ok"`
	// T0 and Intercept place the fitted line: value = Intercept +
	// PerMinute/60 × (t − T0), t in seconds.
	T0        float64 `json:"t0_s"`
	Intercept float64 `json:"intercept"`
}

func (g Growth) String() string {
	status := "ok"
	if !g.OK {
		status = "GROWTH"
	}
	return fmt.Sprintf("%s %s: %+.4g over the second half (%+.4g/min, %d samples, mean %.4g, allowed %.4g)",
		status, g.Metric, g.Change, g.PerMinute, g.Points, g.Mean, g.Allowed)
}

// CheckGrowth fits a line (Theil–Sen, see fitLine) to the samples of y (at times t, seconds) in the
// second half of the time span and compares its rise with the limit. Too
// few samples to fit fail the check.
func CheckGrowth(metric string, t, y []float64, lim GrowthLimit) Growth {
	g := Growth{Metric: metric}
	if len(t) != len(y) || len(t) == 0 {
		return g
	}
	mid := (t[0] + t[len(t)-1]) / 2
	var xs, ys []float64
	for i := range t {
		if t[i] >= mid && !math.IsNaN(y[i]) {
			xs, ys = append(xs, t[i]), append(ys, y[i])
		}
	}
	g.Points = len(xs)
	if g.Points < minGrowthPoints {
		return g
	}
	slope, icept := fitLine(xs, ys)
	g.T0 = xs[0]
	g.Intercept = icept + slope*xs[0]
	g.PerMinute = slope * 60
	g.Change = slope * (xs[len(xs)-1] - xs[0])
	for _, v := range ys {
		g.Mean += v
	}
	g.Mean /= float64(len(ys))
	g.Allowed = lim.allowed(g.Mean)
	g.OK = g.Change <= g.Allowed
	return g
}

// fitLine returns the Theil–Sen line y = icept + slope·x: the slope is the
// median of the slopes between every two points, the intercept the median
// of y − slope·x. Unlike least squares it ignores spikes (a burst of
// writer goroutines, a queue flushing) at the ends of the series, and
// follows a trend that half the points share.
func fitLine(x, y []float64) (slope, icept float64) {
	var slopes []float64
	for i := range x {
		for j := i + 1; j < len(x); j++ {
			if dx := x[j] - x[i]; dx != 0 {
				slopes = append(slopes, (y[j]-y[i])/dx)
			}
		}
	}
	if len(slopes) > 0 {
		slope = median(slopes)
	}
	rest := make([]float64, len(x))
	for i := range x {
		rest[i] = y[i] - slope*x[i]
	}
	return slope, median(rest)
}

// median returns the median of v, which it sorts.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// SoakResult is what a soak measured.
type SoakResult struct {
	Command  string    `json:"command,omitempty"`
	Started  time.Time `json:"started"`
	Clients  int       `json:"clients"`
	Ready    int       `json:"ready"`
	Mix      string    `json:"mix"`
	Symbols  int       `json:"symbols"`
	Extra    []string  `json:"extra_symbols,omitempty"`
	Rate     int       `json:"rate"`
	Hot      float64   `json:"hot"`
	Compress bool      `json:"compress"`
	Duration float64   `json:"duration_s"`
	Sample   float64   `json:"sample_s"`
	// LoadAvg is /proc/loadavg at the end: the machine's other load.
	LoadAvg string `json:"loadavg,omitempty"`

	Samples []SoakSample `json:"samples"`
	Growth  []Growth     `json:"growth"`

	Produced       int64   `json:"produced"`
	ProducedPerSec float64 `json:"produced_per_s"`
	ProduceSkipped int64   `json:"produce_skipped"`
	Deliveries     int64   `json:"deliveries"`
	Latency        Latency `json:"latency_us"`
	Gaps           int64   `json:"gaps"`
	Errors         int64   `json:"errors"`
	Unreadable     int64   `json:"unreadable"`
	Disconnects    int     `json:"disconnects"`
	// MissedSamples counts the samples that could not be taken (the
	// target's /metrics too slow on a busy machine).
	MissedSamples int         `json:"missed_samples,omitempty"`
	CloseCodes    map[int]int `json:"close_codes,omitempty"`
	Limits        SoakLimits  `json:"limits"`

	// Failures says why the soak failed; empty when it passed.
	Failures []string `json:"failures,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// OK reports whether the soak passed.
func (r *SoakResult) OK() bool { return len(r.Failures) == 0 }

// Soak runs the load steadily for cfg.Duration, sampling the target every
// cfg.Sample, and judges the run: it fails on growth (CheckGrowth of RSS,
// goroutines, queued bytes and lag), on any sequence gap, error message,
// unreadable message or client disconnected by the server, and when
// nothing is delivered. It returns an error only when the soak could not
// be set up or the target could not be sampled at all.
func Soak(ctx context.Context, cfg SoakConfig) (*SoakResult, error) {
	if cfg.ServerPID == 0 || cfg.MetricsURL == "" {
		return nil, errors.New("soak: server PID and metrics URL are required")
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	cfg = cfg.withDefaults()
	mix, err := ParseMix(cfg.Mix)
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	universe := symbolUniverse(cfg.Symbols)
	res := &SoakResult{
		Started: time.Now().UTC(), Clients: cfg.Clients, Mix: mix.String(), Symbols: cfg.Symbols, Extra: cfg.Extra,
		Rate: cfg.Rate, Hot: cfg.Hot, Compress: cfg.Compress, Duration: cfg.Duration.Seconds(),
		Sample: cfg.Sample.Seconds(), Limits: cfg.Limits,
	}

	prod, err := NewProducer(ctx, ProducerConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, Symbols: universe, Hot: cfg.Hot, Seed: cfg.Seed})
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	if err := prod.Seed(ctx); err != nil {
		return nil, fmt.Errorf("soak: seed books: %w", err)
	}
	if err := waitSymbols(ctx, cfg.Config, append(slices.Clone(universe), cfg.Extra...)); err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	c := newCounters()
	clients, err := connectAll(ctx, cfg.Config, mix, universe, c)
	defer closeAll(clients)
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	res.Ready = countReady(clients)
	fmt.Fprintf(cfg.Log, "soak: %d clients connected, %d subscribed\n", len(clients), res.Ready)
	if res.Ready < cfg.Clients {
		res.Failures = append(res.Failures, fmt.Sprintf("only %d of %d clients got every subscription acknowledged", res.Ready, cfg.Clients))
	}

	stopProducer := prod.start(ctx, cfg.Rate)
	defer stopProducer()
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	c.measuring.Store(true)
	fmt.Fprintf(cfg.Log, "soak: %v at %d records/s, a sample every %v\n", cfg.Duration, cfg.Rate, cfg.Sample)
	s := sampler{cfg: &cfg, c: c, clients: clients}
	start := time.Now()
	produced0 := prod.Produced.Load()
	c0 := c.snapshot()
	if err := s.sample(ctx, start); err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	tick := time.NewTicker(cfg.Sample)
	defer tick.Stop()
	missed := 0 // samples missed in a row
	for time.Since(start) < cfg.Duration-cfg.Sample/2 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := s.sample(ctx, start); err != nil {
			// A dead process ends the soak; a slow scrape of a busy
			// server is a missed sample, until too many in a row.
			missed++
			res.MissedSamples++
			fmt.Fprintf(cfg.Log, "soak: sample missed: %v\n", err)
			if errors.Is(err, errProcessGone) || missed >= maxMissedSamples {
				res.Failures = append(res.Failures, err.Error())
				break
			}
			continue
		}
		missed = 0
		if n := len(s.samples); n%12 == 0 {
			fmt.Fprintf(cfg.Log, "soak: %s\n", s.samples[n-1].line())
		}
	}
	c.measuring.Store(false)
	window := time.Since(start).Seconds()
	prodErr := stopProducer()

	d := c.snapshot().sub(c0)
	res.Samples = s.samples
	res.Produced = prod.Produced.Load() - produced0
	res.ProducedPerSec = float64(res.Produced) / window
	res.ProduceSkipped = prod.Skipped.Load()
	res.Deliveries = d.deliveries
	res.Latency = latencyOf(c.latency.Snapshot())
	res.Gaps, res.Errors, res.Unreadable = d.gaps, d.errors, d.bad
	res.Disconnects = len(clients) - openClients(clients)
	c.mu.Lock()
	if len(c.closeCodes) > 0 {
		res.CloseCodes = maps.Clone(c.closeCodes)
	}
	c.mu.Unlock()
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAvg = string(la[:len(la)-1])
	}
	if prodErr != nil {
		res.Failures = append(res.Failures, "producer: "+prodErr.Error())
	}
	if res.MissedSamples > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d samples missed", res.MissedSamples))
	}
	if res.ProduceSkipped > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the producer fell behind and skipped %d records", res.ProduceSkipped))
	}
	res.judge()
	return res, nil
}

// withDefaults fills the zero fields of a soak's configuration: the load's
// as for Run, except that a soak lasts DefaultSoakDuration.
func (cfg SoakConfig) withDefaults() SoakConfig {
	if cfg.Duration <= 0 {
		cfg.Duration = DefaultSoakDuration
	}
	cfg.Config = cfg.Config.withDefaults()
	if cfg.Sample <= 0 {
		cfg.Sample = min(DefaultSoakSample, max(minSoakSample, cfg.Duration/minSoakSamples))
	}
	cfg.Limits = cfg.Limits.withDefaults()
	return cfg
}

// judge checks the growth of each series and the clients' tallies.
func (r *SoakResult) judge() {
	var t, rss, gor, queued, lag []float64
	for _, s := range r.Samples {
		t = append(t, s.T)
		rss = append(rss, float64(s.RSS))
		gor = append(gor, s.Goroutines)
		queued = append(queued, s.QueuedBytes)
		lag = append(lag, s.Lag)
	}
	r.Growth = []Growth{
		CheckGrowth("rss_bytes", t, rss, r.Limits.RSS),
		CheckGrowth("goroutines", t, gor, r.Limits.Goroutines),
		CheckGrowth("queued_bytes", t, queued, r.Limits.QueuedBytes),
		CheckGrowth("lag_records", t, lag, r.Limits.Lag),
	}
	for _, g := range r.Growth {
		switch {
		case g.Points < minGrowthPoints:
			r.Failures = append(r.Failures, fmt.Sprintf("%s: %d samples in the second half, too few to fit", g.Metric, g.Points))
		case !g.OK:
			r.Failures = append(r.Failures, g.String())
		}
	}
	if r.Gaps > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d sequence gaps", r.Gaps))
	}
	if r.Errors > 0 || r.Unreadable > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d error messages, %d unreadable messages", r.Errors, r.Unreadable))
	}
	if r.Disconnects > 0 || len(r.CloseCodes) > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d clients disconnected (server close codes %v)", r.Disconnects, r.CloseCodes))
	}
	if r.Rate > 0 && r.Deliveries == 0 {
		r.Failures = append(r.Failures, "nothing delivered")
	}
}

// openClients counts the clients whose connection is still open.
func openClients(clients []*loadClient) int {
	n := 0
	for _, lc := range clients {
		select {
		case <-lc.done:
		default:
			n++
		}
	}
	return n
}

// sampler takes a soak's samples. Owned by Soak's goroutine.
type sampler struct {
	cfg     *SoakConfig
	c       *counters
	clients []*loadClient
	samples []SoakSample
	prevAt  time.Time
	prev    countersSnapshot
	prevH   *HistSnapshot
}

// sample appends one sample; an error means the target cannot be read.
func (s *sampler) sample(ctx context.Context, start time.Time) error {
	now := time.Now()
	ps, err := ReadProc(s.cfg.ServerPID)
	if err != nil {
		return fmt.Errorf("server: %w: %w", errProcessGone, err)
	}
	g, err := scrapeGauges(ctx, s.cfg.MetricsURL, []string{gaugeGoroutines, GaugeQueued, GaugeLag})
	if err != nil {
		return err
	}
	var brokerRSS int64
	if s.cfg.BrokerPID != 0 {
		bs, err := ReadProc(s.cfg.BrokerPID)
		if err != nil {
			return fmt.Errorf("broker: %w: %w", errProcessGone, err)
		}
		brokerRSS = bs.RSS
	}
	gor, ok := g[gaugeGoroutines]
	if !ok && s.cfg.ServerPID == os.Getpid() {
		// An in-process target (a test) whose registry has no Go collector.
		gor = float64(runtime.NumGoroutine())
	} else if !ok {
		gor = math.NaN()
	}
	cs, h := s.c.snapshot(), s.c.latency.Snapshot()
	smp := SoakSample{
		T: now.Sub(start).Seconds(), RSS: ps.RSS, BrokerRSS: brokerRSS, Goroutines: gor, QueuedBytes: g[GaugeQueued], Lag: g[GaugeLag],
		Open: openClients(s.clients), Gaps: cs.gaps, Errors: cs.errors,
	}
	if s.prevH != nil {
		d := h.minus(s.prevH)
		smp.P50, smp.P99 = d.Quantile(0.5), d.Quantile(0.99)
		smp.DeliveriesPS = float64(cs.deliveries-s.prev.deliveries) / now.Sub(s.prevAt).Seconds()
	}
	s.samples = append(s.samples, smp)
	s.prevAt, s.prev, s.prevH = now, cs, h
	return nil
}

// line formats a sample for the progress log.
func (s SoakSample) line() string {
	return fmt.Sprintf("t=%4.0fs rss %.1f MiB, %.0f goroutines, queued %.0f B, lag %.0f, %.0f deliveries/s, p50 %s p99 %s, %d open",
		s.T, mb(s.RSS), s.Goroutines, s.QueuedBytes, s.Lag, s.DeliveriesPS, us(s.P50), us(s.P99), s.Open)
}

// minus returns the values recorded in s but not yet in earlier (a
// snapshot of the same histogram).
func (s *HistSnapshot) minus(earlier *HistSnapshot) *HistSnapshot {
	d := &HistSnapshot{}
	for i := range s.counts {
		d.counts[i] = s.counts[i] - earlier.counts[i]
		d.total += d.counts[i]
	}
	return d
}

// soakCSVHeader names the columns of WriteCSV.
var soakCSVHeader = []string{"t_s", "rss_bytes", "broker_rss_bytes", "goroutines", "queued_bytes", "lag_records",
	"deliveries_per_s", "latency_p50_us", "latency_p99_us", "open_clients", "gaps", "errors"}

// WriteCSV writes the samples as CSV with a header line.
func (r *SoakResult) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(soakCSVHeader)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	i := strconv.FormatInt
	for _, s := range r.Samples {
		_ = cw.Write([]string{f(math.Round(s.T*1000) / 1000), i(s.RSS, 10), i(s.BrokerRSS, 10), f(s.Goroutines), f(s.QueuedBytes), f(s.Lag),
			f(math.Round(s.DeliveriesPS)), i(s.P50, 10), i(s.P99, 10), strconv.Itoa(s.Open), i(s.Gaps, 10), i(s.Errors, 10)})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("soak: write CSV: %w", err)
	}
	return nil
}
