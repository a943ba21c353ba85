package book

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCheckpoint is returned by UnmarshalBinary for data that is not a valid
// checkpoint of a supported version.
var ErrCheckpoint = errors.New("invalid book checkpoint")

// checkpointMagic opens every checkpoint; checkpointVersion follows it.
const (
	checkpointMagic   = "mdbk"
	checkpointVersion = 2
)

// MarshalBinary returns the complete state of the book as a versioned binary
// checkpoint: symbol, mode, seq, ts, the levels of both sides, the resting
// orders of each level in time priority (id and remaining size), the last
// trade and the 24h buckets. The outputs of the last Apply (Changes, the
// Trade of LastUpdate) describe an event, not the state, and are not kept.
//
// Layout (version 2; integers are varints, unsigned ones uvarints):
//
//	"mdbk" version symbol(len, bytes) mode seq ts
//	hasLast [last lastSize] lastTradeSeq
//	hasHead [head] nBuckets {minute openTS open high low volumeHi volumeLo}
//	bids, then asks: nLevels {price, then size (levels) or nOrders {id(len, bytes) size} (orders)}
//
// Levels are written best last and orders oldest first, so equal books give
// equal bytes. Version 1, without lastTradeSeq, is still read (as 0).
func (b *Book) MarshalBinary() ([]byte, error) {
	size := 64 + len(b.symbol) + 64*len(b.win.live()) + 24*(len(b.bids.levels)+len(b.asks.levels)) + 24*len(b.orders)
	for _, o := range b.orders {
		size += len(o.id)
	}
	e := make([]byte, 0, size)
	e = append(e, checkpointMagic...)
	e = binary.AppendUvarint(e, checkpointVersion)
	e = appendString(e, b.symbol)
	e = append(e, byte(b.mode))
	e = binary.AppendUvarint(e, b.seq)
	e = binary.AppendVarint(e, b.ts)
	e = appendBool(e, b.hasLast)
	if b.hasLast {
		e = binary.AppendVarint(e, int64(b.last))
		e = binary.AppendVarint(e, int64(b.lastSize))
	}
	e = binary.AppendUvarint(e, b.lastTradeSeq)
	e = appendBool(e, b.win.hasHead)
	if b.win.hasHead {
		e = binary.AppendVarint(e, b.win.head)
	}
	live := b.win.live()
	e = binary.AppendUvarint(e, uint64(len(live)))
	for _, k := range live {
		e = binary.AppendVarint(e, k.minute)
		e = binary.AppendVarint(e, k.openTS)
		e = binary.AppendVarint(e, int64(k.open))
		e = binary.AppendVarint(e, int64(k.high))
		e = binary.AppendVarint(e, int64(k.low))
		e = binary.AppendUvarint(e, k.volume.hi)
		e = binary.AppendUvarint(e, k.volume.lo)
	}
	for _, l := range []*ladder{&b.bids, &b.asks} {
		e = binary.AppendUvarint(e, uint64(len(l.levels)))
		for i := range l.levels {
			lv := &l.levels[i]
			e = binary.AppendVarint(e, int64(lv.Price))
			if b.mode != ModeOrders {
				e = binary.AppendVarint(e, int64(lv.Size))
				continue
			}
			n := 0
			for o := lv.head; o != nil; o = o.next {
				n++
			}
			e = binary.AppendUvarint(e, uint64(n))
			for o := lv.head; o != nil; o = o.next {
				e = appendString(e, o.id)
				e = binary.AppendVarint(e, int64(o.size))
			}
		}
	}
	return e, nil
}

func appendString(e []byte, s string) []byte {
	e = binary.AppendUvarint(e, uint64(len(s)))
	return append(e, s...)
}

func appendBool(e []byte, v bool) []byte {
	if v {
		return append(e, 1)
	}
	return append(e, 0)
}

// UnmarshalBinary replaces the book's whole state, symbol included, with a
// checkpoint made by MarshalBinary; the restored book is equal to the saved
// one in every observable way, and behaves the same for every event after.
// Data that is not a valid checkpoint returns an error matching
// ErrCheckpoint, and the book is left unchanged.
func (b *Book) UnmarshalBinary(data []byte) error {
	nb, err := decodeCheckpoint(data)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	*b = *nb
	return nil
}

// decoder reads a checkpoint; its first error sticks.
type decoder struct {
	data []byte
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.fail("read %s: truncated or overlong varint", what)
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data)
	if n <= 0 {
		d.fail("read %s: truncated or overlong varint", what)
		return 0
	}
	d.data = d.data[n:]
	return v
}

// positive reads a Num that must be > 0.
func (d *decoder) positive(what string) Num {
	v := d.varint(what)
	if d.err == nil && v <= 0 {
		d.fail("%s %d is not positive", what, v)
	}
	return Num(v)
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.data) == 0 {
		d.fail("read %s: truncated", what)
		return 0
	}
	v := d.data[0]
	d.data = d.data[1:]
	return v
}

func (d *decoder) bool(what string) bool {
	switch v := d.byte(what); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("%s: invalid flag %d", what, v)
		return false
	}
}

func (d *decoder) string(what string) string {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.data)) {
		d.fail("read %s: length %d exceeds the %d bytes left", what, n, len(d.data))
		return ""
	}
	s := string(d.data[:n])
	d.data = d.data[n:]
	return s
}

// count reads a number of items that take at least min bytes each, so that
// junk cannot make the decoder allocate more than the data could hold.
func (d *decoder) count(what string, min int) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64(len(d.data)/min) {
		d.fail("%s %d exceeds what the %d bytes left can hold", what, n, len(d.data))
		return 0
	}
	return int(n)
}

func decodeCheckpoint(data []byte) (*Book, error) {
	if len(data) < len(checkpointMagic) || string(data[:len(checkpointMagic)]) != checkpointMagic {
		return nil, errors.New("missing magic")
	}
	d := &decoder{data: data[len(checkpointMagic):]}
	v := d.uvarint("version")
	if d.err == nil && (v < 1 || v > checkpointVersion) {
		return nil, fmt.Errorf("unsupported version %d", v)
	}
	b := New(d.string("symbol"))
	b.mode = Mode(d.byte("mode"))
	if d.err == nil && b.mode > ModeLevels {
		d.fail("invalid mode %d", b.mode)
	}
	b.seq = d.uvarint("seq")
	b.ts = d.varint("ts")
	if b.hasLast = d.bool("last trade flag"); b.hasLast {
		b.last = d.positive("last price")
		b.lastSize = d.positive("last size")
	}
	if v >= 2 {
		if b.lastTradeSeq = d.uvarint("last trade seq"); d.err == nil && b.lastTradeSeq > b.seq {
			d.fail("last trade seq %d after the book's seq %d", b.lastTradeSeq, b.seq)
		}
	}
	d.window(&b.win)
	for _, l := range []*ladder{&b.bids, &b.asks} {
		d.ladder(b, l)
	}
	if d.err == nil && len(d.data) > 0 {
		d.fail("%d bytes after the end", len(d.data))
	}
	if d.err != nil {
		return nil, d.err
	}
	if b.mode == ModeUnset && (len(b.bids.levels) > 0 || len(b.asks.levels) > 0) {
		return nil, errors.New("levels in a book without a mode")
	}
	return b, nil
}

func (d *decoder) window(w *window) {
	if d.bool("window head flag") {
		w.setHead(d.varint("window head"))
	}
	n := d.count("bucket count", 7)
	if d.err == nil && n > 0 && !w.hasHead {
		d.fail("buckets without a window head")
	}
	if d.err == nil && n > WindowBuckets {
		d.fail("%d buckets exceed the window", n)
	}
	if d.err != nil {
		return
	}
	w.buf = make([]bucket, n)
	prev := w.oldest() - 1
	for i := range w.buf {
		k := &w.buf[i]
		k.minute = d.varint("bucket minute")
		k.openTS = d.varint("bucket open time")
		k.open = d.positive("bucket open")
		k.high = d.positive("bucket high")
		k.low = d.positive("bucket low")
		k.volume.hi = d.uvarint("bucket volume")
		k.volume.lo = d.uvarint("bucket volume")
		switch {
		case d.err != nil:
			return
		case k.minute <= prev || k.minute > w.head:
			d.fail("bucket minute %d out of order or outside the window", k.minute)
		case minuteOf(k.openTS) != k.minute:
			d.fail("bucket open time %d outside its minute %d", k.openTS, k.minute)
		case k.low > k.open || k.open > k.high:
			d.fail("bucket open %s outside its low %s and high %s", k.open, k.low, k.high)
		case k.volume.isZero():
			d.fail("empty bucket")
		}
		prev = k.minute
		// The window's volume is at most WindowBuckets bucket volumes,
		// each below 2^128/2^11: it cannot wrap.
		if k.volume.hi >= 1<<(64-11) {
			d.fail("bucket volume out of range")
		}
		w.volume = w.volume.add(k.volume)
	}
}

func (d *decoder) ladder(b *Book, l *ladder) {
	n := d.count(l.side.String()+" level count", 2)
	if d.err != nil {
		return
	}
	if n > 0 {
		l.levels = make([]level, n)
	}
	for i := range l.levels {
		lv := &l.levels[i]
		lv.Price = d.positive("level price")
		if d.err == nil && i > 0 && l.key(lv.Price) <= l.key(l.levels[i-1].Price) {
			d.fail("%s levels out of order at %s", l.side, lv.Price)
		}
		if b.mode != ModeOrders {
			lv.Size = d.positive("level size")
			continue
		}
		orders := d.count("order count", 2)
		if d.err == nil && orders == 0 {
			d.fail("level %s without orders", lv.Price)
		}
		for range orders {
			if d.err != nil {
				return
			}
			o := &order{id: d.string("order id"), side: l.side, price: lv.Price, size: d.positive("order size")}
			if d.err != nil {
				return
			}
			if o.id == "" {
				d.fail("empty order id")
				return
			}
			if _, dup := b.orders[o.id]; dup {
				d.fail("order id %q twice", o.id)
				return
			}
			var ok bool
			if lv.Size, ok = lv.Size.Add(o.size); !ok {
				d.fail("level %s: %w", lv.Price, ErrOverflow)
				return
			}
			b.orders[o.id] = o
			if lv.tail == nil {
				lv.head = o
			} else {
				lv.tail.next, o.prev = o, lv.tail
			}
			lv.tail = o
		}
	}
}
