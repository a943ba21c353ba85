// Package book is marketd's order-book engine: it applies market events to
// the in-memory book of one symbol and says exactly what each event changed,
// in every depth view a client may subscribe to.
//
// # Numbers
//
// Prices and sizes are Num: exact fixed-point decimals with 8 fractional
// digits in an int64, so the hot path never allocates and nothing is
// rounded. ParseNum and NumFromDecimal reject what does not fit; Num.Append
// writes the canonical text that goes on the wire and into checksums. Sums
// that could leave the range of Num are checked (ErrOverflow); the 24h
// volume is summed in 128 bits and reported as a decimal.Decimal.
//
// # Books
//
// A Book is order-based (L3: add, modify, cancel, and trades that fill a
// maker order) or level-based (L2: level, snapshot), fixed by the first
// event that changes it; trades without a maker order are allowed in both
// and only feed the ticker. Apply either applies an event whole or rejects
// it with a sentinel error (ErrUnknownOrder, ErrStale, ...) and leaves the
// book unchanged.
//
// Each side keeps its levels in one sorted slice with the best price last,
// so the rank of a level is its distance from the end and changes near the
// top move few elements. An order-based book also keeps its orders in a map
// by id and, per level, in a list in time priority, so that a checkpoint
// (MarshalBinary) restores them exactly.
//
// # Depth views
//
// Clients subscribe to a view of a book: the best N levels of each side for
// N in Depths (0 is the full book). After each Apply, Changes lists the
// level changes of every view at once, each Change tagged with the set of
// views (ViewMask) in which it happens: a level whose size changed, a level
// that entered a view (with its size) because a better one was removed, or a
// level that left a view (size 0) because it was removed or pushed out by a
// new better level. For every view V, setting the changes tagged V into V's
// previous contents gives V's new contents exactly. LastUpdate packages
// them with the checksums (Checksum, protocol.md §3), the trade and the
// ticker into an immutable Update for publishing.
//
// # Ticker
//
// Ticker reports the best bid and ask, the last trade, and open, high, low
// and volume over a rolling 24h window of event time kept in WindowBuckets
// one-minute buckets, whose head moves with the newest event time.
//
// # Ownership and concurrency
//
// A Book is not safe for concurrent use. One goroutine owns each book: it
// applies the events in order and is the only one to call any method,
// readers included; others ask the owner for copies (Snapshot, Ticker,
// LastUpdate), which share nothing with the book. The slice Changes returns
// belongs to the book and is reused by the next Apply; the Update from
// LastUpdate is immutable and may be shared freely.
package book
