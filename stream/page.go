package stream

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// pageFiles holds the live page: index.html, its stylesheet, its ES modules under
// js/, and vendor/ (TradingView Lightweight Charts, Apache-2.0, with its
// LICENSE and NOTICE). Nothing is built: the files are served as they are.
//
//go:embed web
var pageFiles embed.FS

// pageCacheControl is sent with every file of the page: browsers keep the
// files but ask again each time (If-None-Match with the strong ETag), so a
// reload after an upgrade never mixes old and new modules, and an unchanged
// file costs a 304 without a body.
const pageCacheControl = "no-cache"

// pageCSP is the Content-Security-Policy of the page: scripts, styles and
// connections (the WebSocket and /v1/symbols) from this origin only. Inline
// styles are allowed because the chart library sets them.
const pageCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// pageTypes maps file extensions to content types, so that the answer does
// not depend on the host's mime.types. Files without an extension (LICENSE,
// NOTICE) are text.
var pageTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".json": "application/json",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".txt":  "text/plain; charset=utf-8",
	"":      "text/plain; charset=utf-8",
}

// pageAsset is one embedded file, ready to serve.
type pageAsset struct {
	body  []byte
	gz    []byte // gzip of body; nil when it would not be smaller
	ctype string
	etag  string // strong ETag of body; the gzip variant appends "-gz"
}

// pageAssets loads and compresses the embedded files once per process.
var pageAssets = sync.OnceValue(func() map[string]*pageAsset {
	assets := make(map[string]*pageAsset)
	// The walk reads an embed.FS known at compile time: it cannot fail, and a
	// file it could not read would simply be missing (a 404), not a crash.
	_ = fs.WalkDir(pageFiles, "web", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		body, err := pageFiles.ReadFile(name)
		if err != nil {
			return nil
		}
		ctype, ok := pageTypes[path.Ext(name)]
		if !ok {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		a := &pageAsset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		if pageCompressible(ctype) {
			a.gz = pageGzip(body)
		}
		assets[strings.TrimPrefix(name, "web")] = a // "/index.html", "/js/app.js", ...
		return nil
	})
	return assets
})

func pageCompressible(ctype string) bool {
	return strings.HasPrefix(ctype, "text/") || strings.HasPrefix(ctype, "application/json") || ctype == "image/svg+xml"
}

// pageGzip returns body compressed with gzip, or nil when that saves less
// than a tenth.
func pageGzip(body []byte) []byte {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil
	}
	if _, err := zw.Write(body); err != nil {
		return nil
	}
	if err := zw.Close(); err != nil {
		return nil
	}
	if buf.Len() > len(body)*9/10 {
		return nil
	}
	return buf.Bytes()
}

// PageHandler returns the handler of the live page (protocol.md §4, GET /):
// index.html at "/" and the page's other files at their paths below it
// ("/app.css", "/js/app.js", "/vendor/..."), from the files embedded in the
// binary. It answers GET and HEAD, honours If-None-Match with a strong ETag
// (Cache-Control: no-cache, so browsers revalidate), sends gzip to clients
// that accept it, and 404 for any other path. Mount it at "/" of the server's
// mux, where the more specific API routes take precedence.
func PageHandler() http.Handler {
	assets := pageAssets()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := r.URL.Path
		if name == "/" {
			name = "/index.html"
		}
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", pageCacheControl)
		h.Set("X-Content-Type-Options", "nosniff")
		if strings.HasPrefix(a.ctype, "text/html") {
			h.Set("Content-Security-Policy", pageCSP)
			h.Set("Referrer-Policy", "no-referrer")
		}
		body, etag := a.body, a.etag
		if a.gz != nil {
			h.Add("Vary", "Accept-Encoding")
			if pageAcceptsGzip(r.Header.Values("Accept-Encoding")) {
				body, etag = a.gz, a.etag[:len(a.etag)-1]+`-gz"`
				h.Set("Content-Encoding", "gzip")
			}
		}
		h.Set("ETag", etag)
		// ServeContent answers If-None-Match (304), HEAD and Range.
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(body))
	})
}

// pageAcceptsGzip reports whether Accept-Encoding values list gzip (or *) with a
// non-zero quality.
func pageAcceptsGzip(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "*" {
				continue
			}
			if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok && strings.Trim(q, "0.") == "" {
				continue // q=0, q=0.0, q=0.000: refused
			}
			return true
		}
	}
	return false
}
