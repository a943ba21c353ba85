package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
	"github.com/marketd/marketd/stream"
)

// liveRetry is how often a replay to "live" that has read everything asks
// again whether it can join (the live books may lag behind it).
const liveRetry = 20 * time.Millisecond

// tailDialTimeout bounds a dial or a fetch of a replay's tail reader.
const tailDialTimeout = 10 * time.Second

// replaySource serves the WebSocket "replay" op with feed's replay reader:
// each replay has its own Kafka connections and its own books, rebuilt with
// the live path's code (from checkpoints when there are some).
type replaySource struct {
	brokers         []string
	topic           string
	checkpointTopic string
	log             *slog.Logger
}

var _ stream.ReplaySource = (*replaySource)(nil)

// Replay reads req's range with feed.Replay. With req.Live it then tails
// the partitions from where the range ended, applying each record to its
// own copies of the books with feed's decoder and book.Apply (the live
// path's code), until h has joined the live stream.
func (s *replaySource) Replay(ctx context.Context, req stream.ReplayRequest, h stream.ReplayHandler) error {
	cfg := feed.ReplayConfig{
		Brokers:         s.brokers,
		Topic:           s.topic,
		CheckpointTopic: s.checkpointTopic,
		From:            req.From,
		To:              req.To,
		Symbols:         req.Symbols,
		Logger:          s.log,
	}
	a := &replayAdapter{h: h, live: req.Live}
	st, err := feed.Replay(ctx, cfg, a)
	if err != nil || !req.Live {
		return err
	}
	return s.tail(ctx, st.Ranges, a, h)
}

// tailRecord is a record read by a tail reader, or its error.
type tailRecord struct {
	msg kafka.Message
	err error
}

// tail reads on from the end of each partition's range, hands the updates
// of the requested books to h and asks h whether it joined the live stream
// whenever it has read everything there is (and every liveRetry).
func (s *replaySource) tail(ctx context.Context, ranges []feed.ReplayRange, a *replayAdapter, h stream.ReplayHandler) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: the readers stop
	// Records from every partition's reader, in offset order per partition;
	// a small buffer keeps the readers fetching while h works.
	recs := make(chan tailRecord, 256)
	for _, rg := range ranges {
		wg.Go(func() { s.tailPartition(ctx, rg.Partition, rg.End, recs) })
	}
	var dec feed.Decoder
	var ev book.Event
	retry := time.NewTicker(liveRetry)
	defer retry.Stop()
	for {
		if len(recs) == 0 {
			joined, err := h.CaughtUp(ctx)
			if err != nil || joined {
				return err
			}
		}
		var r tailRecord
		select {
		case r = <-recs:
		case <-retry.C:
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			return r.err
		}
		b := a.books[string(r.msg.Key)]
		if b == nil {
			continue // a symbol not replayed (the key is the symbol)
		}
		if err := dec.Decode(r.msg.Key, r.msg.Value, r.msg.Time, r.msg.Offset, &ev); err != nil {
			continue // a bad record: the live path skips it too
		}
		if ev.Symbol != b.Symbol() || b.Apply(&ev) != nil {
			continue
		}
		if err := h.Update(b.LastUpdate()); err != nil {
			return err
		}
	}
}

// tailPartition reads partition from offset on into recs until ctx ends,
// with long-polling fetches as feed's own reader does.
func (s *replaySource) tailPartition(ctx context.Context, partition int, offset int64, recs chan<- tailRecord) {
	send := func(t tailRecord) bool {
		select {
		case recs <- t:
			return true
		case <-ctx.Done():
			return false
		}
	}
	dialer := &kafka.Dialer{Timeout: tailDialTimeout}
	var conn *kafka.Conn
	var err error
	for _, addr := range s.brokers {
		if conn, err = dialer.DialLeader(ctx, "tcp", addr, s.topic, partition); err == nil {
			break
		}
	}
	if err != nil {
		send(tailRecord{err: fmt.Errorf("tail partition %d: %w", partition, err)})
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // ends a fetch in flight
	defer stop()
	pos := offset
	for ctx.Err() == nil {
		if _, err := conn.Seek(pos, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
			send(tailRecord{err: fmt.Errorf("tail partition %d at offset %d: %w", partition, pos, err)})
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(liveRetry + tailDialTimeout))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: feed.DefaultFetchMaxBytes, MaxWait: liveRetry})
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			if m.Offset < pos {
				continue // a compressed batch may start before pos
			}
			pos = m.Offset + 1
			if !send(tailRecord{msg: m}) {
				batch.Close()
				return
			}
		}
		// RequestTimedOut is kafka-go's way of saying that the long poll
		// found nothing new.
		if err := batch.Close(); err != nil && !errors.Is(err, kafka.RequestTimedOut) && ctx.Err() == nil {
			send(tailRecord{err: fmt.Errorf("tail partition %d at offset %d: %w", partition, pos, err)})
			return
		}
	}
}

// replayAdapter hands a feed replay to a stream replay handler. With live
// it keeps copies of the books at the end of the range for the tail.
type replayAdapter struct {
	h     stream.ReplayHandler
	live  bool
	books map[string]*book.Book // the requested books at the end of the range
}

func (a *replayAdapter) Begin(books []feed.ReplayBook) error {
	start := make([]stream.ReplayStart, len(books))
	for i, b := range books {
		start[i] = stream.ReplayStart{Book: b.Book, LastTrade: b.LastTrade}
	}
	return a.h.Begin(start)
}

func (a *replayAdapter) Update(u *book.Update) error { return a.h.Update(u) }

// End keeps copies of the books (the replay's own are reused after it),
// through their checkpoint encoding, which restores a book exactly.
func (a *replayAdapter) End(books []feed.ReplayBook) error {
	if !a.live {
		return nil
	}
	a.books = make(map[string]*book.Book, len(books))
	for _, rb := range books {
		data, err := rb.Book.MarshalBinary()
		if err != nil {
			return fmt.Errorf("copy the book of %s: %w", rb.Book.Symbol(), err)
		}
		b := new(book.Book)
		if err := b.UnmarshalBinary(data); err != nil {
			return fmt.Errorf("copy the book of %s: %w", rb.Book.Symbol(), err)
		}
		a.books[b.Symbol()] = b
	}
	return nil
}
