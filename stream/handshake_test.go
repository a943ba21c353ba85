package stream

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// goodHandshake is a valid upgrade request's header lines, without the
// request line and Host.
var goodHandshake = []string{
	"Upgrade: websocket",
	"Connection: Upgrade",
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
	"Sec-WebSocket-Version: 13",
}

// handshake sends a hand-written request over raw TCP and returns the
// response: requestLine (e.g. "GET /v1/ws HTTP/1.1"), then the header
// lines (Host is added).
func handshake(t testing.TB, ts *testServer, requestLine string, header ...string) *http.Response {
	t.Helper()
	addr := ts.http.Listener.Addr().String()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	var req strings.Builder
	fmt.Fprintf(&req, "%s\r\nHost: %s\r\n", requestLine, addr)
	for _, h := range header {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(nc, req.String()); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	return resp
}

// replace returns goodHandshake with the line of header name replaced by
// line ("" drops it).
func replace(name, line string) []string {
	var out []string
	for _, h := range goodHandshake {
		if strings.HasPrefix(h, name+":") {
			if line != "" {
				out = append(out, line)
			}
			continue
		}
		out = append(out, h)
	}
	return out
}

// TestBadHandshakes sends invalid upgrade requests, each answered with its
// HTTP status before any upgrade and counted, while a healthy client on
// the same server keeps being served.
func TestBadHandshakes(t *testing.T) {
	ts := startServer(t, Config{AllowedOrigins: []string{"https://good.example"}}, symLevels)
	healthy := dial(t, ts.url, clientKinds[0])
	cases := []struct {
		name    string
		line    string
		header  []string
		status  int
		want    map[string]string // response headers
		counted bool              // a bad_handshake rejection (not a route's 405)
	}{
		{"valid", "GET /v1/ws HTTP/1.1", goodHandshake, 101, nil, false},
		{"missing Sec-WebSocket-Key", "GET /v1/ws HTTP/1.1", replace("Sec-WebSocket-Key", ""), 400, nil, true},
		{"short Sec-WebSocket-Key", "GET /v1/ws HTTP/1.1", replace("Sec-WebSocket-Key", "Sec-WebSocket-Key: c2hvcnQ="), 400, nil, true},
		{"Sec-WebSocket-Key not base64", "GET /v1/ws HTTP/1.1", replace("Sec-WebSocket-Key", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!"), 400, nil, true},
		{"two Sec-WebSocket-Keys", "GET /v1/ws HTTP/1.1", append(replace("X", ""), "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="), 400, nil, true},
		{"Sec-WebSocket-Version 8", "GET /v1/ws HTTP/1.1", replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"), 426,
			map[string]string{"Sec-WebSocket-Version": "13"}, true},
		{"missing Sec-WebSocket-Version", "GET /v1/ws HTTP/1.1", replace("Sec-WebSocket-Version", ""), 426,
			map[string]string{"Sec-WebSocket-Version": "13"}, true},
		{"missing Upgrade", "GET /v1/ws HTTP/1.1", replace("Upgrade", ""), 400, nil, true},
		{"Upgrade: h2c", "GET /v1/ws HTTP/1.1", replace("Upgrade", "Upgrade: h2c"), 400, nil, true},
		{"missing Connection", "GET /v1/ws HTTP/1.1", replace("Connection", ""), 400, nil, true},
		{"HTTP/1.0", "GET /v1/ws HTTP/1.0", goodHandshake, 400, nil, true},
		{"plain GET", "GET /v1/ws HTTP/1.1", nil, 426, map[string]string{"Upgrade": "websocket"}, true},
		{"POST", "POST /v1/ws HTTP/1.1", append(replace("X", ""), "Content-Length: 0"), 405, map[string]string{"Allow": "GET, HEAD"}, false},
		{"PUT", "PUT /v1/ws HTTP/1.1", append(replace("X", ""), "Content-Length: 0"), 405, nil, false},
		{"bad Origin", "GET /v1/ws HTTP/1.1", append(replace("X", ""), "Origin: https://evil.example"), 403, nil, false},
		{"allowed Origin", "GET /v1/ws HTTP/1.1", append(replace("X", ""), "Origin: https://GOOD.example/"), 101, nil, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.Stats().Rejections["bad_handshake"]
			resp := handshake(t, ts, tc.line, tc.header...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %s, want %d", resp.Status, tc.status)
			}
			for k, v := range tc.want {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tc.status != 101 && resp.Header.Get("Sec-WebSocket-Accept") != "" {
				t.Error("a refused handshake has Sec-WebSocket-Accept")
			}
			after := ts.Stats().Rejections["bad_handshake"]
			if counted := after > before; counted != tc.counted {
				t.Errorf("counted as bad_handshake: %v, want %v", counted, tc.counted)
			}
			if extra := healthy.drainUntilPong(i); len(extra) > 0 {
				t.Errorf("healthy client got %v", extra)
			}
		})
	}
	if got := ts.Stats().Rejections["forbidden_origin"]; got != 1 {
		t.Errorf("forbidden_origin rejections %d, want 1", got)
	}
	healthy.checkErrs()
}
