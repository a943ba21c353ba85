// Command bookclient is an example marketd client in Go: it subscribes to the
// book of one symbol over WebSocket and keeps a verified copy of it.
//
// It applies the snapshot and every update, checks that each update's
// prev_seq is the seq it holds (else it missed something) and that the
// CRC-32 checksum of its book equals the server's after every message
// (protocol.md §3). On a gap or a mismatch it drops the book and subscribes
// again; when the connection drops it reconnects and resumes from the last
// seq it holds. It prints the top of the book after every verified message,
// and a summary line when it stops:
//
//	summary verified=200 snapshots=1 mismatches=0 gaps=0 resyncs=0 reconnects=0 resumed_exact=0 resumed_snapshot=0
//
// Usage:
//
//	go run ./docs/examples/go -url ws://localhost:8080/v1/ws -symbol BTC-USD -updates 200
//
// It stops after -updates verified updates (0: never; Ctrl-C stops it).
//
// The example needs two modules besides the standard library:
// github.com/coder/websocket (the WebSocket client) and
// github.com/shopspring/decimal (to order prices exactly, never as floats).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/shopspring/decimal"
)

// Defaults of the command-line flags.
const (
	defaultURL    = "ws://localhost:8080/v1/ws"
	defaultSymbol = "BTC-USD"
	defaultDepth  = 10
)

// Connection handling.
const (
	// readLimit bounds one WebSocket message: a full-depth snapshot can be
	// large, far more than the library's 32 KiB default.
	readLimit = 16 << 20
	// dialTimeout bounds one connection attempt.
	dialTimeout = 10 * time.Second
	// writeTimeout bounds sending one request.
	writeTimeout = 5 * time.Second
	// minBackoff and maxBackoff bound the wait before a reconnect; the
	// wait doubles after each failed attempt.
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
	// checksumLevels is how many levels per side the checksum covers.
	checksumLevels = 10
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.url, "url", defaultURL, "marketd WebSocket `URL`")
	flag.StringVar(&cfg.symbol, "symbol", defaultSymbol, "`symbol` whose book to keep")
	flag.IntVar(&cfg.depth, "depth", defaultDepth, "book `depth` (1, 10, 25, 50, 100, 500, 1000, or 0 for all)")
	flag.IntVar(&cfg.updates, "updates", 0, "stop after `N` verified updates (0: run until interrupted)")
	flag.IntVar(&cfg.corruptAfter, "corrupt-after", 0,
		"after `K` verified updates, corrupt the local book once, to show the resync (0: never)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bookclient: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := &client{cfg: cfg, out: os.Stdout, log: os.Stderr}
	err := c.run(ctx)
	fmt.Fprintln(c.out, c.stats.summary())
	if err != nil {
		fmt.Fprintf(os.Stderr, "bookclient: %v\n", err)
		os.Exit(1)
	}
}

// config is what the command line sets.
type config struct {
	url          string
	symbol       string
	depth        int
	updates      int
	corruptAfter int
}

// stats counts what happened, for the summary line.
type stats struct {
	verified, snapshots, mismatches, gaps, resyncs, reconnects int
	resumedExact, resumedSnapshot                              int
}

func (s *stats) summary() string {
	return fmt.Sprintf("summary verified=%d snapshots=%d mismatches=%d gaps=%d resyncs=%d reconnects=%d resumed_exact=%d resumed_snapshot=%d",
		s.verified, s.snapshots, s.mismatches, s.gaps, s.resyncs, s.reconnects, s.resumedExact, s.resumedSnapshot)
}

// message is any message the server sends; each type uses some fields.
type message struct {
	Type     string            `json:"type"`
	ID       json.RawMessage   `json:"id"` // ack, error, pong; a snapshot that answers a snapshot op
	Channel  string            `json:"channel"`
	Symbol   string            `json:"symbol"`
	Seq      uint64            `json:"seq"`
	PrevSeq  uint64            `json:"prev_seq"`
	Bids     [][2]string       `json:"bids"`
	Asks     [][2]string       `json:"asks"`
	Checksum uint32            `json:"checksum"`
	Code     string            `json:"code"`    // error, notice
	Message  string            `json:"message"` // error, notice
	Resumed  map[string]string `json:"resumed"` // ack of a subscribe with resume
}

// errDone ends a session when the wanted number of updates is verified.
var errDone = errors.New("done")

// client keeps the book of one symbol. It runs on one goroutine: run.
type client struct {
	cfg config
	out io.Writer // top of book, summary
	log io.Writer // connection events, resyncs

	book    orderBook
	synced  bool   // book holds a snapshot and every update since
	lastSeq uint64 // seq of the last message applied to book
	nextID  int
	subID   string // id of the last subscribe sent, as JSON
	pending bool   // that subscribe has no ack yet
	damaged bool   // -corrupt-after has been done
	stats   stats
}

// run connects, and reconnects after the connection drops, until the
// wanted number of updates is verified, ctx ends, or the server refuses the
// subscription. A first connection that fails is an error at once.
func (c *client) run(ctx context.Context) error {
	backoff := minBackoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.stats.reconnects++
		}
		connected, err := c.session(ctx)
		switch {
		case errors.Is(err, errDone):
			return nil
		case ctx.Err() != nil:
			return nil // interrupted
		}
		var fatal *fatalError
		if errors.As(err, &fatal) || (attempt == 0 && !connected) {
			return err
		}
		if connected {
			backoff = minBackoff
		}
		fmt.Fprintf(c.log, "connection lost: %v; reconnecting in %v\n", err, backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// fatalError is a refusal from the server that reconnecting cannot cure.
type fatalError struct{ msg string }

func (e *fatalError) Error() string { return e.msg }

// session runs one connection: it subscribes (resuming when it holds a
// verified book) and handles messages until the connection ends. connected
// reports whether the WebSocket handshake succeeded.
func (c *client) session(ctx context.Context) (connected bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, _, err := websocket.Dial(dctx, c.cfg.url, &websocket.DialOptions{
		CompressionMode: websocket.CompressionNoContextTakeover, // marketd compresses each message on its own
	})
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", c.cfg.url, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(readLimit)

	var resume map[string]uint64
	if c.synced {
		resume = map[string]uint64{c.cfg.symbol: c.lastSeq}
	}
	if err := c.subscribe(ctx, conn, resume); err != nil {
		return true, err
	}
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return true, fmt.Errorf("read: %w", err)
		}
		if typ != websocket.MessageText {
			continue
		}
		// A frame holds one message or several separated by '\n'.
		for line := range strings.SplitSeq(string(data), "\n") {
			if line == "" {
				continue
			}
			var m message
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				return true, fmt.Errorf("decode message %q: %w", line, err)
			}
			if err := c.handle(ctx, conn, &m); err != nil {
				if errors.Is(err, errDone) {
					_ = conn.Close(websocket.StatusNormalClosure, "done")
				}
				return true, err
			}
		}
	}
}

// subscribe sends a book subscription; resume, when not nil, asks the
// server to carry on from the seq the client holds.
func (c *client) subscribe(ctx context.Context, conn *websocket.Conn, resume map[string]uint64) error {
	c.nextID++
	c.subID = fmt.Sprint(c.nextID)
	c.pending = true
	req := map[string]any{
		"op": "subscribe", "id": c.nextID, "channel": "book",
		"symbols": []string{c.cfg.symbol}, "depth": c.cfg.depth, "interval": "raw",
	}
	if resume != nil {
		req["resume"] = resume
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode subscribe: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := conn.Write(wctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("send subscribe: %w", err)
	}
	return nil
}

// resync drops the book and subscribes again: the server answers with a
// fresh snapshot. Updates still in flight from the old subscription come
// before that snapshot and are ignored while the client is not synced.
func (c *client) resync(ctx context.Context, conn *websocket.Conn, why string) error {
	fmt.Fprintf(c.log, "resync %s: %s\n", c.cfg.symbol, why)
	c.stats.resyncs++
	c.synced = false
	c.book = orderBook{}
	return c.subscribe(ctx, conn, nil)
}

// handle processes one server message.
func (c *client) handle(ctx context.Context, conn *websocket.Conn, m *message) error {
	switch m.Type {
	case "snapshot":
		// A snapshot with an id answers a snapshot op, which this client
		// does not send; one without starts (or restarts) the stream.
		if m.Symbol != c.cfg.symbol || m.ID != nil {
			return nil
		}
		c.stats.snapshots++
		if err := c.book.reset(m.Bids, m.Asks); err != nil {
			return c.resync(ctx, conn, err.Error())
		}
		c.lastSeq = m.Seq
		if sum := c.book.checksum(); sum != m.Checksum {
			c.stats.mismatches++
			return c.resync(ctx, conn, fmt.Sprintf("snapshot seq %d: checksum %d, server says %d", m.Seq, sum, m.Checksum))
		}
		c.synced = true
		c.printTop("snapshot")
	case "update":
		if m.Symbol != c.cfg.symbol || !c.synced {
			return nil // not ours, or from a subscription being replaced
		}
		if m.PrevSeq != c.lastSeq {
			c.stats.gaps++
			return c.resync(ctx, conn, fmt.Sprintf("gap: update prev_seq %d, held seq %d", m.PrevSeq, c.lastSeq))
		}
		if err := c.book.apply(m.Bids, m.Asks); err != nil {
			return c.resync(ctx, conn, err.Error())
		}
		c.lastSeq = m.Seq
		if sum := c.book.checksum(); sum != m.Checksum {
			c.stats.mismatches++
			return c.resync(ctx, conn, fmt.Sprintf("update seq %d: checksum %d, server says %d", m.Seq, sum, m.Checksum))
		}
		c.stats.verified++
		c.printTop("update")
		if c.done() {
			return errDone
		}
		if c.cfg.corruptAfter > 0 && !c.damaged && c.stats.verified >= c.cfg.corruptAfter {
			c.damaged = true
			c.corrupt()
		}
	case "ack":
		if string(m.ID) != c.subID {
			return nil
		}
		c.pending = false
		for sym, how := range m.Resumed {
			fmt.Fprintf(c.log, "resumed %s: %s\n", sym, how)
			if how == "exact" {
				c.stats.resumedExact++
			} else {
				c.stats.resumedSnapshot++
			}
		}
		if c.done() {
			return errDone
		}
	case "error":
		if string(m.ID) == c.subID {
			return &fatalError{msg: fmt.Sprintf("subscribe refused: %s: %s", m.Code, m.Message)}
		}
		fmt.Fprintf(c.log, "server error %s: %s\n", m.Code, m.Message)
	case "notice":
		fmt.Fprintf(c.log, "notice %s: %s\n", m.Code, m.Message)
	}
	// Other types (ticker, trade, pong, and any added later) are not ours.
	return nil
}

// done reports whether the wanted number of updates is verified. It waits
// for the ack of the last subscribe too, so that the summary says how the
// last (re)subscription started: the server sends a resumed stream's missed
// updates before the ack.
func (c *client) done() bool {
	return c.cfg.updates > 0 && c.stats.verified >= c.cfg.updates && !c.pending
}

// corrupt adds a bid one 10^-8 above the best bid: a price the server never
// sends, so the next checksum cannot match and the client must resync.
func (c *client) corrupt() {
	p := decimal.New(1, -8)
	if len(c.book.bids.levels) > 0 {
		p = p.Add(c.book.bids.levels[0].p)
	}
	fmt.Fprintf(c.log, "corrupting the local book: bid %s x 1\n", p)
	_ = c.book.bids.set(p.String(), "1") // a price and size made here: always valid
}

// printTop prints the best bid and ask.
func (c *client) printTop(what string) {
	top := func(s *bookSide) string {
		if len(s.levels) == 0 {
			return "-"
		}
		return s.levels[0].price + " x " + s.levels[0].size
	}
	fmt.Fprintf(c.out, "%s %s seq=%d bid %s | ask %s | verified=%d\n",
		c.cfg.symbol, what, c.lastSeq, top(&c.book.bids), top(&c.book.asks), c.stats.verified)
}

// level is one price level, kept as the strings received: the checksum
// covers exactly those. p is the price as an exact decimal, for ordering.
type level struct {
	price, size string
	p           decimal.Decimal
}

// bookSide holds the levels of one side, best first.
type bookSide struct {
	desc   bool // bids: best is the highest price
	levels []level
}

// set applies one [price, size] pair; size "0" removes the level.
func (s *bookSide) set(price, size string) error {
	p, err := decimal.NewFromString(price)
	if err != nil {
		return fmt.Errorf("bad price %q: %w", price, err)
	}
	sz, err := decimal.NewFromString(size)
	if err != nil {
		return fmt.Errorf("bad size %q: %w", size, err)
	}
	i, found := slices.BinarySearchFunc(s.levels, p, func(l level, p decimal.Decimal) int {
		if s.desc {
			return p.Cmp(l.p)
		}
		return l.p.Cmp(p)
	})
	switch {
	case sz.IsZero() && found:
		s.levels = slices.Delete(s.levels, i, i+1)
	case sz.IsZero():
	case found:
		s.levels[i] = level{price: price, size: size, p: p}
	default:
		s.levels = slices.Insert(s.levels, i, level{price: price, size: size, p: p})
	}
	return nil
}

// orderBook is the client's copy of one book view.
type orderBook struct {
	bids bookSide
	asks bookSide
}

// reset replaces the book with a snapshot's levels.
func (b *orderBook) reset(bids, asks [][2]string) error {
	*b = orderBook{bids: bookSide{desc: true}}
	return b.apply(bids, asks)
}

// apply applies an update's level changes.
func (b *orderBook) apply(bids, asks [][2]string) error {
	b.bids.desc = true
	for _, l := range bids {
		if err := b.bids.set(l[0], l[1]); err != nil {
			return fmt.Errorf("bid: %w", err)
		}
	}
	for _, l := range asks {
		if err := b.asks.set(l[0], l[1]); err != nil {
			return fmt.Errorf("ask: %w", err)
		}
	}
	return nil
}

// checksum is the CRC-32 (IEEE) of "bid0price:bid0size:ask0price:ask0size:..."
// over the first 10 levels of each side, without the final ':' (protocol.md §3).
func (b *orderBook) checksum() uint32 {
	var sb strings.Builder
	for i := range checksumLevels {
		for _, s := range []*bookSide{&b.bids, &b.asks} {
			if i < len(s.levels) {
				sb.WriteString(s.levels[i].price)
				sb.WriteByte(':')
				sb.WriteString(s.levels[i].size)
				sb.WriteByte(':')
			}
		}
	}
	return crc32.ChecksumIEEE([]byte(strings.TrimSuffix(sb.String(), ":")))
}
