package book

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// levelOrders returns the ids of the orders of a level in time priority.
func levelOrders(b *Book, side Side, price Num) []string {
	l := b.ladder(side)
	i, ok := l.find(price)
	if !ok {
		return nil
	}
	var ids []string
	for o := l.levels[i].head; o != nil; o = o.next {
		ids = append(ids, o.id)
	}
	return ids
}

func TestCheckpointRoundTrip(t *testing.T) {
	setup := append(slices.Clone(orderBook),
		addEv("b4", Buy, "100", "4"),
		modifyEv("b2", "5"), // keeps its place
		cancelEv("b1"),
		addEv("b1", Buy, "100", "1"), // back, now last
		tradeEv("t1", "a1", Buy, "101", "0.25"),
		tradeEv("t2", "", Sell, "99", "3"),
	)
	b := build(t, setup)
	if got, want := levelOrders(b, Buy, n("100")), []string{"b2", "b4", "b1"}; !slices.Equal(got, want) {
		t.Fatalf("time priority %v, want %v", got, want)
	}
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r := New("other")
	if err := r.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	if got := levelOrders(r, Buy, n("100")); !slices.Equal(got, []string{"b2", "b4", "b1"}) {
		t.Errorf("restored time priority %v", got)
	}
	if again, _ := r.MarshalBinary(); !bytes.Equal(again, data) {
		t.Error("the restored book checkpoints to other bytes")
	}
	// Equal in every observable way, now and after the same events.
	same := func(what string) {
		t.Helper()
		if r.Symbol() != b.Symbol() || r.Mode() != b.Mode() || r.Seq() != b.Seq() || r.TS() != b.TS() || r.Orders() != b.Orders() ||
			!reflect.DeepEqual(r.Snapshot(0), b.Snapshot(0)) || !reflect.DeepEqual(r.Ticker(), b.Ticker()) {
			t.Fatalf("%s: restored book differs:\n%+v %+v\n%+v %+v", what, r.Snapshot(0), r.Ticker(), b.Snapshot(0), b.Ticker())
		}
	}
	same("restored")
	next := []Event{cancelEv("b4"), tradeEv("t3", "b2", Sell, "100", "5"), addEv("b5", Buy, "100.5", "1"), tradeEv("t4", "", Buy, "100", "1")}
	for i, ev := range next {
		ev.Symbol, ev.Seq, ev.TS = "X", b.Seq()+1, b.TS()+int64(i)*BucketWidth
		e1, e2 := ev, ev
		if err1, err2 := b.Apply(&e1), r.Apply(&e2); err1 != nil || err2 != nil {
			t.Fatalf("%s: %v / %v", ev.Kind, err1, err2)
		}
		if u1, u2 := b.LastUpdate(), r.LastUpdate(); !reflect.DeepEqual(u1, u2) {
			t.Fatalf("%s: updates differ:\n%+v\n%+v", ev.Kind, u1, u2)
		}
		same(ev.Kind.String())
	}
}

// TestCheckpointRejects checks that every truncation of a checkpoint, and
// data of another version, fail with ErrCheckpoint and leave the book as it was.
func TestCheckpointRejects(t *testing.T) {
	for _, setup := range [][]Event{orderBook, levelBook} {
		data, err := build(t, append(slices.Clone(setup), tradeEv("t", "", Buy, "1", "1"))).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b := build(t, orderBook)
		before := observe(t, b)
		bad := [][]byte{append(slices.Clone(data), 0), append([]byte("mdbk\x03"), data[5:]...), []byte("MDBK\x01")}
		for i := range data {
			bad = append(bad, data[:i])
		}
		for _, d := range bad {
			if err := b.UnmarshalBinary(d); !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("UnmarshalBinary(%q) = %v, want ErrCheckpoint", d, err)
			}
		}
		if after := observe(t, b); !reflect.DeepEqual(after, before) {
			t.Error("a failed UnmarshalBinary changed the book")
		}
	}
}

// TestCheckpointTradeSeq checks that the seq of the last trade survives a
// checkpoint, so that the next trade's PrevTradeSeq goes on from it, and
// that a version 1 checkpoint (which did not hold it) still reads, as 0.
func TestCheckpointTradeSeq(t *testing.T) {
	b := build(t, append(slices.Clone(levelBook), tradeEv("t1", "", Buy, "1", "1"), tradeEv("t2", "", Sell, "1", "2")))
	last := b.LastTradeSeq()
	if last != b.Seq() || b.LastUpdate().PrevTradeSeq != last-1 {
		t.Fatalf("last trade seq %d, book seq %d, prev %d", last, b.Seq(), b.LastUpdate().PrevTradeSeq)
	}
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r := new(Book)
	if err := r.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	ev := tradeEv("t3", "", Buy, "1", "1")
	ev.Symbol, ev.Seq, ev.TS = b.Symbol(), b.Seq()+5, b.TS()
	if err := r.Apply(&ev); err != nil {
		t.Fatal(err)
	}
	if u := r.LastUpdate(); u.PrevTradeSeq != last || r.LastTradeSeq() != ev.Seq {
		t.Fatalf("after restore: prev %d, want %d; last %d", u.PrevTradeSeq, last, r.LastTradeSeq())
	}

	// Version 1: the same bytes without lastTradeSeq, after the last trade.
	d := data[len(checkpointMagic)+1:] // magic, version 2 (one byte)
	skip := func(n int) { d = d[n:] }
	n, k := binary.Uvarint(d) // symbol
	skip(k + int(n))
	skip(1) // mode
	_, k = binary.Uvarint(d)
	skip(k) // seq
	_, k = binary.Varint(d)
	skip(k) // ts
	if d[0] != 1 {
		t.Fatal("no last trade")
	}
	skip(1)
	for range 2 { // last, lastSize
		_, k = binary.Varint(d)
		skip(k)
	}
	at := len(data) - len(d)
	_, k = binary.Uvarint(d)
	v1 := append(append([]byte("mdbk\x01"), data[len(checkpointMagic)+1:at]...), data[at+k:]...)
	old := new(Book)
	if err := old.UnmarshalBinary(v1); err != nil {
		t.Fatalf("version 1: %v", err)
	}
	if old.LastTradeSeq() != 0 || old.Seq() != b.Seq() || !reflect.DeepEqual(old.Snapshot(0), b.Snapshot(0)) || !reflect.DeepEqual(old.Ticker(), b.Ticker()) {
		t.Fatalf("version 1 read as\n%+v\n%+v\nwant\n%+v\n%+v", old.Ticker(), old.Snapshot(0), b.Ticker(), b.Snapshot(0))
	}
}
