package feed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/marketd/marketd/book"
)

// Defaults of the checkpoint fields of Config.
const (
	// DefaultCheckpointInterval is the most time between two checkpoints
	// of a partition that has moved on.
	DefaultCheckpointInterval = 30 * time.Second
	// DefaultCheckpointRecords is the most records a partition applies
	// between two checkpoints: it bounds the tail a restart replays.
	DefaultCheckpointRecords = 500_000

	// checkpointAttempts is how many times the checkpoints are read at
	// start before the Ingester gives up on them and replays in full.
	checkpointAttempts = 3
	// checkpointBatchBytes bounds a produce request of checkpoints; one
	// record (a whole book) may be this large.
	checkpointBatchBytes = 64 << 20
)

// A checkpoint record's value (version 1; integers are uvarints):
//
//	"mdck" version kind partition next body crc
//
// kind 1, a book:     lastTrade, then the book as book.Book.MarshalBinary writes it
// kind 2, a manifest: count, then count symbols (length, bytes)
//
// partition is the input partition, next the input offset the record
// reflects (every record below it was applied, none from it on), lastTrade
// the seq of the symbol's last applied trade (0 when none: it starts the
// trades stream's prev_seq chain; book checkpoints hold it too from their
// version 2 on), and crc the CRC-32C, 4 bytes big-endian, of everything
// before it. A book record's key is its symbol; a manifest's
// key is manifestKey(partition), and it lists every book the partition had
// at next: it is written after those books' records, so its presence says
// that the round is complete.
const (
	recordMagic   = "mdck"
	recordVersion = 1

	kindBook     byte = 1
	kindManifest byte = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// manifestKey returns the key of input partition p's manifest. It starts
// with a NUL byte, which no sane symbol does; a symbol that did would only
// make its partition's checkpoints look incomplete (a full replay), never
// wrong.
func manifestKey(p int) []byte {
	return strconv.AppendInt([]byte("\x00manifest/"), int64(p), 10)
}

func appendRecordHeader(dst []byte, kind byte, part int, next int64) []byte {
	dst = append(dst, recordMagic...)
	dst = binary.AppendUvarint(dst, recordVersion)
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, uint64(part))
	return binary.AppendUvarint(dst, uint64(next))
}

func appendCRC(dst []byte) []byte {
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst, castagnoli))
}

// encodeBookRecord returns the value of a book's checkpoint record; blob
// is the book's MarshalBinary.
func encodeBookRecord(part int, next int64, lastTrade uint64, blob []byte) []byte {
	v := make([]byte, 0, len(recordMagic)+4*binary.MaxVarintLen64+len(blob)+4)
	v = appendRecordHeader(v, kindBook, part, next)
	v = binary.AppendUvarint(v, lastTrade)
	v = append(v, blob...)
	return appendCRC(v)
}

// encodeManifest returns the value of a partition's manifest record.
func encodeManifest(part int, next int64, symbols []string) []byte {
	n := len(recordMagic) + 4*binary.MaxVarintLen64 + 4
	for _, s := range symbols {
		n += binary.MaxVarintLen64 + len(s)
	}
	v := make([]byte, 0, n)
	v = appendRecordHeader(v, kindManifest, part, next)
	v = binary.AppendUvarint(v, uint64(len(symbols)))
	for _, s := range symbols {
		v = binary.AppendUvarint(v, uint64(len(s)))
		v = append(v, s...)
	}
	return appendCRC(v)
}

// errCheckpoint is wrapped by every error of decodeRecord.
var errCheckpoint = errors.New("invalid checkpoint record")

// record is a decoded checkpoint record.
type record struct {
	kind      byte
	partition int
	next      int64
	// A book record's.
	lastTrade uint64
	book      *book.Book
	// A manifest's, sorted.
	symbols []string
}

// decodeRecord decodes and checks a checkpoint record: its checksum, its
// version, and that what it holds is consistent (a book's symbol is its key
// and its seq does not pass next; a manifest's key names its partition).
func decodeRecord(key, value []byte) (*record, error) {
	r, err := decodeRecordBody(key, value)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCheckpoint, err)
	}
	return r, nil
}

func decodeRecordBody(key, value []byte) (*record, error) {
	if len(value) < len(recordMagic)+4 || string(value[:len(recordMagic)]) != recordMagic {
		return nil, errors.New("missing magic")
	}
	body := value[:len(value)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(value[len(body):]) {
		return nil, errors.New("checksum mismatch")
	}
	d := body[len(recordMagic):]
	version, n := binary.Uvarint(d)
	if n <= 0 {
		return nil, errors.New("truncated version")
	}
	if version != recordVersion {
		return nil, fmt.Errorf("unsupported version %d (written by a newer marketd?)", version)
	}
	d = d[n:]
	if len(d) == 0 {
		return nil, errors.New("truncated kind")
	}
	r := &record{kind: d[0]}
	d = d[1:]
	part, n := binary.Uvarint(d)
	if n <= 0 || part > 1<<31-1 {
		return nil, errors.New("bad partition")
	}
	d = d[n:]
	off, n := binary.Uvarint(d)
	if n <= 0 || off > 1<<63-1 {
		return nil, errors.New("bad offset")
	}
	d = d[n:]
	r.partition, r.next = int(part), int64(off)
	switch r.kind {
	case kindBook:
		lt, n := binary.Uvarint(d)
		if n <= 0 {
			return nil, errors.New("bad last trade seq")
		}
		r.lastTrade = lt
		b := new(book.Book)
		if err := b.UnmarshalBinary(d[n:]); err != nil {
			return nil, err
		}
		switch {
		case b.Symbol() != string(key):
			return nil, fmt.Errorf("book of %q under the key %q", b.Symbol(), key)
		case b.Seq() > uint64(r.next):
			return nil, fmt.Errorf("book at seq %d past its offset %d", b.Seq(), r.next)
		case lt > b.Seq():
			return nil, fmt.Errorf("last trade seq %d past the book's seq %d", lt, b.Seq())
		}
		r.book = b
	case kindManifest:
		if string(key) != string(manifestKey(r.partition)) {
			return nil, fmt.Errorf("manifest of partition %d under the key %q", r.partition, key)
		}
		count, n := binary.Uvarint(d)
		if n <= 0 || count > uint64(len(d)) {
			return nil, errors.New("bad symbol count")
		}
		d = d[n:]
		r.symbols = make([]string, 0, count)
		for range count {
			l, n := binary.Uvarint(d)
			if n <= 0 || l == 0 || l > uint64(len(d)-n) {
				return nil, errors.New("bad symbol")
			}
			r.symbols = append(r.symbols, string(d[n:n+int(l)]))
			d = d[n+int(l):]
		}
		if len(d) > 0 {
			return nil, fmt.Errorf("%d bytes after the manifest", len(d))
		}
		if !slices.IsSorted(r.symbols) || len(slices.Compact(slices.Clone(r.symbols))) != len(r.symbols) {
			return nil, errors.New("manifest symbols not sorted and unique")
		}
	default:
		return nil, fmt.Errorf("unknown kind %d", r.kind)
	}
	return r, nil
}

// savedBook is a book read back from its checkpoint record.
type savedBook struct {
	symbol    string
	next      int64 // the input offset the book reflects
	lastTrade uint64
	book      *book.Book
}

// savedPartition is what the checkpoint topic holds for one input
// partition: the latest record of each of its keys.
type savedPartition struct {
	books    map[string]*savedBook
	manifest *record // nil when none
	corrupt  error   // why the partition's checkpoints cannot be trusted
}

// errNoCheckpoint: the checkpoint topic holds nothing for a partition.
var errNoCheckpoint = errors.New("no checkpoint")

// plan chooses how to start partition from its checkpoints without using
// any state past limit: it returns the books to restore and the offset to
// read from, or an error saying why the partition must be read in full.
//
// The partition's manifest, written at offset M, lists every book it had
// then; each must have a usable checkpoint (its latest, at an offset at or
// after M, or before when another instance wrote it later). A book that
// the manifest does not list did not exist at M, so the records from the
// start offset, which is at most M, rebuild it when its own checkpoint
// cannot be used. Every restored book skips the records below its own
// offset: it reflects them already.
func (sp *savedPartition) plan(limit int64) ([]*savedBook, int64, error) {
	switch {
	case sp == nil:
		return nil, 0, errNoCheckpoint
	case sp.corrupt != nil:
		return nil, 0, sp.corrupt
	case sp.manifest == nil:
		return nil, 0, errors.New("no manifest: no round of checkpoints was completed")
	case sp.manifest.next > limit:
		return nil, 0, fmt.Errorf("checkpoint at offset %d is past %d", sp.manifest.next, limit)
	}
	m := sp.manifest
	for _, s := range m.symbols {
		sb := sp.books[s]
		if sb == nil {
			return nil, 0, fmt.Errorf("the checkpoint of %q, listed at offset %d, is missing", s, m.next)
		}
		if sb.next > limit {
			return nil, 0, fmt.Errorf("the checkpoint of %q at offset %d is past %d", s, sb.next, limit)
		}
	}
	start := m.next
	var books []*savedBook
	for _, s := range slices.Sorted(maps.Keys(sp.books)) {
		sb := sp.books[s]
		if sb.next > limit {
			continue // unlisted, so born after m.next: rebuilt from the records
		}
		books = append(books, sb)
		start = min(start, sb.next)
	}
	return books, start, nil
}

// loadCheckpoints reads the checkpoint topic, asking the attempt-th broker
// (round robin), and returns what it holds for each of the input partitions
// ids. A missing topic holds nothing. The checkpoints of input partition p
// are in checkpoint partition p modulo the topic's partition count; only
// those are read.
func (in *Ingester) loadCheckpoints(ctx context.Context, ids []int, attempt int) (map[int]*savedPartition, error) {
	cfg := &in.cfg
	topic := cfg.CheckpointTopic
	tr := &kafka.Transport{DialTimeout: cfg.DialTimeout, ClientID: "marketd"}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: cfg.DialTimeout, Transport: tr}
	// kafka.Client asks for metadata without creating the topic, unlike
	// kafka.Conn: a cluster that auto-creates topics would make it with
	// the default cleanup policy instead of compaction.
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("read metadata of %s: %w", topic, err)
	}
	var ckIDs []int
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return nil, nil
		}
		if t.Error != nil {
			return nil, fmt.Errorf("read metadata of %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			ckIDs = append(ckIDs, p.ID)
		}
	}
	if len(ckIDs) == 0 {
		return nil, nil
	}
	slices.Sort(ckIDs)
	wanted := make(map[int]bool, len(ids))
	for _, id := range ids {
		wanted[id] = true
	}
	out := make(map[int]*savedPartition)
	get := func(p int) *savedPartition {
		sp := out[p]
		if sp == nil {
			sp = &savedPartition{books: make(map[string]*savedBook)}
			out[p] = sp
		}
		return sp
	}
	read := map[int]bool{}
	for _, id := range ids {
		c := ckIDs[id%len(ckIDs)]
		if read[c] {
			continue
		}
		read[c] = true
		// The latest record of each key, as compaction would keep it.
		latest := map[string]kafka.Message{}
		err := in.scanPartition(ctx, cfg.Brokers[attempt%len(cfg.Brokers)], topic, c, func(first, last int64) int64 { return first },
			func(m *kafka.Message) {
				if m.Value == nil {
					delete(latest, string(m.Key)) // a tombstone
					return
				}
				latest[string(m.Key)] = *m
			})
		if err != nil {
			return nil, err
		}
		for _, key := range slices.Sorted(maps.Keys(latest)) {
			m := latest[key]
			r, err := decodeRecord(m.Key, m.Value)
			if err != nil {
				// The partition the record belongs to cannot be trusted:
				// every input partition kept here is suspect.
				for _, id := range ids {
					if ckIDs[id%len(ckIDs)] == c {
						get(id).corrupt = fmt.Errorf("record %q at %s/%d offset %d: %w", key, topic, c, m.Offset, err)
					}
				}
				continue
			}
			if !wanted[r.partition] {
				continue // another instance's partition
			}
			sp := get(r.partition)
			switch r.kind {
			case kindBook:
				sp.books[key] = &savedBook{symbol: key, next: r.next, lastTrade: r.lastTrade, book: r.book}
			case kindManifest:
				sp.manifest = r
			}
		}
	}
	return out, nil
}

// restore reads the checkpoints of parts and restores the books of each
// partition whose checkpoints are complete and not past limit(p), setting
// the offset the partition starts from. A partition without usable
// checkpoints is read from its earliest offset; restore says why in the
// log unless it has none at all. It gives up on the checkpoints after a
// few failed attempts to read them; it returns false when ctx ends first.
func (in *Ingester) restore(ctx context.Context, parts []*partition, limit func(ctx context.Context, p *partition) (int64, error)) bool {
	ids := make([]int, len(parts))
	for i, p := range parts {
		ids[i] = p.id
	}
	var saved map[int]*savedPartition
	for attempt, backoff := 1, in.cfg.MinBackoff; ; attempt, backoff = attempt+1, min(2*backoff, in.cfg.MaxBackoff) {
		var err error
		if saved, err = in.loadCheckpoints(ctx, ids, attempt); err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		if attempt == checkpointAttempts {
			in.log.Error("feed: cannot read the checkpoints, reading every partition in full", "topic", in.cfg.CheckpointTopic, "err", err)
			return true
		}
		in.log.Warn("feed: cannot read the checkpoints, retrying", "topic", in.cfg.CheckpointTopic, "retry_in", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return false
		}
	}
	for _, p := range parts {
		sp := saved[p.id]
		if sp == nil {
			continue
		}
		lim, err := limit(ctx, p)
		if err != nil {
			in.log.Warn("feed: not restoring partition from its checkpoints", "partition", p.id, "err", err)
			continue
		}
		books, start, err := sp.plan(lim)
		if err == nil {
			for _, sb := range books {
				if q := in.owner(sb.symbol); q != nil && q != p {
					err = fmt.Errorf("symbol %q is restored in partition %d too", sb.symbol, q.id)
					break
				}
			}
		}
		if err != nil {
			if !errors.Is(err, errNoCheckpoint) {
				in.log.Log(ctx, in.quiet, "feed: checkpoints not used, reading the partition in full", "topic", in.cfg.CheckpointTopic, "partition", p.id, "err", err)
			}
			continue
		}
		p.restore(books, start, sp.manifest.next)
		in.log.Info("feed: partition restored from checkpoints", "partition", p.id, "books", len(books), "offset", start)
	}
	return true
}

// restore installs checkpointed books in p, before its goroutines start.
// p reads from start; each book skips the records below its own offset.
// written is the offset of the latest round: p writes no checkpoint until
// it is past it.
func (p *partition) restore(books []*savedBook, start, written int64) {
	p.start = start
	p.ckptNext = written
	for _, sb := range books {
		p.byName[sb.symbol] = sb.book
		if sb.lastTrade > sb.book.LastTradeSeq() {
			if p.oldTrades == nil {
				p.oldTrades = make(map[string]uint64)
			}
			p.oldTrades[sb.symbol] = sb.lastTrade
		}
		if sb.next > start {
			p.skip[sb.symbol] = sb.next
			p.skipUntil = max(p.skipUntil, sb.next)
		}
		p.in.claim(sb.symbol, p)
		p.ckptNext = max(p.ckptNext, sb.next)
	}
	p.books.Store(int64(len(p.byName)))
	p.restored = books
	p.in.restored.Add(uint64(len(books)))
}

// round is one partition's checkpoint: a record per book, then the
// partition's manifest.
type round struct {
	p        *partition
	next     int64
	books    []kafka.Message
	manifest kafka.Message
}

// cachedBlob is the checkpoint of a book at a seq, kept so that an
// unchanged book is not marshaled again.
type cachedBlob struct {
	seq  uint64
	blob []byte
}

// checkpoint takes a checkpoint of p's books, on p's apply loop, and hands
// it to the checkpoint writer, unless checkpoints are off or nothing was
// applied since the last one. While the writer is still busy with p's last
// round, the new one is put off until the writer is done (ckptFree), so
// that apply never waits and p has at most one regular round queued.
// final is the round taken when ingest stops; it is queued regardless.
func (p *partition) checkpoint(final bool) {
	in := p.in
	next := p.next.Load()
	if in.ckpt == nil || next <= p.ckptNext {
		return
	}
	if !p.ckptBusy.CompareAndSwap(false, true) && !final {
		if !p.ckptDue {
			p.ckptDue = true
			in.ckptDeferred.Add(1)
		}
		return
	}
	p.ckptDue = false
	syms := slices.Sorted(maps.Keys(p.byName))
	r := round{p: p, next: next, books: make([]kafka.Message, 0, len(syms))}
	for _, s := range syms {
		b := p.byName[s]
		c, ok := p.blobs[s]
		if !ok || c.seq != b.Seq() {
			blob, err := b.MarshalBinary()
			if err != nil {
				in.log.Error("feed: cannot checkpoint a book", "symbol", s, "err", err)
				p.ckptBusy.Store(false)
				return
			}
			c = cachedBlob{seq: b.Seq(), blob: blob}
			p.blobs[s] = c
		}
		r.books = append(r.books, kafka.Message{Key: []byte(s), Value: encodeBookRecord(p.id, next, p.lastTrade(b), c.blob), Partition: p.id})
	}
	r.manifest = kafka.Message{Key: manifestKey(p.id), Value: encodeManifest(p.id, next, syms), Partition: p.id}
	p.ckptNext, p.sinceCkpt = next, 0
	select {
	case in.ckpt <- r:
	default: // cannot happen: the channel holds two rounds per partition
		p.ckptBusy.Store(false)
	}
}

// runCheckpoints writes the rounds handed over by the apply loops, in
// order, until the channel is closed and drained or ctx is done. A round
// that fails is dropped (and logged): the next one replaces it.
func (in *Ingester) runCheckpoints(ctx context.Context) {
	cfg := &in.cfg
	tr := &kafka.Transport{DialTimeout: cfg.DialTimeout, ClientID: "marketd"}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:      kafka.TCP(cfg.Brokers...),
		Topic:     cfg.CheckpointTopic,
		Transport: tr,
		// The checkpoints of input partition p go to checkpoint partition
		// p (mod the topic's count): that is where loadCheckpoints looks.
		Balancer: kafka.BalancerFunc(func(m kafka.Message, parts ...int) int {
			return parts[m.Partition%len(parts)]
		}),
		BatchSize:    1000,
		BatchBytes:   checkpointBatchBytes,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		MaxAttempts:  1, // a failed round is replaced by the next one
		WriteTimeout: cfg.DialTimeout,
		ReadTimeout:  cfg.DialTimeout,
		Compression:  compress.Zstd,
	}
	defer w.Close()
	var lastLog time.Time
	for r := range in.ckpt {
		if ctx.Err() != nil {
			r.p.ckptBusy.Store(false)
			continue // drain: nothing more is written
		}
		err := w.WriteMessages(ctx, r.books...)
		if err == nil {
			// Only once every book is written does the manifest say the
			// round is complete.
			err = w.WriteMessages(ctx, r.manifest)
		}
		if err == nil {
			in.ckptWrites.Add(uint64(len(r.books)) + 1)
			r.p.ckptOffset.Store(r.next)
		} else {
			in.ckptErrors.Add(1)
			if time.Since(lastLog) >= cfg.BadLogInterval {
				lastLog = time.Now()
				in.log.Warn("feed: writing checkpoints failed", "topic", cfg.CheckpointTopic, "partition", r.p.id, "offset", r.next, "err", err)
			}
		}
		r.p.ckptBusy.Store(false)
		select {
		case r.p.ckptFree <- struct{}{}:
		default:
		}
	}
}
