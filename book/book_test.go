package book

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"unsafe"
)

// n parses a decimal constant of a test table.
func n(s string) Num {
	v, err := ParseNum(s)
	if err != nil {
		panic(fmt.Sprintf("test constant %q: %v", s, err))
	}
	return v
}

func lv(ps ...string) []Level {
	var out []Level
	for i := 0; i+1 < len(ps); i += 2 {
		out = append(out, Level{n(ps[i]), n(ps[i+1])})
	}
	return out
}

func addEv(id string, side Side, price, size string) Event {
	return Event{Kind: KindAdd, OrderID: id, Side: side, Price: n(price), Size: n(size)}
}

func modifyEv(id, size string) Event { return Event{Kind: KindModify, OrderID: id, Size: n(size)} }

func cancelEv(id string) Event { return Event{Kind: KindCancel, OrderID: id} }

func tradeEv(id, maker string, side Side, price, size string) Event {
	return Event{Kind: KindTrade, TradeID: id, MakerOrderID: maker, Side: side, Price: n(price), Size: n(size)}
}

func levelEv(side Side, price, size string) Event {
	return Event{Kind: KindLevel, Side: side, Price: n(price), Size: n(size)}
}

func snapshotEv(bids, asks []Level) Event { return Event{Kind: KindSnapshot, Bids: bids, Asks: asks} }

// chg builds an expected change.
func chg(side Side, price, size string, views ViewMask) Change {
	return Change{Side: side, Price: n(price), Size: n(size), Views: views}
}

// The view masks of the table: "in every view" and "in every view but depth 1".
const (
	all     = AllViews
	below1  = AllViews &^ 1
	inView1 = ViewMask(1)
)

func sortChanges(cs []Change) []Change {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b Change) int {
		return cmp.Or(cmp.Compare(a.Side, b.Side), cmp.Compare(a.Price, b.Price), cmp.Compare(a.Views, b.Views), cmp.Compare(a.Size, b.Size))
	})
	return cs
}

// build applies setup events to a fresh book "X", numbering them from seq 1
// with one second between event times.
func build(t *testing.T, setup []Event) *Book {
	t.Helper()
	b := New("X")
	for i := range setup {
		ev := setup[i]
		ev.Symbol, ev.Seq, ev.TS = "X", uint64(i+1), int64(i+1)*1_000_000
		if err := b.Apply(&ev); err != nil {
			t.Fatalf("setup event %d (%s): %v", i, ev.Kind, err)
		}
	}
	return b
}

// orderBook is the setup of the order-based scenarios:
// bids 100 (b1 1, b2 2), 99 (b3 1); ask 101 (a1 1).
var orderBook = []Event{
	addEv("b1", Buy, "100", "1"),
	addEv("b2", Buy, "100", "2"),
	addEv("b3", Buy, "99", "1"),
	addEv("a1", Sell, "101", "1"),
}

// levelBook is the setup of the level-based scenarios: bids 100×1, 99×2; ask 101×1.
var levelBook = []Event{snapshotEv(lv("100", "1", "99", "2"), lv("101", "1"))}

func TestApply(t *testing.T) {
	tests := []struct {
		name       string
		setup      []Event
		ev         Event
		changes    []Change
		bids, asks []Level
		mode       Mode
	}{
		{"add at a new best bid pushes the old best out of depth 1", orderBook, addEv("b4", Buy, "100.5", "1"),
			[]Change{chg(Buy, "100.5", "1", all), chg(Buy, "100", "0", inView1)},
			lv("100.5", "1", "100", "3", "99", "1"), lv("101", "1"), ModeOrders},
		{"add to an existing level", orderBook, addEv("b4", Buy, "100", "0.25"),
			[]Change{chg(Buy, "100", "3.25", all)},
			lv("100", "3.25", "99", "1"), lv("101", "1"), ModeOrders},
		{"add a new level below the best", orderBook, addEv("a2", Sell, "102", "5"),
			[]Change{chg(Sell, "102", "5", below1)},
			lv("100", "3", "99", "1"), lv("101", "1", "102", "5"), ModeOrders},
		{"first add sets the mode", nil, addEv("a1", Sell, "1", "1"),
			[]Change{chg(Sell, "1", "1", all)}, nil, lv("1", "1"), ModeOrders},
		{"modify down", orderBook, modifyEv("b2", "0.5"),
			[]Change{chg(Buy, "100", "1.5", all)},
			lv("100", "1.5", "99", "1"), lv("101", "1"), ModeOrders},
		{"modify up", orderBook, modifyEv("b3", "7"),
			[]Change{chg(Buy, "99", "7", below1)},
			lv("100", "3", "99", "7"), lv("101", "1"), ModeOrders},
		{"modify to the same size changes nothing", orderBook, modifyEv("b2", "2"),
			nil, lv("100", "3", "99", "1"), lv("101", "1"), ModeOrders},
		{"cancel one of two orders of a level", orderBook, cancelEv("b1"),
			[]Change{chg(Buy, "100", "2", all)},
			lv("100", "2", "99", "1"), lv("101", "1"), ModeOrders},
		{"cancel the last order of the best level pulls the next into depth 1", append(slices.Clone(orderBook), cancelEv("b1")), cancelEv("b2"),
			[]Change{chg(Buy, "100", "0", all), chg(Buy, "99", "1", inView1)},
			lv("99", "1"), lv("101", "1"), ModeOrders},
		{"cancel the only ask empties the side", orderBook, cancelEv("a1"),
			[]Change{chg(Sell, "101", "0", all)},
			lv("100", "3", "99", "1"), nil, ModeOrders},
		{"trade fills part of its maker", orderBook, tradeEv("t1", "b1", Sell, "100", "0.4"),
			[]Change{chg(Buy, "100", "2.6", all)},
			lv("100", "2.6", "99", "1"), lv("101", "1"), ModeOrders},
		{"trade fills its maker whole", orderBook, tradeEv("t1", "a1", Buy, "101", "1"),
			[]Change{chg(Sell, "101", "0", all)},
			lv("100", "3", "99", "1"), nil, ModeOrders},
		{"trade without maker leaves the book", orderBook, tradeEv("t1", "", Buy, "101", "1"),
			nil, lv("100", "3", "99", "1"), lv("101", "1"), ModeOrders},
		{"trade without maker on a level book", levelBook, tradeEv("t1", "", Sell, "100", "1"),
			nil, lv("100", "1", "99", "2"), lv("101", "1"), ModeLevels},
		{"trade without maker on a new book keeps it unset", nil, tradeEv("t1", "", Sell, "100", "1"),
			nil, nil, nil, ModeUnset},
		{"level inserts", levelBook, levelEv(Buy, "99.5", "3"),
			[]Change{chg(Buy, "99.5", "3", below1)},
			lv("100", "1", "99.5", "3", "99", "2"), lv("101", "1"), ModeLevels},
		{"level sets a size", levelBook, levelEv(Buy, "99", "5"),
			[]Change{chg(Buy, "99", "5", below1)},
			lv("100", "1", "99", "5"), lv("101", "1"), ModeLevels},
		{"level with the same size changes nothing", levelBook, levelEv(Buy, "99", "2"),
			nil, lv("100", "1", "99", "2"), lv("101", "1"), ModeLevels},
		{"level 0 removes the best", levelBook, levelEv(Buy, "100", "0"),
			[]Change{chg(Buy, "100", "0", all), chg(Buy, "99", "2", inView1)},
			lv("99", "2"), lv("101", "1"), ModeLevels},
		{"level 0 for a missing level is a no-op", levelBook, levelEv(Buy, "98", "0"),
			nil, lv("100", "1", "99", "2"), lv("101", "1"), ModeLevels},
		{"level 0 on a new book sets the mode only", nil, levelEv(Sell, "98", "0"),
			nil, nil, nil, ModeLevels},
		{"snapshot replaces the book", levelBook, snapshotEv(lv("98", "1", "100", "1"), lv("102", "2")),
			[]Change{chg(Buy, "99", "0", below1), chg(Buy, "98", "1", below1), chg(Sell, "101", "0", all), chg(Sell, "102", "2", all)},
			lv("100", "1", "98", "1"), lv("102", "2"), ModeLevels},
		{"snapshot moves a level into depth 1 with a new size", levelBook, snapshotEv(lv("99", "3"), lv("101", "1")),
			[]Change{chg(Buy, "100", "0", all), chg(Buy, "99", "3", all)},
			lv("99", "3"), lv("101", "1"), ModeLevels},
		{"snapshot moves a level into depth 1 with its size", levelBook, snapshotEv(lv("99", "2"), lv("101", "1")),
			[]Change{chg(Buy, "100", "0", all), chg(Buy, "99", "2", inView1)},
			lv("99", "2"), lv("101", "1"), ModeLevels},
		{"empty snapshot clears the book", levelBook, snapshotEv(nil, nil),
			[]Change{chg(Buy, "100", "0", all), chg(Buy, "99", "0", below1), chg(Sell, "101", "0", all)},
			nil, nil, ModeLevels},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := build(t, tt.setup)
			ev := tt.ev
			ev.Symbol, ev.Seq, ev.TS = "X", uint64(len(tt.setup)+1), 99_000_000
			if err := b.Apply(&ev); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got, want := sortChanges(b.Changes()), sortChanges(tt.changes); !slices.Equal(got, want) {
				t.Errorf("changes\n got %v\nwant %v", got, want)
			}
			s := b.Snapshot(0)
			if !slices.Equal(s.Bids, tt.bids) || !slices.Equal(s.Asks, tt.asks) {
				t.Errorf("book %v / %v, want %v / %v", s.Bids, s.Asks, tt.bids, tt.asks)
			}
			if b.Mode() != tt.mode || b.Seq() != ev.Seq || b.TS() != ev.TS || s.Seq != ev.Seq {
				t.Errorf("mode %v seq %d ts %d, want %v %d %d", b.Mode(), b.Seq(), b.TS(), tt.mode, ev.Seq, ev.TS)
			}
			u := b.LastUpdate()
			if (u.Changes == nil) != (len(tt.changes) == 0) || (ev.Kind == KindTrade) != (u.Trade != nil) {
				t.Errorf("update %+v", u)
			}
		})
	}
}

// TestApplyRejects checks every rejection: the error matches its sentinel and
// the book is unchanged in every way, down to its checkpoint bytes and the
// outputs of the last successful Apply.
func TestApplyRejects(t *testing.T) {
	big := MaxNum.String()
	tests := []struct {
		name  string
		setup []Event
		ev    Event
		want  error
	}{
		{"other symbol", orderBook, Event{Symbol: "Y", Kind: KindCancel, OrderID: "b1"}, ErrSymbol},
		{"seq already applied", orderBook, Event{Seq: 4, Kind: KindCancel, OrderID: "b1"}, ErrStale},
		{"seq older", orderBook, Event{Seq: 1, Kind: KindCancel, OrderID: "b1"}, ErrStale},
		{"unknown kind", orderBook, Event{Kind: 0}, ErrBadEvent},
		{"kind out of range", orderBook, Event{Kind: 42}, ErrBadEvent},

		{"add on a level book", levelBook, addEv("x", Buy, "1", "1"), ErrModeMismatch},
		{"add without id", orderBook, addEv("", Buy, "1", "1"), ErrBadEvent},
		{"add with side 0", orderBook, addEv("x", 0, "1", "1"), ErrBadSide},
		{"add with side 3", orderBook, addEv("x", 3, "1", "1"), ErrBadSide},
		{"add at price 0", orderBook, addEv("x", Buy, "0", "1"), ErrNonPositive},
		{"add at a negative price", orderBook, addEv("x", Buy, "-1", "1"), ErrNonPositive},
		{"add of size 0", orderBook, addEv("x", Buy, "1", "0"), ErrNonPositive},
		{"add of a negative size", orderBook, addEv("x", Sell, "1", "-0.1"), ErrNonPositive},
		{"add of a resting id", orderBook, addEv("b3", Sell, "105", "1"), ErrDuplicateOrder},
		{"add overflowing its level", orderBook, addEv("x", Buy, "100", big), ErrOverflow},

		{"modify on a level book", levelBook, modifyEv("b1", "1"), ErrModeMismatch},
		{"modify without id", orderBook, modifyEv("", "1"), ErrBadEvent},
		{"modify to 0", orderBook, modifyEv("b1", "0"), ErrNonPositive},
		{"modify to a negative size", orderBook, modifyEv("b1", "-1"), ErrNonPositive},
		{"modify of an unknown id", orderBook, modifyEv("zz", "1"), ErrUnknownOrder},
		{"modify on a new book", nil, modifyEv("b1", "1"), ErrUnknownOrder},
		{"modify overflowing its level", orderBook, modifyEv("b1", big), ErrOverflow},

		{"cancel on a level book", levelBook, cancelEv("b1"), ErrModeMismatch},
		{"cancel without id", orderBook, cancelEv(""), ErrBadEvent},
		{"cancel of an unknown id", orderBook, cancelEv("zz"), ErrUnknownOrder},

		{"trade without id", orderBook, tradeEv("", "", Buy, "1", "1"), ErrBadEvent},
		{"trade with side 0", orderBook, tradeEv("t", "", 0, "1", "1"), ErrBadSide},
		{"trade at price 0", orderBook, tradeEv("t", "", Buy, "0", "1"), ErrNonPositive},
		{"trade of size 0", orderBook, tradeEv("t", "", Buy, "1", "0"), ErrNonPositive},
		{"trade with a maker on a level book", levelBook, tradeEv("t", "b1", Buy, "1", "1"), ErrModeMismatch},
		{"trade with an unknown maker", orderBook, tradeEv("t", "zz", Buy, "100", "1"), ErrUnknownOrder},
		{"trade overfilling its maker", orderBook, tradeEv("t", "b1", Sell, "100", "1.00000001"), ErrOverfill},

		{"level on an order book", orderBook, levelEv(Buy, "1", "1"), ErrModeMismatch},
		{"level with side 0", levelBook, levelEv(0, "1", "1"), ErrBadSide},
		{"level at price 0", levelBook, levelEv(Buy, "0", "1"), ErrNonPositive},
		{"level of a negative size", levelBook, levelEv(Buy, "100", "-1"), ErrNonPositive},

		{"snapshot on an order book", orderBook, snapshotEv(nil, nil), ErrModeMismatch},
		{"snapshot with a bid of size 0", levelBook, snapshotEv(lv("1", "0"), nil), ErrNonPositive},
		{"snapshot with an ask at price 0", levelBook, snapshotEv(lv("1", "1"), lv("0", "1")), ErrNonPositive},
		{"snapshot with a bid price twice", levelBook, snapshotEv(lv("1", "1", "2", "1", "1", "2"), nil), ErrBadEvent},
		{"snapshot with an ask price twice after valid bids", levelBook, snapshotEv(lv("1", "1"), lv("5", "1", "5", "1")), ErrBadEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := build(t, tt.setup)
			// A last successful event whose outputs must survive the rejection.
			last := tradeEv("t0", "", Buy, "100", "1")
			last.Symbol, last.Seq, last.TS = "X", uint64(len(tt.setup)+1), 50_000_000
			if err := b.Apply(&last); err != nil {
				t.Fatal(err)
			}
			before := observe(t, b)
			ev := tt.ev
			if ev.Symbol == "" {
				ev.Symbol = "X"
			}
			if ev.Seq == 0 {
				ev.Seq = last.Seq + 1
			}
			ev.TS = 99_000_000
			err := b.Apply(&ev)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Apply = %v, want %v", err, tt.want)
			}
			if after := observe(t, b); !reflect.DeepEqual(after, before) {
				t.Errorf("the book changed:\nbefore %+v\n after %+v", before, after)
			}
		})
	}
	if err := New("X").Apply(nil); !errors.Is(err, ErrBadEvent) {
		t.Errorf("Apply(nil) = %v, want ErrBadEvent", err)
	}
}

// observation is everything observable about a book.
type observation struct {
	Seq        uint64
	TS         int64
	Mode       Mode
	Orders     int
	Snapshot   Snapshot
	Ticker     string
	Changes    []Change
	Update     Update
	Trade      Trade
	Checkpoint []byte
}

func observe(t *testing.T, b *Book) observation {
	t.Helper()
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	u := b.LastUpdate()
	o := observation{Seq: b.Seq(), TS: b.TS(), Mode: b.Mode(), Orders: b.Orders(), Snapshot: b.Snapshot(0),
		Ticker: fmt.Sprintf("%+v", b.Ticker()), Changes: slices.Clone(b.Changes()), Checkpoint: data}
	if u.Trade != nil {
		o.Trade = *u.Trade
	}
	u.Trade, u.Ticker = nil, nil
	o.Update = *u
	return o
}

// TestViewBoundaries checks, for every finite depth view D and both sides,
// the changes tagged with D when a level enters or leaves it at its edges,
// on a book of D+1 levels (so one level waits just below the view).
func TestViewBoundaries(t *testing.T) {
	// price returns the price of rank r on a side; ranks are two ticks apart
	// so that a level fits between any two.
	price := func(side Side, r int) Num {
		if side == Buy {
			return (4000 - 2*Num(r)) * tick
		}
		return (5000 + 2*Num(r)) * tick
	}
	between := func(side Side, r int) Num { return (price(side, r) + price(side, r+1)) / 2 } // below rank r
	size := func(r int) Num { return Num(r+1) * Unit }
	for v, d := range Depths[:finiteViews] {
		for _, side := range []Side{Buy, Sell} {
			// The book: ranks 0..d on the side under test, one level on the other.
			var book []Level
			for r := 0; r <= d; r++ {
				book = append(book, Level{price(side, r), size(r)})
			}
			other := []Level{{price(3-side, 0), Unit}}
			snap := Event{Kind: KindSnapshot, Bids: book, Asks: other}
			if side == Sell {
				snap.Bids, snap.Asks = other, book
			}
			tests := []struct {
				name string
				ev   Event
				want []Change // the changes tagged with view v
			}{
				{"a new best pushes the last level out", Event{Kind: KindLevel, Side: side, Price: between(side, -1), Size: 7},
					[]Change{{side, between(side, -1), 7, 0}, {side, price(side, d-1), 0, 0}}},
				{"a new last level pushes the old one out", Event{Kind: KindLevel, Side: side, Price: between(side, d-2), Size: 7},
					[]Change{{side, between(side, d-2), 7, 0}, {side, price(side, d-1), 0, 0}}},
				{"a level just below the view stays out", Event{Kind: KindLevel, Side: side, Price: between(side, d-1), Size: 7}, nil},
				{"removing the best pulls the next level in", Event{Kind: KindLevel, Side: side, Price: price(side, 0)},
					[]Change{{side, price(side, 0), 0, 0}, {side, price(side, d), size(d), 0}}},
				{"removing the last level pulls the next in", Event{Kind: KindLevel, Side: side, Price: price(side, d-1)},
					[]Change{{side, price(side, d-1), 0, 0}, {side, price(side, d), size(d), 0}}},
				{"removing the level below the view changes nothing in it", Event{Kind: KindLevel, Side: side, Price: price(side, d)}, nil},
				{"a new size for the last level", Event{Kind: KindLevel, Side: side, Price: price(side, d-1), Size: 7},
					[]Change{{side, price(side, d-1), 7, 0}}},
				{"a new size below the view", Event{Kind: KindLevel, Side: side, Price: price(side, d), Size: 7}, nil},
			}
			for _, tt := range tests {
				t.Run(fmt.Sprintf("depth %d/%s/%s", d, side, tt.name), func(t *testing.T) {
					c := newChecker("X")
					snap.Symbol, snap.Seq = "X", 1
					ev := tt.ev
					ev.Symbol, ev.Seq = "X", 2
					for _, e := range []*Event{&snap, &ev} {
						if err := c.step(e); err != nil { // the checker checks every view
							t.Fatal(err)
						}
					}
					var got []Change
					for _, ch := range c.b.Changes() {
						if ch.Views.Has(v) {
							ch.Views = 0
							got = append(got, ch)
						}
					}
					if got, want := sortChanges(got), sortChanges(tt.want); !slices.Equal(got, want) {
						t.Errorf("changes of view %d\n got %v\nwant %v\n all %v", d, got, want, c.b.Changes())
					}
				})
			}
		}
	}
}

// TestChangesMerge checks that one in-place size change is a single Change
// tagged with every view that holds the level.
func TestChangesMerge(t *testing.T) {
	for _, r := range []int{0, 1, 9, 10, 24, 25, 49, 50, 99, 100, 499, 500, 999, 1000, 1500} {
		var bids []Level
		for i := range 1600 {
			bids = append(bids, Level{Num(10_000-i) * Unit, Unit})
		}
		b := build(t, []Event{snapshotEv(bids, nil)})
		ev := Event{Symbol: "X", Seq: 2, Kind: KindLevel, Side: Buy, Price: bids[r].Price, Size: 3 * Unit}
		if err := b.Apply(&ev); err != nil {
			t.Fatal(err)
		}
		var want ViewMask
		for v, d := range Depths {
			if d == 0 || r < d {
				want |= 1 << v
			}
		}
		if got := b.Changes(); len(got) != 1 || got[0] != (Change{Buy, bids[r].Price, 3 * Unit, want}) {
			t.Errorf("rank %d: changes %v, want one with views %08b", r, got, want)
		}
	}
}

// TestLastUpdate checks what an Update carries besides its changes.
func TestLastUpdate(t *testing.T) {
	b := build(t, orderBook)
	step := func(ev Event) *Update {
		t.Helper()
		ev.Symbol, ev.Seq, ev.TS = "X", b.Seq()+1, b.TS()+1
		if err := b.Apply(&ev); err != nil {
			t.Fatal(err)
		}
		return b.LastUpdate()
	}
	if u := step(addEv("x", Buy, "98", "1")); u.Ticker != nil || u.Trade != nil || len(u.Changes) != 1 {
		t.Errorf("a level below the best: %+v", u)
	}
	if u := step(addEv("y", Buy, "100", "1")); u.Ticker == nil || u.Ticker.BidSize != n("4") || u.Ticker.Bid != n("100") {
		t.Errorf("a new best bid size: ticker %+v", u.Ticker)
	}
	u := step(tradeEv("t9", "a1", Buy, "101", "0.5"))
	if u.Trade == nil || *u.Trade != (Trade{TradeID: "t9", Price: n("101"), Size: n("0.5"), Side: Buy}) {
		t.Errorf("trade: %+v", u.Trade)
	}
	if u.Ticker == nil || !u.Ticker.HasLast || u.Ticker.Last != n("101") || u.Ticker.AskSize != n("0.5") || u.Ticker.Volume24h.String() != "0.5" {
		t.Errorf("trade: ticker %+v", u.Ticker)
	}
	if u.Checksum10 != Checksum(b.Snapshot(10).Bids, b.Snapshot(10).Asks) || u.Checksum1 != b.Snapshot(1).Checksum {
		t.Errorf("checksums %d/%d", u.Checksum1, u.Checksum10)
	}
	// The update does not share memory with the book.
	u.Changes[0].Size = 12345
	if b.Changes()[0].Size == 12345 {
		t.Error("LastUpdate's changes alias the book's")
	}
	if v := step(modifyEv("x", "2")); v.Ticker != nil || v.Trade != nil {
		t.Errorf("a deep modify: %+v", v)
	}
	if u.Trade.TradeID != "t9" || u.Changes[0].Size != 12345 {
		t.Error("an update changed after the next Apply")
	}
}

// TestApplyCopiesIDs checks that the book keeps no reference to the bytes of
// an event's ids: a decoder may hand Apply strings that alias a buffer it
// reuses for the next record.
func TestApplyCopiesIDs(t *testing.T) {
	b := New("X")
	buf := []byte("order-1")
	ev := Event{Symbol: "X", Seq: 1, Kind: KindAdd, OrderID: unsafe.String(&buf[0], len(buf)), Side: Buy, Price: Unit, Size: Unit}
	if err := b.Apply(&ev); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXXXX")
	tbuf := []byte("trade-1")
	trade := Event{Symbol: "X", Seq: 2, Kind: KindTrade, TradeID: unsafe.String(&tbuf[0], len(tbuf)), Side: Buy, Price: Unit, Size: Unit}
	if err := b.Apply(&trade); err != nil {
		t.Fatal(err)
	}
	copy(tbuf, "XXXXXXX")
	if u := b.LastUpdate(); u.Trade.TradeID != "trade-1" {
		t.Errorf("trade id %q, want trade-1", u.Trade.TradeID)
	}
	cancel := Event{Symbol: "X", Seq: 3, Kind: KindCancel, OrderID: "order-1"}
	if err := b.Apply(&cancel); err != nil {
		t.Errorf("cancel of the order by its original id: %v", err)
	}
}

func TestZeroBook(t *testing.T) {
	var b Book
	ev := Event{Seq: 1, Kind: KindLevel, Side: Sell, Price: Unit, Size: Unit}
	if err := b.Apply(&ev); err != nil {
		t.Fatal(err)
	}
	if b.Depth(Sell) != 1 || b.Depth(Buy) != 0 || b.Depth(0) != 0 {
		t.Errorf("depths %d/%d", b.Depth(Buy), b.Depth(Sell))
	}
}
