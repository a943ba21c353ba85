package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
)

// Producer defaults.
const (
	defaultLevels     = 50                    // initial levels per side of each book
	minLevels         = 20                    // below this a side only grows
	maxLevels         = 200                   // above this a side only shrinks
	basePriceTicks    = 10_000_00             // 10000.00 in ticks of 0.01
	tickNum           = book.Unit / 100       // one tick: 0.01
	producerTick      = time.Millisecond      // how often due records are sent
	maxBehind         = time.Second           // a producer further behind skips ahead
	metadataWait      = 30 * time.Second      // how long to wait for the topic to exist
	produceTimeout    = 10 * time.Second      // one produce request
	produceRetryPause = 50 * time.Millisecond // after a failed produce request
)

// ProducerConfig configures a Producer. Zero values mean the defaults.
type ProducerConfig struct {
	// Brokers are the Kafka bootstrap addresses. Required.
	Brokers []string
	// Topic is the input topic of the target. Default feed.DefaultTopic.
	Topic string
	// Symbols is the symbol universe. Required.
	Symbols []string
	// Hot is the share of records that go to Symbols[0], in [0,1]; the rest
	// spread evenly over all symbols. Default 0: all spread evenly.
	Hot float64
	// Levels is the number of levels per side each book is seeded with.
	// Default 50.
	Levels int
	// TradeShare is the share of records that are trades (feeding the
	// ticker and trades channels). Default 0.05.
	TradeShare float64
	// Seed seeds the event generator. Default 1.
	Seed uint64
}

// Producer writes market events into the target's Kafka topic: first a
// level snapshot per symbol, then level changes and trades at a given rate,
// each stamped with its send time in ts (Unix µs) so that clients can
// measure the end-to-end latency. It uses kafka-go's Client.Produce with one
// request per partition per millisecond tick instead of kafka.Writer, whose
// batch timeout would add up to a tick of latency of its own.
// A Producer is used by one goroutine.
type Producer struct {
	cfg     ProducerConfig
	client  *kafka.Client
	parts   int
	partIDs []int // 0..parts-1, for the balancer
	rng     *rand.Rand
	books   map[string]*simBook
	hash    kafka.Hash
	seq     int // trade ids

	// Produced and Errors count records acknowledged and failed requests;
	// they may be read at any time.
	Produced, Errors atomic.Int64
	// Skipped counts records never sent because the producer fell more
	// than a second behind its rate (the broker or the machine could not
	// keep up).
	Skipped atomic.Int64

	lastErr atomic.Pointer[error] // the last produce error, for the result
}

// LastError returns the last error of a produce request, or nil.
func (p *Producer) LastError() error {
	if e := p.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

// simBook is the producer's model of one level-based book: prices in ticks,
// best first on each side.
type simBook struct {
	bids, asks []int64
}

// NewProducer connects to the brokers and waits until the topic exists.
func NewProducer(ctx context.Context, cfg ProducerConfig) (*Producer, error) {
	if len(cfg.Brokers) == 0 || len(cfg.Symbols) == 0 {
		return nil, errors.New("producer: brokers and symbols are required")
	}
	if cfg.Topic == "" {
		cfg.Topic = feed.DefaultTopic
	}
	if cfg.Levels == 0 {
		cfg.Levels = defaultLevels
	}
	if cfg.TradeShare == 0 {
		cfg.TradeShare = 0.05
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	p := &Producer{
		cfg:    cfg,
		client: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: produceTimeout},
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x6d61726b6574)),
		books:  make(map[string]*simBook, len(cfg.Symbols)),
	}
	deadline := time.Now().Add(metadataWait)
	for {
		md, err := p.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.Topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) > 0 {
			p.parts = len(md.Topics[0].Partitions)
			for i := range p.parts {
				p.partIDs = append(p.partIDs, i)
			}
			break
		}
		if err == nil && len(md.Topics) == 1 {
			err = md.Topics[0].Error
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("producer: metadata of topic %q at %v: %w", cfg.Topic, cfg.Brokers, errors.Join(err, ctx.Err()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p, nil
}

// Partitions returns the number of partitions of the topic.
func (p *Producer) Partitions() int { return p.parts }

// Seed sends a level snapshot of every symbol's book.
func (p *Producer) Seed(ctx context.Context) error {
	batch := make([][]kafka.Record, p.parts)
	for _, sym := range p.cfg.Symbols {
		buf := p.seedEvent(nil, sym, time.Now().UnixMicro())
		part := p.partition(sym)
		batch[part] = append(batch[part], kafka.Record{Key: kafka.NewBytes([]byte(sym)), Value: kafka.NewBytes(buf)})
	}
	return p.send(ctx, batch)
}

// seedEvent builds a fresh model of sym's book, Levels per side 1-2 ticks
// apart around basePriceTicks, and appends its snapshot event.
func (p *Producer) seedEvent(buf []byte, sym string, ts int64) []byte {
	b := &simBook{}
	bid, ask := int64(basePriceTicks), int64(basePriceTicks+1)
	for range p.cfg.Levels {
		b.bids = append(b.bids, bid)
		b.asks = append(b.asks, ask)
		bid -= 1 + p.rng.Int64N(2)
		ask += 1 + p.rng.Int64N(2)
	}
	p.books[sym] = b
	buf = p.appendHead(buf, "snapshot", sym, ts)
	buf = append(buf, `,"bids":[`...)
	for i, px := range b.bids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = p.appendLevel(buf, px)
	}
	buf = append(buf, `],"asks":[`...)
	for i, px := range b.asks {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = p.appendLevel(buf, px)
	}
	return append(buf, "]}"...)
}

func (p *Producer) appendLevel(buf []byte, px int64) []byte {
	buf = append(buf, `["`...)
	buf = book.Num(px * int64(tickNum)).Append(buf)
	buf = append(buf, `","`...)
	buf = p.appendSize(buf)
	return append(buf, `"]`...)
}

// appendSize appends a random positive size with up to 4 decimals.
func (p *Producer) appendSize(buf []byte) []byte {
	return book.Num((1 + p.rng.Int64N(500_000)) * int64(book.Unit) / 10_000).Append(buf)
}

func (p *Producer) appendHead(buf []byte, typ, sym string, ts int64) []byte {
	buf = append(buf, `{"type":"`...)
	buf = append(buf, typ...)
	buf = append(buf, `","symbol":"`...)
	buf = append(buf, sym...)
	buf = append(buf, `","ts":`...)
	return strconv.AppendInt(buf, ts, 10)
}

func (p *Producer) partition(sym string) int {
	return p.hash.Balance(kafka.Message{Key: []byte(sym)}, p.partIDs...)
}

// pickSymbol returns the symbol of the next record.
func (p *Producer) pickSymbol() string {
	if p.cfg.Hot > 0 && p.rng.Float64() < p.cfg.Hot {
		return p.cfg.Symbols[0]
	}
	return p.cfg.Symbols[p.rng.IntN(len(p.cfg.Symbols))]
}

// rank returns a level index biased to the top of the book, as real order
// flow is: half of the changes touch the best 2 levels, few go past 10.
func (p *Producer) rank(n int) int {
	return min(int(p.rng.ExpFloat64()*3), n-1)
}

// nextEvent appends the JSON of the next event of sym.
func (p *Producer) nextEvent(buf []byte, sym string, ts int64) []byte {
	b := p.books[sym]
	if p.rng.Float64() < p.cfg.TradeShare {
		p.seq++
		buf = p.appendHead(buf, "trade", sym, ts)
		buf = append(buf, `,"trade_id":"t`...)
		buf = strconv.AppendInt(buf, int64(p.seq), 10)
		side, px := "buy", b.asks[0]
		if p.rng.IntN(2) == 0 {
			side, px = "sell", b.bids[0]
		}
		buf = append(buf, `","side":"`...)
		buf = append(buf, side...)
		buf = append(buf, `","price":"`...)
		buf = book.Num(px * int64(tickNum)).Append(buf)
		buf = append(buf, `","size":"`...)
		buf = p.appendSize(buf)
		return append(buf, `"}`...)
	}
	bid := p.rng.IntN(2) == 0
	levels, other := &b.asks, b.bids
	side := "sell"
	if bid {
		levels, other, side = &b.bids, b.asks, "buy"
	}
	// step moves a price one tick worse on this side.
	step := int64(1)
	if bid {
		step = -1
	}
	r := p.rank(len(*levels))
	px, size := (*levels)[r], "" // size "" means a random new size
	switch op := p.rng.Float64(); {
	case op < 0.10 && len(*levels) > minLevels || len(*levels) >= maxLevels:
		// Remove the level.
		*levels = slices.Delete(*levels, r, r+1)
		size = "0"
	case op < 0.20 && r == 0 && p.rng.IntN(2) == 0:
		// A new best level, one tick better, unless it would cross.
		cand := (*levels)[0] - step
		if bid && cand < other[0] || !bid && cand > other[0] {
			*levels = slices.Insert(*levels, 0, cand)
			px = cand
		}
	case op < 0.20:
		// A new level one tick worse than level r, when there is a gap.
		cand := (*levels)[r] + step
		if r+1 < len(*levels) && (*levels)[r+1] == cand {
			break // no gap: change the size of level r instead
		}
		*levels = slices.Insert(*levels, r+1, cand)
		px = cand
	}
	buf = p.appendHead(buf, "level", sym, ts)
	buf = append(buf, `,"side":"`...)
	buf = append(buf, side...)
	buf = append(buf, `","price":"`...)
	buf = book.Num(px * int64(tickNum)).Append(buf)
	buf = append(buf, `","size":"`...)
	if size == "" {
		buf = p.appendSize(buf)
	} else {
		buf = append(buf, size...)
	}
	return append(buf, `"}`...)
}

// Run sends records at rate records per second until ctx is done, then
// returns nil; it returns an error only when produce requests fail for
// longer than the produce timeout.
func (p *Producer) Run(ctx context.Context, rate int) error {
	if rate <= 0 {
		<-ctx.Done()
		return nil
	}
	batch := make([][]kafka.Record, p.parts)
	start := time.Now()
	var sent int64
	var failingSince time.Time
	t := time.NewTicker(producerTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		due := int64(now.Sub(start).Seconds()*float64(rate)) - sent
		if behind := time.Duration(float64(due) / float64(rate) * float64(time.Second)); behind > maxBehind {
			p.Skipped.Add(due)
			sent += due
			continue
		}
		if due <= 0 {
			continue
		}
		for i := range batch {
			batch[i] = batch[i][:0]
		}
		ts := time.Now().UnixMicro()
		for range due {
			sym := p.pickSymbol()
			part := p.partition(sym)
			batch[part] = append(batch[part], kafka.Record{
				Key:   kafka.NewBytes([]byte(sym)),
				Value: kafka.NewBytes(p.nextEvent(nil, sym, ts)),
			})
		}
		sent += due
		if err := p.send(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failingSince.IsZero() {
				failingSince = now
			} else if now.Sub(failingSince) > produceTimeout {
				return err
			}
			time.Sleep(produceRetryPause)
			continue
		}
		failingSince = time.Time{}
	}
}

// start runs Run at rate on a goroutine of its own; stop cancels it,
// waits for it and returns Run's error, at every call.
func (p *Producer) start(ctx context.Context, rate int) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	var err error
	var wg sync.WaitGroup
	wg.Go(func() { err = p.Run(ctx, rate) })
	return sync.OnceValue(func() error {
		cancel()
		wg.Wait()
		return err
	})
}

// send writes each partition's records in one produce request.
func (p *Producer) send(ctx context.Context, batch [][]kafka.Record) error {
	var errs []error
	for part, recs := range batch {
		if len(recs) == 0 {
			continue
		}
		res, err := p.client.Produce(ctx, &kafka.ProduceRequest{
			Topic:        p.cfg.Topic,
			Partition:    part,
			RequiredAcks: kafka.RequireOne,
			Records:      kafka.NewRecordReader(recs...),
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err != nil && ctx.Err() != nil {
			return ctx.Err() // stopping: not a failure of the broker
		}
		if err != nil {
			p.Errors.Add(1)
			err = fmt.Errorf("produce %d records to %s/%d: %w", len(recs), p.cfg.Topic, part, err)
			p.lastErr.Store(&err)
			errs = append(errs, err)
			continue
		}
		p.Produced.Add(int64(len(recs)))
	}
	return errors.Join(errs...)
}
