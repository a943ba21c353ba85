package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
)

// startInstance starts a marketd reading the broker at brokers, with the
// extra flags, and returns it with a function that stops it gracefully
// (also called when the test ends).
func startInstance(t *testing.T, brokers string, extra ...string) (*service, func()) {
	t.Helper()
	return runService(t, append([]string{"-listen", "127.0.0.1:0", "-brokers", brokers, "-simulate=false"}, extra...))
}

// wireMsg is what the tests read of a server message.
type wireMsg struct {
	Type     string            `json:"type"`
	ID       int               `json:"id"`
	Symbol   string            `json:"symbol"`
	Seq      uint64            `json:"seq"`
	PrevSeq  *uint64           `json:"prev_seq"`
	Bids     [][2]string       `json:"bids"`
	Asks     [][2]string       `json:"asks"`
	Checksum uint32            `json:"checksum"`
	Resumed  map[string]string `json:"resumed"`
	Code     string            `json:"code"`
}

// follow reads ws, applying every book message to the client's books (by
// symbol), until stop says so or the connection ends; it returns the acks.
func follow(t *testing.T, ws *testWS, books map[string]*wireBook, stop func(m wireMsg) bool) (acks []wireMsg, ended bool) {
	t.Helper()
	for {
		var raw []byte
		select {
		case raw = <-ws.msgs:
		case <-time.After(15 * time.Second):
			t.Fatal("no message for 15s")
		}
		if raw == nil {
			return acks, true
		}
		var m wireMsg
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("message %s: %v", raw, err)
		}
		switch m.Type {
		case "error":
			t.Fatalf("error: %s", raw)
		case "ack":
			acks = append(acks, m)
		case "snapshot", "update":
			if err := books[m.Symbol].apply(m); err != nil {
				t.Fatal(err)
			}
		}
		if stop(m) {
			return acks, false
		}
	}
}

// TestInstances runs two marketd instances on one topic of one broker:
// they serve the same books (seq and checksum); a client of the first,
// which is then stopped, resumes on the second with no gap; the second
// writes no dead letters (-dlq=false); a third instance reading a subset
// of the partitions serves only those partitions' symbols, from the
// checkpoints the others wrote.
func TestInstances(t *testing.T) {
	br, err := feed.StartBroker(context.Background(), feed.BrokerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	brokers := br.Addr()
	topic := feed.DefaultTopic

	a, stopA := startInstance(t, brokers)
	b, _ := startInstance(t, brokers, "-dlq=false")
	const n1 = 5000
	produceSim(t, brokers, topic, 31, n1)
	waitIngested(t, a, n1)
	waitIngested(t, b, n1)

	// Identical books: GET /v1/book/{symbol} answers the same bytes.
	syms := a.ingester.Symbols()
	if len(syms) != 4 || !slices.Equal(syms, b.ingester.Symbols()) {
		t.Fatalf("symbols %v and %v", syms, b.ingester.Symbols())
	}
	for _, s := range syms {
		for _, depth := range []string{"0", "10"} {
			ba, bb := getBody(t, a.URL("/v1/book/"+s+"?depth="+depth)), getBody(t, b.URL("/v1/book/"+s+"?depth="+depth))
			if !bytes.Equal(ba, bb) {
				t.Errorf("%s depth %s: instance A serves\n%s\ninstance B\n%s", s, depth, ba, bb)
			}
		}
	}
	// Only A dead-letters the bad records.
	sa, sb := a.ingester.Stats(), b.ingester.Stats()
	if sa.BadTotal() == 0 || sa.BadTotal() != sb.BadTotal() || sb.DLQWrites != 0 {
		t.Errorf("bad records: A %d, B %d; B wrote %d dead letters, want 0", sa.BadTotal(), sb.BadTotal(), sb.DLQWrites)
	}
	checkFor(t, 10*time.Second, func() error {
		if w := a.ingester.Stats().DLQWrites; w != sa.BadTotal() {
			return fmt.Errorf("A wrote %d dead letters of %d", w, sa.BadTotal())
		}
		return nil
	})

	// Another client of B keeps B's depth-10 BTC-USD stream (and its ring
	// of recent updates) alive, as a load balancer spreading clients would.
	anchor := dialTestWS(t, b.URL("/v1/ws"))
	anchor.send(`{"op":"subscribe","id":1,"channel":"book","symbols":["BTC-USD"],"depth":10}`)
	anchor.until("ack", 5*time.Second)

	// The client subscribes to A: BTC-USD at depth 10, ETH-USD at depth 25
	// (which nobody on B follows), while the market moves.
	books := map[string]*wireBook{"BTC-USD": newWireBook(), "ETH-USD": newWireBook()}
	ws := dialTestWS(t, a.URL("/v1/ws"))
	ws.send(`{"op":"subscribe","id":1,"channel":"book","symbols":["BTC-USD"],"depth":10}`)
	ws.send(`{"op":"subscribe","id":2,"channel":"book","symbols":["ETH-USD"],"depth":25}`)
	acks := 0
	follow(t, ws, books, func(m wireMsg) bool {
		if m.Type == "ack" {
			acks++
		}
		return acks == 2
	})
	const n2 = 4000
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		err := feed.Simulate(context.Background(), feed.SimConfig{Brokers: []string{brokers}, Topic: topic, Rate: 2000, Seed: 32, BadEvery: 50, Limit: n2, Logger: discardLogger()})
		if err != nil {
			t.Errorf("produce: %v", err)
		}
	}()
	follow(t, ws, books, func(wireMsg) bool { return books["BTC-USD"].updates >= 30 })

	// A stops (its clients get 1001); the client follows what A still
	// sends, then goes to B with resume.
	stopA()
	if _, ended := follow(t, ws, books, func(wireMsg) bool { return false }); !ended {
		t.Fatal("A's connection did not end")
	}
	last := map[string]uint64{"BTC-USD": books["BTC-USD"].seq, "ETH-USD": books["ETH-USD"].seq}
	before := books["BTC-USD"].updates
	// B must have applied what the client holds before it can resume it.
	checkFor(t, 10*time.Second, func() error {
		for s, seq := range last {
			var at uint64
			if err := b.ingester.Do(t.Context(), s, func(bk *book.Book) { at = bk.Seq() }); err != nil || at < seq {
				return fmt.Errorf("B has %s at seq %d, the client at %d (%v)", s, at, seq, err)
			}
		}
		return nil
	})
	ws = dialTestWS(t, b.URL("/v1/ws"))
	ws.send(fmt.Sprintf(`{"op":"subscribe","id":3,"channel":"book","symbols":["BTC-USD"],"depth":10,"resume":{"BTC-USD":%d}}`, last["BTC-USD"]))
	ws.send(fmt.Sprintf(`{"op":"subscribe","id":4,"channel":"book","symbols":["ETH-USD"],"depth":25,"resume":{"ETH-USD":%d}}`, last["ETH-USD"]))
	var got []wireMsg
	got, _ = follow(t, ws, books, func(m wireMsg) bool { return m.Type == "ack" && m.ID == 4 })
	if len(got) != 2 || got[0].Resumed["BTC-USD"] != "exact" || got[1].Resumed["ETH-USD"] == "" {
		t.Fatalf("resume acks %+v: want BTC-USD exact (B follows that stream), ETH-USD exact or snapshot", got)
	}
	// The rest of the market, then everything B published.
	<-produced
	waitIngested(t, b, n1+n2)
	ws.send(`{"op":"ping","id":5}`)
	follow(t, ws, books, func(m wireMsg) bool { return m.Type == "pong" })
	t.Logf("resumed %v %v; BTC-USD updates %d on A, %d on B", got[0].Resumed, got[1].Resumed, before, books["BTC-USD"].updates-before)
	if books["BTC-USD"].updates-before < 30 {
		t.Errorf("only %d BTC-USD updates after the switch", books["BTC-USD"].updates-before)
	}
	// The client's books are B's.
	for s, depth := range map[string]int{"BTC-USD": 10, "ETH-USD": 25} {
		var snap book.Snapshot
		if err := b.ingester.Do(t.Context(), s, func(bk *book.Book) { snap = bk.Snapshot(depth) }); err != nil {
			t.Fatal(err)
		}
		held := map[book.Side]map[string]string{book.Buy: books[s].bids, book.Sell: books[s].asks}
		for side, lv := range map[book.Side][]book.Level{book.Buy: snap.Bids, book.Sell: snap.Asks} {
			if len(lv) != len(held[side]) {
				t.Fatalf("%s: the client holds %d %s levels, B %d", s, len(held[side]), side, len(lv))
			}
			for _, l := range lv {
				if held[side][l.Price.String()] != l.Size.String() {
					t.Errorf("%s: level %s is %q at the client, %s at B", s, l.Price, held[side][l.Price.String()], l.Size)
				}
			}
		}
	}

	// C reads only partition 1 (BTC-USD and DOGE-USD, by the simulator's
	// key hash), starting from the checkpoints A and B wrote.
	c, _ := startInstance(t, brokers, "-partitions", "1")
	checkFor(t, 20*time.Second, c.ready)
	want := []string{"BTC-USD", "DOGE-USD"}
	for _, s := range want {
		if p := symbolPartition(b, s); p != 1 {
			t.Fatalf("%s is in partition %d", s, p)
		}
	}
	if got := c.ingester.Symbols(); !slices.Equal(got, want) {
		t.Errorf("C serves %v, want %v", got, want)
	}
	for _, s := range want {
		if bc, bb := getBody(t, c.URL("/v1/book/"+s+"?depth=0")), getBody(t, b.URL("/v1/book/"+s+"?depth=0")); !bytes.Equal(bc, bb) {
			t.Errorf("%s: C serves\n%s\nB\n%s", s, bc, bb)
		}
	}
	if resp, err := http.Get(c.URL("/v1/book/ETH-USD")); err != nil {
		t.Errorf("C on ETH-USD: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("C on ETH-USD: %s, want 404", resp.Status)
		}
	}
	t.Logf("C: %+v", c.ingester.Stats().Partitions)
	if s := c.ingester.Stats(); s.Restored != 2 || s.Records >= uint64(s.Partitions[0].Offset) {
		t.Errorf("C restored %d books and read %d records of %d: want 2 books and a tail", s.Restored, s.Records, s.Partitions[0].Offset)
	}
}
