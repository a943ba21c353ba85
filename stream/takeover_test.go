package stream

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestNegotiateTakeover checks the answer to each offer of the negotiation
// table with Config.ContextTakeover: server_no_context_takeover is answered
// only when the client asked for it.
func TestNegotiateTakeover(t *testing.T) {
	ts := startServer(t, Config{ContextTakeover: true}, symLevels)
	for _, tc := range negotiationCases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.answer
			if want != "" && !strings.Contains(strings.Join(tc.offer, ","), "server_no_context_takeover") {
				want = strings.Replace(want, "; server_no_context_takeover", "", 1)
			}
			dialOffer(t, ts, tc.offer, want)
		})
	}
}

// takeoverConn is a raw client of TestContextTakeover with its own view of
// the streams it subscribed.
type takeoverConn struct {
	name   string
	r      *rawConn
	books  map[string]*localBook
	trades map[string]uint64 // last trade seq per symbol
}

// check applies one message to the client's view.
func (c *takeoverConn) check(m wireMsg) error {
	switch m.Type {
	case "snapshot", "update":
		lb := c.books[m.Symbol]
		if lb == nil {
			return fmt.Errorf("book message of an unsubscribed symbol: %s", m.raw)
		}
		return lb.apply(m)
	case "trade":
		if last := c.trades[m.Symbol]; last != 0 && (m.PrevSeq == nil || *m.PrevSeq != last) {
			return fmt.Errorf("trade prev_seq %v after %d: %s", m.PrevSeq, last, m.raw)
		}
		c.trades[m.Symbol] = m.Seq
	case "ack", "ticker", "pong":
	default:
		return fmt.Errorf("unexpected message %s", m.raw)
	}
	return nil
}

// TestContextTakeover streams random book and trade events to raw clients
// that keep a DEFLATE window the way RFC 7692 says (raw_test.go), with
// context takeover, without it, with a 512-byte window and uncompressed:
// every message decodes to valid JSON, every book is rebuilt with its
// seq chain and checksums and equals the server's, the book deltas of a
// takeover connection take well under half their JSON bytes, and the
// compressions grow with the messages and their contexts, not with the
// subscribers.
func TestContextTakeover(t *testing.T) {
	ts := startServer(t, Config{ContextTakeover: true}, symLevels, symOrders)
	gen := newEventGen(7)
	publish := func(n int) {
		for range n {
			for _, s := range []string{symLevels, symOrders} {
				ts.books.apply(gen.next(s, s == symLevels))
			}
		}
	}
	publish(200)
	ts.sync(t, symLevels, symOrders)

	const one = `{"op":"subscribe","id":1,"channel":"book","symbols":["` + symLevels + `"],"depth":10}`
	all := []string{one,
		`{"op":"subscribe","id":2,"channel":"book","symbols":["` + symOrders + `"],"depth":0}`,
		`{"op":"subscribe","id":3,"channel":"trades","symbols":["*"]}`,
		`{"op":"subscribe","id":4,"channel":"ticker","symbols":["*"]}`,
	}
	cases := []struct {
		name, offer, answer string
		subs                []string
		copies              int
	}{
		{"takeover", "permessage-deflate", "permessage-deflate; client_no_context_takeover", []string{one}, 10},
		{"takeover mixed", "permessage-deflate; client_max_window_bits", "permessage-deflate; client_no_context_takeover", all, 1},
		{"no takeover asked", "permessage-deflate; server_no_context_takeover", canonicalAnswer, []string{one}, 1},
		{"no takeover mixed", "permessage-deflate; server_no_context_takeover", canonicalAnswer, all, 1},
		{"512-byte window", "permessage-deflate; server_max_window_bits=9", "permessage-deflate; client_no_context_takeover; server_max_window_bits=9", all, 1},
		{"uncompressed", "", "", all, 1},
	}
	var conns []*takeoverConn
	for _, tc := range cases {
		for i := range tc.copies {
			var header []string
			if tc.offer != "" {
				header = append(header, "Sec-WebSocket-Extensions: "+tc.offer)
			}
			c := &takeoverConn{name: fmt.Sprintf("%s #%d", tc.name, i), r: rawDial(t, ts, 0, header...), books: map[string]*localBook{}, trades: map[string]uint64{}}
			if got := c.r.resp.Header.Get("Sec-WebSocket-Extensions"); got != tc.answer {
				t.Fatalf("%s: answer %q, want %q", c.name, got, tc.answer)
			}
			for _, sub := range tc.subs {
				c.r.sendText(sub)
			}
			c.books[symLevels] = newLocalBook(symLevels, 10)
			if len(tc.subs) > 1 {
				c.books[symOrders] = newLocalBook(symOrders, 0)
			}
			conns = append(conns, c)
		}
	}
	// sync reads every connection up to the pong of a ping sent now.
	pings := 100
	sync := func() {
		ts.sync(t, symLevels, symOrders)
		pings++
		for _, c := range conns {
			c.r.sendText(fmt.Sprintf(`{"op":"ping","id":%d}`, pings))
			_, err := c.r.readMessages(5*time.Second, func(m wireMsg) bool {
				if err := c.check(m); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				return m.Type != "pong" || string(m.ID) != fmt.Sprint(pings)
			})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
	}
	sync()
	before := ts.Stats()
	wire0 := make([]int, len(conns))
	plain0 := make([]int, len(conns))
	for i, c := range conns {
		wire0[i], plain0[i] = c.r.wireText, c.r.plainText
	}
	for range 10 {
		publish(100)
		sync()
	}
	after := ts.Stats()

	for i, c := range conns {
		for sym, lb := range c.books {
			if lb.updates < 100 {
				t.Errorf("%s: %s: %d updates", c.name, sym, lb.updates)
			}
			if err := lb.equal(ts.books.snapshot(t, sym, lb.depth)); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
		ratio := float64(c.r.wireText-wire0[i]) / float64(c.r.plainText-plain0[i])
		t.Logf("%s: text bytes on the wire / JSON = %.1f %%", c.name, 100*ratio)
		switch {
		case strings.HasPrefix(c.name, "takeover #") && ratio > 0.45,
			strings.HasPrefix(c.name, "no takeover asked") && ratio < 0.7,
			strings.HasPrefix(c.name, "uncompressed") && ratio != 1:
			t.Errorf("%s: wire/JSON %.2f", c.name, ratio)
		}
	}
	enc, cmp := after.Encodes-before.Encodes, after.Compressions-before.Compressions
	t.Logf("%d messages encoded, %d compressions for %d compressed connections", enc, cmp, len(conns)-1)
	// Per message: at most one frame on its own and one per distinct
	// context (here: the ten identical clients share theirs; compressing
	// per connection would take 14 per message).
	if cmp > 6*enc {
		t.Errorf("%d compressions for %d messages", cmp, enc)
	}
}

// TestReplaceHeader checks the rewrite of gws's 101 response with the
// server's own extension answer (negotiate.go).
func TestReplaceHeader(t *testing.T) {
	const head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{head + "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\nX: y\r\n\r\n",
			head + "Sec-WebSocket-Extensions: A\r\nX: y\r\n\r\n", true},
		{head + "sec-websocket-extensions:permessage-deflate\r\n\r\n", head + "Sec-WebSocket-Extensions: A\r\n\r\n", true},
		{head + "\r\nSec-WebSocket-Extensions: in the body\r\n", "", false},
		{head + "X-Sec-WebSocket-Extensions: no\r\n\r\n", "", false},
		{head, "", false},
	} {
		got, ok := replaceHeader([]byte(tc.in), "Sec-WebSocket-Extensions", "A")
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("replaceHeader(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
