package book

import (
	"math"
	"math/big"
	"math/bits"

	"github.com/shopspring/decimal"
)

// The rolling 24h statistics are kept in one-minute buckets of event time,
// not as a list of trades, so their memory is bounded whatever the rate.
const (
	// BucketWidth is the width of a 24h-statistics bucket in microseconds.
	BucketWidth = 60_000_000
	// WindowBuckets is the number of buckets in the 24h window: the bucket of
	// the newest event time and the 1439 before it.
	WindowBuckets = 1440
)

// u128 is an unsigned 128-bit integer: trade volumes are summed in it so
// that no realistic flow can overflow (a Num overflows after a few trades of
// the largest sizes).
type u128 struct{ hi, lo uint64 }

func (a u128) add(b u128) u128 {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	return u128{a.hi + b.hi + c, lo}
}

func (a u128) sub(b u128) u128 {
	lo, c := bits.Sub64(a.lo, b.lo, 0)
	return u128{a.hi - b.hi - c, lo}
}

func (a u128) isZero() bool { return a.hi == 0 && a.lo == 0 }

// decimal returns a in units of 10^-Scale as an exact decimal.
func (a u128) decimal() decimal.Decimal {
	if a.hi == 0 && a.lo <= uint64(MaxNum) {
		return decimal.New(int64(a.lo), -Scale)
	}
	v := new(big.Int).SetUint64(a.hi)
	v.Lsh(v, 64)
	v.Or(v, new(big.Int).SetUint64(a.lo))
	return decimal.NewFromBigInt(v, -Scale)
}

// bucket holds the trades of one minute of event time.
type bucket struct {
	minute          int64 // floor(ts / BucketWidth)
	openTS          int64 // event time of the first trade of the bucket
	open, high, low Num
	volume          u128
}

// window is the rolling 24h window of trade statistics. Its head is the
// minute of the newest event time the book has seen (any event, not only
// trades), and it holds the non-empty buckets of the WindowBuckets minutes
// ending there, oldest first, in buf[start:].
type window struct {
	hasHead bool
	head    int64 // minute of the newest event time
	headEnd int64 // the first event time after the head minute
	buf     []bucket
	start   int

	// Aggregates over the live buckets. volume is always exact; high and low
	// are kept incrementally while trades arrive and recomputed (a scan of at
	// most WindowBuckets buckets) only after an expiry may have removed them.
	volume    u128
	high, low Num
	hlValid   bool
}

// minuteOf returns the bucket minute of an event time, rounding down.
func minuteOf(ts int64) int64 {
	m := ts / BucketWidth
	if ts%BucketWidth < 0 {
		m--
	}
	return m
}

func (w *window) live() []bucket { return w.buf[w.start:] }

// oldest returns the first minute still inside the window.
func (w *window) oldest() int64 { return w.head - (WindowBuckets - 1) }

// advance moves the head to the minute of ts if that is newer and expires
// the buckets that fall out of the window. It reports whether any trade
// left the window, which changes the statistics.
func (w *window) advance(ts int64) bool {
	if w.hasHead && ts < w.headEnd {
		return false // the common case: no division
	}
	m := minuteOf(ts)
	if w.hasHead && m <= w.head {
		return false
	}
	w.setHead(m)
	expired := false
	for w.start < len(w.buf) && w.buf[w.start].minute < w.oldest() {
		b := &w.buf[w.start]
		w.volume = w.volume.sub(b.volume)
		if b.high >= w.high || b.low <= w.low {
			w.hlValid = false
		}
		w.start++
		expired = true
	}
	if w.start == len(w.buf) {
		w.buf, w.start = w.buf[:0], 0
	}
	return expired
}

// setHead sets the head minute.
func (w *window) setHead(m int64) {
	w.hasHead, w.head = true, m
	w.headEnd = (m + 1) * BucketWidth
	if m >= math.MaxInt64/BucketWidth { // the last minutes of int64 time
		w.headEnd = math.MaxInt64
	}
}

// add records a trade at event time ts. It must follow advance(ts). A trade
// older than the window changes nothing and add reports false.
func (w *window) add(ts int64, price, size Num) bool {
	m := minuteOf(ts)
	if m < w.oldest() {
		return false
	}
	live := w.live()
	var b *bucket
	switch n := len(live); {
	case n > 0 && live[n-1].minute == m:
		b = &live[n-1]
	case n == 0 || live[n-1].minute < m:
		b = w.push(m)
	default: // an event time older than the newest trade's: find its bucket
		lo, hi := 0, n
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if live[mid].minute < m {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if live[lo].minute == m {
			b = &live[lo]
		} else {
			b = w.insertAt(lo, m)
		}
	}
	if b.volume.isZero() { // a new bucket
		b.openTS, b.open, b.high, b.low = ts, price, price, price
	} else {
		if ts < b.openTS {
			b.openTS, b.open = ts, price
		}
		b.high, b.low = max(b.high, price), min(b.low, price)
	}
	b.volume = b.volume.add(u128{lo: uint64(size)})
	if len(w.live()) == 1 && w.volume.isZero() {
		w.high, w.low, w.hlValid = price, price, true
	} else if w.hlValid {
		w.high, w.low = max(w.high, price), min(w.low, price)
	}
	w.volume = w.volume.add(u128{lo: uint64(size)})
	return true
}

// push appends an empty bucket for minute m, newer than every live one,
// reusing the space of expired buckets before it grows the buffer.
func (w *window) push(m int64) *bucket {
	if len(w.buf) == cap(w.buf) && w.start > 0 {
		n := copy(w.buf, w.live())
		w.buf, w.start = w.buf[:n], 0
	}
	w.buf = append(w.buf, bucket{minute: m})
	return &w.buf[len(w.buf)-1]
}

// insertAt inserts an empty bucket for minute m at live index i.
func (w *window) insertAt(i int, m int64) *bucket {
	w.push(0)
	live := w.live()
	copy(live[i+1:], live[i:])
	live[i] = bucket{minute: m}
	return &live[i]
}

// stats fills the 24h fields of t: zero while no trade is in the window.
func (w *window) stats(t *Ticker) {
	live := w.live()
	if len(live) == 0 {
		t.Open24h, t.High24h, t.Low24h, t.Volume24h = 0, 0, 0, decimal.Decimal{}
		return
	}
	if !w.hlValid {
		w.high, w.low = live[0].high, live[0].low
		for i := 1; i < len(live); i++ {
			w.high, w.low = max(w.high, live[i].high), min(w.low, live[i].low)
		}
		w.hlValid = true
	}
	t.Open24h, t.High24h, t.Low24h = live[0].open, w.high, w.low
	t.Volume24h = w.volume.decimal()
}
