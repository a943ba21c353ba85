package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The permessage-deflate answers a browser gets (Chromium offers
// "permessage-deflate; client_max_window_bits").
const (
	deflateAnswer         = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	deflateTakeoverAnswer = "permessage-deflate; client_no_context_takeover"

	// browserDeflateMessages is how many book updates and trades the page
	// must receive and chain.
	browserDeflateMessages = 200
	// browserDeflateBudget bounds one run, browser start to report.
	browserDeflateBudget = 45 * time.Second
	// browserTakeoverRatio bounds the wire bytes over the uncompressed
	// bytes written with context takeover.
	browserTakeoverRatio = 0.75
)

// browserDeflateScript connects to /v1/ws from the page, subscribes to book
// depth 10 and trades of every symbol, checks each stream's prev_seq chain
// and resolves with a report once both acks and enough messages arrived,
// the connection closed, or %d ms passed.
const browserDeflateScript = `(async () => {
	const report = { extensions: null, symbols: [], messages: 0, updates: 0, trades: 0, snapshots: 0, acks: 0, errors: [] };
	const fail = (msg) => { if (report.errors.length < 5) report.errors.push(msg); };
	for (let i = 0; i < 100 && report.symbols.length === 0; i++) {
		const body = await (await fetch('/v1/symbols')).json();
		report.symbols = Array.isArray(body) ? body : body.symbols;
		if (report.symbols.length === 0) await new Promise((r) => setTimeout(r, 100));
	}
	if (report.symbols.length === 0) { fail('no symbols'); return report; }
	const ws = new WebSocket(new URL('/v1/ws', location.href).href.replace(/^http/, 'ws'));
	const last = {};
	await new Promise((resolve) => {
		const timer = setTimeout(() => { fail('timed out'); ws.close(); resolve(); }, %d);
		const stop = () => { clearTimeout(timer); ws.onclose = null; ws.close(1000); resolve(); };
		ws.onopen = () => {
			report.extensions = ws.extensions;
			ws.send(JSON.stringify({ op: 'subscribe', id: 1, channel: 'book', symbols: report.symbols, depth: 10 }));
			ws.send(JSON.stringify({ op: 'subscribe', id: 2, channel: 'trades', symbols: report.symbols }));
		};
		ws.onerror = () => fail('websocket error');
		ws.onclose = (e) => { fail('closed with ' + e.code); clearTimeout(timer); resolve(); };
		ws.onmessage = (e) => {
			for (const line of e.data.split('\n')) {
				let m;
				try { m = JSON.parse(line); } catch (err) { fail('bad JSON ' + JSON.stringify(line.slice(0, 80))); continue; }
				report.messages++;
				const key = m.channel + ':' + m.symbol;
				switch (m.type) {
				case 'ack': report.acks++; break;
				case 'snapshot': report.snapshots++; last[key] = m.seq; break;
				case 'update':
				case 'trade':
					if (m.type === 'update' && !(key in last)) fail(key + ': update before snapshot');
					else if (typeof m.prev_seq !== 'number') fail(key + ': no prev_seq');
					else if (key in last && m.prev_seq !== last[key]) fail(key + ': prev_seq ' + m.prev_seq + ' after seq ' + last[key]);
					last[key] = m.seq;
					if (m.type === 'update') report.updates++; else report.trades++;
					break;
				default: fail('unexpected ' + line.slice(0, 100));
				}
			}
			// Both acks too: the trades ack follows trades of the symbols
			// subscribed before it, and may come after many updates.
			if (report.updates + report.trades >= %d && report.acks >= 2) stop();
		};
	});
	return report;
})()`

// browserDeflateReport is what browserDeflateScript resolves with.
type browserDeflateReport struct {
	Extensions *string  `json:"extensions"`
	Symbols    []string `json:"symbols"`
	Messages   int      `json:"messages"`
	Updates    int      `json:"updates"`
	Trades     int      `json:"trades"`
	Snapshots  int      `json:"snapshots"`
	Acks       int      `json:"acks"`
	Errors     []string `json:"errors"`
}

// TestBrowserDeflate runs marketd with its default flags and with
// -ws-context-takeover, and connects headless Chromium's own WebSocket to
// it: the page must see the exact permessage-deflate answer of each mode in
// ws.extensions, and decode and chain browserDeflateMessages book updates
// and trades of the simulator's symbols; the server's metrics show that
// what it wrote was compressed.
func TestBrowserDeflate(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (apt-get install chromium, or run ./test.sh): %v", chromiumPath, err)
		}
		t.Fatalf("CI needs %s for the browser deflate test: %v", chromiumPath, err)
	}
	for _, mode := range []struct {
		name     string
		flags    []string
		answer   string
		takeover bool
	}{
		{"default", nil, deflateAnswer, false},
		{"context-takeover", []string{"-ws-context-takeover"}, deflateTakeoverAnswer, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			start := time.Now()
			deadline := start.Add(browserDeflateBudget)
			svc := startTestService(t, append([]string{"-sim-rate", "1000"}, mode.flags...)...)
			page := startBrowser(t, deadline)
			page.do("open a page of the service", chromedp.Navigate(svc.URL("/v1/symbols")))
			timeout := time.Until(deadline) - 5*time.Second
			got := page.eval(fmt.Sprintf(browserDeflateScript, timeout.Milliseconds(), browserDeflateMessages))
			var r browserDeflateReport
			if err := json.Unmarshal([]byte(got), &r); err != nil {
				t.Fatalf("decode the page's report %s: %v", got, err)
			}
			t.Logf("page report: %s (%v)", got, time.Since(start).Round(time.Millisecond))

			if r.Extensions == nil {
				t.Fatalf("the WebSocket never opened: %v", r.Errors)
			}
			if *r.Extensions != mode.answer {
				t.Errorf("ws.extensions %q, want %q", *r.Extensions, mode.answer)
			}
			if len(r.Errors) > 0 {
				t.Errorf("page errors: %s", strings.Join(r.Errors, "; "))
			}
			if n := r.Updates + r.Trades; n < browserDeflateMessages {
				t.Errorf("%d updates and trades, want %d", n, browserDeflateMessages)
			}
			if r.Acks != 2 || r.Snapshots != len(r.Symbols) {
				t.Errorf("%d acks and %d snapshots for %d symbols, want 2 and one each", r.Acks, r.Snapshots, len(r.Symbols))
			}
			var errs []string
			for _, e := range page.consoleErrors() {
				if !strings.Contains(e, "/favicon.ico") { // the JSON page has none
					errs = append(errs, e)
				}
			}
			if len(errs) > 0 {
				t.Errorf("browser console errors:\n%s", strings.Join(errs, "\n"))
			}

			// The page was the only WebSocket client; once its connection
			// is gone, the byte counters hold still.
			metrics := svc.URL("/metrics")
			checkFor(t, 10*time.Second, func() error {
				n, err := metricValue(t.Context(), metrics, "marketd_stream_connections")
				if err == nil && n != 0 {
					err = fmt.Errorf("%v WebSocket connections open, want 0 after the page closed its own", n)
				}
				return err
			})
			raw, err := metricValue(t.Context(), metrics, "marketd_stream_bytes_raw_total")
			if err != nil {
				t.Fatal(err)
			}
			wire, err := metricValue(t.Context(), metrics, "marketd_stream_bytes_wire_total")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("written: %.0f bytes on the wire for %.0f uncompressed (%.0f%%)", wire, raw, 100*wire/raw)
			if raw == 0 || wire >= raw {
				t.Errorf("%.0f bytes on the wire for %.0f uncompressed: nothing compressed", wire, raw)
			}
			// Without takeover a book delta does not shrink, with it it
			// goes at 30 % of its JSON (docs/benchmarks.md, z-lat-1k-100,
			// from go run ./bench/cmd/suite): the page did decode messages
			// that refer back into earlier ones.
			if mode.takeover && wire > browserTakeoverRatio*raw {
				t.Errorf("%.0f bytes on the wire for %.0f uncompressed: over %.0f%% with context takeover", wire, raw, 100*browserTakeoverRatio)
			}
		})
	}
}
