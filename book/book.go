package book

import (
	"fmt"
	"slices"
	"strings"
)

// Book is the order book of one symbol: its price levels on both sides, the
// resting orders of an order-based symbol, its depth views and its ticker.
//
// A Book is not safe for concurrent use: one goroutine owns it and is the
// only one to call any of its methods, readers included (they get copies:
// Snapshot, Ticker, LastUpdate). Create books with New.
type Book struct {
	// Everything below is owned by the goroutine that applies events.

	symbol string
	mode   Mode
	seq    uint64
	ts     int64

	bids, asks ladder
	spare      [2][]level // per side, the level buffer a snapshot event replaced, reused by the next
	orders     map[string]*order
	free       []*order // reusable order structs

	win            window
	hasLast        bool
	last, lastSize Num
	lastTradeSeq   uint64 // seq of the last trade; 0 when none is known
	sumValid       bool   // sum1 and sum10 match the book
	sum1, sum10    uint32
	sumBuf         []byte // reused to build checksum strings

	// The outputs of the last successful Apply.
	changes               []Change
	traded                bool   // it was a trade
	prevTradeSeq          uint64 // then: the seq of the trade before it
	tradeID               []byte // the trade's id, copied into a reused buffer
	tradeSide             Side
	tradePrice, tradeSize Num
	tickerChanged         bool
}

// order is a resting order of an order-based book, linked into the list of
// its level in time priority. Orders are reused through Book.free.
type order struct {
	id          string
	side        Side
	price, size Num
	prev, next  *order
}

// New returns an empty book for symbol. Its mode is set by the first add,
// level or snapshot event it applies.
func New(symbol string) *Book {
	b := &Book{symbol: symbol}
	b.init()
	return b
}

func (b *Book) init() {
	b.bids, b.asks = newLadder(Buy), newLadder(Sell)
	b.orders = make(map[string]*order)
}

// Symbol returns the book's symbol.
func (b *Book) Symbol() string { return b.symbol }

// Mode returns whether the book is built from orders or from levels, or
// ModeUnset while no add, level or snapshot event has been applied.
func (b *Book) Mode() Mode { return b.mode }

// Seq returns the Seq of the last applied event, 0 before any.
func (b *Book) Seq() uint64 { return b.seq }

// TS returns the TS of the last applied event.
func (b *Book) TS() int64 { return b.ts }

// Depth returns the number of price levels on a side (0 for an invalid side).
func (b *Book) Depth(side Side) int {
	if l := b.ladder(side); l != nil {
		return len(l.levels)
	}
	return 0
}

// Orders returns the number of resting orders (always 0 in a level-based book).
func (b *Book) Orders() int { return len(b.orders) }

func (b *Book) ladder(side Side) *ladder {
	switch side {
	case Buy:
		return &b.bids
	case Sell:
		return &b.asks
	}
	return nil
}

// Apply applies one event to the book. On error the book is completely
// unchanged (Changes and LastUpdate still describe the last successful
// Apply), and the error matches (errors.Is) one of the rejection sentinels:
// ErrSymbol, ErrStale (ev.Seq <= Seq() once Seq() > 0; while Seq() is 0 any
// Seq is accepted), ErrBadEvent (unknown kind, missing id, a snapshot with a
// price twice on a side), ErrModeMismatch, ErrBadSide, ErrNonPositive,
// ErrUnknownOrder, ErrDuplicateOrder, ErrOverflow or ErrOverfill.
//
// Checks happen in that order, except that a trade's own fields (trade id,
// side, price, size) are checked before its maker order: an add, modify,
// cancel, level or snapshot event on a book of the other mode is
// ErrModeMismatch whatever its fields, and so is a trade with a maker order
// id on a level-based book.
//
// Apply keeps no reference to ev; it copies the order id of an add. A
// modify keeps the order's time priority. A trade's maker fill is not
// checked against the trade's price or side: the order it names is filled.
// Apply does not allocate unless it creates a level or an order (or the
// internal buffers grow).
func (b *Book) Apply(ev *Event) error {
	if ev == nil {
		return fmt.Errorf("%w: nil event", ErrBadEvent)
	}
	if b.orders == nil { // a zero Book: usable like New("")
		b.init()
	}
	if ev.Symbol != b.symbol {
		return fmt.Errorf("%w: event for %q applied to the book of %q", ErrSymbol, ev.Symbol, b.symbol)
	}
	if b.seq > 0 && ev.Seq <= b.seq {
		return fmt.Errorf("%w: seq %d, book at seq %d", ErrStale, ev.Seq, b.seq)
	}
	bestBid, bestAsk := b.bids.best(), b.asks.best()
	var err error
	switch ev.Kind {
	case KindAdd:
		err = b.applyAdd(ev)
	case KindModify:
		err = b.applyModify(ev)
	case KindCancel:
		err = b.applyCancel(ev)
	case KindTrade:
		err = b.applyTrade(ev)
	case KindLevel:
		err = b.applyLevel(ev)
	case KindSnapshot:
		err = b.applySnapshot(ev)
	default:
		err = fmt.Errorf("%w: unknown event kind %d", ErrBadEvent, ev.Kind)
	}
	if err != nil {
		return err
	}
	// The event is applied: every apply* function above reset the outputs of
	// the previous event before it changed anything.
	b.seq, b.ts = ev.Seq, ev.TS
	statsChanged := b.win.advance(ev.TS)
	if b.traded {
		b.hasLast, b.last, b.lastSize = true, ev.Price, ev.Size
		b.prevTradeSeq, b.lastTradeSeq = b.lastTradeSeq, ev.Seq
		b.win.add(ev.TS, ev.Price, ev.Size)
		statsChanged = true
	}
	b.tickerChanged = statsChanged || bestBid != b.bids.best() || bestAsk != b.asks.best()
	for i := range b.changes {
		if b.changes[i].Views&checksumViews != 0 {
			b.sumValid = false
			break
		}
	}
	return nil
}

// checksumViews are the views whose changes change a checksum: the depth-1
// view and the depth-10 view, whose top 10 levels every deeper view shares.
const checksumViews ViewMask = 1<<0 | 1<<1

// begin resets the outputs of the previous event. Every apply* function
// calls it once its checks have passed, before it changes the book.
func (b *Book) begin() {
	b.changes = b.changes[:0]
	b.traded = false
}

// checkMode rejects an event of mode want on a book of the other mode.
func (b *Book) checkMode(want Mode, ev *Event) error {
	if b.mode != ModeUnset && b.mode != want {
		return fmt.Errorf("%w: %s event on a %s book", ErrModeMismatch, ev.Kind, modeName(b.mode))
	}
	return nil
}

func modeName(m Mode) string {
	switch m {
	case ModeOrders:
		return "order-based"
	case ModeLevels:
		return "level-based"
	}
	return "new"
}

func (b *Book) applyAdd(ev *Event) error {
	if err := b.checkMode(ModeOrders, ev); err != nil {
		return err
	}
	if ev.OrderID == "" {
		return fmt.Errorf("%w: add without order id", ErrBadEvent)
	}
	l := b.ladder(ev.Side)
	if l == nil {
		return fmt.Errorf("add order %q: %w %d", ev.OrderID, ErrBadSide, ev.Side)
	}
	if ev.Price <= 0 || ev.Size <= 0 {
		return fmt.Errorf("add order %q: %w: price %s, size %s", ev.OrderID, ErrNonPositive, ev.Price, ev.Size)
	}
	if _, dup := b.orders[ev.OrderID]; dup {
		return fmt.Errorf("add order %q: %w", ev.OrderID, ErrDuplicateOrder)
	}
	i, found := l.find(ev.Price)
	var total Num
	if found {
		var ok bool
		if total, ok = l.levels[i].Size.Add(ev.Size); !ok {
			return fmt.Errorf("add order %q: %w: level %s would exceed the largest size", ev.OrderID, ErrOverflow, ev.Price)
		}
	}
	b.begin()
	b.mode = ModeOrders
	o := b.newOrder()
	o.id, o.side, o.price, o.size = strings.Clone(ev.OrderID), ev.Side, ev.Price, ev.Size
	b.orders[o.id] = o
	if found {
		lv := &l.levels[i]
		o.prev = lv.tail
		lv.tail.next = o
		lv.tail = o
		l.setSize(i, total, &b.changes)
	} else {
		l.insert(i, level{Price: o.price, Size: o.size, head: o, tail: o}, &b.changes)
	}
	return nil
}

// maxFreeOrders bounds the reusable order structs a book keeps, so that a
// burst of orders does not pin its memory for ever.
const maxFreeOrders = 4096

func (b *Book) newOrder() *order {
	if n := len(b.free); n > 0 {
		o := b.free[n-1]
		b.free = b.free[:n-1]
		return o
	}
	return new(order)
}

// lookup returns a resting order and the index of its level.
func (b *Book) lookup(id string) (*order, *ladder, int, bool) {
	o, ok := b.orders[id]
	if !ok {
		return nil, nil, 0, false
	}
	l := b.ladder(o.side)
	i, _ := l.find(o.price) // an order's level always exists
	return o, l, i, true
}

func (b *Book) applyModify(ev *Event) error {
	if err := b.checkMode(ModeOrders, ev); err != nil {
		return err
	}
	if ev.OrderID == "" {
		return fmt.Errorf("%w: modify without order id", ErrBadEvent)
	}
	if ev.Size <= 0 {
		return fmt.Errorf("modify order %q: %w: size %s", ev.OrderID, ErrNonPositive, ev.Size)
	}
	o, l, i, ok := b.lookup(ev.OrderID)
	if !ok {
		return fmt.Errorf("modify order %q: %w", ev.OrderID, ErrUnknownOrder)
	}
	total, ok := (l.levels[i].Size - o.size).Add(ev.Size)
	if !ok {
		return fmt.Errorf("modify order %q: %w: level %s would exceed the largest size", ev.OrderID, ErrOverflow, o.price)
	}
	b.begin()
	if ev.Size != o.size {
		o.size = ev.Size
		l.setSize(i, total, &b.changes)
	}
	return nil
}

func (b *Book) applyCancel(ev *Event) error {
	if err := b.checkMode(ModeOrders, ev); err != nil {
		return err
	}
	if ev.OrderID == "" {
		return fmt.Errorf("%w: cancel without order id", ErrBadEvent)
	}
	o, l, i, ok := b.lookup(ev.OrderID)
	if !ok {
		return fmt.Errorf("cancel order %q: %w", ev.OrderID, ErrUnknownOrder)
	}
	b.begin()
	b.reduce(o, l, i, o.size)
	return nil
}

// reduce takes by off o's size (0 < by <= o.size), removing the order when
// nothing remains and its level when that was its last order.
func (b *Book) reduce(o *order, l *ladder, i int, by Num) {
	lv := &l.levels[i]
	total := lv.Size - by
	if by < o.size {
		o.size -= by
		l.setSize(i, total, &b.changes)
		return
	}
	// Unlink and recycle the order.
	if o.prev != nil {
		o.prev.next = o.next
	} else {
		lv.head = o.next
	}
	if o.next != nil {
		o.next.prev = o.prev
	} else {
		lv.tail = o.prev
	}
	delete(b.orders, o.id)
	*o = order{}
	if len(b.free) < maxFreeOrders {
		b.free = append(b.free, o)
	}
	if lv.head == nil {
		l.remove(i, &b.changes)
	} else {
		l.setSize(i, total, &b.changes)
	}
}

func (b *Book) applyTrade(ev *Event) error {
	if ev.TradeID == "" {
		return fmt.Errorf("%w: trade without trade id", ErrBadEvent)
	}
	if ev.Side != Buy && ev.Side != Sell {
		return fmt.Errorf("trade %q: %w %d", ev.TradeID, ErrBadSide, ev.Side)
	}
	if ev.Price <= 0 || ev.Size <= 0 {
		return fmt.Errorf("trade %q: %w: price %s, size %s", ev.TradeID, ErrNonPositive, ev.Price, ev.Size)
	}
	var (
		o  *order
		l  *ladder
		i  int
		ok bool
	)
	if ev.MakerOrderID != "" {
		if b.mode == ModeLevels {
			return fmt.Errorf("%w: trade %q with a maker order id on a level-based book", ErrModeMismatch, ev.TradeID)
		}
		if o, l, i, ok = b.lookup(ev.MakerOrderID); !ok {
			return fmt.Errorf("trade %q: maker order %q: %w", ev.TradeID, ev.MakerOrderID, ErrUnknownOrder)
		}
		if ev.Size > o.size {
			return fmt.Errorf("trade %q: %w: fill %s, maker order %q has %s", ev.TradeID, ErrOverfill, ev.Size, ev.MakerOrderID, o.size)
		}
	}
	b.begin()
	b.traded = true
	b.tradeID = append(b.tradeID[:0], ev.TradeID...)
	b.tradeSide, b.tradePrice, b.tradeSize = ev.Side, ev.Price, ev.Size
	if o != nil {
		b.reduce(o, l, i, ev.Size)
	}
	return nil
}

func (b *Book) applyLevel(ev *Event) error {
	if err := b.checkMode(ModeLevels, ev); err != nil {
		return err
	}
	l := b.ladder(ev.Side)
	if l == nil {
		return fmt.Errorf("level %s: %w %d", ev.Price, ErrBadSide, ev.Side)
	}
	if ev.Price <= 0 || ev.Size < 0 {
		return fmt.Errorf("level: %w: price %s, size %s", ErrNonPositive, ev.Price, ev.Size)
	}
	b.begin()
	b.mode = ModeLevels
	i, found := l.find(ev.Price)
	switch {
	case found && ev.Size == 0:
		l.remove(i, &b.changes)
	case found && ev.Size != l.levels[i].Size:
		l.setSize(i, ev.Size, &b.changes)
	case !found && ev.Size > 0:
		l.insert(i, level{Price: ev.Price, Size: ev.Size}, &b.changes)
	}
	return nil
}

func (b *Book) applySnapshot(ev *Event) error {
	if err := b.checkMode(ModeLevels, ev); err != nil {
		return err
	}
	bids, err := b.snapshotSide(&b.bids, ev.Bids, b.spare[0])
	if err != nil {
		return err
	}
	asks, err := b.snapshotSide(&b.asks, ev.Asks, b.spare[1])
	if err != nil {
		b.spare[0] = bids[:0]
		return err
	}
	b.begin()
	b.mode = ModeLevels
	b.spare[0] = clear0(b.bids.replace(bids, &b.changes))
	b.spare[1] = clear0(b.asks.replace(asks, &b.changes))
	return nil
}

// clear0 empties a level buffer for reuse.
func clear0(lv []level) []level {
	clear(lv)
	return lv[:0]
}

// snapshotSide checks the levels of one side of a snapshot event and returns
// them as a ladder's level slice (sorted, best last), built in buf.
func (b *Book) snapshotSide(l *ladder, in []Level, buf []level) ([]level, error) {
	out := buf[:0]
	for _, lv := range in {
		if lv.Price <= 0 || lv.Size <= 0 {
			return buf[:0], fmt.Errorf("snapshot %s %s:%s: %w", l.side, lv.Price, lv.Size, ErrNonPositive)
		}
		out = append(out, level{Price: lv.Price, Size: lv.Size})
	}
	slices.SortFunc(out, func(x, y level) int {
		kx, ky := l.key(x.Price), l.key(y.Price)
		switch {
		case kx < ky:
			return -1
		case kx > ky:
			return 1
		}
		return 0
	})
	for i := 1; i < len(out); i++ {
		if out[i].Price == out[i-1].Price {
			return out[:0], fmt.Errorf("%w: snapshot has price %s twice on the %s side", ErrBadEvent, out[i].Price, l.side)
		}
	}
	return out, nil
}

// Changes returns the view changes made by the last successful Apply (see
// Change): for every depth view V, setting each change tagged V in V's
// previous contents (size 0 deletes) yields V's new contents, no change
// tagged V is a no-op for V, and a price appears at most once per side per
// view. The slice is reused by the next Apply: copy what must outlive it.
func (b *Book) Changes() []Change { return b.changes }

// LastUpdate builds the immutable Update of the last successful Apply: a copy
// of Changes (nil when none), the checksums after the event, the Trade of a
// trade event, and the Ticker when the event changed it (the best bid or ask
// price or size, a trade, or trades leaving the 24h window). It allocates;
// the owner calls it once per applied event.
func (b *Book) LastUpdate() *Update {
	var u *Update
	if n := len(b.changes); n > 0 && n <= inlineChanges {
		// Most events change one or two levels: one allocation holds both
		// the Update and its changes.
		box := new(struct {
			u  Update
			ch [inlineChanges]Change
		})
		u = &box.u
		u.Changes = box.ch[:n:n]
		copy(u.Changes, b.changes)
	} else {
		u = new(Update)
		if n > 0 {
			u.Changes = slices.Clone(b.changes)
		}
	}
	u.Symbol, u.Seq, u.TS = b.symbol, b.seq, b.ts
	u.Checksum1, u.Checksum10 = b.Checksum(1), b.Checksum(ChecksumLevels)
	if b.traded {
		u.Trade = &Trade{TradeID: string(b.tradeID), Price: b.tradePrice, Size: b.tradeSize, Side: b.tradeSide}
		u.PrevTradeSeq = b.prevTradeSeq
	}
	if b.tickerChanged {
		t := b.Ticker()
		u.Ticker = &t
	}
	return u
}

// LastTradeSeq returns the seq of the book's last trade, 0 when it knows of
// none. It is kept in checkpoints, so that the trades stream's prev_seq
// chain goes on across a restart.
func (b *Book) LastTradeSeq() uint64 { return b.lastTradeSeq }

// inlineChanges is the number of changes LastUpdate allocates together with
// their Update.
const inlineChanges = 2

// Snapshot returns a consistent copy of the book's view of the given depth:
// the best depth levels of each side, best first (depth 0, or less, is the
// full book), with the view's checksum, Seq and TS.
func (b *Book) Snapshot(depth int) Snapshot {
	return Snapshot{
		Symbol:   b.symbol,
		Seq:      b.seq,
		TS:       b.ts,
		Bids:     b.bids.top(depth),
		Asks:     b.asks.top(depth),
		Checksum: b.Checksum(depth),
	}
}

// Ticker returns the current ticker of the book: best bid and ask with their
// sizes, the last trade, and the 24h statistics of the trades whose event
// time lies in the WindowBuckets one-minute buckets ending with the newest
// event time the book has seen.
func (b *Book) Ticker() Ticker {
	t := Ticker{Symbol: b.symbol, Seq: b.seq, TS: b.ts}
	if lv := b.bids.best(); lv.Price != 0 {
		t.HasBid, t.Bid, t.BidSize = true, lv.Price, lv.Size
	}
	if lv := b.asks.best(); lv.Price != 0 {
		t.HasAsk, t.Ask, t.AskSize = true, lv.Price, lv.Size
	}
	if b.hasLast {
		t.HasLast, t.Last, t.LastSize = true, b.last, b.lastSize
	}
	b.win.stats(&t)
	return t
}
