package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lxzan/gws"
	"github.com/marketd/marketd/book"
)

// testBooks owns real books, one goroutine per symbol, like feed's
// ingester: the owner applies events, publishes each applied update to the
// sink, and runs Do functions between events.
type testBooks struct {
	sink   book.Sink
	mu     sync.Mutex
	owners map[string]*owner
	wg     sync.WaitGroup
}

type owner struct {
	b   *book.Book
	req chan func(*book.Book) // events and Do functions, in order
}

func newTestBooks(t testing.TB, symbols ...string) *testBooks {
	tb := &testBooks{owners: map[string]*owner{}}
	for _, s := range symbols {
		tb.add(s)
	}
	t.Cleanup(tb.close)
	return tb
}

// add creates the book of a new symbol with its owner.
func (tb *testBooks) add(symbol string) {
	o := &owner{b: book.New(symbol), req: make(chan func(*book.Book), 256)}
	tb.mu.Lock()
	tb.owners[symbol] = o
	tb.mu.Unlock()
	tb.wg.Go(func() {
		for fn := range o.req {
			fn(o.b)
		}
	})
}

func (tb *testBooks) close() {
	tb.mu.Lock()
	for _, o := range tb.owners {
		close(o.req)
	}
	tb.owners = map[string]*owner{}
	tb.mu.Unlock()
	tb.wg.Wait()
}

func (tb *testBooks) owner(symbol string) *owner {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.owners[symbol]
}

// apply queues ev on its symbol's owner; errs receives Apply's errors.
func (tb *testBooks) apply(ev book.Event) {
	o := tb.owner(ev.Symbol)
	o.req <- func(b *book.Book) {
		if err := b.Apply(&ev); err != nil {
			panic(fmt.Sprintf("test event %+v: %v", ev, err))
		}
		tb.sink.Publish(b.LastUpdate())
	}
}

func (tb *testBooks) Do(ctx context.Context, symbol string, fn func(*book.Book)) error {
	o := tb.owner(symbol)
	if o == nil {
		return fmt.Errorf("test books: %q: %w", symbol, book.ErrUnknownSymbol)
	}
	done := make(chan struct{})
	select {
	case o.req <- func(b *book.Book) { fn(b); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		<-done // fn may be running: it uses the caller's variables
		return ctx.Err()
	}
}

func (tb *testBooks) Symbols() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var s []string
	for k := range tb.owners {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// snapshot returns the server-side snapshot of a book view.
func (tb *testBooks) snapshot(t testing.TB, symbol string, depth int) book.Snapshot {
	t.Helper()
	var s book.Snapshot
	if err := tb.Do(context.Background(), symbol, func(b *book.Book) { s = b.Snapshot(depth) }); err != nil {
		t.Fatal(err)
	}
	return s
}

// testServer is a Server on a real listener on 127.0.0.1.
type testServer struct {
	*Server
	books *testBooks
	http  *httptest.Server
	url   string // ws://host:port/v1/ws
}

func startServer(t testing.TB, cfg Config, symbols ...string) *testServer {
	t.Helper()
	tb := newTestBooks(t, symbols...)
	cfg.Books = tb
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tb.sink = s.Hub()
	hs := httptest.NewServer(s.Handler())
	ts := &testServer{Server: s, books: tb, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws"}
	t.Cleanup(func() {
		hs.Listener.Close() // stop accepting
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return ts
}

// sync waits until everything published for symbol so far is queued on
// every client: the owner publishes an event before it runs a later Do.
func (ts *testServer) sync(t testing.TB, symbols ...string) {
	t.Helper()
	for _, s := range symbols {
		if err := ts.books.Do(context.Background(), s, func(*book.Book) {}); err != nil {
			t.Fatal(err)
		}
	}
}

// wireMsg is any server message, decoded independently of the server's
// encoder (encoding/json).
type wireMsg struct {
	Type      string            `json:"type"`
	ID        json.RawMessage   `json:"id"`
	Op        string            `json:"op"`
	Code      string            `json:"code"`
	Message   string            `json:"message"`
	Channel   string            `json:"channel"`
	Symbol    string            `json:"symbol"`
	Symbols   []string          `json:"symbols"`
	Resumed   map[string]string `json:"resumed"`
	Seq       uint64            `json:"seq"`
	PrevSeq   *uint64           `json:"prev_seq"`
	TS        int64             `json:"ts"`
	Bids      [][]string        `json:"bids"`
	Asks      [][]string        `json:"asks"`
	Checksum  *uint32           `json:"checksum"`
	Conflated bool              `json:"conflated"`
	TradeID   string            `json:"trade_id"`
	Price     string            `json:"price"`
	Size      string            `json:"size"`
	Side      string            `json:"side"`
	Bid       string            `json:"bid"`
	Ask       string            `json:"ask"`
	Last      string            `json:"last"`
	Volume24h string            `json:"volume_24h"`
	Replay    bool              `json:"replay"`
	raw       string
}

// wsClient is a test client over one of two independent libraries.
type wsClient struct {
	t      testing.TB
	name   string
	msgs   chan wireMsg
	send   func(string) error
	close  func()
	closed chan struct{}
	// closeCode is the close code received from the server, set before closed.
	closeCode int
	mu        sync.Mutex
	errs      []error
}

type clientKind struct {
	lib     string // "coder" or "gws"
	deflate bool
}

func (k clientKind) String() string {
	if k.deflate {
		return k.lib + "+deflate"
	}
	return k.lib
}

var clientKinds = []clientKind{{"coder", false}, {"coder", true}, {"gws", false}, {"gws", true}}

func dial(t testing.TB, url string, k clientKind) *wsClient {
	t.Helper()
	c := &wsClient{t: t, name: k.String(), msgs: make(chan wireMsg, 1<<16), closed: make(chan struct{})}
	switch k.lib {
	case "coder":
		c.dialCoder(url, k.deflate)
	case "gws":
		c.dialGWS(url, k.deflate)
	}
	t.Cleanup(c.close)
	return c
}

func (c *wsClient) deliver(data []byte) {
	for _, line := range strings.Split(string(data), "\n") {
		var m wireMsg
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			c.fail(fmt.Errorf("%s: bad JSON from server %q: %v", c.name, line, err))
			continue
		}
		m.raw = line
		select {
		case c.msgs <- m:
		default:
			c.fail(fmt.Errorf("%s: test client buffer full", c.name))
		}
	}
}

func (c *wsClient) fail(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
}

func (c *wsClient) dialCoder(url string, deflate bool) {
	mode := websocket.CompressionDisabled
	if deflate {
		mode = websocket.CompressionNoContextTakeover
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{CompressionMode: mode})
	if err != nil {
		c.t.Fatalf("coder dial: %v", err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); deflate != (got != "") {
		c.t.Fatalf("coder: deflate %v but server answered %q", deflate, got)
	}
	conn.SetReadLimit(64 << 20)
	rctx, rcancel := context.WithCancel(context.Background())
	go func() {
		defer close(c.closed)
		for {
			_, data, err := conn.Read(rctx)
			if err != nil {
				c.closeCode = int(websocket.CloseStatus(err))
				return
			}
			c.deliver(data)
		}
	}()
	c.send = func(s string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return conn.Write(ctx, websocket.MessageText, []byte(s))
	}
	c.close = func() {
		_ = conn.Close(websocket.StatusNormalClosure, "")
		rcancel()
		<-c.closed
	}
}

type gwsHandler struct {
	gws.BuiltinEventHandler
	c *wsClient
}

func (h *gwsHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	h.c.deliver(m.Bytes())
	m.Close()
}

func (h *gwsHandler) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		h.c.closeCode = int(ce.Code)
	}
	close(h.c.closed)
}

func (c *wsClient) dialGWS(url string, deflate bool) {
	opt := &gws.ClientOption{Addr: url, ReadMaxPayloadSize: 64 << 20, CheckUtf8Enabled: true}
	if deflate {
		opt.PermessageDeflate = gws.PermessageDeflate{Enabled: true}
	}
	conn, resp, err := gws.NewClient(&gwsHandler{c: c}, opt)
	if err != nil {
		c.t.Fatalf("gws dial: %v", err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); deflate != (got != "") {
		c.t.Fatalf("gws: deflate %v but server answered %q", deflate, got)
	}
	go conn.ReadLoop()
	c.send = func(s string) error { return conn.WriteString(s) }
	c.close = func() {
		_ = conn.WriteClose(1000, nil)
		select {
		case <-c.closed:
		case <-time.After(5 * time.Second):
			_ = conn.NetConn().Close()
			<-c.closed
		}
	}
}

// do sends a client message.
func (c *wsClient) do(msg string) {
	c.t.Helper()
	if err := c.send(msg); err != nil {
		c.t.Fatalf("%s: send %s: %v", c.name, msg, err)
	}
}

// next returns the next message, failing the test after a timeout.
func (c *wsClient) next() wireMsg {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s: no message within 10s", c.name)
	}
	return wireMsg{}
}

// expect returns the next message, which must have the given type.
func (c *wsClient) expect(typ string) wireMsg {
	c.t.Helper()
	m := c.next()
	if m.Type != typ {
		c.t.Fatalf("%s: got %s, want a %s message", c.name, m.raw, typ)
	}
	return m
}

// drainUntilPong sends a ping op and returns every message before its pong.
func (c *wsClient) drainUntilPong(id int) []wireMsg {
	c.t.Helper()
	c.do(fmt.Sprintf(`{"op":"ping","id":%d}`, id))
	var out []wireMsg
	for {
		m := c.next()
		if m.Type == "pong" && string(m.ID) == fmt.Sprint(id) {
			return out
		}
		out = append(out, m)
	}
}

func (c *wsClient) checkErrs() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		c.t.Error(err)
	}
}

// localBook is a client's copy of one book view, rebuilt from a stream and
// checked at every message as a strict client would.
type localBook struct {
	symbol     string
	depth      int
	bids, asks map[book.Num]book.Num // price → size
	seq        uint64
	started    bool
	updates    int
}

func newLocalBook(symbol string, depth int) *localBook {
	return &localBook{symbol: symbol, depth: depth}
}

// apply applies a snapshot or an update and verifies its checksum and
// its prev_seq against the previous message of the stream.
func (lb *localBook) apply(m wireMsg) error {
	switch m.Type {
	case "snapshot":
		lb.bids, lb.asks = map[book.Num]book.Num{}, map[book.Num]book.Num{}
		lb.started = true
	case "update":
		if !lb.started {
			return fmt.Errorf("%s: update before snapshot: %s", lb.symbol, m.raw)
		}
		if m.PrevSeq == nil || *m.PrevSeq != lb.seq {
			return fmt.Errorf("%s depth %d: prev_seq %v after seq %d: %s", lb.symbol, lb.depth, m.PrevSeq, lb.seq, m.raw)
		}
		if m.Seq <= lb.seq {
			return fmt.Errorf("%s: seq %d not above %d", lb.symbol, m.Seq, lb.seq)
		}
		lb.updates++
	default:
		return fmt.Errorf("not a book message: %s", m.raw)
	}
	for _, side := range []struct {
		levels [][]string
		m      map[book.Num]book.Num
	}{{m.Bids, lb.bids}, {m.Asks, lb.asks}} {
		for _, l := range side.levels {
			if len(l) != 2 {
				return fmt.Errorf("bad level %v", l)
			}
			var n [2]book.Num
			for i, s := range l {
				v, err := book.ParseNum(s)
				if err != nil || v.String() != s {
					return fmt.Errorf("number %q is not canonical", s)
				}
				n[i] = v
			}
			if n[1] == 0 {
				if m.Type == "snapshot" {
					return fmt.Errorf("snapshot level of size 0")
				}
				delete(side.m, n[0])
			} else {
				side.m[n[0]] = n[1]
			}
		}
	}
	if lb.depth > 0 && (len(lb.bids) > lb.depth || len(lb.asks) > lb.depth) {
		return fmt.Errorf("%s depth %d: local view holds %d bids, %d asks", lb.symbol, lb.depth, len(lb.bids), len(lb.asks))
	}
	lb.seq = m.Seq
	if m.Checksum == nil {
		return fmt.Errorf("no checksum: %s", m.raw)
	}
	if got := lb.checksum(); got != *m.Checksum {
		return fmt.Errorf("%s depth %d seq %d: local checksum %d, message says %d", lb.symbol, lb.depth, m.Seq, got, *m.Checksum)
	}
	return nil
}

// top returns the best n levels of a side, best first (all for n < 0).
func (lb *localBook) top(side book.Side, n int) []book.Level {
	m := lb.bids
	better := func(a, b book.Num) bool { return a > b }
	if side == book.Sell {
		m = lb.asks
		better = func(a, b book.Num) bool { return a < b }
	}
	if n < 0 || n > len(m) {
		n = len(m)
	}
	out := make([]book.Level, 0, n+1)
	for p, s := range m {
		// Insertion into the best n seen so far.
		i := len(out)
		for i > 0 && better(p, out[i-1].Price) {
			i--
		}
		if i >= n {
			continue
		}
		out = slices.Insert(out, i, book.Level{Price: p, Size: s})
		if len(out) > n {
			out = out[:n]
		}
	}
	return out
}

// levels returns a side best first.
func (lb *localBook) levels(side book.Side) []book.Level { return lb.top(side, -1) }

// checksum computes the protocol checksum from the local view by the
// letter of protocol.md §3, independently of book.Checksum.
func (lb *localBook) checksum() uint32 {
	bids, asks := lb.top(book.Buy, 10), lb.top(book.Sell, 10)
	var sb strings.Builder
	for i := range 10 {
		if i < len(bids) {
			fmt.Fprintf(&sb, "%s:%s:", bids[i].Price, bids[i].Size)
		}
		if i < len(asks) {
			fmt.Fprintf(&sb, "%s:%s:", asks[i].Price, asks[i].Size)
		}
	}
	s := strings.TrimSuffix(sb.String(), ":")
	return crc32.ChecksumIEEE([]byte(s))
}

// equal compares the local view with a server snapshot.
func (lb *localBook) equal(s book.Snapshot) error {
	for _, side := range []struct {
		name      string
		got, want []book.Level
	}{{"bids", lb.levels(book.Buy), s.Bids}, {"asks", lb.levels(book.Sell), s.Asks}} {
		if !slices.Equal(side.got, side.want) {
			return fmt.Errorf("%s depth %d %s: client has %v, server %v", lb.symbol, lb.depth, side.name, side.got, side.want)
		}
	}
	return nil
}

func mustNum(s string) book.Num {
	n, err := book.ParseNum(s)
	if err != nil {
		panic(err)
	}
	return n
}

// eventGen makes random valid events: level events for level-based
// symbols, add/modify/cancel/trade-with-maker for order-based ones, and
// trades without a maker for both.
type eventGen struct {
	rng    *rand.Rand
	seq    map[string]uint64
	orders map[string][]genOrder // resting orders by symbol
	nextID int
}

type genOrder struct {
	id    string
	side  book.Side
	price book.Num
	size  book.Num
}

func newEventGen(seed uint64) *eventGen {
	return &eventGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seq: map[string]uint64{}, orders: map[string][]genOrder{}}
}

// price returns a random price of a side around 1000, on a 0.5 grid, so
// that levels often enter and leave the small depth views.
func (g *eventGen) price(side book.Side) book.Num {
	off := book.Num(g.rng.IntN(120)+1) * book.Unit / 2
	if side == book.Buy {
		return 1000*book.Unit - off
	}
	return 1000*book.Unit + off
}

func (g *eventGen) size() book.Num {
	return book.Num(g.rng.IntN(5_000_000_000) + 1) // up to 50, 8 decimals
}

func (g *eventGen) side() book.Side {
	if g.rng.IntN(2) == 0 {
		return book.Buy
	}
	return book.Sell
}

func (g *eventGen) next(symbol string, levels bool) book.Event {
	g.seq[symbol] += 1 + uint64(g.rng.IntN(3)) // offsets of a partition shared with other symbols
	ev := book.Event{Symbol: symbol, Seq: g.seq[symbol], TS: 1_763_900_000_000_000 + int64(g.seq[symbol])*1000}
	r := g.rng.IntN(100)
	switch {
	case r < 8: // a print without a maker: trades and ticker only
		g.nextID++
		ev.Kind, ev.TradeID, ev.Side, ev.Price, ev.Size = book.KindTrade, fmt.Sprintf("t%d", g.nextID), g.side(), g.price(g.side()), g.size()
	case levels:
		ev.Kind, ev.Side = book.KindLevel, g.side()
		ev.Price = g.price(ev.Side)
		if g.rng.IntN(3) > 0 {
			ev.Size = g.size()
		}
	default:
		os := g.orders[symbol]
		switch k := g.rng.IntN(10); {
		case len(os) < 30 || k < 4:
			g.nextID++
			o := genOrder{id: fmt.Sprintf("o%d", g.nextID), side: g.side(), size: g.size()}
			o.price = g.price(o.side)
			g.orders[symbol] = append(os, o)
			ev.Kind, ev.OrderID, ev.Side, ev.Price, ev.Size = book.KindAdd, o.id, o.side, o.price, o.size
		case k < 6:
			i := g.rng.IntN(len(os))
			os[i].size = g.size()
			ev.Kind, ev.OrderID, ev.Size = book.KindModify, os[i].id, os[i].size
		case k < 8:
			i := g.rng.IntN(len(os))
			ev.Kind, ev.OrderID = book.KindCancel, os[i].id
			g.orders[symbol] = slices.Delete(os, i, i+1)
		default:
			i := g.rng.IntN(len(os))
			o := &os[i]
			fill := book.Num(g.rng.Int64N(int64(o.size))) + 1
			g.nextID++
			ev.Kind, ev.TradeID, ev.MakerOrderID, ev.Price, ev.Size = book.KindTrade, fmt.Sprintf("t%d", g.nextID), o.id, o.price, fill
			ev.Side = book.Buy
			if o.side == book.Buy {
				ev.Side = book.Sell
			}
			if o.size -= fill; o.size == 0 {
				g.orders[symbol] = slices.Delete(os, i, i+1)
			}
		}
	}
	return ev
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// httpGet fetches a path of the test server.
func (ts *testServer) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(ts.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, sb.String()
}

var _ net.Conn = (*net.TCPConn)(nil)

// newHTTPServer returns an HTTP server for s, for tests that run their own.
func newHTTPServer(s *Server) *http.Server {
	return &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
}
