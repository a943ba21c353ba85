package stream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/lxzan/gws"
	"github.com/marketd/marketd/book"
	"github.com/prometheus/client_golang/prometheus"
)

// Books is what the server needs from the owner of the books (feed's
// ingester; a test's owners).
type Books interface {
	// Do runs fn on the goroutine that owns symbol's book — the one that
	// calls Publish for the symbol, after publishing every update it
	// applied — and returns when fn has run; or it returns
	// book.ErrUnknownSymbol, or ctx's error. fn must not block.
	Do(ctx context.Context, symbol string, fn func(*book.Book)) error
	// Symbols returns every symbol that has a book.
	Symbols() []string
}

// Defaults of Config; a zero field takes its default.
const (
	DefaultPingInterval      = 20 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultQueueSoftLimit    = 256 << 10
	DefaultQueueHardLimit    = 4 << 20
	DefaultRingSize          = 1024
	DefaultMaxSubscriptions  = 1024
	DefaultMaxMessageSize    = 64 << 10
	DefaultRateLimit         = 50 // messages per second
	DefaultRateBurst         = 100
	DefaultCompressThreshold = 64 // bytes
	DefaultReadBufferSize    = 1024
	DefaultMaxReplays        = 4
)

// Config configures a Server. The zero value of every field but Books
// means its default.
type Config struct {
	// Books owns the books; required.
	Books Books
	// Ready reports whether the service is ready (books loaded, Kafka
	// reachable) for GET /readyz; nil means always ready.
	Ready func() error
	// Metrics serves GET /metrics when set.
	Metrics http.Handler
	// Page serves GET / (the live page) and the paths under it that no
	// other route takes; nil means 404.
	Page http.Handler
	// Registerer receives the server's Prometheus collectors; nil means
	// they are not registered (Stats still counts).
	Registerer prometheus.Registerer
	// Logger logs connection errors at debug level; nil means slog.Default().
	Logger *slog.Logger
	// Replay reads history for the "replay" op (replay.go); nil refuses
	// the op with unknown_op. MaxReplays caps the replays reading history
	// at once on the server (too_many_replays past it). Default
	// DefaultMaxReplays.
	Replay     ReplaySource
	MaxReplays int

	// PingInterval is how long a connection may be quiet before the server
	// pings it. Default DefaultPingInterval.
	PingInterval time.Duration
	// ReadTimeout closes a connection from which nothing arrived for that
	// long. Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout closes a connection whose socket accepts nothing for that
	// long. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// QueueSoftLimit is the bytes queued on a connection past which its book
	// and ticker streams are conflated. Default DefaultQueueSoftLimit.
	QueueSoftLimit int
	// QueueHardLimit is the bytes queued on a connection past which it is
	// closed with 4008. Default DefaultQueueHardLimit.
	QueueHardLimit int
	// RingSize is the number of recent updates kept per book stream for
	// resume and catch-up. Default DefaultRingSize.
	RingSize int
	// MaxSubscriptions caps the symbol-channel subscriptions of a
	// connection. Default DefaultMaxSubscriptions.
	MaxSubscriptions int
	// MaxMessageSize is the largest client message; a larger one closes the
	// connection with 1009. Default DefaultMaxMessageSize.
	MaxMessageSize int
	// RateLimit is the messages per second a client may send, RateBurst
	// how many at once. Defaults DefaultRateLimit and DefaultRateBurst.
	RateLimit float64
	RateBurst int
	// CompressThreshold is the smallest message compressed on a
	// permessage-deflate connection. Default DefaultCompressThreshold.
	CompressThreshold int
	// DisableCompression refuses permessage-deflate.
	DisableCompression bool
	// ContextTakeover lets permessage-deflate connections keep the
	// server's compression context from one message to the next (answered
	// without server_no_context_takeover, unless the client asks for it):
	// a book delta then shrinks to about a third of its bytes instead of
	// by a sixth (figures and their command in takeover.go), still
	// compressed once per context shared by its subscribers, not per
	// client. Off by default: every compressed message then stands alone.
	ContextTakeover bool
	// ReadBufferSize is the read buffer of a connection. Default
	// DefaultReadBufferSize.
	ReadBufferSize int
	// SendBuffer sets the kernel send buffer (SO_SNDBUF) of each
	// connection. Bytes the kernel holds are invisible to the queue limits,
	// and Linux autotunes the buffer up to megabytes per socket; a small
	// value makes backpressure start sooner and bounds kernel memory per
	// client. 0 leaves the kernel's autotuning.
	SendBuffer int

	// Security (security.go); all off by default.

	// Tokens, when not empty, are the tokens that may open /v1/ws, given as
	// "Authorization: Bearer <token>" or "?token=<token>"; anything else
	// gets 401 before the upgrade. Compared in constant time; never logged.
	Tokens []string
	// AllowedOrigins, when not empty, are the origins
	// ("https://example.com") whose browser pages may open /v1/ws; another
	// Origin gets 403 before the upgrade. The server's own origin (Origin's
	// host equal to Host: the live page) and requests without Origin
	// (programs, not browsers) are always allowed.
	AllowedOrigins []string
	// ConnRate is the WebSocket upgrades per second one client IP (IPv6:
	// its /64) may make, ConnBurst how many at once; past them it gets 429
	// with Retry-After. 0 means no limit; ConnBurst defaults to
	// DefaultConnBurst.
	ConnRate  float64
	ConnBurst int
	// HandshakeTimeout bounds the write of the handshake response. Reading
	// the request belongs to the http.Server: set its ReadHeaderTimeout too.
	// Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defDur(&c.PingInterval, DefaultPingInterval)
	defDur(&c.ReadTimeout, DefaultReadTimeout)
	defDur(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.QueueSoftLimit, DefaultQueueSoftLimit)
	def(&c.QueueHardLimit, DefaultQueueHardLimit)
	def(&c.RingSize, DefaultRingSize)
	def(&c.MaxSubscriptions, DefaultMaxSubscriptions)
	def(&c.MaxMessageSize, DefaultMaxMessageSize)
	def(&c.MaxReplays, DefaultMaxReplays)
	def(&c.RateBurst, DefaultRateBurst)
	def(&c.CompressThreshold, DefaultCompressThreshold)
	def(&c.ReadBufferSize, DefaultReadBufferSize)
	defDur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	if c.ConnRate > 0 {
		def(&c.ConnBurst, DefaultConnBurst)
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks a configuration (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Books == nil:
		return errors.New("stream config: Books is required")
	case c.PingInterval < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0:
		return errors.New("stream config: negative duration")
	case c.ReadTimeout <= c.PingInterval:
		return fmt.Errorf("stream config: ReadTimeout %v must exceed PingInterval %v", c.ReadTimeout, c.PingInterval)
	case c.QueueSoftLimit < 0 || c.QueueHardLimit <= c.QueueSoftLimit:
		return fmt.Errorf("stream config: QueueHardLimit %d must exceed QueueSoftLimit %d", c.QueueHardLimit, c.QueueSoftLimit)
	case c.RingSize < 0 || c.MaxSubscriptions < 0 || c.MaxMessageSize < 0 || c.ReadBufferSize < 0 || c.CompressThreshold < 0 || c.SendBuffer < 0 || c.MaxReplays < 0:
		return errors.New("stream config: negative size")
	case c.RateLimit < 0 || c.RateBurst < 0:
		return errors.New("stream config: negative rate limit")
	}
	return c.validateSecurity()
}

// Server serves the WebSocket stream and the HTTP read side.
type Server struct {
	cfg Config
	hub *Hub
	// replays are the replays of the "replay" op (replay.go).
	replays replaySet
	stats   *stats
	log     *slog.Logger
	mux     *http.ServeMux

	events     *events
	gate       *gate
	plainUp    *gws.Upgrader // without permessage-deflate
	deflateUp  *gws.Upgrader // with it
	mu         sync.Mutex
	clients    map[*client]struct{} // guarded by mu
	closing    bool                 // guarded by mu: Shutdown began
	wg         sync.WaitGroup       // connection readers and writers
	shutdownMu sync.Mutex
}

// NewServer returns a server for cfg.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:     cfg,
		stats:   newStats(),
		log:     cfg.Logger,
		clients: map[*client]struct{}{},
	}
	s.hub = newHub(cfg.RingSize, s.stats)
	s.events = &events{s: s}
	s.gate = newGate(cfg, s.stats)
	s.plainUp, s.deflateUp = s.newUpgrader(false), s.newUpgrader(true)
	if cfg.Registerer != nil {
		if err := s.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	s.mux = s.routes()
	return s, nil
}

// Hub returns the hub that the books' owners publish to.
func (s *Server) Hub() *Hub { return s.hub }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// newUpgrader returns a gws upgrader, with permessage-deflate or without.
// gws compresses nothing for us (the server writes its own frames and its
// own extension answer, see negotiate.go); with deflate it decompresses
// the client's messages, each on its own.
func (s *Server) newUpgrader(deflate bool) *gws.Upgrader {
	opt := &gws.ServerOption{
		ReadMaxPayloadSize: s.cfg.MaxMessageSize,
		ReadBufferSize:     s.cfg.ReadBufferSize,
		CheckUtf8Enabled:   true,
		HandshakeTimeout:   s.cfg.HandshakeTimeout,
		Logger:             gwsLogger{s.log},
		NewSession:         func() gws.SessionStorage { return new(session) },
	}
	if deflate {
		opt.PermessageDeflate = gws.PermessageDeflate{
			Enabled:             true,
			PoolSize:            1,
			ServerMaxWindowBits: maxWindowBits,
			ClientMaxWindowBits: maxWindowBits,
		}
	}
	return gws.NewUpgrader(s.events, opt)
}

// routes builds the HTTP routes (protocol.md §4).
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.serveWS)
	mux.HandleFunc("GET /v1/symbols", s.serveSymbols)
	mux.HandleFunc("GET /v1/book/{symbol}", s.serveBook)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	mux.HandleFunc("/", s.servePage)
	return mux
}

// servePage serves the live page at / and whatever of its assets lies
// under /. Other methods get 405 on / and on the paths of the other routes
// (which serve GET only), 404 elsewhere.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if s.cfg.Page == nil {
			http.NotFound(w, r)
			return
		}
		s.cfg.Page.ServeHTTP(w, r)
		return
	}
	get := r.Clone(r.Context())
	get.Method = http.MethodGet
	if _, pattern := s.mux.Handler(get); r.URL.Path == "/" || pattern != "/" {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	http.NotFound(w, r)
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	_, _ = io.WriteString(w, "ready\n")
}

func (s *Server) serveSymbols(w http.ResponseWriter, r *http.Request) {
	syms := slices.Clone(s.cfg.Books.Symbols())
	slices.Sort(syms)
	writeJSON(w, http.StatusOK, append(appendStrings(nil, syms), '\n'))
}

func (s *Server) serveBook(w http.ResponseWriter, r *http.Request) {
	symbol := r.PathValue("symbol")
	var d *int
	if q := r.URL.Query(); q.Has("depth") {
		var v int
		if _, err := fmt.Sscanf(q.Get("depth"), "%d", &v); err != nil || fmt.Sprint(v) != q.Get("depth") {
			httpError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("depth %q is not an integer", q.Get("depth")))
			return
		}
		d = &v
	}
	depth, _, oe := depthOf(d)
	if oe != nil {
		httpError(w, http.StatusBadRequest, oe.code, oe.msg)
		return
	}
	var snap book.Snapshot
	err := s.cfg.Books.Do(r.Context(), symbol, func(b *book.Book) { snap = b.Snapshot(depth) })
	switch {
	case errors.Is(err, book.ErrUnknownSymbol):
		httpError(w, http.StatusNotFound, CodeUnknownSymbol, fmt.Sprintf("unknown symbol %q", symbol))
		return
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, CodeBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, appendBookBody(nil, &snap))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// httpError answers an HTTP request with a JSON error like the WebSocket's.
func httpError(w http.ResponseWriter, status int, code ErrorCode, msg string) {
	b := appendError(nil, nil, code, msg)
	writeJSON(w, status, append(b, '\n'))
}

// unknownSymbols returns the symbols (but "*") that have no book.
func (s *Server) unknownSymbols(syms []string) []string {
	var unknown []string
	var all []string
	listed := false
	for _, sym := range syms {
		if sym == wildcard || s.hub.known(sym) {
			continue
		}
		if !listed {
			all, listed = s.cfg.Books.Symbols(), true
		}
		if !slices.Contains(all, sym) {
			unknown = append(unknown, sym)
		}
	}
	return unknown
}

// serveWS upgrades a request to a WebSocket connection and starts its
// reader (readLoop), which runs until the connection ends.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.gate.admit(w, r) {
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	running := false // the connection's reader took over the wait group count
	defer func() {
		if !running {
			s.wg.Done()
		}
	}()

	var offer deflateOffer
	deflate := false
	if !s.cfg.DisableCompression {
		offer, deflate = negotiateDeflate(r.Header)
	}
	takeover := deflate && s.cfg.ContextTakeover && !offer.serverNoTakeover
	up := s.plainUp
	if deflate {
		r.Header.Set("Sec-WebSocket-Extensions", canonicalOffer)
		up = s.deflateUp
	} else {
		r.Header.Del("Sec-WebSocket-Extensions")
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "connection cannot be upgraded", http.StatusInternalServerError)
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		s.log.Debug("hijack", "err", err)
		return
	}
	if tc, ok := nc.(*net.TCPConn); ok && s.cfg.SendBuffer > 0 {
		_ = tc.SetWriteBuffer(s.cfg.SendBuffer)
	}
	g := &frameGuard{Conn: nc, deflate: deflate}
	if deflate {
		g.answer = offer.answer(takeover)
	}
	if n := brw.Reader.Buffered(); n > 0 {
		g.pre, _ = brw.Reader.Peek(n)
		g.pre = slices.Clone(g.pre)
	}
	ws, err := up.UpgradeFromConn(g, bufio.NewReaderSize(g, s.cfg.ReadBufferSize), r)
	if err != nil {
		s.log.Debug("websocket upgrade", "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	limit := 0
	if deflate {
		limit = offer.limit()
	}
	c := s.newClient(ws, nc, limit, takeover)
	g.c = c
	ws.Session().(*session).c = c

	s.mu.Lock()
	if s.closing {
		// Shutdown began during the handshake: say so and end.
		s.mu.Unlock()
		c.close(CloseShutdown)
	} else {
		s.clients[c] = struct{}{}
		s.mu.Unlock()
	}
	s.stats.connections.Add(1)
	// The reader runs on a goroutine of its own and the handler returns:
	// net/http then drops the connection's request buffers and the deep
	// stack of its serving goroutine, which an idle connection would
	// otherwise keep for its whole life.
	running = true
	go s.readLoop(c)
}

// readLoop is a connection's reader: gws's ReadLoop, until the connection
// ends (after events.OnClose).
func (s *Server) readLoop(c *client) {
	defer s.wg.Done()
	c.ws.ReadLoop()
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
	s.stats.connections.Add(-1)
}

// Shutdown stops accepting connections, lets every connection write what
// is queued followed by a 1001 close, and waits for them to end. When ctx
// ends first, the remaining connections are cut and ctx's error returned.
// It also stops the hub's flush loops. The HTTP server itself (and its
// listener) belongs to the caller.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownMu.Lock()
	defer s.shutdownMu.Unlock()
	s.mu.Lock()
	s.closing = true
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	for _, c := range clients {
		c.close(CloseShutdown)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("stream shutdown: %w", ctx.Err())
		s.mu.Lock()
		for c := range s.clients {
			_ = c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.hub.close()
	return err
}

// events receives gws's callbacks for every connection.
type events struct{ s *Server }

func clientOf(ws *gws.Conn) *client { return ws.Session().(*session).c }

// OnOpen is called when the reader starts; the client is ready by then.
func (e *events) OnOpen(*gws.Conn) {}

// OnClose is called once when the reader ends.
func (e *events) OnClose(ws *gws.Conn, err error) {
	c := clientOf(ws)
	if err != nil && !errors.Is(err, io.EOF) {
		e.s.log.Debug("websocket closed", "remote", c.nc.RemoteAddr().String(), "err", err)
	}
	c.teardown(err)
}

// OnPing answers a client's ping with a pong of the same payload.
func (e *events) OnPing(ws *gws.Conn, payload []byte) {
	clientOf(ws).pushControl(newFrame(opPong, false, payload))
}

// OnPong needs nothing: every byte read counts as liveness.
func (e *events) OnPong(*gws.Conn, []byte) {}

// OnMessage handles a client message.
//
// The op runs on a goroutine of its own while the reader waits for it: an
// op's call chain (JSON decoding, Books.Do, encoding a snapshot) is deep,
// and run on the reader it would grow the reader's stack for the rest of
// the connection's life; an idle connection keeps only the shallow stack
// of a parked read.
func (e *events) OnMessage(ws *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	c := clientOf(ws)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.handle(msg.Bytes(), msg.Opcode == gws.OpcodeText)
	}()
	<-done
}

// session is the gws session of a connection: just its client.
type session struct{ c *client }

func (s *session) Len() int { return 1 }

func (s *session) Load(string) (any, bool) { return s.c, s.c != nil }

func (s *session) Delete(string) {}

func (s *session) Store(_ string, v any) {
	if c, ok := v.(*client); ok {
		s.c = c
	}
}

func (s *session) Range(f func(string, any) bool) {
	if s.c != nil {
		f("client", s.c)
	}
}

// gwsLogger routes gws's logs to slog at debug level.
type gwsLogger struct{ l *slog.Logger }

func (g gwsLogger) Error(v ...any) { g.l.Debug("gws", "msg", fmt.Sprint(v...)) }

var _ net.Conn = (*frameGuard)(nil)
