package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/book"
)

// ReplayConfig configures Replay. Zero values mean the documented defaults.
type ReplayConfig struct {
	// Brokers are the bootstrap brokers ("host:port"); required.
	Brokers []string
	// Topic is the input topic; default DefaultTopic.
	Topic string
	// CheckpointTopic holds the checkpoints that may stand in for the
	// records before the range; default Topic + CheckpointSuffix.
	CheckpointTopic string

	// From and To select a time range, inclusive, by record timestamp
	// (the time the broker indexes, in milliseconds): in each partition,
	// from the first record stamped at or after From up to the last one
	// before the first stamped after To. Zero From is the start of each
	// partition; zero To is its end when Replay starts.
	From, To time.Time
	// Partitions restricts a time range to these partitions; nil reads
	// them all.
	Partitions []int
	// Offsets, when set, selects an offset range of one partition instead
	// of a time range (From, To and Partitions must then be zero).
	Offsets *OffsetRange

	// Symbols restricts what the handler gets to these symbols; nil is
	// every symbol. Every record of the partitions read is still applied.
	Symbols []string
	// FullReplay rebuilds the books from the start of each partition, not
	// from checkpoints.
	FullReplay bool

	// Logger receives warnings (rate-limited bad records, retries); nil
	// means slog.Default().
	Logger *slog.Logger
	// DialTimeout bounds a dial or a metadata request; default DefaultDialTimeout.
	DialTimeout time.Duration
	// FetchMaxBytes is the most one fetch returns; default DefaultFetchMaxBytes.
	FetchMaxBytes int
}

// OffsetRange is a range of offsets of one partition.
type OffsetRange struct {
	Partition int
	// From is the first offset of the range.
	From int64
	// To is the last offset of the range, inclusive; negative means the
	// end of the partition when Replay starts. Offsets past the end are
	// left out.
	To int64
}

// Validate reports the first invalid field of c.
func (c ReplayConfig) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("no brokers")
	case slices.Contains(c.Brokers, ""):
		return errors.New("empty broker address")
	case !c.From.IsZero() && !c.To.IsZero() && c.To.Before(c.From):
		return fmt.Errorf("the range ends (%s) before it starts (%s)", c.To.Format(time.RFC3339Nano), c.From.Format(time.RFC3339Nano))
	case c.DialTimeout < 0 || c.FetchMaxBytes < 0:
		return errors.New("negative dial timeout or fetch size")
	}
	if o := c.Offsets; o != nil {
		switch {
		case !c.From.IsZero() || !c.To.IsZero() || c.Partitions != nil:
			return errors.New("an offset range excludes a time range and a partition list")
		case o.Partition < 0:
			return fmt.Errorf("bad partition %d", o.Partition)
		case o.From < 0:
			return fmt.Errorf("bad offset %d", o.From)
		case o.To >= 0 && o.To < o.From:
			return fmt.Errorf("the range ends (offset %d) before it starts (offset %d)", o.To, o.From)
		}
	}
	return checkPartitions(c.Partitions)
}

// ReplayBook is a book as Replay hands it over. Book belongs to the
// replay: the handler reads it during the call and must not keep it.
type ReplayBook struct {
	Book *book.Book
	// LastTrade is the seq of the symbol's last trade so far, 0 when none:
	// the prev_seq of the trades stream's next message.
	LastTrade uint64
}

// ReplayHandler receives a replay. Replay calls its methods from one
// goroutine, in this order: Begin once, Update for each applied record of
// the range, End once (ReplayLive then goes on: see LiveHandler). An error
// from any of them stops the replay, and Replay returns it.
type ReplayHandler interface {
	// Begin gets the books as they are at the start of the range (before
	// its first record), sorted by symbol: the symbols' state when the
	// range begins. A symbol whose first record is in the range has no
	// book yet.
	Begin(books []ReplayBook) error
	// Update gets the update of each record of the range that applied,
	// exactly as the live path publishes it.
	Update(u *book.Update) error
	// End gets the books at the end of the range, sorted by symbol.
	End(books []ReplayBook) error
}

// LiveHandler is a ReplayHandler that also follows the topic past the
// range (ReplayLive).
type LiveHandler interface {
	ReplayHandler
	// CaughtUp is called after End each time the replay has applied every
	// record fetched so far, and every 20 ms (liveRetry) while none come;
	// the replay ends, returning nil, once it reports true.
	CaughtUp(ctx context.Context) (bool, error)
}

// liveRetry is how often ReplayLive asks CaughtUp again while no record
// comes (the handler's live books may lag behind the replay's).
const liveRetry = 20 * time.Millisecond

// ReplayStats says what Replay read.
type ReplayStats struct {
	// Ranges holds, per partition read, what was read.
	Ranges []ReplayRange
	// Records counts the records read, before and in the range (and past
	// it, with ReplayLive); Updates the updates handed to the handler.
	Records, Updates uint64
	// Restored is the number of books restored from checkpoints.
	Restored uint64
	// Stale counts records skipped because a restored book reflected them.
	Stale uint64
	// Bad counts the rejected records by Reason label.
	Bad map[string]uint64
}

// BadTotal returns the number of rejected records.
func (s ReplayStats) BadTotal() uint64 { return Stats{Bad: s.Bad}.BadTotal() }

// ReplayRange is what Replay read of one partition: offsets [Start, From)
// rebuild the books, [From, End) are the range.
type ReplayRange struct {
	Partition int
	// Start is the first offset read: the earliest retained one, or where
	// the partition's checkpoints let the replay begin.
	Start int64
	// From is the first offset of the range; End is one past its last.
	From, End int64
}

// Replay reads the topic over a range and hands what it finds to h. It
// rebuilds the books of each partition read from its earliest offset (or
// from checkpoints taken before the range) with the very code of the live
// path (decode, validate, apply), silently up to the start of the range,
// calls h.Begin with the books then, h.Update with the update of each
// record of the range that applies, and h.End with the books at the end.
//
// Records of several partitions are handed over in one order: by record
// timestamp, then by partition, each partition's in offset order. That
// order depends only on the records, so the same range always gives the
// same calls, byte for byte once encoded: the books at the start do not
// depend on whether checkpoints were used, since a restored book is the
// same as the rebuilt one.
//
// Replay returns an error for a range it cannot read (a partition or an
// offset that does not exist, a broker that does not answer), h's error,
// or ctx's. It writes nothing to Kafka: no dead letters, no checkpoints.
func Replay(ctx context.Context, cfg ReplayConfig, h ReplayHandler) (ReplayStats, error) {
	return replay(ctx, cfg, h, nil)
}

// ReplayLive replays cfg's range as Replay does, then reads on, in each
// partition from the end of its range: it applies the records as they come
// (in offset order per partition, the partitions as their records arrive),
// hands each update of the selected symbols to h.Update, and calls
// h.CaughtUp whenever it has applied every record fetched so far, until
// CaughtUp reports true. Past the range the fetchers reconnect, with
// backoff, as the live path's do.
func ReplayLive(ctx context.Context, cfg ReplayConfig, h LiveHandler) (ReplayStats, error) {
	return replay(ctx, cfg, h, h)
}

// replay is Replay, and ReplayLive when live is set.
func replay(ctx context.Context, cfg ReplayConfig, h ReplayHandler, live LiveHandler) (ReplayStats, error) {
	var st ReplayStats
	if err := cfg.Validate(); err != nil {
		return st, fmt.Errorf("replay config: %w", err)
	}
	in, err := New(Config{
		Brokers:            cfg.Brokers,
		Topic:              cfg.Topic,
		CheckpointTopic:    cfg.CheckpointTopic,
		DisableDLQ:         true,
		CheckpointInterval: -1,
		Logger:             cfg.Logger,
		DialTimeout:        cfg.DialTimeout,
		FetchMaxBytes:      cfg.FetchMaxBytes,
	})
	if err != nil {
		return st, fmt.Errorf("replay config: %w", err)
	}
	// Bad records in history, and checkpoints taken after the range, are
	// news for a replay, not warnings.
	in.quiet = slog.LevelInfo
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ids, err := in.replayPartitions(ctx, cfg)
	if err != nil {
		return st, err
	}
	parts := make([]*partition, len(ids))
	from := make(map[*partition]int64, len(ids))
	for i, id := range ids {
		p := newPartition(in, id)
		first, f, end, err := in.replayRange(ctx, p, cfg)
		if err != nil {
			return st, err
		}
		p.start, p.end, from[p] = first, end, f
		parts[i] = p
	}
	if !cfg.FullReplay {
		if !in.restore(ctx, parts, func(_ context.Context, p *partition) (int64, error) { return from[p], nil }) {
			return st, ctx.Err()
		}
	}
	in.mu.Lock()
	in.parts = parts
	in.mu.Unlock()
	for _, p := range parts {
		st.Ranges = append(st.Ranges, ReplayRange{Partition: p.id, Start: p.start, From: from[p], End: p.end})
		if p.start > 0 && len(p.restored) == 0 {
			in.log.Warn("feed: the partition's first records are gone (retention?): the books rebuilt without them may be wrong",
				"partition", p.id, "first", p.start)
		}
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before wg.Wait: stops the fetchers if the merge ends early
	for _, p := range parts {
		wg.Go(func() { p.fetch(ctx) })
	}
	m := &merge{ctx: ctx, h: h}
	if cfg.Symbols != nil {
		m.only = make(map[string]bool, len(cfg.Symbols))
		for _, s := range cfg.Symbols {
			m.only[s] = true
		}
	}
	for _, p := range parts {
		m.cursors = append(m.cursors, &cursor{p: p, from: from[p]})
	}
	err = m.run()
	if err == nil && live != nil {
		wg.Wait() // the range's fetchers, done: each closed its chunks
		err = m.follow(live, &wg)
	}
	s := in.Stats()
	st.Records, st.Updates, st.Restored, st.Stale, st.Bad = s.Records, m.updates, s.Restored, s.Stale, s.Bad
	return st, err
}

// replayPartitions returns the partitions a replay reads, checking that
// they exist.
func (in *Ingester) replayPartitions(ctx context.Context, cfg ReplayConfig) ([]int, error) {
	var all []int
	var err error
	for attempt := range len(in.cfg.Brokers) {
		if all, err = in.readPartitions(ctx, in.cfg.Topic, attempt); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("topic %s does not exist", in.cfg.Topic)
	}
	want := cfg.Partitions
	if cfg.Offsets != nil {
		want = []int{cfg.Offsets.Partition}
	}
	if want == nil {
		return all, nil
	}
	for _, p := range want {
		if !slices.Contains(all, p) {
			return nil, fmt.Errorf("partition %d does not exist: topic %s has partitions %d to %d", p, in.cfg.Topic, all[0], all[len(all)-1])
		}
	}
	return slices.Sorted(slices.Values(want)), nil
}

// replayRange returns where p's records begin (first), and the offsets
// [from, end) of the range in p.
func (in *Ingester) replayRange(ctx context.Context, p *partition, cfg ReplayConfig) (first, from, end int64, err error) {
	conn, first, last, err := p.connectAny(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer conn.Close()
	if o := cfg.Offsets; o != nil {
		if o.From > last {
			return 0, 0, 0, fmt.Errorf("offset %d is past the end of partition %d, which ends at %d", o.From, p.id, last)
		}
		from, end = o.From, last
		if o.To >= 0 {
			end = min(o.To+1, last)
		}
		if from < first {
			in.log.Warn("feed: the range starts before the first record still in the partition", "partition", p.id, "offset", from, "first", first)
			from = max(from, first)
		}
		return first, from, max(from, end), nil
	}
	// Kafka stamps records in milliseconds: [From, To] in microseconds
	// holds the records stamped from From rounded up to To rounded down.
	at := func(t time.Time) (int64, error) {
		_ = conn.SetDeadline(time.Now().Add(in.cfg.DialTimeout))
		off, err := conn.ReadOffset(t)
		if err != nil {
			return 0, fmt.Errorf("list the offset of %s in partition %d: %w", t.Format(time.RFC3339Nano), p.id, err)
		}
		if off < 0 { // no record stamped at or after t
			return last, nil
		}
		return min(max(off, first), last), nil
	}
	from, end = first, last
	if !cfg.From.IsZero() {
		if from, err = at(time.UnixMilli(ceilDiv(cfg.From.UnixMicro(), 1000))); err != nil {
			return 0, 0, 0, err
		}
	}
	if !cfg.To.IsZero() {
		if end, err = at(time.UnixMilli(floorDiv(cfg.To.UnixMicro(), 1000) + 1)); err != nil {
			return 0, 0, 0, err
		}
	}
	return first, from, max(from, end), nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }

// merge is a replay's merge loop: it owns the books of every partition
// read (their apply loops are not running) and applies the records of all
// partitions in one order.
type merge struct {
	ctx     context.Context
	h       ReplayHandler
	only    map[string]bool // nil: every symbol
	cursors []*cursor       // by partition
	updates uint64
}

// cursor is a merge's position in one partition's records.
type cursor struct {
	p    *partition
	from int64  // the first offset of the range
	c    *chunk // the chunk being read, nil before the first
	i    int    // the next record in c
	done bool   // the fetcher handed over every record
}

// head returns the cursor's next record, waiting for the fetcher when
// needed; nil once the partition is read.
func (cu *cursor) head(ctx context.Context) (*kafka.Message, error) {
	for cu.c == nil || cu.i == len(cu.c.msgs) {
		if cu.done {
			return nil, nil
		}
		if cu.c != nil {
			cu.p.free <- cu.c // never blocks: free holds every chunk
			cu.c = nil
		}
		select {
		case c, ok := <-cu.p.chunks:
			if !ok {
				cu.done = true
				return nil, ctx.Err() // the fetcher also stops when ctx ends
			}
			cu.c, cu.i = c, 0
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &cu.c.msgs[cu.i], nil
}

// run applies the records before the range, calls Begin, applies the range
// handing each update to Update, and calls End.
func (m *merge) run() error {
	if err := m.phase(false); err != nil {
		return err
	}
	if err := m.h.Begin(m.books()); err != nil {
		return err
	}
	if err := m.phase(true); err != nil {
		return err
	}
	return m.h.End(m.books())
}

// phase applies the records before the range, or those of the range, in
// order of record timestamp, then partition.
func (m *merge) phase(inRange bool) error {
	for {
		var (
			best *cursor
			bm   *kafka.Message
		)
		for _, cu := range m.cursors {
			r, err := cu.head(m.ctx)
			if err != nil {
				return err
			}
			if r == nil || (!inRange && r.Offset >= cu.from) {
				continue
			}
			if best == nil || r.Time.Before(bm.Time) {
				best, bm = cu, r
			}
		}
		if best == nil {
			return nil
		}
		best.i++
		if err := m.apply(best.p, bm, inRange); err != nil {
			return err
		}
	}
}

// apply applies the record r of p and, with hand, hands its update to
// the handler if its symbol is selected. It returns the handler's error.
func (m *merge) apply(p *partition, r *kafka.Message, hand bool) error {
	b, err := p.decodeApply(r)
	p.records.Add(1)
	p.next.Store(r.Offset + 1)
	if err != nil {
		p.rejectRecord(r, err)
		return nil
	}
	if !hand || (m.only != nil && !m.only[b.Symbol()]) {
		return nil
	}
	m.updates++
	return m.h.Update(b.LastUpdate())
}

// follow is ReplayLive past the range: it starts a fetcher per partition
// from the end of its range, in wg, all handing their chunks over one
// channel (each partition's in order), and applies them until h.CaughtUp
// reports true. The range's fetchers must be done.
func (m *merge) follow(h LiveHandler, wg *sync.WaitGroup) error {
	chunks := make(chan *chunk, chunksInFlight*len(m.cursors))
	for _, cu := range m.cursors {
		p := cu.p
		p.start, p.end, p.chunks = p.end, -1, chunks
		wg.Go(func() { p.fetch(m.ctx) })
	}
	retry := time.NewTicker(liveRetry)
	defer retry.Stop()
	for {
		if len(chunks) == 0 {
			if joined, err := h.CaughtUp(m.ctx); err != nil || joined {
				return err
			}
		}
		select {
		case c := <-chunks:
			var err error
			for i := 0; i < len(c.msgs) && err == nil; i++ {
				err = m.apply(c.p, &c.msgs[i], true)
			}
			c.p.free <- c
			if err != nil {
				return err
			}
		case <-retry.C:
		case <-m.ctx.Done():
			return m.ctx.Err()
		}
	}
}

// books returns the selected books of every partition, sorted by symbol.
func (m *merge) books() []ReplayBook {
	var out []ReplayBook
	for _, cu := range m.cursors {
		p := cu.p
		for s, b := range p.byName {
			if m.only == nil || m.only[s] {
				out = append(out, ReplayBook{Book: b, LastTrade: p.lastTrade(b)})
			}
		}
	}
	slices.SortFunc(out, func(a, b ReplayBook) int { return strings.Compare(a.Book.Symbol(), b.Book.Symbol()) })
	return out
}
