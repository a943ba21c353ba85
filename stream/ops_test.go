package stream

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/marketd/marketd/book"
)

// levelEv returns a level event.
func levelEv(symbol string, seq uint64, side book.Side, price, size string) book.Event {
	return book.Event{Kind: book.KindLevel, Symbol: symbol, Seq: seq, TS: int64(seq) * 1000, Side: side, Price: mustNum(price), Size: mustNum(size)}
}

// tradeEv returns a trade event without a maker.
func tradeEv(symbol string, seq uint64, id string, side book.Side, price, size string) book.Event {
	return book.Event{Kind: book.KindTrade, Symbol: symbol, Seq: seq, TS: int64(seq) * 1000, TradeID: id, Side: side, Price: mustNum(price), Size: mustNum(size)}
}

// TestErrors sends every kind of bad request: each gets exactly one error
// with the request's id (when it has a readable one) and the code of the
// contract, and the connection keeps serving.
func TestErrors(t *testing.T) {
	ts := startServer(t, Config{MaxSubscriptions: 2}, symLevels, symOrders)
	for _, k := range clientKinds {
		t.Run(k.String(), func(t *testing.T) {
			c := dial(t, ts.url, k)
			cases := []struct {
				name, msg, code, id string
			}{
				{"not JSON", `hello`, "bad_request", ""},
				{"truncated", `{"op":"subscribe","id":1`, "bad_request", ""},
				{"array", `[1,2]`, "bad_request", ""},
				{"trailing data", `{"op":"ping","id":2} {}`, "bad_request", "2"},
				{"missing op", `{"id":3}`, "bad_request", "3"},
				{"unknown op", `{"op":"nope","id":4}`, "unknown_op", "4"},
				{"unknown channel", `{"op":"subscribe","id":5,"channel":"candles","symbols":["LVL-USD"]}`, "unknown_channel", "5"},
				{"missing channel", `{"op":"subscribe","id":6,"symbols":["LVL-USD"]}`, "bad_request", "6"},
				{"unknown symbol", `{"op":"subscribe","id":7,"channel":"book","symbols":["LVL-USD","NOPE"]}`, "unknown_symbol", "7"},
				{"bad depth", `{"op":"subscribe","id":8,"channel":"book","symbols":["LVL-USD"],"depth":7}`, "bad_request", "8"},
				{"depth as string", `{"op":"subscribe","id":9,"channel":"book","symbols":["LVL-USD"],"depth":"10"}`, "bad_request", "9"},
				{"bad interval", `{"op":"subscribe","id":10,"channel":"book","symbols":["LVL-USD"],"interval":"5s"}`, "bad_request", "10"},
				{"book wildcard", `{"op":"subscribe","id":11,"channel":"book","symbols":["*"]}`, "bad_request", "11"},
				{"no symbols", `{"op":"subscribe","id":12,"channel":"trades","symbols":[]}`, "bad_request", "12"},
				{"empty symbol", `{"op":"subscribe","id":13,"channel":"trades","symbols":[""]}`, "bad_request", "13"},
				{"too many", `{"op":"subscribe","id":14,"channel":"trades","symbols":["LVL-USD","ORD-USD","*"]}`, "too_many_subscriptions", "14"},
				{"snapshot unknown symbol", `{"op":"snapshot","id":15,"symbol":"NOPE"}`, "unknown_symbol", "15"},
				{"snapshot no symbol", `{"op":"snapshot","id":16}`, "bad_request", "16"},
				{"snapshot bad depth", `{"op":"snapshot","id":17,"symbol":"LVL-USD","depth":3}`, "bad_request", "17"},
				{"unsubscribe unknown channel", `{"op":"unsubscribe","id":18,"channel":"x","symbols":["A"]}`, "unknown_channel", "18"},
				{"string id", `{"op":"nope","id":"req-19"}`, "unknown_op", `"req-19"`},
				{"object id", `{"op":"ping","id":{"a":1}}`, "bad_request", ""},
				{"fractional id", `{"op":"ping","id":1.5}`, "bad_request", ""},
			}
			before := ts.Stats().BadMessages
			for _, tc := range cases {
				c.do(tc.msg)
				m := c.expect("error")
				if m.Code != tc.code || string(m.ID) != tc.id || m.Message == "" {
					t.Errorf("%s: %s → %s, want code %s id %q", tc.name, tc.msg, m.raw, tc.code, tc.id)
				}
			}
			// Still serving, and nothing more was sent.
			if extra := c.drainUntilPong(99); len(extra) > 0 {
				t.Errorf("extra messages: %+v", extra)
			}
			after := ts.Stats().BadMessages
			for _, code := range []string{"bad_request", "unknown_op", "unknown_channel", "unknown_symbol", "too_many_subscriptions"} {
				if after[code] <= before[code] {
					t.Errorf("bad_messages{code=%s} did not grow", code)
				}
			}
			// Two subscriptions fit; a third does not, "*" included.
			c.do(`{"op":"subscribe","id":20,"channel":"trades","symbols":["LVL-USD","*"]}`)
			c.expect("ack")
			c.do(`{"op":"subscribe","id":21,"channel":"ticker","symbols":["LVL-USD"]}`)
			if m := c.expect("error"); m.Code != "too_many_subscriptions" || string(m.ID) != "21" {
				t.Errorf("third subscription: %s", m.raw)
			}
			// Re-subscribing what is held does not count twice.
			c.do(`{"op":"subscribe","id":22,"channel":"trades","symbols":["LVL-USD"]}`)
			if m := c.expect("ack"); string(m.ID) != "22" {
				t.Errorf("resubscribe: %s", m.raw)
			}
			c.checkErrs()
		})
	}
}

// TestOps covers the happy paths of every op: acks echo id, channel and
// symbols after the op's data; the one-off snapshot; ping; unsubscribe
// stops a stream; ticker and trades for a symbol and for "*", including a
// symbol that appears after the subscription.
func TestOps(t *testing.T) {
	ts := startServer(t, Config{}, symLevels, symOrders)
	ts.books.apply(levelEv(symLevels, 1, book.Buy, "100", "1"))
	ts.books.apply(levelEv(symLevels, 2, book.Sell, "101", "2"))
	ts.books.apply(tradeEv(symLevels, 3, "t1", book.Buy, "101", "0.5"))
	ts.sync(t, symLevels)
	for _, k := range clientKinds {
		t.Run(k.String(), func(t *testing.T) {
			c := dial(t, ts.url, k)

			c.do(`{"op":"ping","id":1}`)
			if m := c.expect("pong"); string(m.ID) != "1" || m.TS == 0 {
				t.Errorf("pong: %s", m.raw)
			}

			c.do(`{"op":"snapshot","id":2,"symbol":"LVL-USD","depth":1}`)
			s := c.expect("snapshot")
			if string(s.ID) != "2" || s.Channel != "book" || s.Seq != 3 || s.Checksum == nil ||
				!slices.EqualFunc(s.Bids, [][]string{{"100", "1"}}, slices.Equal) || !slices.EqualFunc(s.Asks, [][]string{{"101", "2"}}, slices.Equal) {
				t.Errorf("snapshot op: %s", s.raw)
			}
			if a := c.expect("ack"); string(a.ID) != "2" || a.Op != "snapshot" || a.Symbol != symLevels {
				t.Errorf("snapshot ack: %s", a.raw)
			}

			c.do(`{"op":"subscribe","id":3,"channel":"ticker","symbols":["LVL-USD"]}`)
			tk := c.expect("ticker")
			if tk.Symbol != symLevels || tk.Bid != "100" || tk.Ask != "101" || tk.Last != "101" || tk.Volume24h != "0.5" {
				t.Errorf("ticker at subscribe: %s", tk.raw)
			}
			if a := c.expect("ack"); string(a.ID) != "3" || a.Op != "subscribe" || a.Channel != "ticker" || !slices.Equal(a.Symbols, []string{symLevels}) {
				t.Errorf("ticker ack: %s", a.raw)
			}
			c.do(`{"op":"subscribe","id":4,"channel":"trades","symbols":["*"]}`)
			if a := c.expect("ack"); string(a.ID) != "4" || !slices.Equal(a.Symbols, []string{"*"}) {
				t.Errorf("trades ack: %s", a.raw)
			}
			c.do(`{"op":"unsubscribe","id":5,"channel":"ticker","symbols":["LVL-USD","ORD-USD"]}`)
			if a := c.expect("ack"); string(a.ID) != "5" || a.Op != "unsubscribe" || !slices.Equal(a.Symbols, []string{symLevels, symOrders}) {
				t.Errorf("unsubscribe ack: %s", a.raw)
			}
			c.checkErrs()
		})
	}
}

// TestWildcard checks that "*" subscribers of ticker and trades get every
// symbol, including one whose first event comes after the subscription,
// that a trade's prev_seq chains, and that unsubscribing "*" stops both.
func TestWildcard(t *testing.T) {
	ts := startServer(t, Config{}, symLevels)
	ts.books.apply(levelEv(symLevels, 1, book.Buy, "100", "1"))
	ts.sync(t, symLevels)
	c := dial(t, ts.url, clientKinds[0])
	c.do(`{"op":"subscribe","id":1,"channel":"ticker","symbols":["*"]}`)
	if m := c.expect("ticker"); m.Symbol != symLevels || m.Bid != "100" {
		t.Fatalf("current ticker: %s", m.raw)
	}
	c.expect("ack")
	c.do(`{"op":"subscribe","id":2,"channel":"trades","symbols":["*"]}`)
	c.expect("ack")

	const sym = "NEW-USD"
	ts.books.add(sym)
	ts.books.apply(levelEv(sym, 10, book.Sell, "5", "3"))
	ts.books.apply(tradeEv(sym, 11, "n1", book.Buy, "5", "1"))
	ts.books.apply(tradeEv(sym, 14, "n2", book.Sell, "4.5", "2"))
	ts.books.apply(tradeEv(symLevels, 2, "l1", book.Sell, "100", "0.25"))
	ts.sync(t, sym, symLevels)
	got := c.drainUntilPong(3)
	var seen []string
	for _, m := range got {
		switch m.Type {
		case "ticker":
			seen = append(seen, fmt.Sprintf("ticker %s %d ask=%s last=%s", m.Symbol, m.Seq, m.Ask, m.Last))
		case "trade":
			seen = append(seen, fmt.Sprintf("trade %s %d prev=%d %s %s %s %s", m.Symbol, m.Seq, *m.PrevSeq, m.TradeID, m.Side, m.Price, m.Size))
		default:
			t.Errorf("unexpected %s", m.raw)
		}
	}
	want := []string{
		"ticker NEW-USD 10 ask=5 last=",
		"trade NEW-USD 11 prev=0 n1 buy 5 1",
		"ticker NEW-USD 11 ask=5 last=5",
		"trade NEW-USD 14 prev=11 n2 sell 4.5 2",
		"ticker NEW-USD 14 ask=5 last=4.5",
		"trade LVL-USD 2 prev=0 l1 sell 100 0.25",
		"ticker LVL-USD 2 ask= last=100",
	}
	// Each symbol's stream is in order; two symbols interleave freely.
	bySymbol := func(s string) string { return strings.Fields(s)[1] }
	slices.SortStableFunc(seen, func(a, b string) int { return strings.Compare(bySymbol(a), bySymbol(b)) })
	slices.SortStableFunc(want, func(a, b string) int { return strings.Compare(bySymbol(a), bySymbol(b)) })
	if !slices.Equal(seen, want) {
		t.Errorf("got\n%q\nwant\n%q", seen, want)
	}

	c.do(`{"op":"unsubscribe","id":4,"channel":"trades","symbols":["*"]}`)
	c.expect("ack")
	c.do(`{"op":"unsubscribe","id":5,"channel":"ticker","symbols":["*"]}`)
	c.expect("ack")
	ts.books.apply(tradeEv(sym, 20, "n3", book.Sell, "4", "1"))
	ts.sync(t, sym)
	if extra := c.drainUntilPong(6); len(extra) > 0 {
		t.Errorf("messages after unsubscribing: %+v", extra)
	}
	c.checkErrs()
}

// TestDepthViews checks the exact updates of levels entering and leaving
// a depth-1 and a depth-10 view, and that updates which do not change a
// view send nothing on it while the chain stays intact.
func TestDepthViews(t *testing.T) {
	ts := startServer(t, Config{}, symLevels)
	ts.books.apply(levelEv(symLevels, 1, book.Buy, "100", "1"))
	ts.sync(t, symLevels)
	c1 := dial(t, ts.url, clientKinds[1])
	c10 := dial(t, ts.url, clientKinds[3])
	lb1, lb10 := newLocalBook(symLevels, 1), newLocalBook(symLevels, 10)
	for _, x := range []struct {
		c     *wsClient
		lb    *localBook
		depth int
	}{{c1, lb1, 1}, {c10, lb10, 10}} {
		x.c.do(fmt.Sprintf(`{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD"],"depth":%d}`, x.depth))
		if err := x.lb.apply(x.c.expect("snapshot")); err != nil {
			t.Fatal(err)
		}
		x.c.expect("ack")
	}
	ts.books.apply(levelEv(symLevels, 2, book.Buy, "101", "2"))  // enters depth 1, pushes 100 out of it
	ts.books.apply(levelEv(symLevels, 3, book.Buy, "99", "3"))   // below the top: depth 1 unchanged
	ts.books.apply(levelEv(symLevels, 4, book.Buy, "101", "0"))  // leaves: 100 re-enters depth 1
	ts.books.apply(levelEv(symLevels, 5, book.Sell, "102", "1")) // an ask
	ts.sync(t, symLevels)
	want := map[int][]string{
		1: {
			`{"seq":2,"prev":1,"bids":[["101","2"],["100","0"]],"asks":[]}`,
			`{"seq":4,"prev":2,"bids":[["101","0"],["100","1"]],"asks":[]}`,
			`{"seq":5,"prev":4,"bids":[],"asks":[["102","1"]]}`,
		},
		10: {
			`{"seq":2,"prev":1,"bids":[["101","2"]],"asks":[]}`,
			`{"seq":3,"prev":2,"bids":[["99","3"]],"asks":[]}`,
			`{"seq":4,"prev":3,"bids":[["101","0"]],"asks":[]}`,
			`{"seq":5,"prev":4,"bids":[],"asks":[["102","1"]]}`,
		},
	}
	for _, x := range []struct {
		c     *wsClient
		lb    *localBook
		depth int
	}{{c1, lb1, 1}, {c10, lb10, 10}} {
		var got []string
		for _, m := range x.c.drainUntilPong(2) {
			if err := x.lb.apply(m); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf(`{"seq":%d,"prev":%d,"bids":%s,"asks":%s}`, m.Seq, *m.PrevSeq, levelsJSON(m.Bids), levelsJSON(m.Asks)))
		}
		if !slices.Equal(got, want[x.depth]) {
			t.Errorf("depth %d:\ngot  %q\nwant %q", x.depth, got, want[x.depth])
		}
		if err := x.lb.equal(ts.books.snapshot(t, symLevels, x.depth)); err != nil {
			t.Error(err)
		}
	}
}

func levelsJSON(levels [][]string) string {
	s := "["
	for i, l := range levels {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("[%q,%q]", l[0], l[1])
	}
	return s + "]"
}

// TestResume checks resume by seq: exact when the stream's ring still
// holds the message after the client's seq (the missed updates are sent
// and chain from it), exact with nothing to send when the client is up to
// date, and a snapshot when the ring no longer reaches back.
func TestResume(t *testing.T) {
	ts := startServer(t, Config{RingSize: 8}, symLevels)
	seq := uint64(0)
	next := func(n int) {
		for range n {
			seq++
			ts.books.apply(levelEv(symLevels, seq, book.Buy, fmt.Sprint(90+seq%10), fmt.Sprint(seq)))
		}
		ts.sync(t, symLevels)
	}
	next(3)
	a := dial(t, ts.url, clientKinds[0])
	lb := newLocalBook(symLevels, 10)
	a.do(`{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD"],"depth":10}`)
	if err := lb.apply(a.expect("snapshot")); err != nil {
		t.Fatal(err)
	}
	a.expect("ack")
	next(2)
	for _, m := range a.drainUntilPong(2) {
		if err := lb.apply(m); err != nil {
			t.Fatal(err)
		}
	}
	a.close()
	held := lb.seq

	resume := func(c *wsClient, id int, from uint64) (wireMsg, []wireMsg) {
		c.do(fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"book","symbols":["LVL-USD"],"depth":10,"resume":{"LVL-USD":%d}}`, id, from))
		var before []wireMsg
		for {
			m := c.next()
			if m.Type == "ack" {
				return m, before
			}
			before = append(before, m)
		}
	}

	// Exact: 5 updates missed, the ring (8) holds them.
	next(5)
	b := dial(t, ts.url, clientKinds[3])
	ack, missed := resume(b, 3, held)
	if ack.Resumed[symLevels] != "exact" || len(missed) != 5 {
		t.Fatalf("resume: ack %s after %d messages, want exact after 5", ack.raw, len(missed))
	}
	for _, m := range missed {
		if err := lb.apply(m); err != nil {
			t.Fatalf("resumed stream: %v", err)
		}
	}
	if err := lb.equal(ts.books.snapshot(t, symLevels, 10)); err != nil {
		t.Fatal(err)
	}
	b.close()

	// Exact, nothing missed.
	c := dial(t, ts.url, clientKinds[2])
	ack, missed = resume(c, 4, lb.seq)
	if ack.Resumed[symLevels] != "exact" || len(missed) != 0 {
		t.Fatalf("up-to-date resume: ack %s after %v", ack.raw, missed)
	}
	next(1)
	for _, m := range c.drainUntilPong(5) {
		if err := lb.apply(m); err != nil {
			t.Fatalf("after an up-to-date resume: %v", err)
		}
	}
	c.close()

	// Snapshot: 20 missed, the ring holds 8.
	next(20)
	d := dial(t, ts.url, clientKinds[1])
	ack, missed = resume(d, 6, lb.seq)
	if ack.Resumed[symLevels] != "snapshot" || len(missed) != 1 || missed[0].Type != "snapshot" {
		t.Fatalf("stale resume: ack %s after %v", ack.raw, missed)
	}
	if err := lb.apply(missed[0]); err != nil {
		t.Fatal(err)
	}
	if err := lb.equal(ts.books.snapshot(t, symLevels, 10)); err != nil {
		t.Fatal(err)
	}
	// A seq the stream never had is a snapshot too.
	ack, _ = resume(d, 7, 1<<40)
	if ack.Resumed[symLevels] != "snapshot" {
		t.Errorf("unknown seq: %s", ack.raw)
	}
	d.checkErrs()
}
