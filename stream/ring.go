package stream

import (
	"cmp"
	"slices"

	"github.com/marketd/marketd/book"
)

// ring keeps the most recent updates of a book stream, oldest first, for
// resume and for catching up conflated clients. Its entries share the
// Changes of the book's Update (immutable) or own the merged changes of an
// interval flush, so an entry costs a few words, not an encoded message.
type ring struct {
	buf   []update
	start int // index in buf of the oldest entry
	size  int // capacity
}

func newRing(size int) ring { return ring{size: size} }

// len returns the number of entries.
func (r *ring) len() int { return len(r.buf) }

// at returns the entry i, 0 being the oldest.
func (r *ring) at(i int) *update {
	i += r.start
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	return &r.buf[i]
}

// push appends e, dropping the oldest entry when the ring is full. The
// buffer grows as entries come, so a quiet stream holds little memory.
func (r *ring) push(e update) {
	if len(r.buf) < r.size {
		r.buf = append(r.buf, e)
		return
	}
	r.buf[r.start] = e
	r.start++
	if r.start == len(r.buf) {
		r.start = 0
	}
}

// after returns the index of the entry that directly follows seq in the
// stream (its prevSeq is seq), and false when the ring holds none. The
// entries' seqs increase, so this is a binary search.
func (r *ring) after(seq uint64) (int, bool) {
	n := r.len()
	lo, hi := 0, n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.at(mid).prevSeq < seq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < n && r.at(lo).prevSeq == seq {
		return lo, true
	}
	return 0, false
}

// levelKey identifies a price level of a side.
type levelKey struct {
	side  book.Side
	price book.Num
}

// merger merges book changes: the last size of each (side, price) wins.
// Interval groups keep one between flushes; catch-up uses a fresh one.
type merger struct {
	idx     map[levelKey]int
	changes []book.Change
	// seq, ts and checksum are those of the last merged update.
	seq      uint64
	ts       int64
	checksum uint32
}

// add merges the changes of u that belong to view.
func (m *merger) add(changes []book.Change, view int, seq uint64, ts int64, checksum uint32) {
	for i := range changes {
		c := &changes[i]
		if !c.Views.Has(view) {
			continue
		}
		k := levelKey{c.Side, c.Price}
		if j, ok := m.idx[k]; ok {
			m.changes[j].Size = c.Size
			continue
		}
		if m.idx == nil {
			m.idx = make(map[levelKey]int)
		}
		m.idx[k] = len(m.changes)
		m.changes = append(m.changes, book.Change{Side: c.Side, Price: c.Price, Size: c.Size, Views: 1 << view})
	}
	m.seq, m.ts, m.checksum = seq, ts, checksum
}

// empty reports whether nothing was merged since the last take.
func (m *merger) empty() bool { return len(m.changes) == 0 }

// take returns the merged changes, bids best first then asks best first,
// and starts over. The returned slice is the caller's.
func (m *merger) take() []book.Change {
	out := m.changes
	slices.SortFunc(out, func(a, b book.Change) int {
		if a.Side != b.Side {
			return cmp.Compare(a.Side, b.Side) // Buy before Sell
		}
		if a.Side == book.Buy {
			return cmp.Compare(b.Price, a.Price)
		}
		return cmp.Compare(a.Price, b.Price)
	})
	m.changes = nil
	clear(m.idx)
	return out
}
