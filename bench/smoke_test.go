package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
	"github.com/marketd/marketd/stream"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// startBroker starts an embedded broker for the test and returns its
// address as a broker list.
func startBroker(t *testing.T) []string {
	t.Helper()
	b, err := feed.StartBroker(context.Background(), feed.BrokerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return []string{b.Addr()}
}

// startMarketd runs marketd's ingest and WebSocket server in-process, wired
// as cmd/marketd wires them, reading brokers; it returns the WebSocket URL.
func startMarketd(t *testing.T, brokers []string) string {
	t.Helper()
	return startMarketdWith(t, brokers, false)
}

// startMarketdTakeover is startMarketd with server context takeover
// (marketd -ws-context-takeover).
func startMarketdTakeover(t *testing.T, brokers []string) string {
	t.Helper()
	return startMarketdWith(t, brokers, true)
}

func startMarketdWith(t *testing.T, brokers []string, takeover bool) string {
	t.Helper()
	var hub book.Sink
	in, err := feed.New(feed.Config{Brokers: brokers, Sink: book.SinkFunc(func(u *book.Update) { hub.Publish(u) }), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := stream.NewServer(stream.Config{Books: in, Ready: in.Ready, Logger: discard, Registerer: reg,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ContextTakeover: takeover})
	if err != nil {
		t.Fatal(err)
	}
	hub = srv.Hub()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = in.Run(ctx) })
	wg.Go(func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = hs.Shutdown(sctx)
		_ = srv.Shutdown(sctx)
		cancel()
		wg.Wait()
	})
	return "ws://" + ln.Addr().String() + "/v1/ws"
}

func startPeer(t *testing.T, brokers []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPeer(context.Background(), PeerConfig{Brokers: brokers, Compression: true, Logger: discard}, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return "ws://" + ln.Addr().String() + "/v1/ws"
}

// TestSmoke runs the load generator for a few seconds against marketd
// (plain, with permessage-deflate, and with server context takeover) and
// against the peer, all in-process on loopback with an embedded broker,
// and checks that the numbers are sane — not that they are fast: every
// message read, inflated and chained, no gap, compressed runs smaller on
// the wire than their payload.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("smoke run takes ~15 s")
	}
	tests := []struct {
		name     string
		start    func(*testing.T, []string) string
		compress bool
		takeover bool // the clients must get server context takeover
	}{
		{"marketd", startMarketd, false, false},
		{"marketd deflate", startMarketd, true, false},
		{"marketd deflate takeover", startMarketdTakeover, true, true},
		{"peer deflate", startPeer, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			brokers := startBroker(t)
			url := tt.start(t, brokers)
			var log strings.Builder
			res, err := Run(ctx, Config{
				URL: url, Brokers: brokers, Clients: 60, Symbols: 3, Hot: 0.5, Rate: 300,
				Mix:      "book:@1:10; 1x ticker:@1; 1x book:@1:1+trades:@2",
				Duration: 2 * time.Second, Warmup: 500 * time.Millisecond, Compress: tt.compress,
				ServerPID: os.Getpid(), ServerCPU: -1, Log: &log, MetricsURL: metricsURL(url, tt.name),
			})
			if err != nil {
				t.Fatalf("run: %v\n%s", err, log.String())
			}
			var table strings.Builder
			_ = res.WriteTable(&table)
			t.Logf("\n%s", table.String())
			checkSane(t, res)
			if tt.compress && (deflateConns(res.Extensions) != res.Connected || res.ContextTakeover() != tt.takeover) {
				t.Errorf("permessage-deflate answers %v: want every client compressed, context takeover %v", res.Extensions, tt.takeover)
			}
			if res.Gauges != nil {
				if _, ok := res.Gauges["marketd_stream_queued_bytes"]; !ok {
					t.Errorf("target gauges %v lack marketd_stream_queued_bytes", res.Gauges)
				}
			}
		})
	}
}

// metricsURL returns marketd's /metrics beside the WebSocket URL, and
// nothing for the peer, which has none.
func metricsURL(wsURL, name string) string {
	if !strings.HasPrefix(name, "marketd") {
		return ""
	}
	return strings.Replace(strings.TrimSuffix(wsURL, "/v1/ws"), "ws://", "http://", 1) + "/metrics"
}

func checkSane(t *testing.T, r *Result) {
	t.Helper()
	if r.Connected != r.Clients || r.Ready != r.Clients {
		t.Errorf("%d clients, %d connected, %d subscribed", r.Clients, r.Connected, r.Ready)
	}
	if r.ProducedPerSec <= 0 || r.Deliveries <= 0 || r.DeliveriesPerSec <= 0 {
		t.Errorf("produced %.0f/s, delivered %d (%.0f/s)", r.ProducedPerSec, r.Deliveries, r.DeliveriesPerSec)
	}
	l := r.Latency
	if l.Count <= 0 || l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
		t.Errorf("latency percentiles not positive and ordered: %+v", l)
	}
	if r.Gaps != 0 || r.Errors != 0 || r.Unreadable != 0 || len(r.CloseCodes) != 0 {
		t.Errorf("gaps %d, errors %d, unreadable %d, closes %v", r.Gaps, r.Errors, r.Unreadable, r.CloseCodes)
	}
	if r.PayloadBytes <= 0 || r.WireBytes <= 0 || r.PayloadPerMsg < 50 {
		t.Errorf("payload %d B (%.1f B/msg), wire %d B", r.PayloadBytes, r.PayloadPerMsg, r.WireBytes)
	}
	if r.Compress && r.WireBytes >= r.PayloadBytes {
		t.Errorf("compressed run: wire %d B not below payload %d B", r.WireBytes, r.PayloadBytes)
	}
	if s := r.Server; s == nil || s.CPU <= 0 || s.RSSConnected <= 0 || s.CPUPerMillion <= 0 {
		t.Errorf("server stats missing: %+v", s)
	}
}

func TestCeiling(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := ServeCeiling(ln)
	defer s.Close()
	r, err := MeasureCeiling(context.Background(), CeilingConfig{Addr: ln.Addr().String(), Conns: 4, Size: 100, Batch: 3, Duration: 300 * time.Millisecond, ServerPID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if r.MsgsPerSec <= 0 || math.Abs(r.BytesPerSec/r.MsgsPerSec-100) > 1e-6 || r.WritesPerSec <= 0 {
		t.Errorf("ceiling result: %+v", r)
	}
	if _, err := MeasureCeiling(context.Background(), CeilingConfig{Addr: ln.Addr().String(), Size: 1 << 20, Batch: 2}); err == nil {
		t.Error("oversized batch accepted")
	}
}

func TestScrapeGauges(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "# HELP x y\n# TYPE marketd_ingest_lag_records gauge\n"+
			"marketd_ingest_lag_records{partition=\"0\"} 41\n"+
			"marketd_ingest_lag_records{partition=\"1\",note=\"a b\"} 1.5e+01\n"+
			"marketd_stream_queued_bytes 4.69087e+06\n"+
			"marketd_stream_connections 10000\n")
	}))
	defer srv.Close()
	g, err := scrapeGauges(context.Background(), srv.URL, TargetGauges)
	if err != nil {
		t.Fatal(err)
	}
	if g["marketd_ingest_lag_records"] != 56 || g["marketd_stream_queued_bytes"] != 4690870 || len(g) != 2 {
		t.Errorf("gauges = %v", g)
	}
	if _, err := scrapeGauges(context.Background(), srv.URL+"/nope\x7f", TargetGauges); err == nil {
		t.Error("bad URL accepted")
	}
}
