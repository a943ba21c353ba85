package book

// level is one price level of a ladder. In an order-based book it also heads
// the list of its resting orders in time priority; in a level-based book
// head and tail stay nil.
type level struct {
	Price, Size Num
	head, tail  *order
}

// ladder is one side of a book: its levels sorted so that the best price is
// LAST (bids ascending, asks descending). Most activity happens near the top,
// so keeping the top at the end makes the rank of index i O(1)
// (len-1-i) and makes inserting or removing near the top move only the few
// levels above it.
type ladder struct {
	side Side
	// ask orders the levels by descending price: the sort key of a price is
	// its negation on the ask side, so both sides ascend by key.
	ask    bool
	levels []level
}

func newLadder(side Side) ladder { return ladder{side: side, ask: side == Sell} }

// key returns the sort key of p: levels ascend by key and the best is last.
func (l *ladder) key(p Num) Num {
	if l.ask {
		return -p
	}
	return p
}

// find returns the index of the level at price p and true, or the index at
// which such a level would be inserted and false.
func (l *ladder) find(p Num) (int, bool) {
	lv := l.levels
	k := l.key(p)
	// Most events touch the first few levels: look there before bisecting.
	n := len(lv)
	for i := n - 1; i >= 0 && i >= n-nearTop; i-- {
		if c := l.key(lv[i].Price); c <= k {
			if c == k {
				return i, true
			}
			return i + 1, false
		}
	}
	hi := n - nearTop // every level from hi up is better than p
	if hi <= 0 {
		return 0, false
	}
	// Gallop down from the top in doubling steps to bracket p, then bisect:
	// the cost grows with the rank of p, not with the size of the side.
	lo, step := 0, nearTop
	for {
		if hi-step <= 0 {
			break
		}
		if l.key(lv[hi-step].Price) <= k {
			lo = hi - step
			break
		}
		hi -= step
		step *= 2
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if l.key(lv[m].Price) < k {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < n && lv[lo].Price == p
}

// nearTop is how many levels from the top find scans linearly before it
// gallops.
const nearTop = 8

// rank returns the rank of index i: 0 is the best level.
func (l *ladder) rank(i int) int { return len(l.levels) - 1 - i }

// best returns the best level, or the zero level when the side is empty.
func (l *ladder) best() Level {
	if n := len(l.levels); n > 0 {
		return Level{Price: l.levels[n-1].Price, Size: l.levels[n-1].Size}
	}
	return Level{}
}

// top returns a copy of the best n levels, best first; n <= 0 means all.
func (l *ladder) top(n int) []Level {
	if n <= 0 || n > len(l.levels) {
		n = len(l.levels)
	}
	out := make([]Level, n)
	for r := range out {
		lv := &l.levels[len(l.levels)-1-r]
		out[r] = Level{Price: lv.Price, Size: lv.Size}
	}
	return out
}

// finiteViews is the number of depth views that hold a bounded number of
// levels: every view but the last (the full book).
const finiteViews = len(Depths) - 1

// viewsAt returns the set of views that contain the level at rank r: those
// whose depth exceeds r, and always the full book.
func viewsAt(r int) ViewMask {
	m := AllViews
	for v := range finiteViews {
		if Depths[v] > r {
			break
		}
		m &^= 1 << v
	}
	return m
}

// firstViewAbove returns the index of the first finite view whose depth
// exceeds r, or finiteViews when none does.
func firstViewAbove(r int) int {
	v := 0
	for v < finiteViews && Depths[v] <= r {
		v++
	}
	return v
}

// The methods below mutate a ladder and append to *ch exactly the view
// changes they cause (see Change and Book.Changes).

// setSize sets the size of the level at index i, which must differ from the
// current one and be positive. Every view that contains the level sees the
// new size; nothing enters or leaves any view.
func (l *ladder) setSize(i int, size Num, ch *[]Change) {
	lv := &l.levels[i]
	lv.Size = size
	*ch = append(*ch, Change{Side: l.side, Price: lv.Price, Size: size, Views: viewsAt(l.rank(i))})
}

// insert inserts lv at index i. The new level enters every view deeper than
// its rank, and in each such finite view that was full the level that was
// last in it is pushed out (size 0 in that view alone).
func (l *ladder) insert(i int, lv level, ch *[]Change) {
	l.levels = append(l.levels, level{})
	copy(l.levels[i+1:], l.levels[i:])
	l.levels[i] = lv
	n := len(l.levels)
	r := n - 1 - i
	*ch = append(*ch, Change{Side: l.side, Price: lv.Price, Size: lv.Size, Views: viewsAt(r)})
	for v := firstViewAbove(r); v < finiteViews; v++ {
		d := Depths[v]
		if n <= d {
			break
		}
		// The level now at rank d was at rank d-1: the last of view v.
		*ch = append(*ch, Change{Side: l.side, Price: l.levels[n-1-d].Price, Views: 1 << v})
	}
}

// remove removes the level at index i. It leaves every view that contains
// it, and in each such finite view the level just below the view's bottom,
// if any, moves up into it with its size.
func (l *ladder) remove(i int, ch *[]Change) {
	n := len(l.levels)
	r := n - 1 - i
	*ch = append(*ch, Change{Side: l.side, Price: l.levels[i].Price, Views: viewsAt(r)})
	for v := firstViewAbove(r); v < finiteViews; v++ {
		d := Depths[v]
		if n <= d {
			break
		}
		// The level at rank d becomes the last of view v.
		in := &l.levels[n-1-d]
		*ch = append(*ch, Change{Side: l.side, Price: in.Price, Size: in.Size, Views: 1 << v})
	}
	copy(l.levels[i:], l.levels[i+1:])
	l.levels[n-1] = level{} // drop the order pointers for the collector
	l.levels = l.levels[:n-1]
}

// replace replaces every level with next (sorted like a ladder, best last)
// and appends the changes of every view: for each price of either book,
// views where it now appears with a new size get that size, views it left
// get 0. It returns the previous level slice so the caller may reuse it.
func (l *ladder) replace(next []level, ch *[]Change) []level {
	prev := l.levels
	i, j := len(prev)-1, len(next)-1 // walk both best first
	ro, rn := 0, 0                   // the ranks of prev[i] and next[j]
	for i >= 0 || j >= 0 {
		var p, so, sn Num
		oldRank, newRank := -1, -1 // -1: absent
		switch {
		case j < 0 || (i >= 0 && l.key(prev[i].Price) > l.key(next[j].Price)):
			p, so, oldRank = prev[i].Price, prev[i].Size, ro
			i, ro = i-1, ro+1
		case i < 0 || l.key(next[j].Price) > l.key(prev[i].Price):
			p, sn, newRank = next[j].Price, next[j].Size, rn
			j, rn = j-1, rn+1
		default:
			p, so, sn, oldRank, newRank = prev[i].Price, prev[i].Size, next[j].Size, ro, rn
			i, ro, j, rn = i-1, ro+1, j-1, rn+1
		}
		var toSize, toZero ViewMask
		for v, d := range Depths {
			inOld := oldRank >= 0 && (d == 0 || oldRank < d)
			inNew := newRank >= 0 && (d == 0 || newRank < d)
			switch {
			case inNew && (!inOld || so != sn):
				toSize |= 1 << v
			case inOld && !inNew:
				toZero |= 1 << v
			}
		}
		if toSize != 0 {
			*ch = append(*ch, Change{Side: l.side, Price: p, Size: sn, Views: toSize})
		}
		if toZero != 0 {
			*ch = append(*ch, Change{Side: l.side, Price: p, Views: toZero})
		}
	}
	l.levels = next
	return prev
}
