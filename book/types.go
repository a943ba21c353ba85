package book

import (
	"errors"

	"github.com/shopspring/decimal"
)

// Side is the side of an order, a level or a trade's aggressor.
type Side uint8

const (
	// Buy is the bid side; for a trade, a buying aggressor.
	Buy Side = iota + 1
	// Sell is the ask side; for a trade, a selling aggressor.
	Sell
)

// String returns the wire name of s: "buy" or "sell".
func (s Side) String() string {
	switch s {
	case Buy:
		return "buy"
	case Sell:
		return "sell"
	}
	return "invalid"
}

// ParseSide parses the wire name of a side.
func ParseSide(s string) (Side, bool) {
	switch s {
	case "buy":
		return Buy, true
	case "sell":
		return Sell, true
	}
	return 0, false
}

// Kind is the type of an input event (protocol.md §1).
type Kind uint8

const (
	// KindAdd rests a new order.
	KindAdd Kind = iota + 1
	// KindModify sets a resting order's remaining size.
	KindModify
	// KindCancel removes a resting order.
	KindCancel
	// KindTrade is a print; with MakerOrderID it also fills that resting order.
	KindTrade
	// KindLevel sets one price level of a level-based symbol.
	KindLevel
	// KindSnapshot replaces the whole book of a level-based symbol.
	KindSnapshot
)

var kindNames = [...]string{KindAdd: "add", KindModify: "modify", KindCancel: "cancel", KindTrade: "trade", KindLevel: "level", KindSnapshot: "snapshot"}

// String returns the wire name of k.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "invalid"
}

// ParseKind parses the wire name of an event type.
func ParseKind(s string) (Kind, bool) {
	for k, name := range kindNames {
		if name != "" && name == s {
			return Kind(k), true
		}
	}
	return 0, false
}

// Mode says whether a symbol's book is built from orders or from levels.
// A book takes its mode from the first event that changes it and keeps it.
type Mode uint8

const (
	// ModeUnset is a book that no add, level or snapshot has touched yet.
	ModeUnset Mode = iota
	// ModeOrders is an order-based (L3) book: add, modify, cancel, trade fills.
	ModeOrders
	// ModeLevels is a level-based (L2) book: level, snapshot.
	ModeLevels
)

// Level is one price level: a price and the total size resting at it.
type Level struct {
	Price Num
	Size  Num
}

// Event is one decoded input record. Feed fills it; Book.Apply reads it and
// keeps no reference to it (slices included), so callers may reuse an Event.
type Event struct {
	Kind   Kind
	Symbol string
	// Seq is the position of the record in its partition: Kafka offset + 1.
	Seq uint64
	// TS is the event time in Unix microseconds.
	TS int64

	OrderID      string // add, modify, cancel
	TradeID      string // trade
	MakerOrderID string // trade, optional
	Side         Side   // add, trade (aggressor), level
	Price        Num    // add, trade, level
	Size         Num    // add, modify, trade, level (0 removes the level)

	Bids, Asks []Level // snapshot
}

// Rejections returned by Book.Apply. The book is unchanged after any of them.
var (
	// ErrUnknownOrder: modify, cancel or a trade's maker fill names no resting order.
	ErrUnknownOrder = errors.New("unknown order id")
	// ErrDuplicateOrder: add names an order id that is already resting.
	ErrDuplicateOrder = errors.New("duplicate order id")
	// ErrNonPositive: a size or price that must be > 0 is not.
	ErrNonPositive = errors.New("non-positive value")
	// ErrBadSide: the side is neither buy nor sell.
	ErrBadSide = errors.New("invalid side")
	// ErrModeMismatch: an order event on a level-based symbol, or the reverse.
	ErrModeMismatch = errors.New("event does not match the symbol's book mode")
	// ErrBadEvent: the event kind is unknown or a required field is missing.
	ErrBadEvent = errors.New("malformed event")
	// ErrOverflow: a level or volume would leave the range of Num.
	ErrOverflow = errors.New("value out of range")
	// ErrSymbol: the event's symbol is not this book's.
	ErrSymbol = errors.New("symbol mismatch")
	// ErrStale: the event's Seq is not above the book's: it was applied already.
	ErrStale = errors.New("event already applied")
	// ErrOverfill: a trade fills its maker order by more than the order's
	// remaining size. The trade is rejected whole (the print is not recorded
	// either), since the input contradicts the book.
	ErrOverfill = errors.New("fill exceeds the maker order's remaining size")
)

// ErrUnknownSymbol is returned by whoever owns books (feed) when asked for a
// symbol that no event has named yet; stream maps it to "unknown_symbol".
var ErrUnknownSymbol = errors.New("unknown symbol")

// Depths lists the depth views every book keeps, by view index; 0 is the full book.
var Depths = [...]int{1, 10, 25, 50, 100, 500, 1000, 0}

// ViewMask is a set of depth views: bit i stands for Depths[i].
type ViewMask uint8

// AllViews is the set of every depth view.
const AllViews ViewMask = 1<<len(Depths) - 1

// ViewIndex returns the index in Depths of a depth, and false for a depth
// that is not a view.
func ViewIndex(depth int) (int, bool) {
	for i, d := range Depths {
		if d == depth {
			return i, true
		}
	}
	return 0, false
}

// Has reports whether m contains the view of index i.
func (m ViewMask) Has(i int) bool { return m&(1<<i) != 0 }

// Change is one level change of one or more depth views. Size is the new
// absolute size of the level in those views; 0 means the level left them
// (it was removed, or pushed out of the view by a better level).
type Change struct {
	Side  Side
	Price Num
	Size  Num
	Views ViewMask
}

// Trade is a print, as sent on the trades channel.
type Trade struct {
	TradeID string
	Price   Num
	Size    Num
	Side    Side // aggressor
}

// Ticker is the summary of a symbol: best bid and ask, last trade, and the
// rolling 24h statistics of its trades.
type Ticker struct {
	Symbol string
	Seq    uint64
	TS     int64

	HasBid, HasAsk, HasLast bool
	Bid, BidSize            Num
	Ask, AskSize            Num
	Last, LastSize          Num

	// The 24h statistics are zero while no trade is in the window.
	Open24h, High24h, Low24h Num
	Volume24h                decimal.Decimal
}

// Snapshot is a consistent copy of one depth view of a book.
type Snapshot struct {
	Symbol     string
	Seq        uint64
	TS         int64
	Bids, Asks []Level // best first
	Checksum   uint32
}

// Update is everything that one applied event changed, ready to publish.
// It is immutable once built: publishers and encoders share it read-only.
type Update struct {
	Symbol string
	Seq    uint64
	TS     int64
	// Changes holds the level changes of every depth view, each tagged with
	// the views it belongs to; nil when no view changed.
	Changes []Change
	// Checksum1 is the checksum of the depth-1 view after the event;
	// Checksum10 that of every other view (all of them share the top 10).
	Checksum1, Checksum10 uint32
	// Trade is set for trade events.
	Trade *Trade
	// PrevTradeSeq is, with Trade, the seq of the symbol's previous trade
	// (0 when the book knows of none): the prev_seq of the trade message.
	PrevTradeSeq uint64
	// Ticker is set when the ticker changed (best bid/ask or a trade).
	Ticker *Ticker
}

// Checksum returns the checksum of the view of the given depth after u.
func (u *Update) Checksum(depth int) uint32 {
	if depth == 1 {
		return u.Checksum1
	}
	return u.Checksum10
}

// Sink receives the updates of a book's owner, in seq order per symbol.
// Publish must not block and must not keep a reference it then mutates.
type Sink interface {
	Publish(u *Update)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(u *Update)

// Publish calls f(u).
func (f SinkFunc) Publish(u *Update) { f(u) }
