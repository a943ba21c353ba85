package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/marketd/marketd/book"
)

// Defaults of SimConfig.
const (
	// DefaultSimRate is the simulator's mean rate in records per second.
	DefaultSimRate = 200
	// DefaultBadEvery makes one record in 500 (on average) a bad one.
	DefaultBadEvery = 500
	// SimBadHeader is the header the simulator puts on each bad record it
	// produces on purpose; its value is the Reason label the record should
	// be rejected with.
	SimBadHeader = "sim-bad"

	simTick      = 10 * time.Millisecond // pacing granularity
	simMaxCatch  = time.Second           // backlog allowed after a stall
	simWarmup    = 50                    // records of a symbol before it gets bad ones
	simMaxOrders = 300                   // resting orders per order-based symbol
	simMaxLevels = 40                    // levels per side of a level-based symbol
	simResync    = 5000                  // records of a level-based symbol between snapshots
)

// DefaultOrderSymbols and DefaultLevelSymbols are the simulator's markets.
var (
	DefaultOrderSymbols = []string{"BTC-USD", "ETH-USD"}
	DefaultLevelSymbols = []string{"SOL-USD", "DOGE-USD"}
)

// SimConfig configures Simulate. Zero values mean the defaults below.
type SimConfig struct {
	// Brokers are the bootstrap brokers to produce to; required.
	Brokers []string
	// Topic is the topic to produce to; default DefaultTopic.
	Topic string
	// Rate is the mean rate in records per second; default DefaultSimRate.
	// The simulator alternates bursts (5x) and quiet spells (0.1x) around it.
	Rate float64
	// OrderSymbols are the order-based (L3) markets; default DefaultOrderSymbols.
	OrderSymbols []string
	// LevelSymbols are the level-based (L2) markets; default DefaultLevelSymbols.
	LevelSymbols []string
	// Seed seeds the flow; 0 seeds from the clock. With a fixed seed the
	// sequence of records is the same on every run except for `ts`.
	Seed int64
	// BadEvery makes one record in BadEvery a bad one, on average; default
	// DefaultBadEvery; negative produces none. Each carries the header
	// SimBadHeader naming the reason it should be rejected with.
	BadEvery int
	// Limit stops the simulator after that many records; 0 runs until ctx is done.
	Limit int
	// Compression is the codec of produced batches; default none.
	Compression compress.Compression
	// Logger receives produce errors (at most one line per second); nil
	// means slog.Default().
	Logger *slog.Logger
}

// Simulate produces a realistic market into the topic until ctx is done (or
// Limit records are produced), then returns nil. Records are keyed by symbol
// and partitioned by key hash, so each symbol's events stay in order in one
// partition. Order-based symbols get adds, modifies and cancels around a
// random-walking mid and trades that fill resting orders at the touch;
// level-based symbols get a snapshot, then level updates, trades without a
// maker and an occasional new snapshot. A produce that fails is retried
// with backoff until it succeeds, so that the flow stays consistent.
func Simulate(ctx context.Context, cfg SimConfig) error {
	if len(cfg.Brokers) == 0 {
		return errors.New("simulate: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultSimRate
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return fmt.Errorf("simulate: bad rate %v", cfg.Rate)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	sim := newSimulator(cfg)
	tr := &kafka.Transport{ClientID: "marketd-simulator"}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Transport:    tr,
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Hash{},
		BatchSize:    10000,
		BatchBytes:   4 << 20,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		Compression:  cfg.Compression,
	}
	defer w.Close()

	var (
		produced int
		credit   float64 // records owed at the current rate
		regime   = 1.0   // rate factor of the current spell
		until    time.Time
		last     = time.Now()
		ticker   = time.NewTicker(simTick)
		lastLog  time.Time
		msgs     []kafka.Message
	)
	defer ticker.Stop()
	for cfg.Limit == 0 || produced < cfg.Limit {
		select {
		case <-ctx.Done():
			return nil
		case now := <-ticker.C:
			if now.After(until) {
				regime, until = sim.spell(now)
			}
			credit += cfg.Rate * regime * now.Sub(last).Seconds()
			credit = min(credit, cfg.Rate*regime*simMaxCatch.Seconds()+1)
			last = now
		}
		n := int(credit)
		if cfg.Limit > 0 {
			n = min(n, cfg.Limit-produced)
		}
		if n == 0 {
			continue
		}
		credit -= float64(n)
		msgs = msgs[:0]
		now := time.Now()
		for range n {
			msgs = append(msgs, sim.next(now))
		}
		for backoff := minBackoff; ; backoff = min(2*backoff, maxBackoff) {
			err := w.WriteMessages(ctx, msgs...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			// Retry only what failed: a partition's batch fails as a
			// whole, so each partition's order is kept.
			var werrs kafka.WriteErrors
			if errors.As(err, &werrs) && len(werrs) == len(msgs) {
				failed := msgs[:0]
				for i, e := range werrs {
					if e != nil {
						failed = append(failed, msgs[i])
					}
				}
				msgs = failed
			}
			if time.Since(lastLog) >= time.Second {
				lastLog = time.Now()
				log.Warn("simulate: produce failed, retrying", "topic", cfg.Topic, "records", len(msgs), "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
		produced += n
	}
	return nil
}

// simulator generates the records of Simulate. It is owned by one goroutine.
type simulator struct {
	rng      *rand.Rand
	orders   []*simOrderBook
	levels   []*simLevelBook
	all      []string // every symbol, for key mismatches
	badEvery int
	trades   int
	buf      []byte
}

// simParams describe a market: price tick and start, sizes.
type simParams struct {
	tick     book.Num // price increment
	mid      int64    // start mid, in ticks
	decimals int      // fractional digits of sizes
	typical  float64  // median size
}

func paramsFor(symbol string) simParams {
	switch symbol {
	case "BTC-USD":
		return simParams{tick: book.Unit / 100, mid: 5_000_000, decimals: 8, typical: 0.05}
	case "ETH-USD":
		return simParams{tick: book.Unit / 100, mid: 300_000, decimals: 6, typical: 0.8}
	case "SOL-USD":
		return simParams{tick: book.Unit / 100, mid: 18_000, decimals: 4, typical: 25}
	case "DOGE-USD":
		return simParams{tick: book.Unit / 100_000, mid: 15_000, decimals: 4, typical: 5000}
	}
	return simParams{tick: book.Unit / 100, mid: 10_000, decimals: 6, typical: 1}
}

func newSimulator(cfg SimConfig) *simulator {
	seed := cfg.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	s := &simulator{rng: rand.New(rand.NewPCG(uint64(seed), uint64(seed)>>32|1)), badEvery: cfg.BadEvery}
	if s.badEvery == 0 {
		s.badEvery = DefaultBadEvery
	}
	osyms, lsyms := cfg.OrderSymbols, cfg.LevelSymbols
	if osyms == nil && lsyms == nil {
		osyms, lsyms = DefaultOrderSymbols, DefaultLevelSymbols
	}
	for _, sym := range osyms {
		s.orders = append(s.orders, &simOrderBook{simMarket: newMarket(sym), byID: map[string]*simOrder{}})
		s.all = append(s.all, sym)
	}
	for _, sym := range lsyms {
		s.levels = append(s.levels, &simLevelBook{simMarket: newMarket(sym), bids: map[int64]book.Num{}, asks: map[int64]book.Num{}})
		s.all = append(s.all, sym)
	}
	return s
}

// spell picks the next rate regime: mostly normal, sometimes a burst or a
// quiet spell, each lasting a while.
func (s *simulator) spell(now time.Time) (factor float64, until time.Time) {
	switch r := s.rng.Float64(); {
	case r < 0.15:
		return 5, now.Add(time.Duration(500+s.rng.IntN(1500)) * time.Millisecond)
	case r < 0.30:
		return 0.1, now.Add(time.Duration(1000+s.rng.IntN(4000)) * time.Millisecond)
	}
	return 1, now.Add(time.Duration(2000+s.rng.IntN(6000)) * time.Millisecond)
}

// next returns the next record.
func (s *simulator) next(now time.Time) kafka.Message {
	n := len(s.orders) + len(s.levels)
	i := s.rng.IntN(n)
	var m *simMarket
	if i < len(s.orders) {
		m = &s.orders[i].simMarket
	} else {
		m = &s.levels[i-len(s.orders)].simMarket
	}
	ts := now.UnixMicro()
	if s.badEvery > 0 && m.count >= simWarmup && len(m.pending) == 0 && s.rng.IntN(s.badEvery) == 0 {
		if msg, ok := s.bad(i, ts); ok {
			msg.Time = now
			return msg
		}
	}
	m.count++
	var value []byte
	if i < len(s.orders) {
		value = s.orders[i].next(s, ts)
	} else {
		value = s.levels[i-len(s.orders)].next(s, ts)
	}
	return kafka.Message{Key: []byte(m.symbol), Value: value, Time: now}
}

// bad returns a record that the ingester must reject, for market i.
func (s *simulator) bad(i int, ts int64) (kafka.Message, bool) {
	var m *simMarket
	var ob *simOrderBook
	if i < len(s.orders) {
		ob = s.orders[i]
		m = &ob.simMarket
	} else {
		m = &s.levels[i-len(s.orders)].simMarket
	}
	b := s.buf[:0]
	head := func(typ string) {
		b = append(b, `{"type":"`...)
		b = append(b, typ...)
		b = append(b, `","symbol":"`...)
		b = append(b, m.symbol...)
		b = append(b, `","ts":`...)
		b = strconv.AppendInt(b, ts, 10)
	}
	key := m.symbol
	var r Reason
	switch k := s.rng.IntN(11); k {
	case 0:
		r = ReasonNotJSON
		head("add")
		b = append(b, `,"order_id":`...)
	case 1:
		r = ReasonUnknownType
		head("teleport")
		b = append(b, '}')
	case 2:
		r = ReasonMissingField
		head("level")
		b = append(b, `,"side":"buy","size":"1"}`...)
	case 3:
		r = ReasonBadField
		head("level")
		b = append(b, `,"side":"buy","price":"12,5","size":"1"}`...)
	case 4:
		r = ReasonNonPositive
		head("trade")
		b = append(b, `,"trade_id":"bad","side":"sell","price":"1","size":"-2"}`...)
	case 5:
		r = ReasonPrecision
		head("trade")
		b = append(b, `,"trade_id":"bad","side":"sell","price":"1","size":"0.000000001"}`...)
	case 6:
		r = ReasonKeyMismatch
		if len(s.all) < 2 {
			return kafka.Message{}, false
		}
		for key == m.symbol {
			key = s.all[s.rng.IntN(len(s.all))]
		}
		head("trade")
		b = append(b, `,"trade_id":"bad","side":"sell","price":"1","size":"1"}`...)
	case 7:
		r = ReasonModeMismatch
		if ob != nil {
			head("level")
			b = append(b, `,"side":"buy","price":"1","size":"1"}`...)
		} else {
			head("add")
			b = append(b, `,"order_id":"bad","side":"buy","price":"1","size":"1"}`...)
		}
	case 8, 9, 10:
		if ob == nil || len(ob.live) == 0 {
			return kafka.Message{}, false
		}
		o := ob.live[s.rng.IntN(len(ob.live))]
		switch k {
		case 8:
			r = ReasonUnknownOrder
			head("cancel")
			b = append(b, `,"order_id":"ghost-`...)
			b = strconv.AppendInt(b, int64(s.rng.IntN(1e6)), 10)
			b = append(b, `"}`...)
		case 9:
			r = ReasonDuplicateOrder
			head("add")
			b = append(b, `,"order_id":"`...)
			b = append(b, o.id...)
			b = append(b, `","side":"buy","price":"1","size":"1"}`...)
		case 10:
			r = ReasonOverfill
			head("trade")
			b = append(b, `,"trade_id":"bad","side":"`...)
			b = append(b, o.side.Opposite()...)
			b = append(b, `","price":"`...)
			b = (book.Num(o.price) * ob.p.tick).Append(b)
			b = append(b, `","size":"`...)
			b = (o.size + book.Num(pow10(8-ob.p.decimals))).Append(b)
			b = append(b, `","maker_order_id":"`...)
			b = append(b, o.id...)
			b = append(b, `"}`...)
		}
	}
	s.buf = b
	return kafka.Message{
		Key:     []byte(key),
		Value:   append([]byte(nil), b...),
		Headers: []kafka.Header{{Key: SimBadHeader, Value: []byte(r.String())}},
	}, true
}

// simMarket is what every simulated market has.
type simMarket struct {
	symbol  string
	p       simParams
	mid     int64 // in ticks
	count   int   // good records produced
	pending [][]byte
}

func newMarket(symbol string) simMarket {
	p := paramsFor(symbol)
	return simMarket{symbol: symbol, p: p, mid: p.mid}
}

// size draws a log-normal size around the market's typical size, in whole
// units of its size decimals.
func (m *simMarket) size(rng *rand.Rand) book.Num {
	units := math.Round(m.p.typical * math.Exp(rng.NormFloat64()) * math.Pow10(m.p.decimals))
	return book.Num(max(1, min(units, 1e12))) * book.Num(pow10(8-m.p.decimals))
}

// distance draws how many ticks from the touch a new order or level goes:
// mostly close, sometimes far.
func distance(rng *rand.Rand) int64 {
	return int64(rng.ExpFloat64() * 4)
}

// drift moves the mid by a tick now and then: a random walk.
func (m *simMarket) drift(rng *rand.Rand) {
	if rng.IntN(8) == 0 {
		if rng.IntN(2) == 0 {
			m.mid++
		} else if m.mid > 10 {
			m.mid--
		}
	}
}

// header starts a record's JSON value.
func (m *simMarket) header(b []byte, typ string, ts int64) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","symbol":"`...)
	b = append(b, m.symbol...)
	b = append(b, `","ts":`...)
	return strconv.AppendInt(b, ts, 10)
}

func (m *simMarket) appendPrice(b []byte, ticks int64) []byte {
	b = append(b, '"')
	b = (book.Num(ticks) * m.p.tick).Append(b)
	return append(b, '"')
}

func appendSize(b []byte, n book.Num) []byte {
	b = append(b, '"')
	b = n.Append(b)
	return append(b, '"')
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// simOrder is a resting order of a simulated order-based market.
type simOrder struct {
	id    string
	side  simSide
	price int64 // ticks
	size  book.Num
	idx   int // in simOrderBook.live
}

type simSide book.Side

func (s simSide) String() string { return book.Side(s).String() }

// Opposite returns the wire name of the other side.
func (s simSide) Opposite() string {
	if book.Side(s) == book.Buy {
		return "sell"
	}
	return "buy"
}

// simOrderBook is an order-based market: it mirrors the resting orders the
// ingester's book holds, so that every record it makes applies.
type simOrderBook struct {
	simMarket
	byID   map[string]*simOrder
	live   []*simOrder    // for picking one at random
	queues [2][]*simOrder // per side, sorted best first, FIFO within a price
	nextID int
}

// best returns the best resting order of side (0 bids, 1 asks), or nil.
func (ob *simOrderBook) best(side int) *simOrder {
	if q := ob.queues[side]; len(q) > 0 {
		return q[0]
	}
	return nil
}

func (ob *simOrderBook) next(s *simulator, ts int64) []byte {
	rng := s.rng
	ob.drift(rng)
	// Keep the mid strictly inside the spread so new orders never cross.
	if b := ob.best(0); b != nil && ob.mid <= b.price {
		ob.mid = b.price + 1
	}
	if a := ob.best(1); a != nil && ob.mid >= a.price {
		ob.mid = a.price - 1
	}
	n := len(ob.live)
	r := rng.IntN(100)
	switch {
	case n < 20 || (n < simMaxOrders && r < 45):
		return ob.add(s, ts)
	case r < 75 || n >= simMaxOrders:
		return ob.cancel(s, ts)
	case r < 85:
		return ob.modify(s, ts)
	}
	return ob.trade(s, ts)
}

func (ob *simOrderBook) add(s *simulator, ts int64) []byte {
	rng := s.rng
	o := &simOrder{side: simSide(book.Buy), size: ob.size(rng)}
	d := distance(rng)
	if rng.IntN(2) == 0 {
		o.price = ob.mid - 1 - d
		if a := ob.best(1); a != nil && o.price >= a.price {
			o.price = a.price - 1
		}
	} else {
		o.side = simSide(book.Sell)
		o.price = ob.mid + 1 + d
		if b := ob.best(0); b != nil && o.price <= b.price {
			o.price = b.price + 1
		}
	}
	o.price = max(o.price, 1)
	ob.nextID++
	o.id = ob.symbol[:1] + strconv.Itoa(ob.nextID)
	ob.insert(o)
	b := ob.header(s.buf[:0], "add", ts)
	b = append(b, `,"order_id":"`...)
	b = append(b, o.id...)
	b = append(b, `","side":"`...)
	b = append(b, o.side.String()...)
	b = append(b, `","price":`...)
	b = ob.appendPrice(b, o.price)
	b = append(b, `,"size":`...)
	b = appendSize(b, o.size)
	b = append(b, '}')
	s.buf = b
	return append([]byte(nil), b...)
}

func (ob *simOrderBook) insert(o *simOrder) {
	ob.byID[o.id] = o
	o.idx = len(ob.live)
	ob.live = append(ob.live, o)
	side := 0
	if book.Side(o.side) == book.Sell {
		side = 1
	}
	q := ob.queues[side]
	// Best first: bids by price descending, asks ascending; FIFO within a
	// price, so a new order goes after every order at its price.
	i := len(q)
	for i > 0 && ((side == 0 && q[i-1].price < o.price) || (side == 1 && q[i-1].price > o.price)) {
		i--
	}
	q = append(q, nil)
	copy(q[i+1:], q[i:])
	q[i] = o
	ob.queues[side] = q
}

func (ob *simOrderBook) remove(o *simOrder) {
	delete(ob.byID, o.id)
	last := ob.live[len(ob.live)-1]
	last.idx = o.idx
	ob.live[o.idx] = last
	ob.live = ob.live[:len(ob.live)-1]
	side := 0
	if book.Side(o.side) == book.Sell {
		side = 1
	}
	q := ob.queues[side]
	for i, x := range q {
		if x == o {
			ob.queues[side] = append(q[:i], q[i+1:]...)
			break
		}
	}
}

func (ob *simOrderBook) cancel(s *simulator, ts int64) []byte {
	// Of two random orders, cancel the one farther from the mid: the book
	// thins out away from the touch as real books do.
	o := ob.live[s.rng.IntN(len(ob.live))]
	if p := ob.live[s.rng.IntN(len(ob.live))]; abs(p.price-ob.mid) > abs(o.price-ob.mid) {
		o = p
	}
	ob.remove(o)
	b := ob.header(s.buf[:0], "cancel", ts)
	b = append(b, `,"order_id":"`...)
	b = append(b, o.id...)
	b = append(b, `"}`...)
	s.buf = b
	return append([]byte(nil), b...)
}

func (ob *simOrderBook) modify(s *simulator, ts int64) []byte {
	o := ob.live[s.rng.IntN(len(ob.live))]
	unit := book.Num(pow10(8 - ob.p.decimals))
	o.size = max(unit, book.Num(float64(o.size/unit)*(0.2+s.rng.Float64()))*unit)
	b := ob.header(s.buf[:0], "modify", ts)
	b = append(b, `,"order_id":"`...)
	b = append(b, o.id...)
	b = append(b, `","size":`...)
	b = appendSize(b, o.size)
	b = append(b, '}')
	s.buf = b
	return append([]byte(nil), b...)
}

func (ob *simOrderBook) trade(s *simulator, ts int64) []byte {
	// The aggressor lifts the oldest order at the best opposite price.
	side := s.rng.IntN(2)
	maker := ob.best(1 - side)
	if maker == nil {
		side = 1 - side
		maker = ob.best(1 - side)
	}
	size := maker.size
	if s.rng.IntN(3) > 0 {
		unit := book.Num(pow10(8 - ob.p.decimals))
		size = max(unit, min(size, ob.size(s.rng)))
	}
	maker.size -= size
	if maker.size == 0 {
		ob.remove(maker)
	}
	s.trades++
	b := ob.header(s.buf[:0], "trade", ts)
	b = append(b, `,"trade_id":"T`...)
	b = strconv.AppendInt(b, int64(s.trades), 10)
	b = append(b, `","side":"`...)
	b = append(b, book.Side(side+1).String()...)
	b = append(b, `","price":`...)
	b = ob.appendPrice(b, maker.price)
	b = append(b, `,"size":`...)
	b = appendSize(b, size)
	b = append(b, `,"maker_order_id":"`...)
	b = append(b, maker.id...)
	b = append(b, `"}`...)
	s.buf = b
	return append([]byte(nil), b...)
}

// simLevelBook is a level-based market: it mirrors the ingester's levels.
type simLevelBook struct {
	simMarket
	bids, asks map[int64]book.Num // ticks → size
	sinceSnap  int
}

func (lb *simLevelBook) bestBid() (int64, bool) {
	var best int64
	for p := range lb.bids {
		best = max(best, p)
	}
	return best, len(lb.bids) > 0
}

func (lb *simLevelBook) bestAsk() (int64, bool) {
	best := int64(math.MaxInt64)
	for p := range lb.asks {
		best = min(best, p)
	}
	return best, len(lb.asks) > 0
}

func (lb *simLevelBook) next(s *simulator, ts int64) []byte {
	if len(lb.pending) > 0 {
		v := lb.pending[0]
		lb.pending = lb.pending[1:]
		return v
	}
	rng := s.rng
	lb.sinceSnap++
	if lb.count == 1 || lb.sinceSnap >= simResync {
		return lb.snapshot(s, ts)
	}
	lb.drift(rng)
	bb, hasB := lb.bestBid()
	ba, hasA := lb.bestAsk()
	if hasB && lb.mid <= bb {
		lb.mid = bb + 1
	}
	if hasA && lb.mid >= ba {
		lb.mid = ba - 1
	}
	if rng.IntN(5) == 0 && hasB && hasA {
		return lb.trade(s, ts, bb, ba)
	}
	side := book.Buy
	levels := lb.bids
	if rng.IntN(2) == 0 {
		side, levels = book.Sell, lb.asks
	}
	var price int64
	var size book.Num
	if len(levels) > 5 && (rng.IntN(4) == 0 || len(levels) >= simMaxLevels) {
		// Remove a level, the farthest of two random ones.
		price = lb.pick(levels, rng)
	} else {
		d := distance(rng)
		if side == book.Buy {
			price = lb.mid - 1 - d
			if hasA && price >= ba {
				price = ba - 1
			}
		} else {
			price = lb.mid + 1 + d
			if hasB && price <= bb {
				price = bb + 1
			}
		}
		price = max(price, 1)
		size = lb.size(rng)
	}
	return lb.level(s, ts, side, levels, price, size)
}

// pick returns the price of a level to remove: of two random ones, the
// farther from the mid.
func (lb *simLevelBook) pick(levels map[int64]book.Num, rng *rand.Rand) int64 {
	prices := slices.Sorted(maps.Keys(levels)) // sorted: the choice depends on the seed only
	a, b := prices[rng.IntN(len(prices))], prices[rng.IntN(len(prices))]
	if abs(b-lb.mid) > abs(a-lb.mid) {
		return b
	}
	return a
}

func (lb *simLevelBook) level(s *simulator, ts int64, side book.Side, levels map[int64]book.Num, price int64, size book.Num) []byte {
	if size == 0 {
		delete(levels, price)
	} else {
		levels[price] = size
	}
	b := lb.header(s.buf[:0], "level", ts)
	b = append(b, `,"side":"`...)
	b = append(b, side.String()...)
	b = append(b, `","price":`...)
	b = lb.appendPrice(b, price)
	b = append(b, `,"size":`...)
	b = appendSize(b, size)
	b = append(b, '}')
	s.buf = b
	return append([]byte(nil), b...)
}

func (lb *simLevelBook) trade(s *simulator, ts int64, bb, ba int64) []byte {
	side, price, levels := book.Buy, ba, lb.asks
	if s.rng.IntN(2) == 0 {
		side, price, levels = book.Sell, bb, lb.bids
	}
	size := min(levels[price], lb.size(s.rng))
	s.trades++
	b := lb.header(s.buf[:0], "trade", ts)
	b = append(b, `,"trade_id":"T`...)
	b = strconv.AppendInt(b, int64(s.trades), 10)
	b = append(b, `","side":"`...)
	b = append(b, side.String()...)
	b = append(b, `","price":`...)
	b = lb.appendPrice(b, price)
	b = append(b, `,"size":`...)
	b = appendSize(b, size)
	b = append(b, '}')
	s.buf = b
	trade := append([]byte(nil), b...)
	// An L2 source follows a trade with the level it took from.
	lb.pending = append(lb.pending, lb.level(s, ts, 3-side, levels, price, levels[price]-size))
	return trade
}

func (lb *simLevelBook) snapshot(s *simulator, ts int64) []byte {
	lb.sinceSnap = 0
	clear(lb.bids)
	clear(lb.asks)
	for i := range int64(20) {
		lb.bids[lb.mid-1-i] = lb.size(s.rng)
		lb.asks[lb.mid+1+i] = lb.size(s.rng)
	}
	b := lb.header(s.buf[:0], "snapshot", ts)
	for side, levels := range [2]map[int64]book.Num{lb.bids, lb.asks} {
		if side == 0 {
			b = append(b, `,"bids":[`...)
		} else {
			b = append(b, `],"asks":[`...)
		}
		for i := range int64(20) {
			p := lb.mid - 1 - i
			if side == 1 {
				p = lb.mid + 1 + i
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			b = lb.appendPrice(b, p)
			b = append(b, ',')
			b = appendSize(b, levels[p])
			b = append(b, ']')
		}
	}
	b = append(b, "]}"...)
	s.buf = b
	return append([]byte(nil), b...)
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
