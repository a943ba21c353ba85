package stream

import (
	"fmt"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
)

const (
	symLevels = "LVL-USD" // a level-based book
	symOrders = "ORD-USD" // an order-based book
)

// streamSub is one book subscription of a client in TestStreamRebuild.
type streamSub struct {
	symbol   string
	depth    int
	interval string
}

// TestStreamRebuild drives more than 10,000 random events through real
// books and checks, for both client libraries with and without
// permessage-deflate, that a strict client rebuilds every subscribed view
// from the stream: every checksum and every prev_seq is verified on the
// fly, and the final views equal the server's books. Trades are checked
// field by field against the events, with their prev_seq chain; tickers
// against the server's final ticker.
func TestStreamRebuild(t *testing.T) {
	ts := startServer(t, Config{}, symLevels, symOrders)
	gen := newEventGen(1)
	type tradeKey struct {
		symbol string
		seq    uint64
	}
	trades := map[tradeKey]book.Event{} // written before the events are applied
	applyN := func(n int) {
		for range n {
			for _, s := range []string{symLevels, symOrders} {
				ev := gen.next(s, s == symLevels)
				if ev.Kind == book.KindTrade {
					trades[tradeKey{s, ev.Seq}] = ev
				}
				ts.books.apply(ev)
			}
		}
	}
	applyN(400) // books with some depth before anyone subscribes

	plans := [][]streamSub{
		{{symLevels, 1, ""}, {symOrders, 10, "raw"}},
		{{symLevels, 10, ""}, {symOrders, 0, ""}},
		{{symLevels, 0, ""}, {symOrders, 25, "100ms"}},
		{{symLevels, 25, "100ms"}, {symOrders, 1, ""}},
	}
	type conn struct {
		c      *wsClient
		books  map[string]*localBook
		subs   []streamSub
		trades map[string]uint64 // last trade seq per symbol, 0: none yet
		ticker map[string]wireMsg
	}
	var conns []*conn
	for i, k := range clientKinds {
		cn := &conn{c: dial(t, ts.url, k), books: map[string]*localBook{}, subs: plans[i], trades: map[string]uint64{}, ticker: map[string]wireMsg{}}
		for j, sub := range cn.subs {
			iv := ""
			if sub.interval != "" {
				iv = fmt.Sprintf(`,"interval":%q`, sub.interval)
			}
			cn.c.do(fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"book","symbols":[%q],"depth":%d%s}`, j+1, sub.symbol, sub.depth, iv))
			cn.books[sub.symbol] = newLocalBook(sub.symbol, sub.depth)
			snap := cn.c.expect("snapshot")
			if err := cn.books[sub.symbol].apply(snap); err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			ack := cn.c.expect("ack")
			if string(ack.ID) != fmt.Sprint(j+1) || ack.Channel != "book" || len(ack.Symbols) != 1 || ack.Symbols[0] != sub.symbol {
				t.Fatalf("%s: bad ack %s", k, ack.raw)
			}
		}
		cn.c.do(`{"op":"subscribe","id":10,"channel":"trades","symbols":["*"]}`)
		cn.c.do(`{"op":"subscribe","id":11,"channel":"ticker","symbols":["*"]}`)
		conns = append(conns, cn)
	}

	check := func(cn *conn, m wireMsg) error {
		switch m.Type {
		case "snapshot", "update":
			lb := cn.books[m.Symbol]
			if lb == nil {
				return fmt.Errorf("book message of an unsubscribed symbol: %s", m.raw)
			}
			return lb.apply(m)
		case "trade":
			ev, ok := trades[tradeKey{m.Symbol, m.Seq}]
			if !ok {
				return fmt.Errorf("trade of no event: %s", m.raw)
			}
			if m.TradeID != ev.TradeID || m.Price != ev.Price.String() || m.Size != ev.Size.String() || m.Side != ev.Side.String() || m.TS != ev.TS {
				return fmt.Errorf("trade %s differs from event %+v", m.raw, ev)
			}
			if last := cn.trades[m.Symbol]; last != 0 && (m.PrevSeq == nil || *m.PrevSeq != last) {
				return fmt.Errorf("trade prev_seq %v after %d: %s", m.PrevSeq, last, m.raw)
			}
			cn.trades[m.Symbol] = m.Seq
		case "ticker":
			if last, ok := cn.ticker[m.Symbol]; ok && m.Seq < last.Seq {
				return fmt.Errorf("ticker seq %d after %d", m.Seq, last.Seq)
			}
			cn.ticker[m.Symbol] = m
		case "ack":
		default:
			return fmt.Errorf("unexpected message %s", m.raw)
		}
		return nil
	}

	// 2 × 5,200 events more, read by the clients as they come.
	applyN(5200)
	ts.sync(t, symLevels, symOrders)
	for _, cn := range conns {
		// Interval streams flush on their own clock: ping until the local
		// views equal the server's.
		deadline := time.Now().Add(10 * time.Second)
		for id := 100; ; id++ {
			for _, m := range cn.c.drainUntilPong(id) {
				if err := check(cn, m); err != nil {
					t.Fatalf("%s: %v", cn.c.name, err)
				}
			}
			var diff error
			for _, sub := range cn.subs {
				if err := cn.books[sub.symbol].equal(ts.books.snapshot(t, sub.symbol, sub.depth)); err != nil {
					diff = err
				}
			}
			if diff == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", cn.c.name, diff)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, sub := range cn.subs {
			lb := cn.books[sub.symbol]
			least := 50 // an interval stream has one per flush, whatever the events
			if sub.interval == "100ms" {
				least = 1
			}
			if lb.updates < least {
				t.Errorf("%s: only %d updates of %s depth %d", cn.c.name, lb.updates, sub.symbol, sub.depth)
			}
		}
		for _, s := range []string{symLevels, symOrders} {
			var tk book.Ticker
			if err := ts.books.Do(t.Context(), s, func(b *book.Book) { tk = b.Ticker() }); err != nil {
				t.Fatal(err)
			}
			got := cn.ticker[s] // the ticker's seq is that of its last change; the book's may be higher
			if got.Bid != tk.Bid.String() || got.Ask != tk.Ask.String() || got.Last != tk.Last.String() || got.Volume24h != tk.Volume24h.String() {
				t.Errorf("%s: last ticker %s, server has %+v", cn.c.name, got.raw, tk)
			}
			if cn.trades[s] == 0 {
				t.Errorf("%s: no trade of %s", cn.c.name, s)
			}
		}
		cn.c.checkErrs()
	}
	st := ts.Stats()
	if st.Publishes < 10_000 {
		t.Errorf("only %d publishes", st.Publishes)
	}
	t.Logf("publishes %d, encodes %d, deliveries %d, writes %d, wire/raw bytes %d/%d", st.Publishes, st.Encodes, st.Deliveries, st.Writes, st.BytesWire, st.BytesRaw)
}
