package stream

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTokenAuth: with tokens configured, /v1/ws opens with any of them as
// a bearer header or a query parameter and refuses anything else with 401
// before the upgrade; the tokens never reach the logs.
func TestTokenAuth(t *testing.T) {
	const tok1, tok2 = "s3cret-token-one", "another-token-2"
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := startServer(t, Config{Tokens: []string{tok1, tok2}, Logger: logger}, symLevels)

	ok := []struct {
		name   string
		query  string
		header []string
	}{
		{"bearer header", "", []string{"Authorization: Bearer " + tok1}},
		{"bearer header, second token", "", []string{"Authorization: bearer " + tok2}},
		{"query parameter", "?token=" + tok2, nil},
		{"query parameter among others", "?a=1&token=" + tok1, nil},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			resp := handshake(t, ts, "GET /v1/ws"+tc.query+" HTTP/1.1", append(tc.header, goodHandshake...)...)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %s, want 101", resp.Status)
			}
		})
	}

	bad := []struct {
		name   string
		query  string
		header []string
	}{
		{"no token", "", nil},
		{"wrong bearer", "", []string{"Authorization: Bearer nope"}},
		{"token prefix", "", []string{"Authorization: Bearer " + tok1[:5]}},
		{"token with a suffix", "", []string{"Authorization: Bearer " + tok1 + "x"}},
		{"basic scheme", "", []string{"Authorization: Basic " + tok1}},
		{"empty query token", "?token=", nil},
		{"wrong query token", "?token=" + tok1 + "1", nil},
		{"wrong header wins over a right query", "?token=" + tok1, []string{"Authorization: Bearer wrong"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.Stats().Rejections["unauthorized"]
			resp := handshake(t, ts, "GET /v1/ws"+tc.query+" HTTP/1.1", append(tc.header, goodHandshake...)...)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %s, want 401", resp.Status)
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
			if got := ts.Stats().Rejections["unauthorized"]; got != before+1 {
				t.Errorf("unauthorized rejections %d, want %d", got, before+1)
			}
		})
	}

	t.Run("real clients", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, resp, err := websocket.Dial(ctx, ts.url, nil); err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("dial without a token: %v, %v", err, resp)
		}
		c := dial(t, ts.url+"?token="+tok1, clientKinds[0])
		c.do(`{"op":"ping","id":1}`)
		c.expect("pong")
		c.checkErrs()
	})

	// The tokens are in no log line, not even at debug level once the
	// connections that carried one in their URL have ended.
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), tok1) || strings.Contains(logs.String(), tok2) {
		t.Errorf("a token was logged:\n%s", logs.String())
	}
	// Which proves something only if the connections were logged.
	if !strings.Contains(logs.String(), "websocket closed") {
		t.Errorf("no connection was logged at all; logs:\n%s", logs.String())
	}
}

// TestOrigins: with an allow-list, a browser Origin outside it gets 403;
// the listed ones, the server's own origin and requests without Origin get
// in. Without a list any Origin gets in.
func TestOrigins(t *testing.T) {
	ts := startServer(t, Config{AllowedOrigins: []string{"https://app.example.com", "http://localhost:3000"}}, symLevels)
	host := ts.http.Listener.Addr().String()
	for _, tc := range []struct {
		origin string
		status int
	}{
		{"", 101},
		{"https://app.example.com", 101},
		{"HTTPS://App.Example.com", 101},
		{"http://localhost:3000", 101},
		{"http://" + host, 101}, // the live page of this server
		{"https://evil.example.com", 403},
		{"https://app.example.com.evil.example", 403},
		{"http://app.example.com", 403},
		{"http://localhost:3001", 403},
		{"null", 403},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			h := goodHandshake
			if tc.origin != "" {
				h = append([]string{"Origin: " + tc.origin}, h...)
			}
			if resp := handshake(t, ts, "GET /v1/ws HTTP/1.1", h...); resp.StatusCode != tc.status {
				t.Errorf("status %s, want %d", resp.Status, tc.status)
			}
		})
	}
	if got := ts.Stats().Rejections["forbidden_origin"]; got != 5 {
		t.Errorf("forbidden_origin rejections %d, want 5", got)
	}
	open := startServer(t, Config{}, symLevels)
	if resp := handshake(t, open, "GET /v1/ws HTTP/1.1", append([]string{"Origin: https://anywhere.example"}, goodHandshake...)...); resp.StatusCode != 101 {
		t.Errorf("without an allow-list: %s", resp.Status)
	}
}

// TestConnRate: past the burst, upgrades from one IP get 429 with a
// Retry-After, until the bucket refills; other routes are not limited.
func TestConnRate(t *testing.T) {
	ts := startServer(t, Config{ConnRate: 5, ConnBurst: 3}, symLevels)
	for i := range 3 {
		if resp := handshake(t, ts, "GET /v1/ws HTTP/1.1", goodHandshake...); resp.StatusCode != 101 {
			t.Fatalf("upgrade %d: %s", i, resp.Status)
		}
	}
	resp := handshake(t, ts, "GET /v1/ws HTTP/1.1", goodHandshake...)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("upgrade past the burst: %s, want 429", resp.Status)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if code, _ := ts.get(t, "/v1/symbols"); code != 200 {
		t.Errorf("symbols while limited: %d", code)
	}
	if got := ts.Stats().Rejections["rate_limited"]; got != 1 {
		t.Errorf("rate_limited rejections %d, want 1", got)
	}
	time.Sleep(250 * time.Millisecond) // 5/s: one token back
	if resp := handshake(t, ts, "GET /v1/ws HTTP/1.1", goodHandshake...); resp.StatusCode != 101 {
		t.Errorf("after a refill: %s", resp.Status)
	}
}

// size returns the number of buckets l keeps.
func (l *connLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// TestConnLimiter drives the limiter on a fake clock: refill, Retry-After,
// one bucket per IPv4 and per IPv6 /64, eviction of idle buckets and the
// bound on their number.
func TestConnLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newConnLimiter(2, 4, func() time.Time { return now })
	a := clientIP("192.0.2.1:1234")
	for i := range 4 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("allow %d within the burst", i)
		}
	}
	ok, retry := l.allow(a)
	if ok || retry != 500*time.Millisecond {
		t.Fatalf("past the burst: %v, retry %v; want refused, 500ms", ok, retry)
	}
	if ok, _ := l.allow(clientIP("192.0.2.2:1")); !ok {
		t.Fatal("another IP is limited")
	}
	if clientIP("[2001:db8::1]:1") != clientIP("[2001:db8::ffff]:2") || clientIP("[2001:db8::1]:1") == clientIP("[2001:db8:0:1::1]:1") {
		t.Error("IPv6 buckets are not per /64")
	}
	if clientIP("[::ffff:192.0.2.1]:5") != a {
		t.Error("an IPv4-mapped address has its own bucket")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.allow(a); !ok {
		t.Fatal("no token after 500ms at 2/s")
	}
	// Idle buckets go: after burst/rate = 2s every bucket is full.
	now = now.Add(2 * time.Second)
	l.allow(clientIP("198.51.100.1:1"))
	if n := l.size(); n != 1 {
		t.Errorf("%d buckets after the others idled, want 1", n)
	}
	// Many addresses at once: bounded at maxKeys, the rest refused.
	l.maxKeys = 1000
	var refused int
	for i := range l.maxKeys + 10 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if ok, _ := l.allow(netip.PrefixFrom(ip, 32)); !ok {
			refused++
		}
	}
	if n := l.size(); n > l.maxKeys || refused != 11 {
		t.Errorf("%d buckets (max %d), %d refused, want 11", n, l.maxKeys, refused)
	}
	now = now.Add(3 * time.Second)
	if ok, _ := l.allow(clientIP("203.0.113.9:1")); !ok || l.size() != 1 {
		t.Errorf("after the spray idled: allowed %v, %d buckets", ok, l.size())
	}
}

// TestTokenCompare covers the constant-time comparison's results.
func TestTokenCompare(t *testing.T) {
	g := newGate(Config{Tokens: []string{"alpha", "beta-longer-token"}}, newStats())
	for tok, want := range map[string]bool{"alpha": true, "beta-longer-token": true, "": false, "alph": false, "alphaa": false, "beta": false, "ALPHA": false} {
		if got := g.validToken(tok); got != want {
			t.Errorf("validToken(%q) = %v", tok, got)
		}
	}
}

// TestSecurityConfig checks the validation of the security fields; a bad
// token's error does not repeat it.
func TestSecurityConfig(t *testing.T) {
	books := newTestBooks(t, symLevels)
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Tokens: []string{"a b"}}, false},
		{Config{Tokens: []string{""}}, false},
		{Config{AllowedOrigins: []string{"example.com"}}, false},
		{Config{AllowedOrigins: []string{"https://example.com/path"}}, false},
		{Config{AllowedOrigins: []string{"https://example.com:8443"}}, true},
		{Config{ConnRate: -1}, false},
		{Config{HandshakeTimeout: -1}, false},
		{Config{ConnRate: 0.5}, true},
	} {
		tc.cfg.Books = books
		err := tc.cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
		if err != nil && len(tc.cfg.Tokens) > 0 && tc.cfg.Tokens[0] != "" && strings.Contains(err.Error(), tc.cfg.Tokens[0]) {
			t.Errorf("the error repeats the token: %v", err)
		}
	}
}
