package book

import (
	"cmp"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/shopspring/decimal"
)

// refBook is a deliberately plain reference model of a Book: maps for the
// levels and orders, a list of every trade, sorting whenever an order is
// needed. It applies the same checks in the same order as Book.Apply.
type refBook struct {
	symbol  string
	mode    Mode
	seq     uint64
	ts      int64
	levels  map[Side]map[Num]Num
	orders  map[string]refOrder
	hasHead bool
	head    int64 // minute of the newest event time
	trades  []refTrade
	hasLast bool
	last    refTrade
}

type refOrder struct {
	side        Side
	price, size Num
}

type refTrade struct {
	ts          int64
	price, size Num
}

func newRef(symbol string) *refBook {
	return &refBook{
		symbol: symbol,
		levels: map[Side]map[Num]Num{Buy: {}, Sell: {}},
		orders: map[string]refOrder{},
	}
}

// fits reports whether a+b stays within the range of Num (both >= 0).
func fits(a, b Num) bool { return a <= MaxNum-b }

func validSide(s Side) bool { return s == Buy || s == Sell }

// apply applies ev like Book.Apply and returns the sentinel it must fail
// with, or nil.
func (r *refBook) apply(ev *Event) error {
	if ev.Symbol != r.symbol {
		return ErrSymbol
	}
	if r.seq > 0 && ev.Seq <= r.seq {
		return ErrStale
	}
	traded := false
	switch ev.Kind {
	case KindAdd:
		switch {
		case r.mode == ModeLevels:
			return ErrModeMismatch
		case ev.OrderID == "":
			return ErrBadEvent
		case !validSide(ev.Side):
			return ErrBadSide
		case ev.Price <= 0 || ev.Size <= 0:
			return ErrNonPositive
		}
		if _, ok := r.orders[ev.OrderID]; ok {
			return ErrDuplicateOrder
		}
		if !fits(r.levels[ev.Side][ev.Price], ev.Size) {
			return ErrOverflow
		}
		r.mode = ModeOrders
		r.orders[ev.OrderID] = refOrder{ev.Side, ev.Price, ev.Size}
		r.levels[ev.Side][ev.Price] += ev.Size
	case KindModify, KindCancel:
		switch {
		case r.mode == ModeLevels:
			return ErrModeMismatch
		case ev.OrderID == "":
			return ErrBadEvent
		case ev.Kind == KindModify && ev.Size <= 0:
			return ErrNonPositive
		}
		o, ok := r.orders[ev.OrderID]
		if !ok {
			return ErrUnknownOrder
		}
		size := ev.Size
		if ev.Kind == KindCancel {
			size = 0
		}
		if !fits(r.levels[o.side][o.price]-o.size, size) {
			return ErrOverflow
		}
		r.setOrder(ev.OrderID, o, size)
	case KindTrade:
		switch {
		case ev.TradeID == "":
			return ErrBadEvent
		case !validSide(ev.Side):
			return ErrBadSide
		case ev.Price <= 0 || ev.Size <= 0:
			return ErrNonPositive
		}
		if ev.MakerOrderID != "" {
			if r.mode == ModeLevels {
				return ErrModeMismatch
			}
			o, ok := r.orders[ev.MakerOrderID]
			if !ok {
				return ErrUnknownOrder
			}
			if ev.Size > o.size {
				return ErrOverfill
			}
			r.setOrder(ev.MakerOrderID, o, o.size-ev.Size)
		}
		traded = true
	case KindLevel:
		switch {
		case r.mode == ModeOrders:
			return ErrModeMismatch
		case !validSide(ev.Side):
			return ErrBadSide
		case ev.Price <= 0 || ev.Size < 0:
			return ErrNonPositive
		}
		r.mode = ModeLevels
		if ev.Size == 0 {
			delete(r.levels[ev.Side], ev.Price)
		} else {
			r.levels[ev.Side][ev.Price] = ev.Size
		}
	case KindSnapshot:
		if r.mode == ModeOrders {
			return ErrModeMismatch
		}
		next := map[Side]map[Num]Num{Buy: {}, Sell: {}}
		for _, s := range []struct {
			side Side
			lv   []Level
		}{{Buy, ev.Bids}, {Sell, ev.Asks}} {
			for _, lv := range s.lv {
				if lv.Price <= 0 || lv.Size <= 0 {
					return ErrNonPositive
				}
			}
			for _, lv := range s.lv {
				if _, dup := next[s.side][lv.Price]; dup {
					return ErrBadEvent
				}
				next[s.side][lv.Price] = lv.Size
			}
		}
		r.mode = ModeLevels
		r.levels = next
	default:
		return ErrBadEvent
	}
	r.seq, r.ts = ev.Seq, ev.TS
	if m := minuteOf(ev.TS); !r.hasHead || m > r.head {
		r.hasHead, r.head = true, m
	}
	if traded {
		t := refTrade{ev.TS, ev.Price, ev.Size}
		r.trades = append(r.trades, t)
		r.hasLast, r.last = true, t
	}
	return nil
}

// setOrder sets an order's remaining size, removing it (and its level when
// empty) at 0.
func (r *refBook) setOrder(id string, o refOrder, size Num) {
	lv := r.levels[o.side]
	lv[o.price] += size - o.size
	if lv[o.price] == 0 {
		delete(lv, o.price)
	}
	if size == 0 {
		delete(r.orders, id)
		return
	}
	o.size = size
	r.orders[id] = o
}

// sorted returns a side's levels best first.
func (r *refBook) sorted(side Side) []Level {
	out := make([]Level, 0, len(r.levels[side]))
	for p, s := range r.levels[side] {
		out = append(out, Level{p, s})
	}
	slices.SortFunc(out, func(a, b Level) int {
		if side == Buy {
			return cmp.Compare(b.Price, a.Price)
		}
		return cmp.Compare(a.Price, b.Price)
	})
	return out
}

// ticker computes the ticker from the list of trades.
func (r *refBook) ticker() Ticker {
	t := Ticker{Symbol: r.symbol, Seq: r.seq, TS: r.ts}
	if b := r.sorted(Buy); len(b) > 0 {
		t.HasBid, t.Bid, t.BidSize = true, b[0].Price, b[0].Size
	}
	if a := r.sorted(Sell); len(a) > 0 {
		t.HasAsk, t.Ask, t.AskSize = true, a[0].Price, a[0].Size
	}
	if r.hasLast {
		t.HasLast, t.Last, t.LastSize = true, r.last.price, r.last.size
	}
	vol := new(big.Int)
	var first *refTrade
	for i := range r.trades {
		tr := &r.trades[i]
		if minuteOf(tr.ts) < r.head-(WindowBuckets-1) {
			continue
		}
		if first == nil {
			t.High24h, t.Low24h = tr.price, tr.price
		}
		if first == nil || tr.ts < first.ts {
			first = tr
		}
		t.High24h, t.Low24h = max(t.High24h, tr.price), min(t.Low24h, tr.price)
		vol.Add(vol, big.NewInt(int64(tr.size)))
	}
	if first != nil {
		t.Open24h = first.price
		t.Volume24h = decimal.NewFromBigInt(vol, -Scale)
	}
	// Trades that left the window stay out: the head never moves back.
	r.trades = slices.DeleteFunc(r.trades, func(tr refTrade) bool {
		return minuteOf(tr.ts) < r.head-(WindowBuckets-1)
	})
	return t
}

// tickerDiff describes how two tickers differ, or returns "".
func tickerDiff(got, want Ticker) string {
	vg, vw := got.Volume24h, want.Volume24h
	got.Volume24h, want.Volume24h = decimal.Decimal{}, decimal.Decimal{}
	if got != want || !vg.Equal(vw) {
		got.Volume24h, want.Volume24h = vg, vw
		return fmt.Sprintf("ticker\n got %+v\nwant %+v", got, want)
	}
	return ""
}

// sameTickerData reports whether two tickers agree on everything but Seq and TS.
func sameTickerData(a, b Ticker) bool {
	a.Seq, a.TS, b.Seq, b.TS = 0, 0, 0, 0
	return tickerDiff(a, b) == ""
}

// viewSide is one side of a client's copy of a view.
type viewKey struct {
	view  int
	side  Side
	price Num
}

// checker drives a Book and a refBook side by side and checks, after every
// event, that they agree: the error, the full state, every view rebuilt
// from Changes alone, the checksums, the ticker and LastUpdate.
type checker struct {
	b    *Book
	ref  *refBook
	view [len(Depths)]map[Side]map[Num]Num // each view as a client rebuilds it from Changes
	seen map[viewKey]bool
	tk   Ticker // the ticker before the event

	applied, rejected int
	// crossings counts, per finite view, the changes by which a level entered
	// or left that view alone: the view's boundary was crossed.
	crossings [finiteViews]int
}

func newChecker(symbol string) *checker {
	c := &checker{b: New(symbol), ref: newRef(symbol), seen: map[viewKey]bool{}}
	for v := range c.view {
		c.view[v] = map[Side]map[Num]Num{Buy: {}, Sell: {}}
	}
	c.tk = c.ref.ticker()
	return c
}

// step applies ev to both and returns a description of the first
// disagreement, or nil.
func (c *checker) step(ev *Event) error {
	want := c.ref.apply(ev)
	err := c.b.Apply(ev)
	if (err == nil) != (want == nil) || (want != nil && !errors.Is(err, want)) {
		return fmt.Errorf("apply %s: error %v, want %v", evString(ev), err, want)
	}
	if err != nil {
		c.rejected++
		if err := c.compareState(); err != nil {
			return fmt.Errorf("after rejected %s (%v): %w", evString(ev), want, err)
		}
		return nil
	}
	c.applied++
	bids, asks := c.ref.sorted(Buy), c.ref.sorted(Sell)
	tk := c.ref.ticker()
	if err := c.checkChanges(bids, asks); err != nil {
		return fmt.Errorf("after %s: %w", evString(ev), err)
	}
	if err := c.compare(bids, asks, tk); err != nil {
		return fmt.Errorf("after %s: %w", evString(ev), err)
	}
	if err := c.checkUpdate(ev, tk); err != nil {
		return fmt.Errorf("after %s: %w", evString(ev), err)
	}
	c.tk = tk
	return nil
}

func evString(ev *Event) string {
	s := fmt.Sprintf("%s seq=%d ts=%d", ev.Kind, ev.Seq, ev.TS)
	switch ev.Kind {
	case KindSnapshot:
		return s + fmt.Sprintf(" bids=%v asks=%v", ev.Bids, ev.Asks)
	case KindTrade:
		return s + fmt.Sprintf(" trade=%q maker=%q %s %s@%s", ev.TradeID, ev.MakerOrderID, ev.Side, ev.Size, ev.Price)
	}
	return s + fmt.Sprintf(" id=%q %s %s@%s", ev.OrderID, ev.Side, ev.Size, ev.Price)
}

// checkChanges applies Changes to the client views, checking that no change
// is a no-op and that no price appears twice per side per view, then checks
// every view against the reference.
func (c *checker) checkChanges(bids, asks []Level) error {
	clear(c.seen)
	for _, ch := range c.b.Changes() {
		for v := range finiteViews {
			if ch.Views == 1<<v {
				c.crossings[v]++
			}
		}
		if !validSide(ch.Side) || ch.Views == 0 || ch.Views&^AllViews != 0 || ch.Price <= 0 || ch.Size < 0 {
			return fmt.Errorf("malformed change %+v", ch)
		}
		for v := range Depths {
			if !ch.Views.Has(v) {
				continue
			}
			k := viewKey{v, ch.Side, ch.Price}
			if c.seen[k] {
				return fmt.Errorf("view %d: price %s twice on the %s side in %v", Depths[v], ch.Price, ch.Side, c.b.Changes())
			}
			c.seen[k] = true
			m := c.view[v][ch.Side]
			if m[ch.Price] == ch.Size {
				return fmt.Errorf("view %d: no-op change %+v", Depths[v], ch)
			}
			if ch.Size == 0 {
				delete(m, ch.Price)
			} else {
				m[ch.Price] = ch.Size
			}
		}
	}
	for _, side := range []Side{Buy, Sell} {
		all := bids
		if side == Sell {
			all = asks
		}
		for v, d := range Depths {
			want := all
			if d > 0 && d < len(want) {
				want = want[:d]
			}
			got := c.view[v][side]
			ok := len(got) == len(want)
			for i := 0; ok && i < len(want); i++ {
				ok = got[want[i].Price] == want[i].Size
			}
			if !ok {
				return fmt.Errorf("view %d %s side rebuilt from changes %v\n got %v\nwant %v", d, side, c.b.Changes(), got, want)
			}
		}
	}
	return nil
}

// compareState compares the book's observable state with the reference's.
func (c *checker) compareState() error {
	return c.compare(c.ref.sorted(Buy), c.ref.sorted(Sell), c.ref.ticker())
}

// compare compares the book's observable state with the reference's, given
// the reference's levels best first and its ticker. It compares the
// snapshots of the full book and of the small views in full, and the
// checksums of every view.
func (c *checker) compare(bids, asks []Level, tk Ticker) error {
	b, r := c.b, c.ref
	if b.Mode() != r.mode || b.Seq() != r.seq || b.TS() != r.ts || b.Orders() != len(r.orders) {
		return fmt.Errorf("mode/seq/ts/orders %v/%d/%d/%d, want %v/%d/%d/%d",
			b.Mode(), b.Seq(), b.TS(), b.Orders(), r.mode, r.seq, r.ts, len(r.orders))
	}
	if b.Depth(Buy) != len(bids) || b.Depth(Sell) != len(asks) {
		return fmt.Errorf("depth %d/%d, want %d/%d", b.Depth(Buy), b.Depth(Sell), len(bids), len(asks))
	}
	for _, d := range []int{0, 1, 10, 25} {
		s := b.Snapshot(d)
		wb, wa := bids, asks
		if d > 0 {
			wb, wa = wb[:min(d, len(wb))], wa[:min(d, len(wa))]
		}
		if !slices.Equal(s.Bids, wb) || !slices.Equal(s.Asks, wa) {
			return fmt.Errorf("snapshot(%d)\n got %v %v\nwant %v %v", d, s.Bids, s.Asks, wb, wa)
		}
		if s.Seq != r.seq || s.TS != r.ts || s.Symbol != r.symbol || s.Checksum != b.Checksum(d) {
			return fmt.Errorf("snapshot(%d): header %q/%d/%d checksum %d", d, s.Symbol, s.Seq, s.TS, s.Checksum)
		}
	}
	for _, d := range Depths {
		n := ChecksumLevels
		if d == 1 {
			n = 1
		}
		if sum := Checksum(bids[:min(n, len(bids))], asks[:min(n, len(asks))]); b.Checksum(d) != sum {
			return fmt.Errorf("checksum(%d) %d, want %d", d, b.Checksum(d), sum)
		}
	}
	if d := tickerDiff(b.Ticker(), tk); d != "" {
		return errors.New(d)
	}
	return nil
}

// checkUpdate checks LastUpdate after a successful Apply.
func (c *checker) checkUpdate(ev *Event, tk Ticker) error {
	u := c.b.LastUpdate()
	if u.Symbol != c.ref.symbol || u.Seq != ev.Seq || u.TS != ev.TS {
		return fmt.Errorf("update header %q/%d/%d", u.Symbol, u.Seq, u.TS)
	}
	if (len(c.b.Changes()) == 0) != (u.Changes == nil) || !slices.Equal(u.Changes, c.b.Changes()) {
		return fmt.Errorf("update changes %v, Changes() %v", u.Changes, c.b.Changes())
	}
	if u.Checksum1 != c.b.Checksum(1) || u.Checksum10 != c.b.Checksum(10) || u.Checksum(1) != u.Checksum1 || u.Checksum(0) != u.Checksum10 {
		return fmt.Errorf("update checksums %d/%d, want %d/%d", u.Checksum1, u.Checksum10, c.b.Checksum(1), c.b.Checksum(10))
	}
	if ev.Kind == KindTrade {
		want := Trade{TradeID: ev.TradeID, Price: ev.Price, Size: ev.Size, Side: ev.Side}
		if u.Trade == nil || *u.Trade != want {
			return fmt.Errorf("update trade %+v, want %+v", u.Trade, want)
		}
	} else if u.Trade != nil {
		return fmt.Errorf("update of a %s has trade %+v", ev.Kind, u.Trade)
	}
	changed := !sameTickerData(c.tk, tk)
	switch {
	case changed && u.Ticker == nil:
		return fmt.Errorf("ticker changed from %+v to %+v but the update has none", c.tk, tk)
	case u.Ticker != nil && !changed && ev.Kind != KindTrade:
		return fmt.Errorf("update has a ticker though it did not change: %+v", *u.Ticker)
	case u.Ticker != nil:
		if d := tickerDiff(*u.Ticker, tk); d != "" {
			return errors.New("update " + d)
		}
	}
	return nil
}

// roundTrip checkpoints the book, restores it into a fresh Book, checks the
// copy against the reference and byte-equality of a second checkpoint, and
// continues with the copy.
func (c *checker) roundTrip() error {
	data, err := c.b.MarshalBinary()
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	var nb Book
	if err := nb.UnmarshalBinary(data); err != nil {
		return fmt.Errorf("unmarshal: %w", err)
	}
	again, err := nb.MarshalBinary()
	if err != nil || !slices.Equal(data, again) {
		return fmt.Errorf("checkpoint of the restored book differs (%v)", err)
	}
	c.b = &nb
	if err := c.compareState(); err != nil {
		return fmt.Errorf("restored book: %w", err)
	}
	return c.compareOrders()
}

// compareOrders compares every resting order (side, price, remaining size)
// with the reference's: a full scan, so the property test runs it only now
// and then.
func (c *checker) compareOrders() error {
	if len(c.b.orders) != len(c.ref.orders) {
		return fmt.Errorf("%d orders, want %d", len(c.b.orders), len(c.ref.orders))
	}
	for id, o := range c.b.orders {
		if want, ok := c.ref.orders[id]; !ok || (refOrder{o.side, o.price, o.size}) != want || o.id != id {
			return fmt.Errorf("order %q: %s %s@%s, want %+v", id, o.side, o.size, o.price, want)
		}
	}
	return nil
}
