package book

import (
	"errors"
	"fmt"
	"testing"

	"github.com/shopspring/decimal"
)

// FuzzNumParse checks that ParseNum round-trips through Num.String and
// agrees with shopspring/decimal: on the value of what both accept, and in
// accepting every decimal text whose value a Num can hold.
func FuzzNumParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseNum(s)
		if vb, errb := ParseNumBytes([]byte(s)); vb != v || errb != err {
			t.Fatalf("ParseNumBytes(%q) = %v, %v; ParseNum = %v, %v", s, vb, errb, v, err)
		}
		d, derr := decimal.NewFromString(s)
		if err != nil {
			if !errors.Is(err, ErrNumSyntax) && !errors.Is(err, ErrNumPrecision) && !errors.Is(err, ErrNumRange) {
				t.Fatalf("ParseNum(%q): unexpected error %v", s, err)
			}
			if derr == nil {
				if w, err2 := NumFromDecimal(d); err2 == nil {
					t.Fatalf("ParseNum(%q) rejected a representable value %s (%v)", s, w, err)
				}
			}
			return
		}
		text := v.String()
		if w, err := ParseNum(text); err != nil || w != v {
			t.Fatalf("ParseNum(%q) = %v; ParseNum of its text %q = %v, %v", s, v, text, w, err)
		}
		if string(v.Append([]byte("x"))) != "x"+text {
			t.Fatalf("Append and String disagree for %q", text)
		}
		if v.Decimal().String() != text {
			t.Fatalf("Num %q is decimal %q", text, v.Decimal().String())
		}
		if derr == nil && !d.Equal(v.Decimal()) {
			t.Fatalf("ParseNum(%q) = %s, decimal says %s", s, text, d)
		}
		if w, err := NumFromDecimal(v.Decimal()); err != nil || w != v {
			t.Fatalf("NumFromDecimal(%s) = %v, %v", text, w, err)
		}
	})
}

// fuzzEvents turns bytes into a sequence of events for symbol "X": small
// tables of prices, sizes and ids make events collide on levels and orders,
// and every field may be invalid.
func fuzzEvents(data []byte) []Event {
	prices := []Num{100 * Unit, 100*Unit + tick, 100*Unit - tick, 101 * Unit, 99 * Unit, 100*Unit + 2*tick, 100*Unit - 2*tick, 1, 0, -Unit}
	sizes := []Num{Unit, 2 * Unit, Unit / 2, 1, 0, -1, MaxNum, MaxNum - 1, 3 * Unit, 7}
	id := func(b byte) string {
		if b%9 == 8 {
			return ""
		}
		return fmt.Sprintf("o%d", b%9)
	}
	var evs []Event
	var seq uint64
	var ts int64
	for len(data) >= 6 {
		op, side, p, s, x, y := data[0], data[1], data[2], data[3], data[4], data[5]
		data = data[6:]
		seq++
		ts += int64(y) * int64(y) * int64(y) * 1_000_000 // up to ~4.6h a step
		ev := Event{Symbol: "X", Seq: seq, TS: ts, Kind: Kind(op % 8), Side: Side(side % 4),
			Price: prices[int(p)%len(prices)], Size: sizes[int(s)%len(sizes)]}
		switch {
		case op&0x80 != 0 && op&0x40 != 0:
			ev.Seq = seq - 1 // stale
		case op&0xc0 == 0x40 && x == 0xff:
			ev.Symbol = "Y"
		}
		switch ev.Kind {
		case KindAdd, KindModify, KindCancel:
			ev.OrderID = id(x)
		case KindTrade:
			ev.TradeID = fmt.Sprint("t", seq)
			if x&1 != 0 {
				ev.MakerOrderID = id(x >> 1)
			}
		case KindSnapshot:
			for i := range int(x % 5) {
				ev.Bids = append(ev.Bids, Level{prices[(int(p)+i*3)%len(prices)], sizes[(int(s)+i)%len(sizes)]})
			}
			for i := range int(x / 5 % 5) {
				ev.Asks = append(ev.Asks, Level{prices[(int(p)+i*7+1)%len(prices)], sizes[(int(s)+i*3)%len(sizes)]})
			}
		}
		evs = append(evs, ev)
	}
	return evs
}

// FuzzApply applies byte-derived events to a Book and the reference model
// side by side: they must agree after every event (see checker), and a
// checkpoint of the result must restore an equal book.
func FuzzApply(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newChecker("X")
		evs := fuzzEvents(data)
		for i := range evs {
			if err := c.step(&evs[i]); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if i%16 == 15 {
				if err := c.roundTrip(); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
		}
		if err := c.roundTrip(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzMarshalBinary feeds junk to UnmarshalBinary: it must fail cleanly
// (ErrCheckpoint, book unchanged) or restore a book that checkpoints to
// the same bytes again and keeps working.
func FuzzMarshalBinary(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b := New("keep")
		if err := b.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("error %v does not match ErrCheckpoint", err)
			}
			if b.Symbol() != "keep" || b.Seq() != 0 || b.Mode() != ModeUnset {
				t.Fatal("a failed UnmarshalBinary changed the book")
			}
			return
		}
		first, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var b2 Book
		if err := b2.UnmarshalBinary(first); err != nil {
			t.Fatalf("UnmarshalBinary of MarshalBinary's output: %v", err)
		}
		if second, _ := b2.MarshalBinary(); string(second) != string(first) {
			t.Fatal("checkpoint round trip is not stable")
		}
		checkInvariants(t, b)
		// The restored book keeps working: remove everything in it.
		seq := b.Seq() + 1
		for _, side := range []Side{Buy, Sell} {
			for b.Depth(side) > 0 {
				l := b.ladder(side).levels[b.Depth(side)-1]
				ev := Event{Symbol: b.Symbol(), Seq: seq, TS: b.TS(), Kind: KindLevel, Side: side, Price: l.Price}
				if b.Mode() == ModeOrders {
					ev = Event{Symbol: b.Symbol(), Seq: seq, TS: b.TS(), Kind: KindCancel, OrderID: l.head.id}
				}
				if err := b.Apply(&ev); err != nil {
					t.Fatalf("emptying the restored book: %v", err)
				}
				seq++
				checkInvariants(t, b)
			}
		}
		if b.Orders() != 0 {
			t.Fatalf("%d orders left in an empty book", b.Orders())
		}
	})
}

// checkInvariants checks the internal consistency of a book: sorted positive
// levels whose sizes are the sums of their orders, every order indexed, sane
// 24h statistics.
func checkInvariants(t *testing.T, b *Book) {
	t.Helper()
	orders := 0
	for _, l := range []*ladder{&b.bids, &b.asks} {
		for i, lv := range l.levels {
			if lv.Price <= 0 || lv.Size <= 0 || (i > 0 && l.key(lv.Price) <= l.key(l.levels[i-1].Price)) {
				t.Fatalf("%s level %d: %s×%s out of order or not positive", l.side, i, lv.Price, lv.Size)
			}
			if b.mode != ModeOrders {
				if lv.head != nil {
					t.Fatal("orders in a level-based book")
				}
				continue
			}
			var sum Num
			for o := lv.head; o != nil; o = o.next {
				if b.orders[o.id] != o || o.price != lv.Price || o.side != l.side || o.size <= 0 {
					t.Fatalf("order %q is not consistent with its level", o.id)
				}
				sum += o.size
				orders++
			}
			if sum != lv.Size {
				t.Fatalf("level %s has size %s, its orders %s", lv.Price, lv.Size, sum)
			}
		}
	}
	if orders != len(b.orders) {
		t.Fatalf("%d orders in levels, %d indexed", orders, len(b.orders))
	}
	tk := b.Ticker()
	if tk.Volume24h.Sign() < 0 || tk.Low24h > tk.High24h || (tk.Volume24h.Sign() > 0) != (tk.Open24h > 0) {
		t.Fatalf("ticker %+v", tk)
	}
}
