package stream

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of the security fields of Config.
const (
	// DefaultConnBurst is the upgrades one client IP may make at once when
	// Config.ConnRate is set and Config.ConnBurst is not.
	DefaultConnBurst = 10
	// DefaultHandshakeTimeout bounds the write of the handshake response.
	DefaultHandshakeTimeout = 10 * time.Second
	// maxRateKeys bounds the per-IP buckets kept by the connection-rate
	// limiter (about 100 bytes each). Past it, after evicting the idle
	// buckets, a new address is refused: memory stays bounded even when
	// an attacker sprays source addresses.
	maxRateKeys = 100_000
	// forcedSweep is the least time between two sweeps of the limiter's
	// buckets forced by a full map.
	forcedSweep = 100 * time.Millisecond
)

// rejectReason says why an upgrade request was answered with an HTTP error
// instead of a WebSocket: one table maps it to the status and the label of
// the marketd_stream_upgrade_rejections_total metric.
type rejectReason uint8

const (
	// rejectHandshake: not a valid WebSocket handshake (400, 426).
	rejectHandshake rejectReason = iota + 1
	// rejectRate: the client IP passed the connection rate (429).
	rejectRate
	// rejectOrigin: a browser Origin outside the allow-list (403).
	rejectOrigin
	// rejectToken: a missing or wrong token (401).
	rejectToken
	numRejectReasons = iota + 1
)

var rejectLabels = [...]string{
	rejectHandshake: "bad_handshake",
	rejectRate:      "rate_limited",
	rejectOrigin:    "forbidden_origin",
	rejectToken:     "unauthorized",
}

func (r rejectReason) String() string {
	if r == 0 || r >= numRejectReasons {
		return "unknown"
	}
	return rejectLabels[r]
}

// gate decides, before the upgrade, whether a request may open a
// WebSocket: the handshake's shape (answering what gws answers wrongly),
// the per-IP connection rate, the Origin allow-list and the tokens, in
// that order (a client over the rate limit learns nothing of the rest).
// It is safe for concurrent use; only the limiter has state.
type gate struct {
	tokens  [][sha256.Size]byte // digests of the accepted tokens
	origins map[string]bool     // normalized allowed origins; nil = any
	limiter *connLimiter        // nil = no rate limit
	stats   *stats
}

func newGate(cfg Config, st *stats) *gate {
	g := &gate{stats: st}
	for _, t := range cfg.Tokens {
		g.tokens = append(g.tokens, sha256.Sum256([]byte(t)))
	}
	if len(cfg.AllowedOrigins) > 0 {
		g.origins = map[string]bool{}
		for _, o := range cfg.AllowedOrigins {
			g.origins[normalizeOrigin(o)] = true
		}
	}
	if cfg.ConnRate > 0 {
		g.limiter = newConnLimiter(cfg.ConnRate, cfg.ConnBurst, time.Now)
	}
	return g
}

// admit answers r with an HTTP error and returns false unless r may be
// upgraded. A token in the query is removed from r, so that nothing
// after the gate (logs, gws) sees it.
func (g *gate) admit(w http.ResponseWriter, r *http.Request) bool {
	reject := func(reason rejectReason, status int, msg string) bool {
		g.stats.rejects[reason].Add(1)
		http.Error(w, msg, status)
		return false
	}
	if status, msg := checkHandshake(r); status != 0 {
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		return reject(rejectHandshake, status, msg)
	}
	if g.limiter != nil {
		if ok, retry := g.limiter.allow(clientIP(r.RemoteAddr)); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
			return reject(rejectRate, http.StatusTooManyRequests, "too many connections from your address")
		}
	}
	if o := r.Header.Get("Origin"); o != "" && g.origins != nil && !g.origins[normalizeOrigin(o)] && !sameOrigin(o, r.Host) {
		return reject(rejectOrigin, http.StatusForbidden, "origin not allowed")
	}
	token, inQuery := requestToken(r)
	if inQuery {
		q := r.URL.Query()
		q.Del("token")
		r.URL.RawQuery = q.Encode()
		r.RequestURI = r.URL.RequestURI()
	}
	if len(g.tokens) > 0 && !g.validToken(token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="marketd"`)
		return reject(rejectToken, http.StatusUnauthorized, "a valid token is required")
	}
	return true
}

// validToken compares t with every configured token in constant time. The
// digests have one length whatever the tokens' lengths, and every token is
// compared, so the time taken tells nothing of which token nearly matched.
func (g *gate) validToken(t string) bool {
	if t == "" {
		return false
	}
	sum := sha256.Sum256([]byte(t))
	ok := 0
	for i := range g.tokens {
		ok |= subtle.ConstantTimeCompare(sum[:], g.tokens[i][:])
	}
	return ok == 1
}

// requestToken returns the bearer token of r's Authorization header, else
// its token query parameter (which browsers, unable to set headers on a
// WebSocket, must use); inQuery reports whether the query had one.
func requestToken(r *http.Request) (token string, inQuery bool) {
	inQuery = r.URL.Query().Has("token")
	if scheme, t, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(t), inQuery
	}
	return r.URL.Query().Get("token"), inQuery
}

// checkHandshake checks what gws does not (or answers with the wrong
// status): RFC 6455 §4.2.1 and §4.4. It returns 0 for a valid handshake,
// 426 for a plain request or a version other than 13, 400 for a malformed
// handshake. The method is checked by the route (405).
func checkHandshake(r *http.Request) (status int, msg string) {
	upgrade := headerHasToken(r.Header, "Upgrade", "websocket")
	key := r.Header.Get("Sec-WebSocket-Key")
	switch {
	case !upgrade && key == "" && r.Header.Get("Sec-WebSocket-Version") == "":
		return http.StatusUpgradeRequired, "a WebSocket upgrade is required"
	case !r.ProtoAtLeast(1, 1):
		return http.StatusBadRequest, "a WebSocket handshake needs HTTP/1.1"
	case !upgrade:
		return http.StatusBadRequest, "missing Upgrade: websocket"
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return http.StatusBadRequest, "missing Connection: Upgrade"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version: want 13"
	}
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 || len(r.Header.Values("Sec-WebSocket-Key")) != 1 {
		return http.StatusBadRequest, "missing or invalid Sec-WebSocket-Key"
	}
	return 0, ""
}

// headerHasToken reports whether a comma-separated header holds token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// normalizeOrigin lowers an origin's case and drops a trailing slash.
func normalizeOrigin(o string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(o)), "/")
}

// sameOrigin reports whether origin names the host the request was sent
// to: the live page served by this server. A browser sets both Host and
// Origin itself, so a page elsewhere cannot pass for it.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// clientIP returns the address a connection-rate bucket is kept for: the
// peer's IP, an IPv6 address as its /64 (one host usually owns a whole
// /64). An unparsable address shares one bucket.
func clientIP(remote string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Prefix{}
	}
	a := ap.Addr().Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// connLimiter is a token bucket per client address: rate upgrades per
// second, burst at once. A bucket that has refilled to the burst is the
// same as none, so such buckets are evicted: memory grows only with the
// addresses that connected within the last burst/rate seconds, and never
// past maxRateKeys.
type connLimiter struct {
	rate, burst float64
	idle        time.Duration // a bucket untouched this long is full
	maxKeys     int           // maxRateKeys; tests lower it
	now         func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Prefix]*bucket // guarded by mu
	lastSweep time.Time                // guarded by mu
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newConnLimiter returns a limiter of rate and burst, both above 0
// (Config.withDefaults sets the burst).
func newConnLimiter(rate float64, burst int, now func() time.Time) *connLimiter {
	return &connLimiter{
		rate:      rate,
		burst:     float64(burst),
		idle:      time.Duration(float64(burst) / rate * float64(time.Second)),
		maxKeys:   maxRateKeys,
		now:       now,
		buckets:   map[netip.Prefix]*bucket{},
		lastSweep: now(),
	}
}

// allow takes a token from key's bucket; when there is none it returns
// false and how long until there is one.
func (l *connLimiter) allow(key netip.Prefix) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= max(l.idle, time.Second) {
		l.sweep(now)
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			// At most one sweep per forcedSweep: a spray of new
			// addresses must not make every request walk the map.
			if now.Sub(l.lastSweep) >= forcedSweep {
				l.sweep(now)
			}
			if len(l.buckets) >= l.maxKeys {
				return false, time.Second
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// sweep drops the buckets that have refilled to the burst. l.mu is held.
func (l *connLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// validateSecurity checks the security fields of c.
func (c Config) validateSecurity() error {
	for i, t := range c.Tokens {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			// The token itself is never put in an error: errors get logged.
			return fmt.Errorf("stream config: token %d is empty or holds white space", i+1)
		}
	}
	for _, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("stream config: allowed origin %q is not scheme://host[:port]", o)
		}
	}
	switch {
	case c.ConnRate < 0 || c.ConnBurst < 0:
		return fmt.Errorf("stream config: negative connection rate")
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("stream config: negative HandshakeTimeout")
	}
	return nil
}
