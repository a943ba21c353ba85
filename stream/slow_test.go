package stream

import (
	"fmt"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
)

// slowDriver publishes rounds of level events and trades (which are never
// dropped) on symLevels.
type slowDriver struct {
	ts     *testServer
	gen    *eventGen
	seq    uint64
	trades int
}

// round publishes n random events, each followed by a trade with a
// probability of tradePct percent.
func (d *slowDriver) round(n, tradePct int) {
	for range n {
		ev := d.gen.next(symLevels, true)
		if ev.Kind == book.KindTrade {
			d.trades++
		}
		d.seq = ev.Seq
		d.ts.books.apply(ev)
		if d.gen.rng.IntN(100) < tradePct {
			d.gen.seq[symLevels]++
			d.seq = d.gen.seq[symLevels]
			d.trades++
			d.ts.books.apply(tradeEv(symLevels, d.seq, fmt.Sprintf("s%d", d.seq), book.Buy, "1000", "0.1"))
		}
	}
}

// readAcks reads a raw client's messages until it has n acks.
func readAcks(t *testing.T, r *rawConn, n int, each func(wireMsg) error) {
	t.Helper()
	acks := 0
	if _, err := r.readMessages(5*time.Second, func(m wireMsg) bool {
		if err := each(m); err != nil {
			t.Fatal(err)
		}
		if m.Type == "ack" {
			acks++
		}
		return acks < n
	}); err != nil {
		t.Fatal(err)
	}
}

// streamChecker follows the book and trades streams of one client.
type streamChecker struct {
	lb        *localBook
	trades    int
	lastTrade uint64
	notices   int
	conflated int
	snapshots int
}

func (sc *streamChecker) check(m wireMsg) error {
	switch m.Type {
	case "snapshot":
		sc.snapshots++
		return sc.lb.apply(m)
	case "update":
		if m.Conflated {
			sc.conflated++
		}
		return sc.lb.apply(m)
	case "trade":
		if sc.lastTrade != 0 && *m.PrevSeq != sc.lastTrade {
			return fmt.Errorf("trade prev_seq %d after %d", *m.PrevSeq, sc.lastTrade)
		}
		sc.lastTrade = m.Seq
		sc.trades++
	case "notice":
		if m.Code != "conflated" || m.Symbol != symLevels {
			return fmt.Errorf("bad notice %s", m.raw)
		}
		sc.notices++
	case "ack", "ticker", "pong":
	default:
		return fmt.Errorf("unexpected %s", m.raw)
	}
	return nil
}

// TestSlowConsumerClosed has one client that never reads (a tiny receive
// buffer) among healthy ones while a publisher runs: the healthy clients
// get every message, the stalled one is conflated and then closed with
// 4008 once its queue passes the hard limit, and the memory queued stays
// bounded by that limit.
func TestSlowConsumerClosed(t *testing.T) {
	const soft, hard = 128 << 10, 384 << 10
	// A small kernel send buffer: what the kernel holds is not queued. A
	// long write timeout: the stalled client reads only at the end.
	ts := startServer(t, Config{QueueSoftLimit: soft, QueueHardLimit: hard, SendBuffer: 16 << 10, WriteTimeout: time.Minute, RateLimit: 1e6}, symLevels)
	d := &slowDriver{ts: ts, gen: newEventGen(7)}
	d.round(200, 0)
	ts.sync(t, symLevels)

	subscribe := `{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD"],"depth":0}`
	trades := `{"op":"subscribe","id":2,"channel":"trades","symbols":["*"]}`
	var healthy []*wsClient
	var checkers []*streamChecker
	for _, k := range []clientKind{{"coder", true}, {"gws", false}} {
		c := dial(t, ts.url, k)
		sc := &streamChecker{lb: newLocalBook(symLevels, 0)}
		c.do(subscribe)
		if err := sc.check(c.expect("snapshot")); err != nil {
			t.Fatal(err)
		}
		c.expect("ack")
		c.do(trades)
		c.expect("ack")
		healthy, checkers = append(healthy, c), append(checkers, sc)
	}
	stalled := rawDial(t, ts, 128)
	stalledChecker := &streamChecker{lb: newLocalBook(symLevels, 0)}
	stalled.sendText(subscribe)
	stalled.sendText(trades)
	stalled.sendText(`{"op":"subscribe","id":3,"channel":"ticker","symbols":["*"]}`)
	readAcks(t, stalled, 3, stalledChecker.check) // and then it reads no more

	tradesBefore := d.trades
	var maxQueued int64
	for i := 0; ts.Stats().SlowConsumers == 0; i++ {
		if i == 1000 {
			t.Fatalf("no slow consumer after %d rounds: %+v", i, ts.Stats())
		}
		d.round(40, 100)
		ts.sync(t, symLevels)
		maxQueued = max(maxQueued, ts.Stats().QueuedBytes)
		// The healthy clients read the round before the next (a publisher
		// faster than a client would conflate it, rightly).
		for j, c := range healthy {
			for _, m := range c.drainUntilPong(1000 + i) {
				if err := checkers[j].check(m); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
			}
		}
	}
	d.round(20, 100) // the publisher goes on, unaffected
	ts.sync(t, symLevels)
	if limit := int64(hard + 64<<10); maxQueued > limit {
		t.Errorf("%d bytes queued, more than the hard limit allows (%d)", maxQueued, limit)
	}
	st := ts.Stats()
	if st.Conflations < 1 {
		t.Errorf("the stalled client was not conflated first: %+v", st)
	}

	for j, c := range healthy {
		for _, m := range c.drainUntilPong(50) {
			if err := checkers[j].check(m); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if err := checkers[j].lb.equal(ts.books.snapshot(t, symLevels, 0)); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if got, want := checkers[j].trades, d.trades-tradesBefore; got != want {
			t.Errorf("%s: %d trades, want %d", c.name, got, want)
		}
		if checkers[j].notices+checkers[j].conflated > 0 {
			t.Errorf("%s: a healthy client was conflated", c.name)
		}
		c.checkErrs()
	}

	// The stalled client finally reads: what was in flight, the notice
	// that its stream was conflated, then 4008.
	sc := stalledChecker
	code, err := stalled.readMessages(10*time.Second, func(m wireMsg) bool {
		if err := sc.check(m); err != nil {
			t.Errorf("stalled client: %v", err)
		}
		return true
	})
	if err != nil || code != codeSlowConsumer {
		t.Fatalf("stalled client: close %d, %v; want 4008", code, err)
	}
	// Its conflated notice was queued, and dropped with the queue when the
	// hard limit closed it: the metrics tell.
	stalled.nc.Close()
	waitFor(t, 5*time.Second, "the slow consumer close to be counted", func() bool {
		st := ts.Stats()
		return st.Closes["slow_consumer"] == 1 && st.SlowConsumers == 1 && st.Connections == 2
	})
}

// memberState reports whether the only member of a raw book group is
// behind, and whether the group's ring still holds what it missed.
func memberState(ts *testServer, symbol string, depth int) (behind, covered bool) {
	t := ts.hub.topic(symbol)
	view, _ := book.ViewIndex(depth)
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.raw[view]
	if g == nil || len(g.members) != 1 || !g.members[0].behind {
		return false, false
	}
	_, covered = g.ring.after(g.members[0].since)
	return true, covered
}

// TestSlowConsumerCatchUp pauses a client until it is conflated and lets
// it read again: it gets a notice, then one conflated update that chains
// from the last message it had (ring large enough) or a fresh snapshot
// (ring too small), and ends up with the server's book.
func TestSlowConsumerCatchUp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ring     int
		snapshot bool
	}{{"merged from the ring", 4096, false}, {"snapshot when the ring is short", 4, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Config{QueueSoftLimit: 16 << 10, QueueHardLimit: 64 << 20, RingSize: tc.ring, SendBuffer: 8 << 10, RateLimit: 1e6}, symLevels)
			d := &slowDriver{ts: ts, gen: newEventGen(11)}
			d.round(100, 0)
			ts.sync(t, symLevels)
			tradesBefore := d.trades
			r := rawDial(t, ts, 2048)
			sc := &streamChecker{lb: newLocalBook(symLevels, 10)}
			r.sendText(`{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD"],"depth":10}`)
			r.sendText(`{"op":"subscribe","id":2,"channel":"trades","symbols":["LVL-USD"]}`)
			readAcks(t, r, 2, sc.check)
			// Stop reading until the server conflates the client and its book
			// stream is behind by more than the ring holds, or less.
			for i := 0; ; i++ {
				if i == 2000 {
					t.Fatalf("not conflated: %+v", ts.Stats())
				}
				d.round(20, 5)
				ts.sync(t, symLevels)
				if behind, covered := memberState(ts, symLevels, 10); behind && covered != tc.snapshot {
					break
				}
			}
			r.sendText(`{"op":"ping","id":9}`)
			if _, err := r.readMessages(10*time.Second, func(m wireMsg) bool {
				if err := sc.check(m); err != nil {
					t.Fatal(err)
				}
				return m.Type != "pong"
			}); err != nil {
				t.Fatal(err)
			}
			// The catch-up may still be on its way: ping until equal.
			for i := 10; sc.lb.equal(ts.books.snapshot(t, symLevels, 10)) != nil; i++ {
				if i == 200 {
					t.Fatalf("%v (client at seq %d after %d snapshots, %d conflated updates, %d notices; book at %d)",
						sc.lb.equal(ts.books.snapshot(t, symLevels, 10)), sc.lb.seq, sc.snapshots, sc.conflated, sc.notices, ts.books.snapshot(t, symLevels, 10).Seq)
				}
				r.sendText(fmt.Sprintf(`{"op":"ping","id":%d}`, i))
				if _, err := r.readMessages(5*time.Second, func(m wireMsg) bool {
					if err := sc.check(m); err != nil {
						t.Fatal(err)
					}
					return m.Type != "pong"
				}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if sc.notices == 0 {
				t.Error("no conflated notice")
			}
			if tc.snapshot && sc.snapshots < 2 {
				t.Errorf("caught up without a snapshot (%d conflated updates)", sc.conflated)
			}
			if !tc.snapshot && sc.conflated == 0 {
				t.Errorf("caught up without a conflated update (%d snapshots)", sc.snapshots)
			}
			if got, want := sc.trades, d.trades-tradesBefore; got != want {
				t.Errorf("%d trades, want every one: %d", got, want)
			}
			if ts.Stats().SlowConsumers != 0 {
				t.Error("closed")
			}
		})
	}
}
