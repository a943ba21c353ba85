package book

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Benchmark books hold benchLevels levels per side, two ticks apart so that
// a new level fits between any two; the flows touch the benchTop best ranks.
const (
	benchLevels = 1200
	benchTop    = 40
	benchEvents = 1 << 16 // pre-generated events, cycled through
	benchMid    = 50_000 * Unit
)

// benchPrice returns the price at offset off (in ticks) from the mid: even
// offsets are the levels of the initial book, odd ones the gaps.
func benchPrice(side Side, off int) Num {
	if side == Buy {
		return benchMid - Num(off)*tick
	}
	return benchMid + Num(off+1)*tick
}

func benchSize(rng *rand.Rand) Num { return Num(1+rng.IntN(20000)) * (Unit / 10000) }

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}

// levelBookForBench returns a level-based book of benchLevels levels per side.
func levelBookForBench(b *testing.B) *Book {
	rng := rand.New(rand.NewPCG(1, 1))
	bk := New("BENCH")
	ev := Event{Symbol: "BENCH", Seq: 1, Kind: KindSnapshot}
	for i := range benchLevels {
		ev.Bids = append(ev.Bids, Level{benchPrice(Buy, 2*i), benchSize(rng)})
		ev.Asks = append(ev.Asks, Level{benchPrice(Sell, 2*i), benchSize(rng)})
	}
	if err := bk.Apply(&ev); err != nil {
		b.Fatal(err)
	}
	return bk
}

// runApply applies the cycled events to bk, numbering them on the fly.
func runApply(b *testing.B, bk *Book, evs []Event, withUpdate bool) {
	seq := bk.Seq()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		ev := &evs[i&(len(evs)-1)]
		i++
		seq++
		ev.Seq = seq
		if err := bk.Apply(ev); err != nil {
			b.Fatalf("event %d (%s): %v", i, ev.Kind, err)
		}
		if withUpdate {
			_ = bk.LastUpdate()
		}
	}
	reportRate(b)
}

// levelFlow returns level events near the top: mostly new sizes for
// existing levels; with inserts, some levels are created in the gaps and
// removed again.
func levelFlow(sizeOnly bool) []Event {
	rng := rand.New(rand.NewPCG(2, 2))
	evs := make([]Event, benchEvents)
	for i := range evs {
		side := Side(1 + rng.IntN(2))
		off := 2 * rng.IntN(benchTop/2) // an existing level
		size := benchSize(rng)
		if !sizeOnly {
			switch x := rng.IntN(10); {
			case x == 0: // a new level in a gap, or a new size if it exists
				off++
			case x == 1: // removes a gap level, or nothing if it is absent
				off, size = off+1, 0
			}
		}
		evs[i] = Event{Symbol: "BENCH", Kind: KindLevel, Side: side, Price: benchPrice(side, off), Size: size}
	}
	return evs
}

// BenchmarkApplyL2 applies level updates near the top of a book of 1,200
// levels per side: new sizes for existing levels, and levels created and
// removed in the gaps between them.
func BenchmarkApplyL2(b *testing.B) {
	runApply(b, levelBookForBench(b), levelFlow(false), false)
}

// BenchmarkApplyL2SizeOnly applies new sizes to existing levels near the
// top: no level is created, so Apply must not allocate.
func BenchmarkApplyL2SizeOnly(b *testing.B) {
	runApply(b, levelBookForBench(b), levelFlow(true), false)
}

// orderFlow returns an order-based book of benchLevels levels per side with
// two resting orders each, and one cycle of order flow near its top that
// leaves the book as it found it, so that the cycle can repeat: orders are
// added (at existing levels and in the gaps), modified, partly filled, and
// then cancelled or filled in full, interleaved.
func orderFlow(b *testing.B) (*Book, []Event) {
	rng := rand.New(rand.NewPCG(3, 3))
	bk := New("BENCH")
	seq := uint64(0)
	apply := func(ev Event) {
		seq++
		ev.Symbol, ev.Seq = "BENCH", seq
		if err := bk.Apply(&ev); err != nil {
			b.Fatal(err)
		}
	}
	for i := range benchLevels {
		for _, side := range []Side{Buy, Sell} {
			for k := range 2 {
				apply(Event{Kind: KindAdd, OrderID: fmt.Sprintf("base-%s-%d-%d", side, i, k), Side: side, Price: benchPrice(side, 2*i), Size: benchSize(rng)})
			}
		}
	}
	// Each slot's life: add, modify, partial fill, then cancel or full fill.
	type slot struct {
		id    string
		side  Side
		price Num
		size  Num
		step  int
	}
	var evs []Event
	var open []*slot
	next := 0
	for len(evs) < benchEvents {
		if len(open) < 64 && next < benchEvents/4 {
			side := Side(1 + rng.IntN(2))
			s := &slot{id: fmt.Sprintf("o%d", next), side: side, price: benchPrice(side, rng.IntN(benchTop)), size: benchSize(rng)}
			next++
			open = append(open, s)
			evs = append(evs, Event{Kind: KindAdd, OrderID: s.id, Side: s.side, Price: s.price, Size: s.size})
			continue
		}
		if len(open) == 0 {
			break
		}
		k := rng.IntN(len(open))
		s := open[k]
		s.step++
		switch s.step {
		case 1:
			s.size = benchSize(rng)
			evs = append(evs, Event{Kind: KindModify, OrderID: s.id, Size: s.size})
		case 2:
			fill := max(1, s.size/3)
			s.size -= fill
			evs = append(evs, Event{Kind: KindTrade, TradeID: "t", MakerOrderID: s.id, Side: 3 - s.side, Price: s.price, Size: fill})
		default:
			if rng.IntN(2) == 0 {
				evs = append(evs, Event{Kind: KindCancel, OrderID: s.id})
			} else {
				evs = append(evs, Event{Kind: KindTrade, TradeID: "t", MakerOrderID: s.id, Side: 3 - s.side, Price: s.price, Size: s.size})
			}
			open[k] = open[len(open)-1]
			open = open[:len(open)-1]
		}
	}
	// Cycle length: the largest power of two that the flow fills; close the
	// orders still open so that the cycle ends where it began.
	for _, s := range open {
		evs = append(evs, Event{Kind: KindCancel, OrderID: s.id})
	}
	for i := range evs {
		evs[i].Symbol = "BENCH"
	}
	return bk, evs
}

// BenchmarkApplyL3 applies order flow near the top of an order-based book of
// 1,200 levels per side (2,400 resting orders per side): adds, modifies,
// partial and full fills, cancels. Each add allocates its order id.
func BenchmarkApplyL3(b *testing.B) {
	bk, evs := orderFlow(b)
	seq := bk.Seq()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		ev := &evs[i]
		if i++; i == len(evs) {
			i = 0
		}
		seq++
		ev.Seq = seq
		if err := bk.Apply(ev); err != nil {
			b.Fatalf("event %d (%s): %v", i, ev.Kind, err)
		}
	}
	reportRate(b)
}

// BenchmarkLastUpdate applies level updates near the top (as
// BenchmarkApplyL2) and builds each one's Update, checksums included: the
// work of the book's owner per event.
func BenchmarkLastUpdate(b *testing.B) {
	runApply(b, levelBookForBench(b), levelFlow(false), true)
}

// BenchmarkChecksum computes the checksum of the top 10 levels of each side:
// from Level slices (Checksum), and from a book without its cache.
func BenchmarkChecksum(b *testing.B) {
	bk := levelBookForBench(b)
	s := bk.Snapshot(10)
	b.Run("levels", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = Checksum(s.Bids, s.Asks)
		}
		reportRate(b)
	})
	b.Run("book", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = bk.checksum(ChecksumLevels)
		}
		reportRate(b)
	})
}
