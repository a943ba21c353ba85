package feed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/book"
)

// Defaults of Config.
const (
	// DefaultDialTimeout bounds a dial, a metadata request or a produce.
	DefaultDialTimeout = 5 * time.Second
	// DefaultMinBackoff is the first wait before retrying the broker.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the wait between retries.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultFetchMaxBytes is the most a fetch of one partition returns
	// (a broker returns at least one record batch, however large).
	DefaultFetchMaxBytes = 1 << 20
	// DefaultFetchMaxWait is how long the broker holds a fetch that has
	// nothing to return (a long poll): it does not delay records.
	DefaultFetchMaxWait = 500 * time.Millisecond
	// DefaultBadLogInterval is the least time between two log lines about
	// bad records of the same reason.
	DefaultBadLogInterval = time.Second
	// DefaultDLQBuffer is how many dead letters may wait to be produced.
	DefaultDLQBuffer = 10000
	// DefaultDLQScanWindow is how many records at the end of each DLQ
	// partition are read at start to learn what a previous run wrote.
	DefaultDLQScanWindow = 1000

	minBackoff = DefaultMinBackoff
	maxBackoff = DefaultMaxBackoff

	// doEvery is how many records the apply loop applies between two
	// looks at waiting Do requests, so a large fetch does not delay them.
	doEvery = 64
	// dlqBatch is the most dead letters produced in one request.
	dlqBatch = 500
)

// Headers of a dead-lettered record, besides the original record's own.
const (
	HeaderReason    = "reason"    // the Reason label, e.g. "unknown_order"
	HeaderError     = "error"     // the error message
	HeaderPartition = "partition" // the input partition, decimal
	HeaderOffset    = "offset"    // the input offset, decimal
)

// ErrStopped is returned by Do once the Ingester's Run has returned.
var ErrStopped = errors.New("feed: ingester stopped")

// Config configures an Ingester. Zero values mean the documented defaults.
type Config struct {
	// Brokers are the bootstrap brokers ("host:port"); required.
	Brokers []string
	// Topic is the input topic; default DefaultTopic.
	Topic string
	// DLQTopic is the dead-letter topic; default Topic + DLQSuffix.
	DLQTopic string
	// DisableDLQ stops copying bad records to DLQTopic (they are still
	// counted and logged), e.g. for a second instance reading the same
	// topic, whose dead letters the first one writes.
	DisableDLQ bool
	// Partitions are the input partitions to read; nil reads them all.
	Partitions []int
	// Sink receives the update of every applied event; nil discards them.
	// It is called from the partition's apply loop and must not block.
	Sink book.Sink
	// Logger receives connection errors and (rate-limited) bad records;
	// nil means slog.Default().
	Logger *slog.Logger
	// DialTimeout bounds a dial, a metadata request or a DLQ produce;
	// default DefaultDialTimeout.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential wait between retries
	// of an unreachable broker; defaults DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// FetchMaxBytes is the most one fetch returns; default DefaultFetchMaxBytes.
	FetchMaxBytes int
	// FetchMaxWait is the long-poll time of an empty fetch; default
	// DefaultFetchMaxWait.
	FetchMaxWait time.Duration
	// BadLogInterval is the least time between two log lines of one
	// Reason; default DefaultBadLogInterval.
	BadLogInterval time.Duration
	// DLQBuffer is how many dead letters may wait to be produced; past it
	// they are dropped and counted (Stats.DLQDropped) rather than stall
	// ingest; default DefaultDLQBuffer.
	DLQBuffer int
	// DLQScanWindow is how many records at the end of each DLQ partition
	// are read at start, so that replaying the topic does not dead-letter
	// the same record twice; default DefaultDLQScanWindow.
	DLQScanWindow int

	// CheckpointTopic is the compacted topic of book checkpoints; default
	// Topic + CheckpointSuffix. It must exist for checkpoints to be written.
	CheckpointTopic string
	// CheckpointInterval is the most time between two checkpoints of a
	// partition that applied records meanwhile; default
	// DefaultCheckpointInterval. Negative writes no checkpoints at all.
	CheckpointInterval time.Duration
	// CheckpointRecords also checkpoints a partition once it has applied
	// that many records since its last checkpoint; default
	// DefaultCheckpointRecords. Negative checkpoints by time only.
	CheckpointRecords int
	// FullReplay ignores the checkpoints at start: every partition is
	// read from its earliest offset. Checkpoints are still written unless
	// CheckpointInterval is negative.
	FullReplay bool
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.DLQTopic == "" {
		c.DLQTopic = c.Topic + DLQSuffix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = DefaultFetchMaxBytes
	}
	if c.FetchMaxWait == 0 {
		c.FetchMaxWait = DefaultFetchMaxWait
	}
	if c.BadLogInterval == 0 {
		c.BadLogInterval = DefaultBadLogInterval
	}
	if c.DLQBuffer == 0 {
		c.DLQBuffer = DefaultDLQBuffer
	}
	if c.DLQScanWindow == 0 {
		c.DLQScanWindow = DefaultDLQScanWindow
	}
	if c.CheckpointTopic == "" {
		c.CheckpointTopic = c.Topic + CheckpointSuffix
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.CheckpointRecords == 0 {
		c.CheckpointRecords = DefaultCheckpointRecords
	}
	return c
}

// Validate reports the first invalid field of c (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case len(c.Brokers) == 0:
		return errors.New("no brokers")
	case slices.Contains(c.Brokers, ""):
		return errors.New("empty broker address")
	case c.DLQTopic == c.Topic:
		return fmt.Errorf("dead-letter topic %q is the input topic", c.DLQTopic)
	case c.CheckpointTopic == c.Topic || c.CheckpointTopic == c.DLQTopic:
		return fmt.Errorf("checkpoint topic %q is the input or the dead-letter topic", c.CheckpointTopic)
	case c.DialTimeout < 0, c.MinBackoff < 0, c.FetchMaxWait < 0, c.BadLogInterval < 0:
		return errors.New("negative duration")
	case c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("max backoff %v < min backoff %v", c.MaxBackoff, c.MinBackoff)
	case c.FetchMaxBytes < 1:
		return fmt.Errorf("fetch max bytes %d < 1", c.FetchMaxBytes)
	case c.DLQBuffer < 0 || c.DLQScanWindow < 0:
		return errors.New("negative DLQ size")
	}
	return checkPartitions(c.Partitions)
}

// checkPartitions reports a negative or repeated partition number.
func checkPartitions(ps []int) error {
	seen := map[int]bool{}
	for _, p := range ps {
		if p < 0 || seen[p] {
			return fmt.Errorf("bad or repeated partition %d", p)
		}
		seen[p] = true
	}
	return nil
}

// Ingester reads the input topic into books. Each partition has two
// goroutines: a fetcher that does the network reads, and an apply loop that
// owns the partition's books (design.md decision 2): it decodes and applies
// each record in offset order, publishes the update, and runs Do requests
// between records. No one else touches a book.
type Ingester struct {
	cfg    Config
	log    *slog.Logger
	dialer *kafka.Dialer
	sink   book.Sink

	started atomic.Bool
	stopped chan struct{} // closed when Run has stopped every goroutine

	mu          sync.Mutex            // guards the fields below
	parts       []*partition          // set once, when the partitions are known
	symbols     map[string]*partition // symbol → the partition owning its book
	discoverErr error                 // why parts is not known yet

	dlq        chan deadLetter
	dlqWrites  atomic.Uint64
	dlqDropped atomic.Uint64
	reconnects atomic.Uint64
	badLog     rateLimit

	// quiet is the level of the lines about bad records and unused
	// checkpoints: warnings for the live path, news for a replay.
	quiet slog.Level

	ckpt         chan round // apply loops → checkpoint writer; nil when checkpoints are off
	restoring    atomic.Bool
	restored     atomic.Uint64
	ckptWrites   atomic.Uint64
	ckptErrors   atomic.Uint64
	ckptDeferred atomic.Uint64
}

// deadLetter is a bad record on its way to the DLQ topic.
type deadLetter struct {
	partition int
	offset    int64
	msg       kafka.Message
}

// New returns an Ingester for cfg; Run starts it.
func New(cfg Config) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("feed config: %w", err)
	}
	cfg = cfg.withDefaults()
	in := &Ingester{
		cfg:     cfg,
		log:     cfg.Logger,
		dialer:  &kafka.Dialer{Timeout: cfg.DialTimeout, ClientID: "marketd"},
		sink:    cfg.Sink,
		stopped: make(chan struct{}),
		symbols: make(map[string]*partition),
		dlq:     make(chan deadLetter, cfg.DLQBuffer),
		quiet:   slog.LevelWarn,
	}
	if in.sink == nil {
		in.sink = book.SinkFunc(func(*book.Update) {})
	}
	in.badLog.interval = cfg.BadLogInterval
	return in, nil
}

// Run reads the topic until ctx is done, then stops every goroutine it
// started, waits for them and returns nil. It never returns early because
// the broker is unreachable or a record is bad: it retries with backoff and
// logs. Run may be called once.
func (in *Ingester) Run(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return errors.New("feed: Run called twice")
	}
	defer close(in.stopped)
	var wg sync.WaitGroup
	defer wg.Wait()
	if !in.cfg.DisableDLQ {
		wg.Go(func() { in.runDLQ(ctx) })
	}
	ids, ok := in.discover(ctx)
	if !ok {
		return nil
	}
	parts := make([]*partition, len(ids))
	for i, id := range ids {
		parts[i] = newPartition(in, id)
	}
	if !in.cfg.FullReplay {
		in.restoring.Store(true)
		ok := in.restore(ctx, parts, in.partitionEnd)
		in.restoring.Store(false)
		if !ok {
			return nil
		}
	}
	in.mu.Lock()
	in.parts = parts
	in.mu.Unlock()

	// The checkpoint writer outlives the apply loops, so that it writes
	// the rounds they take as they stop, within DialTimeout.
	var writer sync.WaitGroup
	if in.cfg.CheckpointInterval > 0 {
		// Two rounds per partition: the one being written and a final one.
		in.ckpt = make(chan round, 2*len(parts))
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		writer.Go(func() { in.runCheckpoints(wctx) })
		defer func() {
			stop := time.AfterFunc(in.cfg.DialTimeout, cancel)
			defer stop.Stop()
			close(in.ckpt)
			writer.Wait()
		}()
	}
	var pwg sync.WaitGroup
	for _, p := range parts {
		pwg.Go(func() { p.fetch(ctx) })
		pwg.Go(func() { p.apply(ctx) })
	}
	<-ctx.Done()
	pwg.Wait()
	return nil
}

// partitionEnd returns p's high watermark: a checkpoint past it belongs
// to another topic of the same name (deleted and created again).
func (in *Ingester) partitionEnd(ctx context.Context, p *partition) (int64, error) {
	conn, _, last, err := p.connectAny(ctx)
	if err != nil {
		return 0, err
	}
	conn.Close()
	return last, nil
}

// discover returns the partitions to read: the configured ones, or all of
// the topic's, asking the brokers until they answer. It returns false when
// ctx is done first.
func (in *Ingester) discover(ctx context.Context) ([]int, bool) {
	if in.cfg.Partitions != nil {
		return slices.Sorted(slices.Values(in.cfg.Partitions)), true
	}
	for attempt, backoff := 0, in.cfg.MinBackoff; ; attempt, backoff = attempt+1, min(2*backoff, in.cfg.MaxBackoff) {
		ids, err := in.readPartitions(ctx, in.cfg.Topic, attempt)
		if err == nil && len(ids) == 0 {
			err = fmt.Errorf("topic %s has no partitions", in.cfg.Topic)
		}
		if err == nil {
			return ids, true
		}
		in.mu.Lock()
		in.discoverErr = err
		in.mu.Unlock()
		if ctx.Err() != nil {
			return nil, false
		}
		in.log.Warn("feed: cannot read the topic's partitions, retrying", "topic", in.cfg.Topic, "retry_in", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return nil, false
		}
	}
}

// readPartitions asks one broker (the attempt-th, round robin) for the
// partitions of topic.
func (in *Ingester) readPartitions(ctx context.Context, topic string, attempt int) ([]int, error) {
	addr := in.cfg.Brokers[attempt%len(in.cfg.Brokers)]
	dctx, cancel := context.WithTimeout(ctx, in.cfg.DialTimeout)
	defer cancel()
	conn, err := in.dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(in.cfg.DialTimeout))
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		return nil, fmt.Errorf("read partitions of %s from %s: %w", topic, addr, err)
	}
	var ids []int
	for _, p := range ps {
		if p.Topic == topic {
			ids = append(ids, p.ID)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Ready returns nil once every assigned partition has been read up to the
// high watermark it had when first reached, and its broker answers; else an
// error saying why not.
func (in *Ingester) Ready() error {
	if !in.started.Load() {
		return errors.New("feed: not started")
	}
	select {
	case <-in.stopped:
		return ErrStopped
	default:
	}
	in.mu.Lock()
	parts, derr := in.parts, in.discoverErr
	in.mu.Unlock()
	if parts == nil {
		if in.restoring.Load() {
			return errors.New("feed: reading the checkpoints")
		}
		if derr == nil {
			derr = errors.New("no answer yet")
		}
		return fmt.Errorf("feed: finding the partitions of %s: %w", in.cfg.Topic, derr)
	}
	for _, p := range parts {
		if !p.connected.Load() {
			err := p.lastErr()
			if err == nil {
				err = errors.New("connecting")
			}
			return fmt.Errorf("feed: partition %d: not connected: %w", p.id, err)
		}
		start, next := p.startHWM.Load(), p.next.Load()
		if start < 0 {
			return fmt.Errorf("feed: partition %d: waiting for its high watermark", p.id)
		}
		if next < start {
			return fmt.Errorf("feed: partition %d: catching up: at offset %d of %d", p.id, next, start)
		}
	}
	return nil
}

// Do runs fn on the goroutine that owns symbol's book, between two records,
// and returns once fn has returned. fn must not keep b, nor call Do. Do
// returns book.ErrUnknownSymbol when no applied record has named the symbol
// yet, ctx's error when ctx ends before fn starts (fn then never runs), and
// ErrStopped once Run has returned.
func (in *Ingester) Do(ctx context.Context, symbol string, fn func(b *book.Book)) error {
	in.mu.Lock()
	p := in.symbols[symbol]
	in.mu.Unlock()
	if p == nil {
		return fmt.Errorf("feed: %q: %w", symbol, book.ErrUnknownSymbol)
	}
	r := &doRequest{symbol: symbol, fn: fn, done: make(chan struct{})}
	select {
	case p.do <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-in.stopped:
		return ErrStopped
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		if r.state.CompareAndSwap(doPending, doCancelled) {
			return ctx.Err()
		}
		<-r.done // fn is running: wait for it, it is the caller's
		return nil
	}
}

// Symbols returns the symbols that have a book, sorted.
func (in *Ingester) Symbols() []string {
	in.mu.Lock()
	syms := make([]string, 0, len(in.symbols))
	for s := range in.symbols {
		syms = append(syms, s)
	}
	in.mu.Unlock()
	slices.Sort(syms)
	return syms
}

// claim records that p owns symbol's book, unless another partition does;
// it returns the owner.
func (in *Ingester) claim(symbol string, p *partition) *partition {
	in.mu.Lock()
	defer in.mu.Unlock()
	if q := in.symbols[symbol]; q != nil {
		return q
	}
	in.symbols[symbol] = p
	return p
}

// owner returns the partition owning symbol's book, or nil.
func (in *Ingester) owner(symbol string) *partition {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.symbols[symbol]
}

// Stats is a snapshot of an Ingester's counters.
type Stats struct {
	// Records and Bytes count the records read (good or bad) and their values' bytes.
	Records, Bytes uint64
	// Bad counts the rejected records by Reason label; every label is present.
	Bad map[string]uint64
	// Stale counts records that a book had already applied (book.ErrStale).
	Stale uint64
	// Books is the number of books.
	Books int
	// DLQWrites counts the records produced to the dead-letter topic;
	// DLQDropped those dropped because its buffer was full.
	DLQWrites, DLQDropped uint64
	// Reconnects counts the connections to a partition leader lost and
	// made again.
	Reconnects uint64
	// Restored is the number of books restored from checkpoints at start.
	Restored uint64
	// CheckpointWrites counts the checkpoint records written (books and
	// manifests); CheckpointErrors the rounds that failed to be written;
	// CheckpointDeferred the rounds put off until the partition's previous
	// one was written.
	CheckpointWrites, CheckpointErrors, CheckpointDeferred uint64
	// Partitions holds one entry per assigned partition, by partition.
	Partitions []PartitionStats
}

// BadTotal returns the number of rejected records.
func (s Stats) BadTotal() uint64 {
	var n uint64
	for _, v := range s.Bad {
		n += v
	}
	return n
}

// PartitionStats is the state of one input partition.
type PartitionStats struct {
	Partition int
	// Offset is the next offset to apply; -1 before the broker first answered.
	Offset int64
	// Start is the offset reading started at: the earliest retained one,
	// or where the partition's checkpoints let it resume; -1 until known.
	Start int64
	// Checkpoint is the input offset of the partition's last checkpoint
	// written by this Ingester; -1 before the first.
	Checkpoint int64
	// HighWatermark is the latest high watermark seen; -1 before the first.
	HighWatermark int64
	// Lag is HighWatermark - Offset, or 0 while either is unknown.
	Lag int64
	// Books is the number of books the partition owns.
	Books int
	// Connected says whether the partition's leader answers.
	Connected bool
}

// Stats returns the Ingester's counters. It is safe to call at any time.
func (in *Ingester) Stats() Stats {
	s := Stats{
		Bad:        make(map[string]uint64, numReasons),
		DLQWrites:  in.dlqWrites.Load(),
		DLQDropped: in.dlqDropped.Load(),
		Reconnects: in.reconnects.Load(),

		Restored:           in.restored.Load(),
		CheckpointWrites:   in.ckptWrites.Load(),
		CheckpointErrors:   in.ckptErrors.Load(),
		CheckpointDeferred: in.ckptDeferred.Load(),
	}
	for _, r := range Reasons() {
		s.Bad[r.String()] = 0
	}
	in.mu.Lock()
	parts := in.parts
	in.mu.Unlock()
	for _, p := range parts {
		s.Records += p.records.Load()
		s.Bytes += p.bytes.Load()
		s.Stale += p.stale.Load()
		for r := Reason(1); r < numReasons; r++ {
			s.Bad[r.String()] += p.bad[r].Load()
		}
		ps := PartitionStats{
			Partition:     p.id,
			Offset:        p.next.Load(),
			Start:         p.startAt.Load(),
			Checkpoint:    p.ckptOffset.Load(),
			HighWatermark: p.hwm.Load(),
			Books:         int(p.books.Load()),
			Connected:     p.connected.Load(),
		}
		if ps.Offset >= 0 && ps.HighWatermark >= 0 {
			ps.Lag = max(0, ps.HighWatermark-ps.Offset)
		}
		s.Books += ps.Books
		s.Partitions = append(s.Partitions, ps)
	}
	return s
}

// partition is one input partition: its fetcher and its apply loop.
type partition struct {
	in     *Ingester
	id     int
	chunks chan *chunk     // fetched records, fetcher → apply loop
	free   chan *chunk     // applied chunks, back to the fetcher for reuse
	do     chan *doRequest // Do requests for the apply loop

	// Set before the goroutines start.
	start    int64        // offset to read from; -1: the earliest retained
	end      int64        // offset to stop before (a replay); -1: none
	restored []*savedBook // books restored from checkpoints, published by the apply loop first

	// Owned by the apply loop (or by a replay's merge loop): the books,
	// and what is needed to decode, apply and checkpoint.
	byName    map[string]*book.Book
	oldTrades map[string]uint64 // restored books whose checkpoint knew their last trade better (see lastTrade)
	skip      map[string]int64  // restored books: their records below this offset are applied already
	skipUntil int64             // the highest offset in skip
	dec       Decoder
	ev        book.Event
	blobs     map[string]cachedBlob // the last checkpoint of each book
	ckptNext  int64                 // input offset of the last checkpoint round taken or restored
	sinceCkpt int                   // records applied since then
	caughtUp  bool                  // the partition reached the high watermark it started with
	ckptDue   bool                  // a round is due once the writer is done with the last one

	// Shared, atomic.
	startAt    atomic.Int64  // the offset reading started at; -1 until known
	ckptBusy   atomic.Bool   // a round of this partition waits for the writer
	ckptFree   chan struct{} // the writer is done with a round; size 1
	ckptOffset atomic.Int64  // input offset of the last round written; -1 before
	next       atomic.Int64  // next offset to apply; -1 until known
	hwm        atomic.Int64  // latest high watermark; -1 until known
	startHWM   atomic.Int64  // high watermark when first reached; -1 until then
	connected  atomic.Bool
	records    atomic.Uint64
	bytes      atomic.Uint64
	stale      atomic.Uint64
	books      atomic.Int64
	bad        [numReasons]atomic.Uint64

	errMu sync.Mutex
	err   error // the last connection error
}

// chunk is a run of fetched records of p, at most chunkRecords.
type chunk struct {
	p    *partition
	msgs []kafka.Message
}

const (
	// chunksInFlight is how many fetched chunks may wait for the apply
	// loop: two let the fetcher read on while the loop applies, without
	// letting it run far ahead.
	chunksInFlight = 2
	// chunkRecords bounds a chunk, and so the memory a partition holds in
	// fetched records: (chunksInFlight+1) * chunkRecords records.
	chunkRecords = 4096
)

func newPartition(in *Ingester, id int) *partition {
	p := &partition{
		in:     in,
		id:     id,
		chunks: make(chan *chunk, chunksInFlight),
		free:   make(chan *chunk, chunksInFlight+1),
		do:     make(chan *doRequest),
		start:  -1,
		end:    -1,
		byName: make(map[string]*book.Book),
		skip:   make(map[string]int64),
		blobs:  make(map[string]cachedBlob),

		ckptFree: make(chan struct{}, 1),
	}
	p.startAt.Store(-1)
	p.ckptOffset.Store(-1)
	p.next.Store(-1)
	p.hwm.Store(-1)
	p.startHWM.Store(-1)
	for range chunksInFlight + 1 {
		p.free <- &chunk{p: p}
	}
	return p
}

func (p *partition) setErr(err error) {
	p.errMu.Lock()
	p.err = err
	p.errMu.Unlock()
}

func (p *partition) lastErr() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

// fetch reads the partition in offset order, from p.start (or the
// earliest retained offset), and hands the records to the apply loop, until
// ctx is done. It reconnects, with backoff, whenever the connection fails,
// and resumes at the next offset it has not handed over: nothing is lost
// and nothing is read twice. With an end (a replay) it stops there, and
// closes p.chunks once every record below it is handed over.
func (p *partition) fetch(ctx context.Context) {
	cfg := &p.in.cfg
	log := p.in.log.With("topic", cfg.Topic, "partition", p.id)
	var (
		conn    *kafka.Conn
		stop    func() bool
		pos     int64 = -1 // next offset to fetch; -1 until the first connection
		attempt int
		backoff = cfg.MinBackoff
		empty   int // fetches in a row that returned nothing below end
	)
	if p.end >= 0 {
		defer close(p.chunks)
		if p.start >= p.end {
			return
		}
	}
	closeConn := func() {
		if conn != nil {
			stop()
			conn.Close()
			conn = nil
		}
	}
	defer closeConn()
	for ctx.Err() == nil {
		if conn == nil {
			c, first, last, err := p.connect(ctx, attempt)
			attempt++
			if err != nil {
				p.connected.Store(false)
				p.setErr(err)
				if ctx.Err() != nil {
					return
				}
				log.Warn("feed: partition leader unreachable, retrying", "retry_in", backoff, "err", err)
				if !sleep(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, cfg.MaxBackoff)
				continue
			}
			conn, backoff = c, cfg.MinBackoff
			stop = context.AfterFunc(ctx, func() { c.Close() })
			if pos < 0 {
				pos = first
				if p.start > first {
					pos = p.start
				} else if p.start >= 0 && p.start < first {
					log.Error("feed: records were deleted before they were read", "from", p.start, "to", first)
				}
				p.startAt.Store(pos)
				p.next.CompareAndSwap(-1, pos)
			} else if pos < first {
				log.Error("feed: records were deleted before they were read", "from", pos, "to", first)
				pos = first
			}
			p.hwm.Store(last)
			p.startHWM.CompareAndSwap(-1, last)
			p.connected.Store(true)
			p.setErr(nil)
		}

		c := p.getChunk(ctx)
		if c == nil {
			return
		}
		_, _ = conn.Seek(pos, kafka.SeekAbsolute|kafka.SeekDontCheck)
		_ = conn.SetReadDeadline(time.Now().Add(cfg.FetchMaxWait + cfg.DialTimeout))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: cfg.FetchMaxBytes, MaxWait: cfg.FetchMaxWait})
		hwm := batch.HighWaterMark()
		read := 0
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			if m.Offset < pos {
				continue // a compressed batch may start before pos
			}
			if p.end >= 0 && m.Offset >= p.end {
				pos = p.end // nothing is left below the end
				break
			}
			read++
			pos = m.Offset + 1
			c.msgs = append(c.msgs, m)
			if len(c.msgs) == chunkRecords {
				if !p.send(ctx, c) {
					batch.Close()
					return
				}
				if c = p.getChunk(ctx); c == nil {
					batch.Close()
					return
				}
			}
		}
		err := batch.Close()
		if errors.Is(err, kafka.RequestTimedOut) {
			// kafka-go's way of saying the fetch found nothing new: the
			// long poll ended at the end of the partition.
			err = nil
		}
		if len(c.msgs) > 0 {
			if !p.send(ctx, c) {
				return
			}
		} else {
			p.free <- c
		}
		if p.end >= 0 {
			// A replay: done at the end, or when the broker has records up
			// to it but a few fetches in a row return none (the offsets
			// left hold only transaction markers).
			if read == 0 && err == nil && hwm >= p.end {
				empty++
			} else {
				empty = 0
			}
			if pos >= p.end || empty == 3 {
				return
			}
		}
		if err == nil {
			if hwm > 0 {
				p.hwm.Store(hwm)
			}
			p.connected.Store(true)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			if first, last, oerr := conn.ReadOffsets(); oerr == nil {
				if pos < first {
					log.Error("feed: records were deleted before they were read", "from", pos, "to", first)
					pos = first
				} else if pos > last {
					log.Error("feed: partition is shorter than what was read: was the topic recreated?", "read_to", pos, "end", last)
					pos = last
				}
				continue
			}
		}
		log.Warn("feed: lost the partition leader, reconnecting", "offset", pos, "err", err)
		p.in.reconnects.Add(1)
		p.connected.Store(false)
		p.setErr(err)
		closeConn()
	}
}

// send hands c to the apply loop; it reports false when ctx is done first.
func (p *partition) send(ctx context.Context, c *chunk) bool {
	select {
	case p.chunks <- c:
		return true
	case <-ctx.Done():
		return false
	}
}

// getChunk returns an empty chunk to fetch into, waiting for the apply loop
// to give one back; nil when ctx is done.
func (p *partition) getChunk(ctx context.Context) *chunk {
	select {
	case c := <-p.free:
		clear(c.msgs) // drop the old records for the GC
		c.msgs = c.msgs[:0]
		return c
	case <-ctx.Done():
		return nil
	}
}

// connect dials the partition's leader (asking the attempt-th bootstrap
// broker, round robin) and reads its first and last offsets.
func (p *partition) connect(ctx context.Context, attempt int) (conn *kafka.Conn, first, last int64, err error) {
	cfg := &p.in.cfg
	addr := cfg.Brokers[attempt%len(cfg.Brokers)]
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	conn, err = p.in.dialer.DialLeader(dctx, "tcp", addr, cfg.Topic, p.id)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("dial leader of %s/%d via %s: %w", cfg.Topic, p.id, addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(cfg.DialTimeout))
	first, last, err = conn.ReadOffsets()
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, 0, 0, fmt.Errorf("read offsets of %s/%d: %w", cfg.Topic, p.id, err)
	}
	return conn, first, last, nil
}

// connectAny is connect through each bootstrap broker in turn, once, until
// one answers; it returns the last one's error when none does.
func (p *partition) connectAny(ctx context.Context) (conn *kafka.Conn, first, last int64, err error) {
	for attempt := range len(p.in.cfg.Brokers) {
		if conn, first, last, err = p.connect(ctx, attempt); err == nil {
			break
		}
	}
	return conn, first, last, err
}

// apply is the apply loop: the only goroutine that touches the partition's
// books. It first publishes the books restored from checkpoints, then runs
// until ctx is done, checkpointing the books as Config says and once more
// as it stops.
func (p *partition) apply(ctx context.Context) {
	for _, sb := range p.restored {
		// One update without changes, carrying the ticker, makes the
		// book's symbol and its ticker known downstream, as replaying its
		// records would have.
		u := sb.book.LastUpdate()
		t := sb.book.Ticker()
		u.Ticker = &t
		p.in.sink.Publish(u)
	}
	p.restored = nil
	var tick <-chan time.Time
	if iv := p.in.cfg.CheckpointInterval; iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			p.checkpoint(true)
			return
		case c := <-p.chunks:
			p.applyChunk(c)
			p.free <- c
			p.afterChunk()
		case r := <-p.do:
			p.serve(r)
		case <-tick:
			p.checkpoint(false)
		case <-p.ckptFree:
			if p.ckptDue {
				p.checkpoint(false)
			}
		}
	}
}

// afterChunk checkpoints the partition when it has applied CheckpointRecords
// records since the last checkpoint, and when it first catches up with the
// high watermark it started with (so that a restart soon after replays
// little).
func (p *partition) afterChunk() {
	n := p.in.cfg.CheckpointRecords
	switch {
	case n > 0 && p.sinceCkpt >= n:
		p.checkpoint(false)
	case !p.caughtUp:
		if start := p.startHWM.Load(); start >= 0 && p.next.Load() >= start {
			p.caughtUp = true
			p.checkpoint(false)
		}
	}
}

func (p *partition) applyChunk(c *chunk) {
	var bytes int
	for i := range c.msgs {
		if i%doEvery == doEvery-1 {
			p.serveWaiting()
		}
		m := &c.msgs[i]
		bytes += len(m.Value)
		p.applyRecord(m)
		p.next.Store(m.Offset + 1)
	}
	p.sinceCkpt += len(c.msgs)
	p.records.Add(uint64(len(c.msgs)))
	p.bytes.Add(uint64(bytes))
}

// applyRecord decodes, validates and applies one record and publishes the
// update; a bad record is rejected and leaves every book unchanged.
func (p *partition) applyRecord(m *kafka.Message) {
	b, err := p.decodeApply(m)
	if err != nil {
		p.rejectRecord(m, err)
		return
	}
	p.in.sink.Publish(b.LastUpdate())
}

// errApplied: the record is reflected in its book already (a restored
// book's record below its checkpoint, or book.ErrStale): not a bad record.
var errApplied = errors.New("record already applied")

// decodeApply decodes, validates and applies one record to its symbol's
// book, creating the book when the record is the symbol's first that
// applies, and returns the book. It is the one place that turns records
// into book changes, shared by the live path and Replay. It returns
// errApplied for a record the book already reflects, else a *RecordError
// for a bad record; either way every book is unchanged.
func (p *partition) decodeApply(m *kafka.Message) (*book.Book, error) {
	if p.skip != nil {
		if m.Offset >= p.skipUntil {
			p.skip = nil // past every restored book's checkpoint
		} else if next, ok := p.skip[string(m.Key)]; ok && m.Offset < next {
			return nil, errApplied // the key is the symbol (or the record is bad)
		}
	}
	ev := &p.ev
	if err := p.dec.Decode(m.Key, m.Value, m.Time, m.Offset, ev); err != nil {
		return nil, err
	}
	b := p.byName[ev.Symbol]
	if b == nil {
		// A new symbol: its book joins this partition once an event
		// applies, unless another partition already owns the symbol.
		if q := p.in.owner(ev.Symbol); q != nil && q != p {
			return nil, &RecordError{Reason: ReasonWrongPartition, Field: "symbol",
				Err: fmt.Errorf("symbol %s is in partition %d", ev.Symbol, q.id)}
		}
		b = book.New(ev.Symbol)
		if err := b.Apply(ev); err != nil {
			return nil, applyError(err)
		}
		if q := p.in.claim(ev.Symbol, p); q != p {
			return nil, &RecordError{Reason: ReasonWrongPartition, Field: "symbol",
				Err: fmt.Errorf("symbol %s is in partition %d", ev.Symbol, q.id)}
		}
		p.byName[ev.Symbol] = b
		p.books.Add(1)
	} else if err := b.Apply(ev); err != nil {
		return nil, applyError(err)
	}
	return b, nil
}

// lastTrade returns the seq of the last trade of b, one of p's books (0
// when none is known): the book keeps it, except a book restored from a
// checkpoint whose book bytes predate it (book checkpoint version 1), whose
// record's value stands in until the book trades again.
func (p *partition) lastTrade(b *book.Book) uint64 {
	return max(b.LastTradeSeq(), p.oldTrades[b.Symbol()])
}

// applyError maps an error of book.Apply to errApplied or a *RecordError.
func applyError(err error) error {
	r := BookReason(err)
	if r == 0 { // book.ErrStale: applied before, not a bad record
		return errApplied
	}
	return &RecordError{Reason: r, Err: err}
}

// rejectRecord counts a record that decodeApply did not apply: as stale,
// or as bad (see reject).
func (p *partition) rejectRecord(m *kafka.Message, err error) {
	if err == errApplied {
		p.stale.Add(1)
		return
	}
	p.reject(m, err.(*RecordError))
}

// reject counts a bad record, logs it (rate-limited) and queues it for the
// dead-letter topic.
func (p *partition) reject(m *kafka.Message, re *RecordError) {
	in := p.in
	p.bad[re.Reason].Add(1)
	if ok, suppressed := in.badLog.allow(re.Reason); ok {
		in.log.Log(context.Background(), in.quiet, "feed: bad record skipped", "topic", in.cfg.Topic, "partition", p.id, "offset", m.Offset,
			"reason", re.Reason.String(), "err", re.Error(), "suppressed", suppressed)
	}
	if in.cfg.DisableDLQ {
		return
	}
	headers := make([]kafka.Header, 0, 4+len(m.Headers))
	headers = append(headers,
		kafka.Header{Key: HeaderReason, Value: []byte(re.Reason.String())},
		kafka.Header{Key: HeaderError, Value: []byte(re.Error())},
		kafka.Header{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(p.id), 10)},
		kafka.Header{Key: HeaderOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
	)
	headers = append(headers, m.Headers...)
	dl := deadLetter{partition: p.id, offset: m.Offset, msg: kafka.Message{Key: m.Key, Value: m.Value, Headers: headers, Partition: p.id}}
	select {
	case in.dlq <- dl:
	default:
		in.dlqDropped.Add(1)
		if ok, suppressed := in.badLog.allow(0); ok {
			in.log.Error("feed: dead-letter buffer full, record dropped from the DLQ", "partition", p.id, "offset", m.Offset, "suppressed", suppressed)
		}
	}
}

// Do request states: the apply loop moves pending to running, a caller
// giving up moves pending to cancelled; whoever moves first wins.
const (
	doPending int32 = iota
	doRunning
	doCancelled
)

type doRequest struct {
	symbol string
	fn     func(*book.Book)
	state  atomic.Int32
	done   chan struct{}
}

func (p *partition) serve(r *doRequest) {
	defer close(r.done)
	if !r.state.CompareAndSwap(doPending, doRunning) {
		return
	}
	if b := p.byName[r.symbol]; b != nil {
		r.fn(b)
	}
}

// serveWaiting runs the Do requests already waiting, without blocking.
func (p *partition) serveWaiting() {
	for {
		select {
		case r := <-p.do:
			p.serve(r)
		default:
			return
		}
	}
}

// rateLimit lets through one event per interval per Reason (index 0 is
// used for dropped dead letters) and counts the ones it holds back.
type rateLimit struct {
	interval   time.Duration
	last       [numReasons]atomic.Int64
	suppressed [numReasons]atomic.Uint64
}

func (l *rateLimit) allow(r Reason) (ok bool, suppressed uint64) {
	now := time.Now().UnixNano()
	last := l.last[r].Load()
	if (last != 0 && now-last < int64(l.interval)) || !l.last[r].CompareAndSwap(last, now) {
		l.suppressed[r].Add(1)
		return false, 0
	}
	return true, l.suppressed[r].Swap(0)
}

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runDLQ produces the dead letters, in order, until ctx is done. It first
// learns, from the end of the DLQ topic, which records a previous run
// dead-lettered, and skips those: replaying the topic at start does not
// dead-letter a record twice.
func (in *Ingester) runDLQ(ctx context.Context) {
	cfg := &in.cfg
	done := in.scanDLQ(ctx)
	if done == nil {
		return
	}
	tr := &kafka.Transport{DialTimeout: cfg.DialTimeout, ClientID: "marketd"}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:      kafka.TCP(cfg.Brokers...),
		Topic:     cfg.DLQTopic,
		Transport: tr,
		// Dead letters of input partition p go to DLQ partition p (mod the
		// DLQ's count), in input offset order: that is what scanDLQ reads.
		Balancer: kafka.BalancerFunc(func(m kafka.Message, parts ...int) int {
			return parts[m.Partition%len(parts)]
		}),
		BatchSize:    dlqBatch,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		MaxAttempts:  1, // retried below, with backoff and in order
		WriteTimeout: cfg.DialTimeout,
		ReadTimeout:  cfg.DialTimeout,
	}
	defer w.Close()
	var (
		batch   []kafka.Message
		lastLog time.Time
	)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case dl := <-in.dlq:
			batch = appendLetter(batch, dl, done)
		}
	drain:
		for len(batch) < dlqBatch {
			select {
			case dl := <-in.dlq:
				batch = appendLetter(batch, dl, done)
			default:
				break drain
			}
		}
		for backoff := cfg.MinBackoff; len(batch) > 0; backoff = min(2*backoff, cfg.MaxBackoff) {
			err := w.WriteMessages(ctx, batch...)
			if err == nil {
				in.dlqWrites.Add(uint64(len(batch)))
				break
			}
			if ctx.Err() != nil {
				return
			}
			var werrs kafka.WriteErrors
			if errors.As(err, &werrs) && len(werrs) == len(batch) {
				failed := batch[:0]
				for i, e := range werrs {
					if e != nil {
						failed = append(failed, batch[i])
					}
				}
				in.dlqWrites.Add(uint64(len(batch) - len(failed)))
				batch = failed
			}
			if time.Since(lastLog) >= cfg.BadLogInterval {
				lastLog = time.Now()
				in.log.Warn("feed: producing to the dead-letter topic failed, retrying", "topic", cfg.DLQTopic, "records", len(batch), "err", err)
			}
			if !sleep(ctx, backoff) {
				return
			}
		}
	}
}

// appendLetter appends dl unless a previous run dead-lettered it already.
func appendLetter(batch []kafka.Message, dl deadLetter, done map[int]int64) []kafka.Message {
	if last, ok := done[dl.partition]; ok && dl.offset <= last {
		return batch
	}
	return append(batch, dl.msg)
}

// scanDLQ reads the last DLQScanWindow records of each DLQ partition and
// returns, per input partition, the highest offset found dead-lettered. It
// retries until the broker answers and returns nil when ctx is done first.
func (in *Ingester) scanDLQ(ctx context.Context) map[int]int64 {
	for attempt, backoff := 0, in.cfg.MinBackoff; ; attempt, backoff = attempt+1, min(2*backoff, in.cfg.MaxBackoff) {
		done, err := in.scanDLQOnce(ctx, attempt)
		if err == nil {
			return done
		}
		if ctx.Err() != nil {
			return nil
		}
		in.log.Warn("feed: cannot read the dead-letter topic, retrying", "topic", in.cfg.DLQTopic, "retry_in", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return nil
		}
	}
}

func (in *Ingester) scanDLQOnce(ctx context.Context, attempt int) (map[int]int64, error) {
	cfg := &in.cfg
	ids, err := in.readPartitions(ctx, cfg.DLQTopic, attempt)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("topic %s does not exist", cfg.DLQTopic)
	}
	done := make(map[int]int64)
	addr := cfg.Brokers[attempt%len(cfg.Brokers)]
	for _, id := range ids {
		if err := in.scanDLQPartition(ctx, addr, id, done); err != nil {
			return nil, err
		}
	}
	return done, nil
}

func (in *Ingester) scanDLQPartition(ctx context.Context, addr string, id int, done map[int]int64) error {
	window := int64(in.cfg.DLQScanWindow)
	return in.scanPartition(ctx, addr, in.cfg.DLQTopic, id, func(first, last int64) int64 { return max(first, last-window) },
		func(m *kafka.Message) {
			var part, off int64 = -1, -1
			for _, h := range m.Headers {
				switch h.Key {
				case HeaderPartition:
					part, _ = strconv.ParseInt(string(h.Value), 10, 64)
				case HeaderOffset:
					off, _ = strconv.ParseInt(string(h.Value), 10, 64)
				}
			}
			if part >= 0 && off >= 0 {
				if cur, ok := done[int(part)]; !ok || off > cur {
					done[int(part)] = off
				}
			}
		})
}

// scanPartition reads topic/id, asking addr for its leader, from the offset
// from(first, last) returns up to the end the partition has when the scan
// starts, and calls fn with each record in offset order.
func (in *Ingester) scanPartition(ctx context.Context, addr, topic string, id int, from func(first, last int64) int64, fn func(m *kafka.Message)) error {
	cfg := &in.cfg
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	conn, err := in.dialer.DialLeader(dctx, "tcp", addr, topic, id)
	if err != nil {
		return fmt.Errorf("dial leader of %s/%d: %w", topic, id, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(cfg.DialTimeout))
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return fmt.Errorf("read offsets of %s/%d: %w", topic, id, err)
	}
	for pos := from(first, last); pos < last; {
		_, _ = conn.Seek(pos, kafka.SeekAbsolute|kafka.SeekDontCheck)
		_ = conn.SetDeadline(time.Now().Add(cfg.DialTimeout))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: cfg.FetchMaxBytes, MaxWait: cfg.FetchMaxWait})
		start := pos
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			if m.Offset < pos {
				continue
			}
			pos = m.Offset + 1
			fn(&m)
		}
		if err := batch.Close(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, kafka.RequestTimedOut) {
			return fmt.Errorf("read %s/%d at offset %d: %w", topic, id, start, err)
		}
		if pos == start {
			return fmt.Errorf("read %s/%d at offset %d: no progress", topic, id, start)
		}
	}
	return nil
}
