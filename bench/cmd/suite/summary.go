package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/marketd/marketd/bench"
	"github.com/marketd/marketd/bench/svg"
)

// summary is everything one suite run measured (bench/results/summary.json).
type summary struct {
	Started    time.Time              `json:"started"`
	Duration   float64                `json:"duration_s"`
	Command    string                 `json:"command"`
	GoVersion  string                 `json:"go_version"`
	Commit     string                 `json:"commit,omitempty"` // the binaries' commit (-rev); empty: the work tree
	Nice       int                    `json:"nice"`
	Repeat     int                    `json:"repeat"`
	CPU        string                 `json:"cpu"`
	LoadBefore string                 `json:"loadavg_before"`
	LoadAfter  string                 `json:"loadavg_after"`
	Results    []*bench.Result        `json:"results"`
	Ceilings   []*bench.CeilingResult `json:"ceilings"`
}

func (s *summary) get(scenario, target string) *bench.Result {
	for _, r := range s.Results {
		if r.Scenario == scenario && r.Target == target {
			return r
		}
	}
	return nil
}

func (s *summary) ceiling(conns, batch int) *bench.CeilingResult {
	for _, c := range s.Ceilings {
		if c.Conns == conns && c.Batch == batch {
			return c
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func ms(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }

// field returns f(r), or "–" for a missing result.
func field(r *bench.Result, f func(*bench.Result) string) string {
	if r == nil {
		return "–"
	}
	return f(r)
}

// markdown renders the results block of docs/benchmarks.md.
func (s *summary) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	built := "the work tree"
	if s.Commit != "" {
		built = "commit " + s.Commit[:min(12, len(s.Commit))]
	}
	p("Generated %s by `%s` in %.0f s from %s (%s, %s, 2 cores; load average before %s, after %s).\n",
		s.Started.Format("2006-01-02 15:04 UTC"), strings.TrimSpace(s.Command), s.Duration, built, s.CPU, s.GoVersion, s.LoadBefore, s.LoadAfter)
	p("Server pinned to CPU 0 with GOMAXPROCS=1; load generator and a fresh broker per run on CPU 1; all three at niceness %d. Each scenario ran %d time(s); the least disturbed run is shown. ", s.Nice, max(s.Repeat, 1))
	p("Raw JSON of every run: `bench/results/<scenario>-<target>.json` (each holds its exact `loadgen` command).\n\n")

	p("*Others on CPU 0* is the share of the server's core that other processes (other engineers' jobs) took during the window: the disturbance of that run. ")
	p("*Deliveries/s* is what the clients received; *per core* is deliveries per second of server CPU (deliveries / CPU-seconds), the capacity of one core when the server did not use all of its core; the ratio is marketd/peer of that capacity. ")
	p("A per-core figure marked %s is not a capacity: the load generator was saturated (over %.0f%% of its core: the server waited for its reads), or a backlog was left at the end of the window (more than %v of the offered records in Kafka, or of the wire bytes in marketd's client queues: the server did not keep up, or its queues filled behind slow readers, and a delivery from a full queue costs less than one in the steady state); the warnings below say which.\n\n",
		notCapacity, 100*bench.SaturatedShare, backlogSpan)
	p("| scenario | clients | records/s | deliveries/s marketd | deliveries/s peer | per core marketd | per core peer | marketd/peer per core | p50 / p99 / p99.9 ms marketd | p50 / p99 / p99.9 ms peer | server CPU marketd / peer | write syscalls per delivery marketd / peer | gaps / notices marketd | backlog at the end marketd: Kafka lag (records) / client queues (KB) | others on CPU 0 marketd / peer |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sc := range scenarios {
		m, pe := s.get(sc.Name, "marketd"), s.get(sc.Name, "peer")
		if m == nil && pe == nil {
			continue
		}
		if sc.Rate == 0 || sc.Compress {
			continue // memory only, or compressed: in their own tables
		}
		deliv := func(r *bench.Result) string { return fmt.Sprintf("%.0f", r.DeliveriesPerSec) }
		lat := func(r *bench.Result) string {
			return ms(r.Latency.P50) + " / " + ms(r.Latency.P99) + " / " + ms(r.Latency.P999)
		}
		sys := func(r *bench.Result) string {
			if r.Server == nil {
				return "–"
			}
			return fmt.Sprintf("%.3f", r.Server.SyscWPerDeliv)
		}
		perCore := func(r *bench.Result) string { return perCoreCell(r) }
		share := func(r *bench.Result) string {
			if r.Server == nil {
				return "–"
			}
			return fmt.Sprintf("%.0f%%", 100*r.Server.CPUShare)
		}
		rt := "–"
		if m != nil && pe != nil {
			rt = ratio(capacity(m), capacity(pe))
			if len(capacityIssues(m)) > 0 || len(capacityIssues(pe)) > 0 {
				rt += " " + notCapacity
			}
		}
		produced := m
		if produced == nil {
			produced = pe
		}
		p("| %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s | %s / %s |\n", sc.Name, sc.Clients, produced.ProducedPerSec,
			field(m, deliv), field(pe, deliv), field(m, perCore), field(pe, perCore), rt, field(m, lat), field(pe, lat), field(m, share), field(pe, share), field(m, sys), field(pe, sys),
			field(m, func(r *bench.Result) string { return fmt.Sprintf("%d / %d", r.Gaps, r.Notices) }), field(m, backlog), field(m, others), field(pe, others))
	}
	p("\n")

	p("**Compressed** (permessage-deflate; the clients offer it as a browser does, `permessage-deflate; client_max_window_bits`; with context takeover each inflates every message with its own window, without it they share the inflation of identical frames, which inflate to the same bytes for everyone; each scans and chains every message): marketd as configured by default, marketd with server context takeover (`-ws-context-takeover`), and the peer (one deflate per message per client, no context takeover). *Takeover* is what the server answered; *wire* is TCP bytes per message and their share of the uncompressed JSON; *frames compressed* is the share of the frames that came with RSV1 (a server sends a message plain when deflate does not shrink it).\n\n")
	p("| scenario | target | takeover | records/s | deliveries/s | per core | p50 / p99 / p99.9 ms | wire B/msg (of the JSON) | frames compressed | server CPU | load generator CPU | backlog at the end: Kafka lag (records) / client queues (KB) | gaps / unreadable | others on CPU 0 |\n")
	p("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sc := range scenarios {
		if !sc.Compress {
			continue
		}
		for _, t := range []string{targetMarketd, targetTakeover, targetPeer} {
			r := s.get(sc.Name, t)
			if r == nil {
				continue
			}
			wire := fmt.Sprintf("%.1f", r.WirePerMsg)
			if r.PayloadPerMsg > 0 {
				wire += fmt.Sprintf(" (%.0f%%)", 100*r.WirePerMsg/r.PayloadPerMsg)
			}
			server := "–"
			if r.Server != nil {
				server = fmt.Sprintf("%.0f%%", 100*r.Server.CPUShare)
			}
			compressed := "–"
			if r.Frames > 0 {
				compressed = fmt.Sprintf("%.0f%%", 100*float64(r.Inflated)/float64(r.Frames))
			}
			p("| %s | %s | %s | %.0f | %.0f | %s | %s / %s / %s | %s | %s | %s | %.0f%% | %s | %d / %d | %s |\n", sc.Name, t, takeoverCell(r), r.ProducedPerSec, r.DeliveriesPerSec,
				perCoreCell(r), ms(r.Latency.P50), ms(r.Latency.P99), ms(r.Latency.P999), wire, compressed, server, 100*r.Loadgen.CPUShare, backlog(r), r.Gaps, r.Unreadable, others(r))
		}
	}
	p("\n")

	p("**Against the ceiling** (raw loopback TCP writes of the same message size from one core; `bench/cmd/ceiling`):\n\n")
	p("| subscribers | marketd per core | peer per core | ceiling, 1 msg per write | ceiling, %d msgs per write | marketd / ceiling(1) | marketd / ceiling(%d) |\n", ceilingBatch, ceilingBatch)
	p("|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, pt := range satPoints {
		m, pe := s.get(pt.name, "marketd"), s.get(pt.name, "peer")
		c1, cN := s.ceiling(pt.conns, 1), s.ceiling(pt.conns, ceilingBatch)
		md, pd, v1, vN := math.NaN(), math.NaN(), math.NaN(), math.NaN()
		if m != nil {
			md = capacity(m)
		}
		if pe != nil {
			pd = capacity(pe)
		}
		if c1 != nil {
			v1 = c1.MsgsPerSec
		}
		if cN != nil {
			vN = cN.MsgsPerSec
		}
		p("| %d | %s | %s | %s | %s | %s | %s |\n", pt.conns, num(md), num(pd), num(v1), num(vN), ratio(md, v1), ratio(md, vN))
	}
	if len(s.Ceilings) > 0 {
		c := s.Ceilings[0]
		p("\nCeiling message size: %d bytes (marketd's wire bytes per message in lat-1k-100).\n", c.Size)
	}
	p("\n")

	p("**Bytes on the wire** (1,000 subscribers of book deltas at 100 records/s: `lat-1k-100`, and `z-lat-1k-100` with permessage-deflate):\n\n")
	p("| target | compression | context takeover | payload B/msg | wire B/msg | wire / uncompressed payload |\n|---|---|---|--:|--:|--:|\n")
	for _, k := range wireRows {
		r := s.get(k.scenario, k.target)
		if r == nil {
			continue
		}
		share := "–"
		if r.PayloadPerMsg > 0 {
			share = fmt.Sprintf("%.0f%%", 100*r.WirePerMsg/r.PayloadPerMsg)
		}
		p("| %s | %v | %s | %.1f | %.1f | %s |\n", k.target, r.Compress, takeoverCell(r), r.PayloadPerMsg, r.WirePerMsg, share)
	}
	p("\n")

	p("**Memory per connection** (server RSS after connecting and subscribing minus before, divided by clients):\n\n")
	p("| scenario | clients | marketd KB/conn | peer KB/conn | marketd RSS MB | peer RSS MB |\n|---|--:|--:|--:|--:|--:|\n")
	for _, sc := range []string{"idle-10k", "ticker-10k", "sat-10k"} {
		m, pe := s.get(sc, "marketd"), s.get(sc, "peer")
		kb := func(r *bench.Result) string {
			if r.Server == nil {
				return "–"
			}
			return fmt.Sprintf("%.1f", r.Server.RSSPerConn/1024)
		}
		rss := func(r *bench.Result) string {
			if r.Server == nil {
				return "–"
			}
			return fmt.Sprintf("%.0f", float64(r.Server.RSSConnected)/(1<<20))
		}
		if m == nil && pe == nil {
			continue
		}
		clients := 0
		if m != nil {
			clients = m.Clients
		} else {
			clients = pe.Clients
		}
		p("| %s | %d | %s | %s | %s | %s |\n", sc, clients, field(m, kb), field(pe, kb), field(m, rss), field(pe, rss))
	}
	p("\n")

	var warn []string
	for _, r := range s.Results {
		issues := capacityIssues(r)
		for _, w := range r.Warnings {
			if len(issues) > 0 && strings.HasPrefix(w, "the load generator used") {
				continue // said below
			}
			warn = append(warn, fmt.Sprintf("- %s on %s: %s", r.Scenario, r.Target, w))
		}
		if len(issues) > 0 && r.Rate > 0 && r.ProduceSkipped == 0 {
			warn = append(warn, fmt.Sprintf("- %s on %s: per core (%s) is not a capacity: %s", r.Scenario, r.Target, num(capacity(r)), strings.Join(issues, "; ")))
		}
		if r.Unreadable > 0 {
			warn = append(warn, fmt.Sprintf("- %s on %s: %d messages the clients could not read (inflate or JSON)", r.Scenario, r.Target, r.Unreadable))
		}
		if r.ProduceSkipped > 0 {
			warn = append(warn, fmt.Sprintf("- %s on %s: the producer fell behind and skipped %d records: the run did not get its offered load, its per-core figure is left out", r.Scenario, r.Target, r.ProduceSkipped))
		}
		if r.Gaps > 0 {
			warn = append(warn, fmt.Sprintf("- %s on %s: %d prev_seq gaps", r.Scenario, r.Target, r.Gaps))
		}
		if len(r.CloseCodes) > 0 {
			warn = append(warn, fmt.Sprintf("- %s on %s: clients closed by the server, by code: %v", r.Scenario, r.Target, r.CloseCodes))
		}
	}
	if len(warn) > 0 {
		p("Warnings of this run:\n\n%s\n\n", strings.Join(warn, "\n"))
	}
	return b.String()
}

// Per-core validity (capacityIssues).
const (
	// notCapacity marks a per-core figure that is not a capacity.
	notCapacity = "⚠"
	// backlogSpan is the backlog, in time of the offered load, that
	// says a server did not keep up.
	backlogSpan = 100 * time.Millisecond
	// minLagRecords is the Kafka lag always allowed: records in flight.
	minLagRecords = 10
)

// capacityIssues returns why r's deliveries per CPU-second are not the
// server's capacity, nothing when they are: the load generator saturated
// (the server waited for its reads: its CPU per delivery is then that of a
// server with full queues, fewer and larger writes), or a backlog at the
// end of the window (the server did not keep up, or its queues filled
// behind slow readers). The producer falling behind is said apart.
func capacityIssues(r *bench.Result) []string {
	if r == nil || r.Rate == 0 {
		return nil
	}
	var out []string
	if r.Loadgen.CPUShare > bench.SaturatedShare {
		out = append(out, fmt.Sprintf("the load generator used %.0f%% of its core (the server may have waited for its reads)", 100*r.Loadgen.CPUShare))
	}
	span := backlogSpan.Seconds()
	if lag, ok := r.Gauges[bench.GaugeLag]; ok && lag > max(minLagRecords, span*r.ProducedPerSec) {
		out = append(out, fmt.Sprintf("%.0f records not yet applied in Kafka at the end (marketd did not keep up)", lag))
	}
	if q, ok := r.Gauges[bench.GaugeQueued]; ok && q > span*r.WirePerSec {
		out = append(out, fmt.Sprintf("%.1f MB in the client queues at the end (more than %v of the wire bytes: marketd or the clients did not keep up)", q/1e6, backlogSpan))
	}
	return out
}

// perCoreCell is the per-core figure of r, marked when not a capacity.
func perCoreCell(r *bench.Result) string {
	v := num(capacity(r))
	if v != "–" && len(capacityIssues(r)) > 0 {
		v += " " + notCapacity
	}
	return v
}

// takeoverCell says whether the clients of r got server context takeover.
func takeoverCell(r *bench.Result) string {
	switch {
	case !r.Compress || len(r.Extensions) == 0:
		return "–"
	case r.ContextTakeover():
		return "yes"
	}
	return "no"
}

// backlog is marketd's backlog at the end of r's window.
func backlog(r *bench.Result) string {
	lag, ok1 := r.Gauges[bench.GaugeLag]
	q, ok2 := r.Gauges[bench.GaugeQueued]
	if !ok1 && !ok2 {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f", lag, q/1024)
}

// others is the share of the server's CPU other processes took in r.
func others(r *bench.Result) string {
	if r.Server == nil || r.Server.OthersShare < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*r.Server.OthersShare)
}

// satPoints are the saturation scenarios by subscribers, for the ceiling
// table and the deliveries plot (beside the ceiling runs of as many
// connections, ceilingConns).
var satPoints = []struct {
	name  string
	conns int
}{{"sat-100", 100}, {"sat-1k", 1000}, {"sat-10k", 10000}}

// wireRows are the rows of the bytes-on-the-wire table and bar chart.
var wireRows = []struct{ target, scenario, label string }{
	{targetMarketd, "lat-1k-100", "marketd"},
	{targetMarketd, "z-lat-1k-100", "marketd + deflate"},
	{targetTakeover, "z-lat-1k-100", "marketd + deflate + takeover"},
	{targetPeer, "lat-1k-100", "peer"},
	{targetPeer, "z-lat-1k-100", "peer + deflate"},
}

// capacity returns the deliveries per second of server CPU: what one core
// would deliver if the server had all of it.
func capacity(r *bench.Result) float64 {
	if r == nil || r.Server == nil || r.Server.CPU <= 0 || r.ProduceSkipped > 0 {
		return math.NaN() // no capacity from a run that did not get its load
	}
	return float64(r.Deliveries) / r.Server.CPU
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

// plots draws the four figures of docs/benchmarks.md.
func (s *suite) plots(sum *summary) error {
	nan := math.NaN()
	// 1. Deliveries/s vs subscribers.
	c := svg.LineChart{Title: "Deliveries per second vs subscribers (one server core)", XLabel: "subscribers of one symbol's book deltas",
		YLabel: "messages delivered per second", LogX: true, LogY: true}
	for _, t := range []string{"marketd", "peer"} {
		sr := svg.Series{Name: t + " delivered"}
		cp := svg.Series{Name: t + " per core-s"}
		for _, pt := range satPoints {
			if r := sum.get(pt.name, t); r != nil {
				sr.X, sr.Y = append(sr.X, float64(pt.conns)), append(sr.Y, r.DeliveriesPerSec)
				if v := capacity(r); !math.IsNaN(v) {
					cp.X, cp.Y = append(cp.X, float64(pt.conns)), append(cp.Y, v)
				}
			}
		}
		c.Series = append(c.Series, sr, cp)
	}
	for _, batch := range []int{1, ceilingBatch} {
		sr := svg.Series{Name: fmt.Sprintf("ceiling, %d msg/write", batch), Dashed: true}
		for _, conns := range ceilingConns {
			if r := sum.ceiling(conns, batch); r != nil {
				sr.X, sr.Y = append(sr.X, float64(conns)), append(sr.Y, r.MsgsPerSec)
			}
		}
		c.Series = append(c.Series, sr)
	}
	if err := os.WriteFile(filepath.Join(s.img, "deliveries-vs-subscribers.svg"), c.Render(), 0o644); err != nil {
		return err
	}

	// 2. Latency percentiles vs load.
	c = svg.LineChart{Title: "End-to-end latency vs load (1,000 subscribers)", XLabel: "deliveries per second",
		YLabel: "latency, ms (producer send → client receive)", LogX: true, LogY: true}
	for _, t := range []string{"marketd", "peer"} {
		for _, q := range []string{"p50", "p99", "p99.9"} {
			sr := svg.Series{Name: t + " " + q, Dashed: t == "peer"}
			for _, sc := range []string{"lat-1k-30", "lat-1k-100", "lat-1k-300", "sat-1k"} {
				r := sum.get(sc, t)
				if r == nil || r.Latency.Count == 0 {
					continue
				}
				v := map[string]int64{"p50": r.Latency.P50, "p99": r.Latency.P99, "p99.9": r.Latency.P999}[q]
				sr.X, sr.Y = append(sr.X, r.DeliveriesPerSec), append(sr.Y, math.Max(float64(v)/1000, 0.01))
			}
			c.Series = append(c.Series, sr)
		}
	}
	if err := os.WriteFile(filepath.Join(s.img, "latency-vs-load.svg"), c.Render(), 0o644); err != nil {
		return err
	}

	// 3. Bytes per message, with and without compression.
	bc := svg.BarChart{Title: "Bytes per book-delta message (1,000 subscribers)", YLabel: "bytes per message",
		Names: []string{"payload (JSON)", "on the wire (TCP)"}}
	bc.Values = [][]float64{make([]float64, len(wireRows)), make([]float64, len(wireRows))}
	for i, k := range wireRows {
		bc.Categories = append(bc.Categories, k.label)
		bc.Values[0][i], bc.Values[1][i] = nan, nan
		if r := sum.get(k.scenario, k.target); r != nil {
			bc.Values[0][i], bc.Values[1][i] = r.PayloadPerMsg, r.WirePerMsg
		}
	}
	if err := os.WriteFile(filepath.Join(s.img, "bytes-per-message.svg"), bc.Render(), 0o644); err != nil {
		return err
	}

	// 4. Memory per connection.
	bc = svg.BarChart{Title: "Server memory per connection (RSS growth / clients)", YLabel: "KB per connection",
		Categories: []string{"10k idle", "10k tickers", "10k book subscribers"}, Names: []string{"marketd", "peer"}}
	bc.Values = [][]float64{make([]float64, 3), make([]float64, 3)}
	for ti, t := range []string{"marketd", "peer"} {
		for ci, sc := range []string{"idle-10k", "ticker-10k", "sat-10k"} {
			bc.Values[ti][ci] = nan
			if r := sum.get(sc, t); r != nil && r.Server != nil {
				bc.Values[ti][ci] = r.Server.RSSPerConn / 1024
			}
		}
	}
	return os.WriteFile(filepath.Join(s.img, "memory-per-connection.svg"), bc.Render(), 0o644)
}
