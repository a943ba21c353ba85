package stream

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestHTTP checks every HTTP route: status, content and the errors.
func TestHTTP(t *testing.T) {
	reg := prometheus.NewRegistry()
	var ready error
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/app.js" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("page " + r.URL.Path))
	})
	ts := startServer(t, Config{
		Registerer: reg,
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Ready:      func() error { return ready },
		Page:       page,
	}, symLevels, symOrders)
	ts.books.apply(levelEv(symLevels, 7, book.Buy, "100.5", "2"))
	ts.books.apply(levelEv(symLevels, 8, book.Buy, "99", "1"))
	ts.books.apply(levelEv(symLevels, 9, book.Sell, "101", "0.25"))
	ts.sync(t, symLevels)

	type bookBody struct {
		Symbol   string     `json:"symbol"`
		Seq      uint64     `json:"seq"`
		TS       int64      `json:"ts"`
		Bids     [][]string `json:"bids"`
		Asks     [][]string `json:"asks"`
		Checksum uint32     `json:"checksum"`
	}
	code, body := ts.get(t, "/v1/book/LVL-USD?depth=1")
	var b bookBody
	if err := json.Unmarshal([]byte(body), &b); code != 200 || err != nil {
		t.Fatalf("book: %d %q %v", code, body, err)
	}
	want := ts.books.snapshot(t, symLevels, 1)
	if b.Symbol != symLevels || b.Seq != 9 || b.TS != 9000 || len(b.Bids) != 1 || b.Bids[0][0] != "100.5" || b.Asks[0][1] != "0.25" || b.Checksum != want.Checksum {
		t.Errorf("book: %q", body)
	}
	code, body = ts.get(t, "/v1/book/LVL-USD")
	if json.Unmarshal([]byte(body), &b) != nil || code != 200 || len(b.Bids) != 2 {
		t.Errorf("book with the default depth: %d %q", code, body)
	}

	for _, tc := range []struct {
		path, contains string
		code           int
	}{
		{"/v1/symbols", `["LVL-USD","ORD-USD"]`, 200},
		{"/v1/book/NOPE", `"code":"unknown_symbol"`, 404},
		{"/v1/book/LVL-USD?depth=7", `"code":"bad_request"`, 400},
		{"/v1/book/LVL-USD?depth=ten", `"code":"bad_request"`, 400},
		{"/v1/book/LVL-USD?depth=10x", `"code":"bad_request"`, 400},
		{"/healthz", "ok", 200},
		{"/readyz", "ready", 200},
		{"/metrics", "marketd_stream_connections", 200},
		{"/", "page /", 200},
		{"/app.js", "page /app.js", 200},
		{"/nope", "404", 404},
		{"/v1/nope", "404", 404},
		{"/v1/ws", "WebSocket upgrade", 426},
	} {
		code, body := ts.get(t, tc.path)
		if code != tc.code || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %d %.100q, want %d with %q", tc.path, code, body, tc.code, tc.contains)
		}
	}
	ready = errors.New("kafka unreachable")
	if code, body := ts.get(t, "/readyz"); code != 503 || !strings.Contains(body, "kafka unreachable") {
		t.Errorf("readyz not ready: %d %q", code, body)
	}
	for _, path := range []string{"/v1/symbols", "/v1/book/LVL-USD", "/healthz", "/", "/v1/ws"} {
		resp, err := http.Post(ts.http.URL+path, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 405", path, resp.StatusCode)
		}
	}
	// Without a page, / is not found.
	bare := startServer(t, Config{}, symLevels)
	if code, _ := bare.get(t, "/"); code != 404 {
		t.Errorf("GET / without a page: %d", code)
	}
	if code, _ := bare.get(t, "/metrics"); code != 404 {
		t.Errorf("GET /metrics without a handler: %d", code)
	}
}

// TestMetrics checks that the collectors registered on Config.Registerer
// move with the traffic.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, Config{Registerer: reg}, symLevels)
	c := dial(t, ts.url, clientKinds[1])
	c.do(`{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD"],"depth":10}`)
	c.expect("snapshot")
	c.expect("ack")
	c.do(`{"op":"bogus","id":2}`)
	c.expect("error")
	ts.books.apply(levelEv(symLevels, 1, book.Buy, "10", "1"))
	ts.sync(t, symLevels)
	c.drainUntilPong(3)
	// The writer counts a write after it returns: the client may have read
	// it before. Gather until the counters are there.
	gather := func() map[string]float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				name := mf.GetName()
				for _, l := range m.GetLabel() {
					name += "," + l.GetName() + "=" + l.GetValue()
				}
				switch {
				case m.Gauge != nil:
					got[name] = m.Gauge.GetValue()
				case m.Counter != nil:
					got[name] = m.Counter.GetValue()
				case m.Histogram != nil:
					got[name] = float64(m.Histogram.GetSampleCount())
				}
			}
		}
		return got
	}
	var got map[string]float64
	waitFor(t, 5*time.Second, "the deliveries to be counted", func() bool {
		got = gather()
		return got["marketd_stream_deliveries_total"] >= 4 && got["marketd_stream_publish_to_write_seconds"] >= 1
	})
	for name, min := range map[string]float64{
		"marketd_stream_connections":                                 1,
		"marketd_stream_subscriptions,channel=book":                  1,
		"marketd_stream_publishes_total":                             1,
		"marketd_stream_encodes_total":                               1,
		"marketd_stream_deliveries_total":                            4,
		"marketd_stream_bytes_wire_total":                            100,
		"marketd_stream_bytes_raw_total":                             100,
		"marketd_stream_write_syscalls_total":                        1,
		"marketd_stream_publish_to_write_seconds":                    1,
		"marketd_stream_bad_messages_total,code=unknown_op":          1,
		"marketd_stream_closes_total,code=4008,reason=slow_consumer": 0,
	} {
		v, ok := got[name]
		if !ok || v < min {
			t.Errorf("%s = %v (present %v), want at least %v", name, v, ok, min)
		}
	}
}
