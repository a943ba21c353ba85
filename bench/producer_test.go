package bench

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
)

// TestProducerEvents feeds the generator's events through marketd's own
// decoder and book: every one must be accepted (a rejected event would be
// dead-lettered and silently lower the load), the books must stay uncrossed
// and within their size bounds, and most events must change the depth-10
// view, as the scenarios' offered loads assume.
func TestProducerEvents(t *testing.T) {
	syms := []string{"SYM00", "SYM01"}
	p := &Producer{
		cfg:   ProducerConfig{Symbols: syms, Hot: 0.7, Levels: defaultLevels, TradeShare: 0.05},
		rng:   rand.New(rand.NewPCG(7, 7)),
		books: make(map[string]*simBook),
	}
	books := map[string]*book.Book{}
	var dec feed.Decoder
	var ev book.Event
	offset := int64(0)
	apply := func(sym string, value []byte) *book.Update {
		t.Helper()
		if err := dec.Decode([]byte(sym), value, time.Now(), offset, &ev); err != nil {
			t.Fatalf("decode %s: %v", value, err)
		}
		offset++
		b := books[sym]
		if b == nil {
			b = book.New(sym)
			books[sym] = b
		}
		if err := b.Apply(&ev); err != nil {
			t.Fatalf("apply %s: %v", value, err)
		}
		return b.LastUpdate()
	}
	ts := time.Now().UnixMicro()
	for _, s := range syms {
		apply(s, p.seedEvent(nil, s, ts))
	}
	const n = 20000
	view10, _ := book.ViewIndex(10)
	changed, trades, hot := 0, 0, 0
	for i := range n {
		sym := p.pickSymbol()
		if sym == syms[0] {
			hot++
		}
		u := apply(sym, p.nextEvent(nil, sym, ts+int64(i)))
		if u.Trade != nil {
			trades++
		}
		for _, c := range u.Changes {
			if c.Views.Has(view10) {
				changed++
				break
			}
		}
	}
	for sym, b := range books {
		s := b.Snapshot(1)
		if len(s.Bids) != 1 || len(s.Asks) != 1 || s.Bids[0].Price >= s.Asks[0].Price {
			t.Errorf("%s: top of book %v / %v", sym, s.Bids, s.Asks)
		}
		for _, side := range []book.Side{book.Buy, book.Sell} {
			if d := b.Depth(side); d < minLevels-1 || d > maxLevels {
				t.Errorf("%s: %d levels on side %v", sym, d, side)
			}
		}
	}
	t.Logf("depth-10 changes per event %.3f, trades %.3f, hot %.3f", float64(changed)/n, float64(trades)/n, float64(hot)/n)
	if share := float64(changed) / n; share < 0.85 {
		t.Errorf("only %.2f of the events change the depth-10 view", share)
	}
	if share := float64(trades) / n; share < 0.03 || share > 0.07 {
		t.Errorf("trade share %.3f, want about 0.05", share)
	}
	if share := float64(hot) / n; share < 0.8 || share > 0.9 { // 0.7 + 0.3/2
		t.Errorf("hot symbol share %.3f, want about 0.85", share)
	}
}
