package feed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/marketd/marketd/book"
)

// testLogger discards logs unless -v, where it writes warnings to the test log.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// startBroker starts an embedded broker on a free port of 127.0.0.1 (or on
// cfg.Addr) and closes it when the test ends.
func startBroker(t testing.TB, cfg BrokerConfig) *Broker {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Topics == nil {
		cfg.Topics = []string{"test"}
	}
	// Not t.Context(): it ends before cleanups run, and the broker must
	// outlive the ingesters that cleanups stop.
	b, err := StartBroker(context.Background(), cfg)
	if err != nil {
		t.Fatalf("StartBroker: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// createTopic creates topic and its DLQ with n partitions.
func createTopic(t testing.TB, addr, topic string, n int) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 10 * time.Second, Transport: tr}
	resp, err := client.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: topic, NumPartitions: n, ReplicationFactor: 1},
		{Topic: topic + DLQSuffix, NumPartitions: n, ReplicationFactor: 1},
	}})
	if err == nil {
		for _, e := range resp.Errors {
			if e != nil {
				err = e
			}
		}
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// toPartition is a balancer that sends each message to its Partition field.
var toPartition = kafka.BalancerFunc(func(m kafka.Message, parts ...int) int { return m.Partition })

// produce writes msgs to topic, in order, with the given codec. Messages
// go to their Partition field when explicit is set, else by key hash.
func produce(t testing.TB, addr, topic string, codec compress.Compression, explicit bool, msgs ...kafka.Message) {
	t.Helper()
	var bal kafka.Balancer = &kafka.Hash{}
	if explicit {
		bal = toPartition
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Transport:    tr,
		Addr:         kafka.TCP(addr),
		Topic:        topic,
		Balancer:     bal,
		BatchSize:    5000,
		BatchBytes:   8 << 20,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		Compression:  codec,
	}
	defer w.Close()
	for chunk := range slices.Chunk(msgs, 5000) {
		if err := w.WriteMessages(t.Context(), chunk...); err != nil {
			t.Fatalf("produce %d records to %s: %v", len(chunk), topic, err)
		}
	}
}

// rec makes a record keyed by symbol for partition p.
func rec(symbol string, p int, value string) kafka.Message {
	return kafka.Message{Key: []byte(symbol), Value: []byte(value), Partition: p}
}

// readAll reads every record of every partition of topic.
func readAll(t testing.TB, addr, topic string) []kafka.Message {
	t.Helper()
	conn, err := kafka.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatalf("read partitions of %s: %v", topic, err)
	}
	var out []kafka.Message
	for _, p := range parts {
		c, err := kafka.DialLeader(t.Context(), "tcp", addr, topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		first, last, err := c.ReadOffsets()
		if err != nil {
			t.Fatal(err)
		}
		for pos := first; pos < last; {
			c.Seek(pos, kafka.SeekAbsolute)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			batch := c.ReadBatch(1, 8<<20)
			for {
				m, err := batch.ReadMessage()
				if err != nil {
					break
				}
				if m.Offset >= pos {
					out = append(out, m)
					pos = m.Offset + 1
				}
			}
			if err := batch.Close(); err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("read %s/%d: %v", topic, p.ID, err)
			}
		}
		c.Close()
	}
	return out
}

// runIngester starts an Ingester on cfg and stops it (and checks that Run
// returned nil) when the test ends. It returns a stop function that does
// the same earlier.
func runIngester(t testing.TB, cfg Config) (*Ingester, func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	if cfg.FetchMaxWait == 0 {
		cfg.FetchMaxWait = 100 * time.Millisecond
	}
	in, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- in.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return 10s after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return in, stop
}

// waitFor polls cond until it returns nil or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitRecords waits until in has read n records and is ready.
func waitRecords(t testing.TB, in *Ingester, n uint64) {
	t.Helper()
	waitFor(t, 20*time.Second, func() error {
		if s := in.Stats(); s.Records < n {
			return fmt.Errorf("read %d records of %d", s.Records, n)
		} else if s.Records > n {
			t.Fatalf("read %d records, only %d were produced", s.Records, n)
		}
		return in.Ready()
	})
}

// snapshotOf returns the full snapshot of symbol's book, read on its owner.
func snapshotOf(t testing.TB, in *Ingester, symbol string) book.Snapshot {
	t.Helper()
	var s book.Snapshot
	if err := in.Do(t.Context(), symbol, func(b *book.Book) { s = b.Snapshot(0) }); err != nil {
		t.Fatalf("Do(%s): %v", symbol, err)
	}
	return s
}

// model applies records the way the ingester should: decode, then apply to
// one book per symbol, skipping what is rejected. It returns the books.
func model(t testing.TB, msgs []kafka.Message) map[string]*book.Book {
	t.Helper()
	books := map[string]*book.Book{}
	var d Decoder
	var ev book.Event
	for _, m := range msgs {
		if d.Decode(m.Key, m.Value, m.Time, m.Offset, &ev) != nil {
			continue
		}
		b := books[ev.Symbol]
		if b == nil {
			b = book.New(ev.Symbol)
			if b.Apply(&ev) == nil {
				books[ev.Symbol] = b
			}
			continue
		}
		_ = b.Apply(&ev)
	}
	return books
}

// checkBooks checks that in's books are exactly want's: the same symbols,
// and for each the same full snapshot (levels, seq, ts, checksum).
func checkBooks(t testing.TB, in *Ingester, want map[string]*book.Book) {
	t.Helper()
	var syms []string
	for s := range want {
		syms = append(syms, s)
	}
	slices.Sort(syms)
	if got := in.Symbols(); !slices.Equal(got, syms) {
		t.Fatalf("Symbols() = %v, want %v", got, syms)
	}
	for _, s := range syms {
		got, w := snapshotOf(t, in, s), want[s].Snapshot(0)
		if !snapshotsEqual(got, w) {
			t.Errorf("%s: book is\n%s\nwant\n%s", s, fmtSnapshot(got), fmtSnapshot(w))
		}
	}
}

func snapshotsEqual(a, b book.Snapshot) bool {
	return a.Symbol == b.Symbol && a.Seq == b.Seq && a.TS == b.TS && a.Checksum == b.Checksum &&
		slices.Equal(a.Bids, b.Bids) && slices.Equal(a.Asks, b.Asks)
}

func fmtSnapshot(s book.Snapshot) string {
	out := fmt.Sprintf("seq %d ts %d checksum %d\n", s.Seq, s.TS, s.Checksum)
	for i := range max(len(s.Bids), len(s.Asks)) {
		var l, r string
		if i < len(s.Bids) {
			l = s.Bids[i].Size.String() + " @ " + s.Bids[i].Price.String()
		}
		if i < len(s.Asks) {
			r = s.Asks[i].Price.String() + " x " + s.Asks[i].Size.String()
		}
		out += fmt.Sprintf("  %30s | %s\n", l, r)
	}
	return out
}

// freeAddr returns a 127.0.0.1 address nothing listens on (yet).
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func atoi(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// updateLog is a Sink that checks and counts what it is given.
type updateLog struct {
	// pace, when set, makes Publish sleep 1ms every pace updates: a slow
	// consumer of updates, so that a test can act while ingest is under way.
	pace int

	mu      sync.Mutex
	n       int
	lastSeq map[string]uint64
	errs    []string
}

func newUpdateLog() *updateLog { return &updateLog{lastSeq: map[string]uint64{}} }

func (l *updateLog) Publish(u *book.Update) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if u.Seq <= l.lastSeq[u.Symbol] {
		l.errs = append(l.errs, fmt.Sprintf("%s: seq %d after %d", u.Symbol, u.Seq, l.lastSeq[u.Symbol]))
	}
	l.lastSeq[u.Symbol] = u.Seq
	if l.pace > 0 && l.n%l.pace == 0 {
		time.Sleep(time.Millisecond)
	}
}

func (l *updateLog) check(t testing.TB, n int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) > 0 {
		t.Errorf("sink saw seq going back: %v", l.errs[:min(5, len(l.errs))])
	}
	if l.n != n {
		t.Errorf("sink got %d updates, want %d (one per applied record)", l.n, n)
	}
}
