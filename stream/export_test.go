package stream

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/marketd/marketd/book"
)

// TestMessageEncoder follows a book's streams at several depths the way a
// client does: a snapshot, then updates applied level by level, each
// chained to the one before and checked against its checksum and against
// the book itself; trades chained; every message marked as a replay.
func TestMessageEncoder(t *testing.T) {
	counts := map[int]int{}
	for _, depth := range []int{1, 10, 0} {
		rng := rand.New(rand.NewPCG(1, 2)) // the same events at every depth
		b := book.New("BTC-USD")
		var ev book.Event
		seq := uint64(0)
		apply := func() *book.Update {
			for {
				seq++
				ev = book.Event{Kind: book.KindLevel, Symbol: "BTC-USD", Seq: seq, TS: int64(seq) * 1000,
					Side: book.Side(1 + rng.IntN(2)), Price: book.Num(100+rng.IntN(30)) * book.Unit, Size: book.Num(rng.IntN(3)) * book.Unit}
				if rng.IntN(10) == 0 {
					ev = book.Event{Kind: book.KindTrade, Symbol: "BTC-USD", Seq: seq, TS: int64(seq) * 1000,
						TradeID: "t", Side: book.Buy, Price: 110 * book.Unit, Size: book.Unit}
				}
				if b.Apply(&ev) == nil {
					return b.LastUpdate()
				}
			}
		}
		for range 50 {
			apply()
		}
		e, err := NewMessageEncoder("BTC-USD", depth)
		if err != nil {
			t.Fatal(err)
		}
		e.Replay = true
		plain, _ := NewMessageEncoder("BTC-USD", depth)
		e.SetTradeSeq(7)
		plain.SetTradeSeq(7)

		lb := newLocalBook("BTC-USD", depth)
		read := func(line []byte, p []byte) wireMsg {
			t.Helper()
			if !bytes.Equal(line, append(p[:len(p)-1:len(p)-1], `,"replay":true}`...)) {
				t.Fatalf("replay message %s is not the live one %s marked", line, p)
			}
			var m wireMsg
			if err := json.Unmarshal(line, &m); err != nil || !m.Replay || m.Symbol != "BTC-USD" {
				t.Fatalf("message %s: %v", line, err)
			}
			m.raw = string(line)
			if m.Type == "snapshot" || m.Type == "update" {
				// The client's view: levels, chain and checksum.
				if err := lb.apply(m); err != nil {
					t.Fatalf("depth %d: %v", depth, err)
				}
			}
			return m
		}
		check := func(m wireMsg) {
			t.Helper()
			want := b.Snapshot(depth)
			if err := lb.equal(want); err != nil {
				t.Fatalf("seq %d: %v", m.Seq, err)
			}
			if *m.Checksum != want.Checksum {
				t.Fatalf("depth %d seq %d: checksum %d, the book's %d", depth, m.Seq, *m.Checksum, want.Checksum)
			}
		}

		snap := read(e.AppendSnapshot(nil, b), plain.AppendSnapshot(nil, b))
		if snap.Type != "snapshot" || snap.Seq != b.Seq() {
			t.Fatalf("snapshot %+v", snap)
		}
		check(snap)
		last, lastTrade, updates := snap.Seq, uint64(7), 0
		for range 300 {
			u := apply()
			if line := e.AppendUpdate(nil, u); len(line) > 0 {
				m := read(line, plain.AppendUpdate(nil, u))
				if m.Type != "update" || m.Seq != u.Seq || m.PrevSeq == nil || *m.PrevSeq != last {
					t.Fatalf("depth %d: update %+v after seq %d", depth, m, last)
				}
				last = m.Seq
				updates++
				check(m)
			} else if plain.AppendUpdate(nil, u) != nil {
				t.Fatal("the encoders disagree")
			}
			if line := e.AppendTrade(nil, u); len(line) > 0 {
				m := read(line, plain.AppendTrade(nil, u))
				if m.Type != "trade" || m.Seq != u.Seq || *m.PrevSeq != lastTrade {
					t.Fatalf("trade %+v after trade %d", m, lastTrade)
				}
				lastTrade = m.Seq
			} else if u.Trade != nil {
				t.Fatal("no message for a trade")
			}
			if u.Ticker != nil {
				if m := read(e.AppendTicker(nil, u.Ticker), plain.AppendTicker(nil, u.Ticker)); m.Type != "ticker" || m.Seq != u.Seq {
					t.Fatalf("ticker %+v", m)
				}
			}
		}
		counts[depth] = updates
	}
	// A deeper view changes with more of the same events.
	if !(0 < counts[1] && counts[1] < counts[10] && counts[10] <= counts[0]) {
		t.Errorf("updates by depth: %v", counts)
	}
	if _, err := NewMessageEncoder("X", 7); err == nil {
		t.Error("depth 7 accepted")
	}
}

func TestAppendBook(t *testing.T) {
	b := book.New("ETH-USD")
	if err := b.Apply(&book.Event{Kind: book.KindLevel, Symbol: "ETH-USD", Seq: 5, TS: 9, Side: book.Buy, Price: 3 * book.Unit, Size: book.Unit / 2}); err != nil {
		t.Fatal(err)
	}
	s := b.Snapshot(10)
	want := `{"symbol":"ETH-USD","seq":5,"ts":9,"bids":[["3","0.5"]],"asks":[],"checksum":` + strconv.FormatUint(uint64(s.Checksum), 10) + "}\n"
	if got := string(AppendBook(nil, &s)); got != want {
		t.Errorf("AppendBook = %s, want %s", got, want)
	}
}
