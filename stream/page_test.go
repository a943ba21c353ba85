package stream

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestPageHandler serves the embedded page over a real listener and checks
// each kind of answer: content types, gzip, ETag revalidation, HEAD, 404, 405.
func TestPageHandler(t *testing.T) {
	srv := httptest.NewServer(PageHandler())
	defer srv.Close()
	// The client must not add Accept-Encoding by itself: the test sets it.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}

	get := func(t *testing.T, method, path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		return resp, body
	}

	types := []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `data-testid="order-book"`},
		{"/index.html", "text/html; charset=utf-8", "<!doctype html>"},
		{"/app.css", "text/css; charset=utf-8", "--bg"},
		{"/js/app.js", "text/javascript; charset=utf-8", "window.marketd"},
		{"/js/crc32.js", "text/javascript; charset=utf-8", "0xedb88320"},
		{"/vendor/lightweight-charts.standalone.production.js", "text/javascript; charset=utf-8", "TradingView Lightweight Charts"},
		{"/vendor/LICENSE", "text/plain; charset=utf-8", "Apache License"},
		{"/vendor/NOTICE", "text/plain; charset=utf-8", "lightweight-charts@5.2.1"},
		{"/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, tc := range types {
		t.Run("identity"+tc.path, func(t *testing.T) {
			resp, body := get(t, "GET", tc.path)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := resp.Header.Get("Content-Encoding"); got != "" {
				t.Errorf("Content-Encoding %q without Accept-Encoding", got)
			}
			if got := resp.Header.Get("Cache-Control"); got != pageCacheControl {
				t.Errorf("Cache-Control %q, want %q", got, pageCacheControl)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			if !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(resp.Header.Get("ETag")) {
				t.Errorf("ETag %q is not a strong hash tag", resp.Header.Get("ETag"))
			}
			if !bytes.Contains(body, []byte(tc.contains)) {
				t.Errorf("body of %s lacks %q", tc.path, tc.contains)
			}
		})
	}

	t.Run("gzip", func(t *testing.T) {
		_, plain := get(t, "GET", "/vendor/lightweight-charts.standalone.production.js")
		resp, body := get(t, "GET", "/vendor/lightweight-charts.standalone.production.js", "Accept-Encoding", "br;q=1.0, gzip;q=0.8")
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding %q, want gzip", resp.Header.Get("Content-Encoding"))
		}
		if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
			t.Errorf("Vary %q lacks Accept-Encoding", resp.Header.Get("Vary"))
		}
		if !strings.HasSuffix(resp.Header.Get("ETag"), `-gz"`) {
			t.Errorf("gzip ETag %q must differ from the identity one", resp.Header.Get("ETag"))
		}
		if len(body)*2 > len(plain) {
			t.Errorf("gzip body %d bytes for %d plain: expected at least 2x smaller", len(body), len(plain))
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		unz, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(unz, plain) {
			t.Error("gunzipped body differs from the identity body")
		}
		resp, _ = get(t, "GET", "/js/app.js", "Accept-Encoding", "gzip;q=0, identity")
		if resp.Header.Get("Content-Encoding") != "" {
			t.Error("gzip sent although the client refused it with q=0")
		}
	})

	t.Run("revalidate", func(t *testing.T) {
		for _, enc := range []string{"identity", "gzip"} {
			resp, _ := get(t, "GET", "/js/book.js", "Accept-Encoding", enc)
			etag := resp.Header.Get("ETag")
			resp, body := get(t, "GET", "/js/book.js", "Accept-Encoding", enc, "If-None-Match", etag)
			if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
				t.Errorf("%s: If-None-Match %s: status %d, %d bytes; want 304 without a body", enc, etag, resp.StatusCode, len(body))
			}
			resp, _ = get(t, "GET", "/js/book.js", "Accept-Encoding", enc, "If-None-Match", `"stale"`)
			if resp.StatusCode != 200 {
				t.Errorf("%s: stale If-None-Match: status %d, want 200", enc, resp.StatusCode)
			}
		}
	})

	t.Run("html-headers", func(t *testing.T) {
		resp, _ := get(t, "GET", "/")
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "connect-src 'self'", "script-src 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
			}
		}
	})

	t.Run("head", func(t *testing.T) {
		resp, body := get(t, "HEAD", "/app.css")
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength <= 0 {
			t.Errorf("HEAD: status %d, %d body bytes, Content-Length %d", resp.StatusCode, len(body), resp.ContentLength)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, p := range []string{"/nope", "/js/", "/js", "/web/index.html", "/../page.go", "/vendor"} {
			if resp, _ := get(t, "GET", p); resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
			}
		}
		resp, _ := get(t, "POST", "/")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST /: status %d, Allow %q; want 405 with Allow: GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
}

// TestPageFilesReferenced checks that every local file index.html and the
// modules name is embedded, and that every embedded file is served, so a
// renamed or forgotten file fails here and not in a browser.
func TestPageFilesReferenced(t *testing.T) {
	assets := pageAssets()
	var names []string
	if err := fs.WalkDir(pageFiles, "web", func(name string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, strings.TrimPrefix(name, "web"))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if assets[n] == nil {
			t.Errorf("embedded file %s is not served", n)
		}
	}
	ref := regexp.MustCompile(`(?:href|src)="([^":]+)"|from '\./([^']+)'`)
	for _, page := range []string{"/index.html", "/js/app.js", "/js/depth.js", "/js/candles.js", "/js/book.js"} {
		a := assets[page]
		if a == nil {
			t.Fatalf("%s is not embedded", page)
		}
		dir := page[:strings.LastIndex(page, "/")+1]
		for _, m := range ref.FindAllStringSubmatch(string(a.body), -1) {
			target := m[1] + m[2]
			if strings.HasPrefix(target, "v1/") || target == "metrics" || strings.HasPrefix(target, "#") {
				continue // served by the API, not by the page
			}
			if assets[dir+target] == nil {
				t.Errorf("%s references %s, which is not embedded", page, dir+target)
			}
		}
	}
}

func TestPageAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   bool
	}{
		{"", false},
		{"gzip", true},
		{"GZIP", true},
		{"deflate, gzip;q=1.0, *;q=0.5", true},
		{"gzip;q=0", false},
		{"gzip; q=0.000", false},
		{"gzip;q=0.001", true},
		{"*", true},
		{"br, identity", false},
		{"x-gzip", false},
	} {
		if got := pageAcceptsGzip([]string{tc.header}); got != tc.want {
			t.Errorf("pageAcceptsGzip(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}
