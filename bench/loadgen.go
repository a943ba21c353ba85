package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/lxzan/gws"
)

// Load generator defaults.
const (
	DefaultDuration        = 10 * time.Second
	DefaultWarmup          = 2 * time.Second
	DefaultDialConcurrency = 64
	DefaultReadyTimeout    = 90 * time.Second
	DefaultSymbols         = 1
	settle                 = 500 * time.Millisecond // after connecting, before reading RSS
	closeGrace             = 3 * time.Second        // for the server's close frames at the end
	probeRetry             = 200 * time.Millisecond
	clientReadBuffer       = 16 << 10
)

// SaturatedShare is the load generator's CPU share (of one core) above
// which it may be the bottleneck: the server may have waited for its reads.
// A run past it carries a warning, and the suite marks its per-core figure.
const SaturatedShare = 0.9

// Config configures one load run. Zero values mean the defaults.
type Config struct {
	// URL is the WebSocket endpoint of the target, e.g. ws://127.0.0.1:8080/v1/ws. Required.
	URL string
	// Brokers are the Kafka brokers the target reads. Required.
	Brokers []string
	// Topic is the target's input topic. Default feed.DefaultTopic.
	Topic string
	// Clients is the number of WebSocket clients. Default 1.
	Clients int
	// Mix is the subscription mix (see ParseMix). Default "book:@1:10".
	Mix string
	// Symbols is the size of the symbol universe: SYM00, SYM01... Default 1.
	Symbols int
	// Hot is the share of records for SYM00 (see ProducerConfig.Hot).
	Hot float64
	// Rate is the number of records produced per second during the warm-up
	// and the window; 0 produces nothing (an idle run: memory only).
	Rate int
	// Duration is the measurement window. Default 10 s.
	Duration time.Duration
	// Warmup is how long the load runs before the window opens. Default 2 s.
	Warmup time.Duration
	// Compress offers permessage-deflate, as a browser does (the server
	// chooses context takeover); the clients inflate what they receive
	// (inflate.go) and Result.Extensions holds the servers' answers.
	Compress bool
	// ServerPID is the target's process id, for its /proc counters; 0 skips them.
	ServerPID int
	// ServerCPU is the CPU the target is pinned to: default 0, where the
	// suite pins it; negative means unknown. With ServerPID, the result
	// says how much of that CPU other processes took during the window
	// (ServerStats.OthersShare): the disturbance of a shared machine.
	ServerCPU int
	// DialConcurrency bounds connections being opened at once. Default 64.
	DialConcurrency int
	// ReadyTimeout bounds connecting and subscribing every client. Default 90 s.
	ReadyTimeout time.Duration
	// Seed seeds the event generator. Default 1.
	Seed uint64
	// Log, if set, receives progress lines.
	Log io.Writer
	// MetricsURL, if set, is the target's Prometheus endpoint: at the end
	// of the window the load generator reads the gauges of TargetGauges
	// from it (where a backlog sits: in Kafka or in the client queues).
	MetricsURL string
	// AllowRemote lets URL and Brokers name hosts other than loopback.
	// Off by default: a load run is bounded in count and time, but it is
	// still a flood, meant for a server on this machine.
	AllowRemote bool
}

// Gauges of marketd's /metrics that a run (TargetGauges) and a soak read.
const (
	// GaugeLag is the records not yet applied (Kafka consumer lag), by partition.
	GaugeLag = "marketd_ingest_lag_records"
	// GaugeQueued is the bytes waiting in the client queues.
	GaugeQueued = "marketd_stream_queued_bytes"
	// gaugeGoroutines is the Go collector's goroutine count.
	gaugeGoroutines = "go_goroutines"
)

// TargetGauges are the marketd gauges a run records with Config.MetricsURL:
// where a backlog sits, in Kafka or in the client queues.
var TargetGauges = []string{GaugeLag, GaugeQueued}

// scrapeGauges reads the Prometheus text at url and returns the sum over
// labels of each named metric that it holds.
func scrapeGauges(ctx context.Context, url string, names []string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("metrics: read %s: %w", url, err)
	}
	out := make(map[string]float64)
	for line := range strings.Lines(string(body)) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			// The value follows the labels, which may hold spaces.
			name = name[:i]
			j := strings.LastIndexByte(line, '}')
			rest = strings.TrimSpace(line[j+1:])
		}
		if !slices.Contains(names, name) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %s value %q: %w", name, f[0], err)
		}
		out[name] += v
	}
	return out, nil
}

// checkLoopback returns an error unless hostport names a loopback host.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s is not a loopback address (set AllowRemote to load another host)", hostport)
}

// SymbolName returns the name of symbol i of the universe.
func SymbolName(i int) string { return fmt.Sprintf("SYM%02d", i) }

// symbolUniverse returns the names of the first n symbols of the universe.
func symbolUniverse(n int) []string {
	u := make([]string, n)
	for i := range u {
		u[i] = SymbolName(i)
	}
	return u
}

// Result is what one load run measured. Rates are per second of the
// measurement window; the JSON form is what bench/results/*.json hold.
type Result struct {
	Scenario string `json:"scenario,omitempty"`
	Target   string `json:"target,omitempty"`
	Command  string `json:"command,omitempty"`
	// Repeats is how many runs of the scenario the suite made; this is the
	// least disturbed of them (0 or 1: a single run).
	Repeats int       `json:"repeats,omitempty"`
	Started time.Time `json:"started"`

	Clients   int     `json:"clients"`
	Connected int     `json:"connected"`
	Ready     int     `json:"ready"`
	Mix       string  `json:"mix"`
	Symbols   int     `json:"symbols"`
	Hot       float64 `json:"hot"`
	Rate      int     `json:"rate"`
	Compress  bool    `json:"compress"`
	Window    float64 `json:"window_s"`

	Produced       int64   `json:"produced"`
	ProducedPerSec float64 `json:"produced_per_s"`
	ProduceErrors  int64   `json:"produce_errors"`
	ProduceSkipped int64   `json:"produce_skipped"`

	Deliveries       int64   `json:"deliveries"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	Frames           int64   `json:"frames"`
	// Inflated is the frames that came compressed (with Compress).
	Inflated      int64   `json:"inflated_frames"`
	Snapshots     int64   `json:"snapshots"`
	PayloadBytes  int64   `json:"payload_bytes"`
	WireBytes     int64   `json:"wire_bytes"`
	PayloadPerSec float64 `json:"payload_bytes_per_s"`
	WirePerSec    float64 `json:"wire_bytes_per_s"`
	PayloadPerMsg float64 `json:"payload_bytes_per_msg"`
	WirePerMsg    float64 `json:"wire_bytes_per_msg"`

	Latency Latency `json:"latency_us"`

	Gaps       int64       `json:"gaps"`
	Notices    int64       `json:"notices"`
	Conflated  int64       `json:"conflated"`
	Errors     int64       `json:"errors"`
	Unreadable int64       `json:"unreadable"`
	CloseCodes map[int]int `json:"close_codes,omitempty"`
	// Extensions counts the clients by the server's answer to their
	// permessage-deflate offer (Sec-WebSocket-Extensions; "" when it
	// declined), with Compress: whether the server kept its context
	// (no server_no_context_takeover) shows here.
	Extensions map[string]int `json:"extensions,omitempty"`

	Server *ServerStats `json:"server,omitempty"`
	// Gauges holds the target's TargetGauges at the end of the window,
	// summed over their labels (with Config.MetricsURL).
	Gauges  map[string]float64 `json:"target_gauges,omitempty"`
	Loadgen LoadStats          `json:"loadgen"`

	Warnings []string `json:"warnings,omitempty"`
}

// Latency holds end-to-end latency percentiles in microseconds: from the
// producer's send time (the event's ts) to the client's receive time.
type Latency struct {
	Count int64 `json:"count"`
	P50   int64 `json:"p50"`
	P99   int64 `json:"p99"`
	P999  int64 `json:"p999"`
	Max   int64 `json:"max"`
}

// latencyOf returns the percentiles of the latencies recorded in h.
func latencyOf(h *HistSnapshot) Latency {
	return Latency{Count: h.Count(), P50: h.Quantile(0.5), P99: h.Quantile(0.99), P999: h.Quantile(0.999), Max: h.Max()}
}

// ServerStats are the target's /proc counters over the run.
type ServerStats struct {
	PID int `json:"pid"`
	// RSSBefore is the resident memory before the clients connected,
	// RSSConnected after they connected and subscribed, RSSEnd at the end
	// of the window.
	RSSBefore    int64   `json:"rss_before"`
	RSSConnected int64   `json:"rss_connected"`
	RSSEnd       int64   `json:"rss_end"`
	RSSPerConn   float64 `json:"rss_per_conn"`
	// CPU is the CPU time used in the window; CPUShare the fraction of one
	// core; CPUPerMillion the CPU seconds per million deliveries.
	CPU           float64 `json:"cpu_s"`
	CPUShare      float64 `json:"cpu_share"`
	CPUPerMillion float64 `json:"cpu_s_per_million"`
	// OthersShare is the share of the server's CPU that other processes
	// used in the window (with Config.ServerCPU; -1 when unknown).
	OthersShare float64 `json:"others_cpu_share"`
	// SyscW is the write syscalls made in the window, per delivery.
	SyscW          int64   `json:"syscw"`
	SyscWPerDeliv  float64 `json:"syscw_per_delivery"`
	SyscWPerSecond float64 `json:"syscw_per_s"`
}

// LoadStats is the load generator's own CPU over the window.
type LoadStats struct {
	CPU      float64 `json:"cpu_s"`
	CPUShare float64 `json:"cpu_share"`
}

// validate checks what Run and Soak need of a load's configuration: a URL
// and brokers, on loopback hosts unless AllowRemote.
func (cfg Config) validate() error {
	if cfg.URL == "" || len(cfg.Brokers) == 0 {
		return errors.New("URL and brokers are required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return fmt.Errorf("parse URL: %w", err)
	}
	if !cfg.AllowRemote {
		for _, hp := range append([]string{u.Host}, cfg.Brokers...) {
			if err := checkLoopback(hp); err != nil {
				return err
			}
		}
	}
	return nil
}

// withDefaults fills the zero fields of a load run's configuration, for Run
// and Soak. Topic and Seed take their defaults in the producer.
func (cfg Config) withDefaults() Config {
	if cfg.Clients <= 0 {
		cfg.Clients = 1
	}
	if cfg.Mix == "" {
		cfg.Mix = "book:@1:10"
	}
	if cfg.Symbols <= 0 {
		cfg.Symbols = DefaultSymbols
	}
	if cfg.Duration <= 0 {
		cfg.Duration = DefaultDuration
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = DefaultWarmup
	}
	if cfg.DialConcurrency <= 0 {
		cfg.DialConcurrency = DefaultDialConcurrency
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	return cfg
}

// Run connects the clients, produces the load and measures one window. It
// returns an error when the run could not be set up (no broker, no server);
// trouble during the run (closed clients, gaps) is in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	cfg = cfg.withDefaults()
	mix, err := ParseMix(cfg.Mix)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	universe := symbolUniverse(cfg.Symbols)
	res := &Result{
		Started: time.Now().UTC(), Clients: cfg.Clients, Mix: mix.String(), Symbols: cfg.Symbols,
		Hot: cfg.Hot, Rate: cfg.Rate, Compress: cfg.Compress,
	}
	for _, s := range mix.Symbols() {
		if !slices.Contains(universe, s) {
			res.Warnings = append(res.Warnings, fmt.Sprintf("symbol %s of the mix is not in the universe SYM00..%s: it gets no events", s, universe[len(universe)-1]))
		}
	}

	prod, err := NewProducer(ctx, ProducerConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, Symbols: universe, Hot: cfg.Hot, Seed: cfg.Seed})
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := prod.Seed(ctx); err != nil {
		return nil, fmt.Errorf("load: seed books: %w", err)
	}
	fmt.Fprintf(cfg.Log, "load: seeded %d books into %d partitions\n", len(universe), prod.Partitions())
	if err := waitSymbols(ctx, cfg, universe); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}

	var server0, server1 ProcSample
	if cfg.ServerPID != 0 {
		if server0, err = ReadProc(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("load: server: %w", err)
		}
	}

	c := newCounters()
	clients, err := connectAll(ctx, cfg, mix, universe, c)
	defer closeAll(clients)
	if err != nil {
		return nil, err
	}
	res.Connected = len(clients)
	res.Ready = countReady(clients)
	fmt.Fprintf(cfg.Log, "load: %d clients connected, %d subscribed\n", res.Connected, res.Ready)
	if res.Ready < cfg.Clients {
		res.Warnings = append(res.Warnings, fmt.Sprintf("only %d of %d clients got every subscription acknowledged", res.Ready, cfg.Clients))
	}
	time.Sleep(settle)
	if cfg.ServerPID != 0 {
		if server1, err = ReadProc(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("load: server: %w", err)
		}
	}

	// Produce through the warm-up and the window.
	stopProducer := prod.start(ctx, cfg.Rate)
	defer stopProducer()

	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	self0, err := ReadProc(0)
	if err != nil {
		return nil, fmt.Errorf("load: self: %w", err)
	}
	var serverW0 ProcSample
	var busy0 time.Duration
	if cfg.ServerPID != 0 {
		if serverW0, err = ReadProc(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("load: server: %w", err)
		}
		if cfg.ServerCPU >= 0 {
			if busy0, err = ReadCPUBusy(cfg.ServerCPU); err != nil {
				return nil, fmt.Errorf("load: %w", err)
			}
		}
	}
	produced0 := prod.Produced.Load()
	c0 := c.snapshot()
	c.measuring.Store(true)
	fmt.Fprintf(cfg.Log, "load: window open for %v at %d records/s\n", cfg.Duration, cfg.Rate)

	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.measuring.Store(false)
	c1 := c.snapshot()
	produced1 := prod.Produced.Load()
	self1, err := ReadProc(0)
	if err != nil {
		return nil, fmt.Errorf("load: self: %w", err)
	}
	var serverW1 ProcSample
	var busy1 time.Duration
	if cfg.ServerPID != 0 {
		if serverW1, err = ReadProc(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("load: server (did it die?): %w", err)
		}
		if cfg.ServerCPU >= 0 {
			if busy1, err = ReadCPUBusy(cfg.ServerCPU); err != nil {
				return nil, fmt.Errorf("load: %w", err)
			}
		}
	}
	if cfg.MetricsURL != "" {
		if res.Gauges, err = scrapeGauges(ctx, cfg.MetricsURL, TargetGauges); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
		}
	}
	if prodErr := stopProducer(); prodErr != nil {
		res.Warnings = append(res.Warnings, "producer: "+prodErr.Error())
	} else if err := prod.LastError(); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("producer: %d failed requests (retried), the last: %v", prod.Errors.Load(), err))
	}

	d := c1.sub(c0)
	win := self1.At.Sub(self0.At).Seconds()
	res.Window = win
	res.Produced = produced1 - produced0
	res.ProducedPerSec = float64(res.Produced) / win
	res.ProduceErrors = prod.Errors.Load()
	res.ProduceSkipped = prod.Skipped.Load()
	res.Deliveries = d.deliveries
	res.DeliveriesPerSec = float64(d.deliveries) / win
	res.Frames = d.frames
	res.Inflated = d.inflated
	res.Snapshots = d.snapshots
	res.PayloadBytes = d.payload
	res.WireBytes = d.wireRead
	res.PayloadPerSec = float64(d.payload) / win
	res.WirePerSec = float64(d.wireRead) / win
	if d.deliveries > 0 {
		res.PayloadPerMsg = float64(d.payload) / float64(d.deliveries)
		res.WirePerMsg = float64(d.wireRead) / float64(d.deliveries)
	}
	res.Latency = latencyOf(c.latency.Snapshot())
	res.Gaps, res.Notices, res.Conflated, res.Errors, res.Unreadable = d.gaps, d.notices, d.conflated, d.errors, d.bad
	c.mu.Lock()
	if len(c.closeCodes) > 0 {
		res.CloseCodes = maps.Clone(c.closeCodes)
	}
	if cfg.Compress {
		res.Extensions = maps.Clone(c.extensions)
		if n := res.Connected - deflateConns(res.Extensions); n > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%d of %d clients offered permessage-deflate and got no compression", n, res.Connected))
		}
	}
	c.mu.Unlock()

	sd := self1.Sub(self0)
	res.Loadgen = LoadStats{CPU: sd.CPU.Seconds(), CPUShare: sd.CPUShare()}
	if sd.CPUShare() > SaturatedShare {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the load generator used %.0f%% of a core: it may be the bottleneck", 100*sd.CPUShare()))
	}
	if cfg.ServerPID != 0 {
		wd := serverW1.Sub(serverW0)
		s := &ServerStats{
			PID: cfg.ServerPID, RSSBefore: server0.RSS, RSSConnected: server1.RSS, RSSEnd: serverW1.RSS,
			CPU: wd.CPU.Seconds(), CPUShare: wd.CPUShare(), SyscW: wd.SyscW,
			SyscWPerSecond: float64(wd.SyscW) / win, OthersShare: -1,
		}
		if cfg.ServerCPU >= 0 {
			s.OthersShare = max(0, (busy1-busy0-wd.CPU).Seconds()/win)
		}
		if res.Connected > 0 {
			s.RSSPerConn = float64(server1.RSS-server0.RSS) / float64(res.Connected)
		}
		if d.deliveries > 0 {
			s.CPUPerMillion = wd.CPU.Seconds() / float64(d.deliveries) * 1e6
			s.SyscWPerDeliv = float64(wd.SyscW) / float64(d.deliveries)
		}
		if !serverW1.HasIO {
			res.Warnings = append(res.Warnings, "server /proc/<pid>/io unreadable: no syscall counts")
		}
		res.Server = s
	}
	if cfg.Rate > 0 && d.deliveries == 0 {
		res.Warnings = append(res.Warnings, "no deliveries in the window")
	}
	return res, nil
}

// waitSymbols waits until the target knows every symbol: a probe client
// subscribes to all their books until the server acknowledges instead of
// answering unknown_symbol (the target may still be reading the seed).
func waitSymbols(ctx context.Context, cfg Config, universe []string) error {
	deadline := time.Now().Add(cfg.ReadyTimeout)
	c := newCounters()
	for attempt := 1; ; attempt++ {
		lc := newLoadClient(c, 1)
		conn, err := dialClient(ctx, cfg, lc, c)
		if err == nil {
			sub := appendSubscribe(nil, attempt, Sub{Channel: "book", Symbols: universe, Depth: 1})
			err = conn.WriteMessage(gws.OpcodeText, sub)
			for err == nil && lc.pending.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			lc.closing.Store(true)
			_ = conn.NetConn().Close()
			<-lc.done
			if err == nil && lc.pending.Load() == 0 && c.errors.Load() == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("the server answered with errors (unknown symbols?)")
			}
			return fmt.Errorf("wait for the target to know %d symbols: %w", len(universe), err)
		}
		c.errors.Store(0)
		select {
		case <-time.After(probeRetry):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// dialClient connects one client and starts its read loop.
func dialClient(ctx context.Context, cfg Config, lc *loadClient, c *counters) (*gws.Conn, error) {
	u, _ := url.Parse(cfg.URL)
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u.Host, err)
	}
	// A 16 KiB read buffer: a server that coalesces sends many frames per
	// write, and the client should read them in as few syscalls.
	opt := &gws.ClientOption{Addr: cfg.URL, HandshakeTimeout: 10 * time.Second, ReadBufferSize: clientReadBuffer}
	var sock net.Conn = countingConn{Conn: nc, read: &c.wireRead, written: &c.wireWrite, lastRead: &lc.lastRead}
	var ic *inflateConn
	if cfg.Compress {
		// gws's compression stays off: the client inflates beneath it
		// (inflate.go), and offers permessage-deflate as a browser does,
		// letting the server choose context takeover. Without it, the
		// clients share the inflation of identical frames.
		ic = newInflateConn(sock, clientReadBuffer, &c.inflated, c.inflations)
		opt.RequestHeader = http.Header{http.CanonicalHeaderKey("Sec-WebSocket-Extensions"): {deflateOffer}}
		sock = ic
	}
	conn, _, err := gws.NewClientFromConn(lc, opt, sock)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake with %s: %w", cfg.URL, err)
	}
	if ic != nil {
		c.mu.Lock()
		c.extensions[ic.extensions]++
		c.mu.Unlock()
	}
	lc.conn = conn
	go func() {
		defer close(lc.done)
		conn.ReadLoop()
	}()
	return conn, nil
}

// connectAll opens the clients, DialConcurrency at a time, sends their
// subscriptions and waits until each is acknowledged or ReadyTimeout.
// The clients it returns must be closed with closeAll, even with an error.
func connectAll(ctx context.Context, cfg Config, mix *Mix, universe []string, c *counters) ([]*loadClient, error) {
	clients := make([]*loadClient, cfg.Clients)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range min(cfg.DialConcurrency, cfg.Clients) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Clients || ctx.Err() != nil {
					return
				}
				subs := mix.ForClient(i, universe)
				lc := newLoadClient(c, len(subs))
				conn, err := dialClient(ctx, cfg, lc, c)
				if err == nil {
					var buf []byte
					for j, sub := range subs {
						buf = appendSubscribe(buf[:0], j+1, sub)
						if err = conn.WriteMessage(gws.OpcodeText, buf); err != nil {
							err = fmt.Errorf("client %d: send subscribe: %w", i, err)
							break
						}
					}
					clients[i] = lc
				}
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("load: client %d: %w", i, err) })
					return
				}
			}
		})
	}
	wg.Wait()
	out := slices.DeleteFunc(clients, func(lc *loadClient) bool { return lc == nil })
	if firstErr != nil {
		return out, firstErr
	}
	deadline := time.Now().Add(cfg.ReadyTimeout)
	for countReady(out) < len(out) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	return out, ctx.Err()
}

func countReady(clients []*loadClient) int {
	n := 0
	for _, lc := range clients {
		if lc.pending.Load() <= 0 {
			n++
		}
	}
	return n
}

// closeAll closes every client with 1000 and waits for the read loops,
// cutting the connections that have not closed after closeGrace.
func closeAll(clients []*loadClient) {
	for _, lc := range clients {
		lc.closing.Store(true)
		_ = lc.conn.WriteClose(1000, nil)
	}
	timeout := time.After(closeGrace)
	for _, lc := range clients {
		select {
		case <-lc.done:
		case <-timeout:
			_ = lc.conn.NetConn().Close()
			<-lc.done
		}
	}
}

// deflateConns returns how many clients got permessage-deflate.
func deflateConns(ext map[string]int) int {
	n := 0
	for answer, conns := range ext {
		if deflate, _ := deflateAnswer(answer); deflate {
			n += conns
		}
	}
	return n
}

// ContextTakeover reports whether every client of a compressed run got
// permessage-deflate with server context takeover.
func (r *Result) ContextTakeover() bool {
	if len(r.Extensions) == 0 {
		return false
	}
	for answer := range r.Extensions {
		if _, takeover := deflateAnswer(answer); !takeover {
			return false
		}
	}
	return true
}

// WriteTable writes the result as an aligned two-column table.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, f string, args ...any) { fmt.Fprintf(tw, "%s\t"+f+"\n", append([]any{k}, args...)...) }
	if r.Scenario != "" || r.Target != "" {
		row("scenario", "%s on %s", r.Scenario, r.Target)
	}
	row("clients", "%d (%d connected, %d subscribed), mix %q, %d symbols, hot %.2f, compress %v", r.Clients, r.Connected, r.Ready, r.Mix, r.Symbols, r.Hot, r.Compress)
	row("produced", "%.0f records/s (target %d; %d request errors, %d skipped)", r.ProducedPerSec, r.Rate, r.ProduceErrors, r.ProduceSkipped)
	row("delivered", "%.0f msgs/s in %.0f frames/s over %.1f s (%d snapshots)", r.DeliveriesPerSec, float64(r.Frames)/max(r.Window, 1e-9), r.Window, r.Snapshots)
	if r.Compress {
		row("compressed", "%d of %d frames (%.0f%%)", r.Inflated, r.Frames, 100*float64(r.Inflated)/max(float64(r.Frames), 1))
	}
	row("payload", "%.1f MB/s, %.1f B/msg", r.PayloadPerSec/1e6, r.PayloadPerMsg)
	row("wire", "%.1f MB/s, %.1f B/msg", r.WirePerSec/1e6, r.WirePerMsg)
	row("latency", "p50 %s  p99 %s  p99.9 %s  max %s  (%d samples)", us(r.Latency.P50), us(r.Latency.P99), us(r.Latency.P999), us(r.Latency.Max), r.Latency.Count)
	row("gaps", "%d prev_seq gaps, %d notices, %d conflated, %d errors, %d unreadable", r.Gaps, r.Notices, r.Conflated, r.Errors, r.Unreadable)
	if len(r.CloseCodes) > 0 {
		row("closed", "%v (by close code)", r.CloseCodes)
	}
	for answer, n := range r.Extensions {
		row("extensions", "%d clients: %q", n, answer)
	}
	if len(r.Gauges) > 0 {
		row("target gauges", "%v (end of window)", r.Gauges)
	}
	if s := r.Server; s != nil {
		row("server rss", "%.1f MB before, %.1f MB connected, %.1f MB end: %.1f KB/conn", mb(s.RSSBefore), mb(s.RSSConnected), mb(s.RSSEnd), s.RSSPerConn/1024)
		row("server cpu", "%.0f%% of a core, %.2f s per million deliveries", 100*s.CPUShare, s.CPUPerMillion)
		if s.OthersShare >= 0 {
			row("others on its cpu", "%.0f%% of the core used by other processes in the window", 100*s.OthersShare)
		}
		row("server writes", "%.0f syscalls/s, %.3f per delivery", s.SyscWPerSecond, s.SyscWPerDeliv)
	}
	row("loadgen cpu", "%.0f%% of a core", 100*r.Loadgen.CPUShare)
	for _, w := range r.Warnings {
		row("WARNING", "%s", w)
	}
	return tw.Flush()
}

func us(v int64) string {
	if v >= 10_000 {
		return fmt.Sprintf("%.1fms", float64(v)/1000)
	}
	return fmt.Sprintf("%dµs", v)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
