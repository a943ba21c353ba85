package bench

import (
	"context"
	"encoding/json"
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
	"github.com/marketd/marketd/feed"
)

// peerDefaultDepth is the book depth of a subscription that names none.
const peerDefaultDepth = 50

// PeerConfig configures a Peer. Zero values mean the defaults.
type PeerConfig struct {
	// Brokers are the Kafka brokers to read; empty starts an embedded
	// broker (feed.StartBroker) on EmbeddedAddr, as marketd does.
	Brokers []string
	// EmbeddedAddr is where the embedded broker listens. Default
	// 127.0.0.1:9092; port 0 picks a free one (see Peer.Brokers).
	EmbeddedAddr string
	// Partitions of the embedded broker's topic. Default 4, as marketd.
	Partitions int
	// Topic is the input topic. Default feed.DefaultTopic.
	Topic string
	// Compression enables permessage-deflate when a client offers it: each
	// message compressed for each client by gws (no context takeover).
	Compression bool
	// Logger receives errors; nil discards them.
	Logger *slog.Logger
}

// Peer is the comparison server: what a user would write instead of
// marketd with the same libraries and no design effort. It ingests exactly
// as marketd does (feed.Ingester, whose book.Sink it is), so that a
// comparison measures the fan-out alone; under one hub mutex it hands every
// update to every subscriber's own goroutine through an unbounded queue; that
// goroutine encodes JSON per client with encoding/json and writes each
// message with gws's WriteMessage (one frame, one syscall and, with
// compression, one deflate per message per client). It speaks the subset of
// protocol.md the load generator uses: subscribe (book with depth; ticker
// and trades, "*" included; interval raw only), unsubscribe, ping; ack,
// error, snapshot, update, ticker, trade, pong.
//
// Ownership: the books belong to the ingester's partition goroutines
// (snapshots are taken through Ingester.Do); the subscriber sets are
// guarded by mu; each client's queue by its own mutex, drained by its writer
// goroutine only. Close stops the ingester, the HTTP server and every client
// goroutine and waits for them.
type Peer struct {
	cfg      PeerConfig
	log      *slog.Logger
	broker   *feed.Broker
	brokers  []string
	ingester *feed.Ingester
	upgrader *gws.Upgrader
	srv      *http.Server
	ln       net.Listener

	mu sync.Mutex
	// subs[channel][symbol] is the set of subscribers of a stream; the
	// symbol "*" holds the wildcard subscribers of ticker and trades.
	subs    [numChannels]map[string]map[*peerClient]int // value: depth view index (book)
	clients map[*peerClient]struct{}
	closed  bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewPeer starts the peer: the embedded broker if no brokers are given,
// the ingester, and the WebSocket server on ln (/v1/ws).
func NewPeer(ctx context.Context, cfg PeerConfig, ln net.Listener) (*Peer, error) {
	if cfg.Topic == "" {
		cfg.Topic = feed.DefaultTopic
	}
	if cfg.EmbeddedAddr == "" {
		cfg.EmbeddedAddr = feed.DefaultBrokerAddr
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = feed.DefaultPartitions
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Peer{cfg: cfg, log: log, brokers: cfg.Brokers, ln: ln, clients: make(map[*peerClient]struct{})}
	for i := range p.subs {
		p.subs[i] = make(map[string]map[*peerClient]int)
	}
	if len(p.brokers) == 0 {
		b, err := feed.StartBroker(ctx, feed.BrokerConfig{Addr: cfg.EmbeddedAddr, Topics: []string{cfg.Topic}, Partitions: cfg.Partitions})
		if err != nil {
			return nil, fmt.Errorf("peer: %w", err)
		}
		p.broker, p.brokers = b, []string{b.Addr()}
	}
	in, err := feed.New(feed.Config{Brokers: p.brokers, Topic: cfg.Topic, Sink: book.SinkFunc(p.publish), Logger: log})
	if err != nil {
		p.closeBroker()
		return nil, fmt.Errorf("peer: %w", err)
	}
	p.ingester = in

	opt := &gws.ServerOption{ReadMaxPayloadSize: 64 << 10}
	if cfg.Compression {
		// Threshold 1: compress every message, as gorilla/websocket's
		// EnableCompression does (gws's default skips those under 512 B,
		// which is every book delta).
		opt.PermessageDeflate = gws.PermessageDeflate{Enabled: true, Threshold: 1}
	}
	p.upgrader = gws.NewUpgrader(&peerHandler{p: p}, opt)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ws", p.serveWS)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.wg.Go(func() {
		if err := in.Run(runCtx); err != nil {
			p.log.Error("peer: ingest", "err", err)
		}
	})
	p.wg.Go(func() {
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("peer: serve", "err", err)
		}
	})
	return p, nil
}

// Brokers returns the brokers the peer reads (the embedded one's address
// when it started one).
func (p *Peer) Brokers() []string { return p.brokers }

// Close stops the peer and waits for its goroutines.
func (p *Peer) Close() {
	p.cancel()
	_ = p.srv.Close()
	p.mu.Lock()
	p.closed = true
	clients := make([]*peerClient, 0, len(p.clients))
	for c := range p.clients {
		clients = append(clients, c)
	}
	p.mu.Unlock()
	for _, c := range clients {
		_ = c.conn.NetConn().Close()
	}
	p.wg.Wait()
	p.closeBroker()
}

func (p *Peer) closeBroker() {
	if p.broker != nil {
		p.broker.Close()
	}
}

// publish hands the update to every subscriber's queue. The ingester calls
// it from the apply loop of the symbol's partition.
func (p *Peer) publish(u *book.Update) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(u.Changes) > 0 {
		for c, view := range p.subs[chBook][u.Symbol] {
			c.push(peerItem{kind: itemUpdate, ch: chBook, view: view, u: u})
		}
	}
	for _, sym := range [2]string{u.Symbol, "*"} {
		if u.Ticker != nil {
			for c := range p.subs[chTicker][sym] {
				c.push(peerItem{kind: itemUpdate, ch: chTicker, u: u})
			}
		}
		if u.Trade != nil {
			for c := range p.subs[chTrades][sym] {
				c.push(peerItem{kind: itemUpdate, ch: chTrades, u: u})
			}
		}
	}
}

func (p *Peer) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := p.upgrader.Upgrade(w, r)
	if err != nil {
		return // gws answered the request
	}
	c := &peerClient{p: p, conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{}), last: make(map[streamKey]uint64)}
	conn.Session().Store("c", c)
	// Start the goroutines under mu, so that none starts after Close
	// marked the peer closed and began to wait.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = conn.NetConn().Close()
		return
	}
	p.clients[c] = struct{}{}
	p.wg.Go(c.writeLoop)
	p.wg.Go(conn.ReadLoop)
}

// peerHandler is the peer's gws event handler.
type peerHandler struct{ p *Peer }

func clientOf(conn *gws.Conn) *peerClient {
	v, _ := conn.Session().Load("c")
	c, _ := v.(*peerClient)
	return c
}

func (*peerHandler) OnOpen(*gws.Conn)                      {}
func (*peerHandler) OnPong(*gws.Conn, []byte)              {}
func (*peerHandler) OnPing(conn *gws.Conn, payload []byte) { _ = conn.WritePong(payload) }

// OnClose unsubscribes the client everywhere and stops its writer.
func (h *peerHandler) OnClose(conn *gws.Conn, _ error) {
	c := clientOf(conn)
	if c == nil {
		return
	}
	p := h.p
	p.mu.Lock()
	for ch := range p.subs {
		for sym, set := range p.subs[ch] {
			delete(set, c)
			if len(set) == 0 {
				delete(p.subs[ch], sym)
			}
		}
	}
	delete(p.clients, c)
	p.mu.Unlock()
	close(c.done)
}

// clientOp is a client request (protocol.md §3), as encoding/json reads it.
type clientOp struct {
	Op       string   `json:"op"`
	ID       int64    `json:"id"`
	Channel  string   `json:"channel"`
	Symbols  []string `json:"symbols"`
	Depth    *int     `json:"depth"`
	Interval string   `json:"interval"`
}

// OnMessage handles one client request.
func (h *peerHandler) OnMessage(conn *gws.Conn, message *gws.Message) {
	defer message.Close()
	c := clientOf(conn)
	if c == nil {
		return
	}
	var op clientOp
	if err := json.Unmarshal(message.Bytes(), &op); err != nil {
		c.push(peerItem{kind: itemControl, msg: errorMsg{Type: "error", Code: "bad_request", Message: err.Error()}})
		return
	}
	switch op.Op {
	case "ping":
		c.push(peerItem{kind: itemControl, msg: pongMsg{Type: "pong", ID: op.ID, TS: time.Now().UnixMicro()}})
	case "subscribe", "unsubscribe":
		h.p.subscribe(c, &op)
	default:
		c.push(peerItem{kind: itemControl, msg: errorMsg{Type: "error", ID: op.ID, Code: "unknown_op", Message: "unknown op " + op.Op}})
	}
}

// subscribe registers (or removes) c's subscriptions. A book or ticker
// subscription is registered on the goroutine that owns the symbol's book
// (Ingester.Do), right after its snapshot is taken, so that no update slips
// between the snapshot and the stream that follows it.
func (p *Peer) subscribe(c *peerClient, op *clientOp) {
	fail := func(code, msg string) {
		c.push(peerItem{kind: itemControl, msg: errorMsg{Type: "error", ID: op.ID, Code: code, Message: msg}})
	}
	ch := channelIndex([]byte(op.Channel))
	if ch < 0 {
		fail("unknown_channel", "unknown channel "+op.Channel)
		return
	}
	depth := peerDefaultDepth
	if op.Depth != nil {
		depth = *op.Depth
	}
	view, ok := book.ViewIndex(depth)
	if !ok || len(op.Symbols) == 0 || (op.Interval != "" && op.Interval != "raw") {
		fail("bad_request", "bad depth, symbols or interval (the peer serves raw only)")
		return
	}
	known := p.ingester.Symbols()
	for _, s := range op.Symbols {
		if _, found := slices.BinarySearch(known, s); s == "*" && ch == chBook || s != "*" && !found {
			fail("unknown_symbol", "unknown symbol "+s)
			return
		}
	}
	c.push(peerItem{kind: itemControl, msg: ackMsg{Type: "ack", ID: op.ID, Op: op.Op, Channel: op.Channel, Symbols: op.Symbols}})
	register := func(s string) {
		p.mu.Lock()
		defer p.mu.Unlock()
		set := p.subs[ch][s]
		if op.Op == "unsubscribe" {
			delete(set, c)
			return
		}
		if set == nil {
			set = make(map[*peerClient]int)
			p.subs[ch][s] = set
		}
		set[c] = view
	}
	for _, s := range op.Symbols {
		if s == "*" || op.Op == "unsubscribe" || ch == chTrades {
			register(s)
			continue
		}
		err := p.ingester.Do(context.Background(), s, func(b *book.Book) {
			if ch == chBook {
				snap := b.Snapshot(depth)
				c.push(peerItem{kind: itemSnapshot, snap: &snap})
			} else {
				t := b.Ticker()
				c.push(peerItem{kind: itemUpdate, ch: chTicker, u: &book.Update{Symbol: s, Seq: t.Seq, TS: t.TS, Ticker: &t}})
			}
			register(s)
		})
		if err != nil {
			fail("unknown_symbol", err.Error())
			return
		}
	}
}

// Items queued for a client's writer.
const (
	itemControl  = iota + 1 // msg is ready to marshal
	itemSnapshot            // snap
	itemUpdate              // u, for channel ch (and depth view for book)
)

type peerItem struct {
	kind int
	ch   int
	view int
	u    *book.Update
	snap *book.Snapshot
	msg  any
}

type streamKey struct {
	ch     int
	symbol string
}

// peerClient is one connection of the peer: an unbounded queue, filled by
// the hub and the read loop, drained by its own writer goroutine.
type peerClient struct {
	p    *Peer
	conn *gws.Conn

	mu    sync.Mutex
	queue []peerItem
	wake  chan struct{} // size 1: "the queue is not empty"
	done  chan struct{} // closed when the connection closed

	last map[streamKey]uint64 // owned by writeLoop: last seq sent per stream
}

// push appends to the queue without bound: the straightforward choice, the
// one marketd's bounded queues are measured against.
func (c *peerClient) push(it peerItem) {
	c.mu.Lock()
	c.queue = append(c.queue, it)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *peerClient) writeLoop() {
	var batch []peerItem
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()
		for i := range batch {
			msg := c.encode(&batch[i])
			batch[i] = peerItem{}
			if msg == nil {
				continue
			}
			b, err := json.Marshal(msg)
			if err != nil {
				c.p.log.Error("peer: encode", "err", err)
				continue
			}
			if err := c.conn.WriteMessage(gws.OpcodeText, b); err != nil {
				_ = c.conn.NetConn().Close()
				return
			}
		}
	}
}

// encode returns the wire message of it for this client, or nil when it
// has nothing for the client's view.
func (c *peerClient) encode(it *peerItem) any {
	switch it.kind {
	case itemControl:
		return it.msg
	case itemSnapshot:
		s := it.snap
		c.last[streamKey{chBook, s.Symbol}] = s.Seq
		return snapshotMsg{Type: "snapshot", Channel: "book", Symbol: s.Symbol, Seq: s.Seq, TS: s.TS,
			Bids: levels(s.Bids), Asks: levels(s.Asks), Checksum: s.Checksum}
	}
	u := it.u
	key := streamKey{it.ch, u.Symbol}
	prev := c.last[key]
	switch it.ch {
	case chBook:
		m := updateMsg{Type: "update", Channel: "book", Symbol: u.Symbol, Seq: u.Seq, PrevSeq: prev, TS: u.TS,
			Bids: [][2]string{}, Asks: [][2]string{}, Checksum: u.Checksum(book.Depths[it.view])}
		for _, ch := range u.Changes {
			if !ch.Views.Has(it.view) {
				continue
			}
			lv := [2]string{ch.Price.String(), ch.Size.String()}
			if ch.Side == book.Buy {
				m.Bids = append(m.Bids, lv)
			} else {
				m.Asks = append(m.Asks, lv)
			}
		}
		if len(m.Bids)+len(m.Asks) == 0 {
			return nil
		}
		c.last[key] = u.Seq
		return m
	case chTicker:
		t := u.Ticker
		c.last[key] = u.Seq
		m := tickerMsg{Type: "ticker", Channel: "ticker", Symbol: u.Symbol, Seq: u.Seq, TS: u.TS,
			Open24h: t.Open24h.String(), High24h: t.High24h.String(), Low24h: t.Low24h.String(), Volume24h: t.Volume24h.String()}
		if t.HasBid {
			m.Bid, m.BidSize = t.Bid.String(), t.BidSize.String()
		}
		if t.HasAsk {
			m.Ask, m.AskSize = t.Ask.String(), t.AskSize.String()
		}
		if t.HasLast {
			m.Last, m.LastSize = t.Last.String(), t.LastSize.String()
		}
		return m
	default:
		t := u.Trade
		c.last[key] = u.Seq
		return tradeMsg{Type: "trade", Channel: "trades", Symbol: u.Symbol, Seq: u.Seq, PrevSeq: prev, TS: u.TS,
			TradeID: t.TradeID, Price: t.Price.String(), Size: t.Size.String(), Side: t.Side.String()}
	}
}

func levels(lv []book.Level) [][2]string {
	out := make([][2]string, len(lv))
	for i, l := range lv {
		out[i] = [2]string{l.Price.String(), l.Size.String()}
	}
	return out
}

// The peer's wire messages, as encoding/json writes them (protocol.md §3).
type (
	ackMsg struct {
		Type    string   `json:"type"`
		ID      int64    `json:"id"`
		Op      string   `json:"op"`
		Channel string   `json:"channel"`
		Symbols []string `json:"symbols"`
	}
	errorMsg struct {
		Type    string `json:"type"`
		ID      int64  `json:"id,omitempty"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	pongMsg struct {
		Type string `json:"type"`
		ID   int64  `json:"id,omitempty"`
		TS   int64  `json:"ts"`
	}
	snapshotMsg struct {
		Type     string      `json:"type"`
		Channel  string      `json:"channel"`
		Symbol   string      `json:"symbol"`
		Seq      uint64      `json:"seq"`
		TS       int64       `json:"ts"`
		Bids     [][2]string `json:"bids"`
		Asks     [][2]string `json:"asks"`
		Checksum uint32      `json:"checksum"`
	}
	updateMsg struct {
		Type     string      `json:"type"`
		Channel  string      `json:"channel"`
		Symbol   string      `json:"symbol"`
		Seq      uint64      `json:"seq"`
		PrevSeq  uint64      `json:"prev_seq"`
		TS       int64       `json:"ts"`
		Bids     [][2]string `json:"bids"`
		Asks     [][2]string `json:"asks"`
		Checksum uint32      `json:"checksum"`
	}
	tickerMsg struct {
		Type      string `json:"type"`
		Channel   string `json:"channel"`
		Symbol    string `json:"symbol"`
		Seq       uint64 `json:"seq"`
		TS        int64  `json:"ts"`
		Bid       string `json:"bid,omitempty"`
		BidSize   string `json:"bid_size,omitempty"`
		Ask       string `json:"ask,omitempty"`
		AskSize   string `json:"ask_size,omitempty"`
		Last      string `json:"last,omitempty"`
		LastSize  string `json:"last_size,omitempty"`
		Open24h   string `json:"open_24h"`
		High24h   string `json:"high_24h"`
		Low24h    string `json:"low_24h"`
		Volume24h string `json:"volume_24h"`
	}
	tradeMsg struct {
		Type    string `json:"type"`
		Channel string `json:"channel"`
		Symbol  string `json:"symbol"`
		Seq     uint64 `json:"seq"`
		PrevSeq uint64 `json:"prev_seq"`
		TS      int64  `json:"ts"`
		TradeID string `json:"trade_id"`
		Price   string `json:"price"`
		Size    string `json:"size"`
		Side    string `json:"side"`
	}
)
