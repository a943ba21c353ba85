package book

import (
	"testing"

	"github.com/shopspring/decimal"
)

const minute = BucketWidth

// TestTicker24h checks the rolling 24h statistics at the edges of the window.
func TestTicker24h(t *testing.T) {
	const t0 = 1_763_900_000_000_000 - 1_763_900_000_000_000%minute // a minute boundary
	b := New("X")
	seq := uint64(0)
	apply := func(ts int64, ev Event) *Update {
		t.Helper()
		seq++
		ev.Symbol, ev.Seq, ev.TS = "X", seq, ts
		if err := b.Apply(&ev); err != nil {
			t.Fatal(err)
		}
		return b.LastUpdate()
	}
	trade := func(ts int64, price, size string) *Update {
		t.Helper()
		return apply(ts, tradeEv("t", "", Buy, price, size))
	}
	quiet := func(ts int64) *Update { // an event that is not a trade
		t.Helper()
		return apply(ts, levelEv(Buy, "1", "0"))
	}
	type stats struct{ open, high, low, volume string }
	check := func(what string, want stats) {
		t.Helper()
		tk := b.Ticker()
		got := stats{tk.Open24h.String(), tk.High24h.String(), tk.Low24h.String(), tk.Volume24h.String()}
		if got != want {
			t.Errorf("%s: 24h %+v, want %+v", what, got, want)
		}
	}

	check("no trade yet", stats{"0", "0", "0", "0"})
	trade(t0+10, "10", "1")
	trade(t0+minute+5, "12", "2")
	trade(t0+5, "9", "0.5") // older than the newest trade, same bucket as the first
	check("three trades", stats{"9", "12", "9", "3.5"})
	if tk := b.Ticker(); !tk.HasLast || tk.Last != n("9") || tk.LastSize != n("0.5") {
		t.Errorf("last trade %+v", tk)
	}

	// The window holds the head's minute and the 1439 before it.
	if u := quiet(t0 + 1439*minute); u.Ticker != nil {
		t.Errorf("nothing left the window yet, but the update has a ticker: %+v", u.Ticker)
	}
	check("first bucket still in", stats{"9", "12", "9", "3.5"})
	if u := quiet(t0 + 1440*minute); u.Ticker == nil || u.Ticker.Volume24h.String() != "2" {
		t.Errorf("the first bucket left: update ticker %+v", u.Ticker)
	}
	check("first bucket out", stats{"12", "12", "12", "2"})

	// An event time older than the head does not move the window back, and
	// a trade older than the window counts as the last trade only.
	trade(t0+30, "50", "1")
	check("trade older than the window", stats{"12", "12", "12", "2"})
	if tk := b.Ticker(); tk.Last != n("50") {
		t.Errorf("last %s, want 50", tk.Last)
	}

	trade(t0+1441*minute-1, "11", "1") // the last microsecond of the head's minute
	check("a new trade", stats{"12", "12", "11", "3"})
	quiet(t0 + 1441*minute) // the bucket of 12 leaves; high recomputed
	check("the high left", stats{"11", "11", "11", "1"})
	quiet(t0 + 10*1440*minute)
	check("everything left", stats{"0", "0", "0", "0"})
	if tk := b.Ticker(); !tk.HasLast || !tk.Volume24h.Equal(decimal.Zero) {
		t.Errorf("after the window emptied: %+v", tk)
	}
}

// TestTickerVolumeExact checks that the 24h volume is exact beyond the range
// of Num.
func TestTickerVolumeExact(t *testing.T) {
	b := New("X")
	for i := range 3 {
		ev := Event{Symbol: "X", Seq: uint64(i + 1), TS: int64(i), Kind: KindTrade, TradeID: "t", Side: Sell, Price: Unit, Size: MaxNum}
		if err := b.Apply(&ev); err != nil {
			t.Fatal(err)
		}
	}
	want := decimal.RequireFromString("276701161105.64327421") // 3 × 92233720368.54775807
	if got := b.Ticker().Volume24h; !got.Equal(want) {
		t.Errorf("volume %s, want %s", got, want)
	}
}

// TestTickerNegativeTime checks buckets before the Unix epoch: minutes round
// down, so -1µs and -60s are in the same bucket.
func TestTickerNegativeTime(t *testing.T) {
	if minuteOf(-1) != -1 || minuteOf(-minute) != -1 || minuteOf(-minute-1) != -2 || minuteOf(0) != 0 || minuteOf(minute-1) != 0 {
		t.Errorf("minuteOf: %d %d %d", minuteOf(-1), minuteOf(-minute), minuteOf(-minute-1))
	}
}

// TestWindowReusesSpace checks that a long steady flow of trades, one bucket
// every other minute, keeps the bucket buffer bounded, also after a trade
// out of time order opens a bucket between two others.
func TestWindowReusesSpace(t *testing.T) {
	var w window
	for i := int64(0); i < 10*WindowBuckets; i += 2 {
		ts := i * minute
		w.advance(ts)
		w.add(ts, Unit, Unit)
		if i == 3*WindowBuckets {
			w.add(ts-101*minute, 2*Unit, Unit) // an odd minute: a new bucket in the middle
			var tk Ticker
			if w.stats(&tk); tk.High24h != 2*Unit || tk.Volume24h.String() != "721" {
				t.Fatalf("after the middle bucket: %+v", tk)
			}
		}
	}
	if len(w.live()) != WindowBuckets/2 || cap(w.buf) > 2*WindowBuckets {
		t.Errorf("%d live buckets in a buffer of %d", len(w.live()), cap(w.buf))
	}
	var tk Ticker
	w.stats(&tk)
	if tk.Volume24h.String() != "720" || tk.High24h != Unit || tk.Open24h != Unit {
		t.Errorf("stats %+v", tk)
	}
}
