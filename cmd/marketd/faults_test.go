package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
)

// faultSymbols are the level-based markets the fault tests produce: any
// sequence of level records applies, so producers with different seeds can
// follow each other.
var faultSymbols = []string{"FA-USD", "FB-USD", "FC-USD"}

// produceLevels sends n records of faultSymbols (no bad ones) with seed.
func produceLevels(ctx context.Context, t *testing.T, broker, topic string, n int, seed int64) {
	t.Helper()
	err := feed.Simulate(ctx, feed.SimConfig{
		Brokers: []string{broker}, Topic: topic, Rate: 1e6, Seed: seed, BadEvery: -1, Limit: n,
		OrderSymbols: []string{}, LevelSymbols: faultSymbols, Logger: discardLogger(),
	})
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// chainClient is a WebSocket client subscribed to the full book of symbols
// that checks what a client relies on: each update's prev_seq is the seq
// before it, and the checksum of the book it keeps matches the server's.
// A snapshot (after a notice) restarts a symbol's chain.
type chainClient struct {
	mu        sync.Mutex
	books     map[string]*wireBook
	snapshots int   // snapshots after the first of each symbol
	err       error // the first broken promise
	done      chan struct{}
}

// wireBook is a book as a client keeps it from the wire: the levels by
// price text and the seq of the last message applied.
type wireBook struct {
	seq        uint64
	bids, asks map[string]string // price text → size text
	updates    int               // updates applied by apply
}

func newWireBook() *wireBook {
	return &wireBook{bids: map[string]string{}, asks: map[string]string{}}
}

// apply applies a book message as a careful client does: a snapshot
// replaces the levels, an update must chain to the message before it
// (prev_seq), and either must leave the book with the checksum it carries.
// Other messages are ignored.
func (b *wireBook) apply(m wireMsg) error {
	switch m.Type {
	case "snapshot":
		clear(b.bids)
		clear(b.asks)
	case "update":
		if m.PrevSeq == nil || *m.PrevSeq != b.seq {
			return fmt.Errorf("%s: update %d has prev_seq %v, the last message was %d: a gap", m.Symbol, m.Seq, m.PrevSeq, b.seq)
		}
		b.updates++
	default:
		return nil
	}
	setLevels(b.bids, m.Bids)
	setLevels(b.asks, m.Asks)
	b.seq = m.Seq
	if sum := b.checksum(); sum != m.Checksum {
		return fmt.Errorf("%s: %s %d has checksum %d, the book the client holds %d", m.Symbol, m.Type, m.Seq, m.Checksum, sum)
	}
	return nil
}

func dialChain(ctx context.Context, t *testing.T, wsURL string, symbols []string) *chainClient {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(-1)
	t.Cleanup(func() { ws.CloseNow() })
	sub, _ := json.Marshal(map[string]any{"op": "subscribe", "id": 1, "channel": "book", "symbols": symbols, "depth": 0})
	if err := ws.Write(ctx, websocket.MessageText, sub); err != nil {
		t.Fatal(err)
	}
	c := &chainClient{books: map[string]*wireBook{}, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			for line := range bytes.SplitSeq(data, []byte("\n")) {
				c.handle(line)
			}
		}
	}()
	return c
}

func (c *chainClient) handle(line []byte) {
	var m struct {
		Type, Symbol string
		Seq          uint64
		PrevSeq      *uint64 `json:"prev_seq"`
		Bids, Asks   [][2]string
		Checksum     *uint32
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := json.Unmarshal(line, &m); err != nil {
		c.fail(fmt.Errorf("decode %q: %w", line, err))
		return
	}
	switch m.Type {
	case "snapshot":
		if c.books[m.Symbol] != nil {
			c.snapshots++
		}
		b := &wireBook{seq: m.Seq, bids: map[string]string{}, asks: map[string]string{}}
		setLevels(b.bids, m.Bids)
		setLevels(b.asks, m.Asks)
		c.books[m.Symbol] = b
	case "update":
		b := c.books[m.Symbol]
		switch {
		case b == nil:
			c.fail(fmt.Errorf("%s: update before the snapshot", m.Symbol))
			return
		case m.PrevSeq == nil || *m.PrevSeq != b.seq:
			c.fail(fmt.Errorf("%s: gap: update seq %d prev_seq %v after seq %d", m.Symbol, m.Seq, m.PrevSeq, b.seq))
			return
		}
		setLevels(b.bids, m.Bids)
		setLevels(b.asks, m.Asks)
		b.seq = m.Seq
		if m.Checksum != nil && *m.Checksum != b.checksum() {
			c.fail(fmt.Errorf("%s: checksum %d at seq %d, the book gives %d", m.Symbol, *m.Checksum, m.Seq, b.checksum()))
		}
	}
}

func (c *chainClient) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// bookState is a chain client's view of one book at a moment.
type bookState struct {
	seq            uint64
	checksum       uint32
	nbids, nasks   int
	resynchronized int // snapshots after the first, of every symbol
}

// state returns the client's view of symbol (ok false before its snapshot)
// and its first error.
func (c *chainClient) state(symbol string) (st bookState, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.resynchronized = c.snapshots
	b := c.books[symbol]
	if b == nil {
		return st, false, c.err
	}
	st.seq, st.checksum, st.nbids, st.nasks = b.seq, b.checksum(), len(b.bids), len(b.asks)
	return st, true, c.err
}

// setLevels sets the levels of one side: size text by price text, a zero
// size removing the level.
func setLevels(side map[string]string, levels [][2]string) {
	for _, l := range levels {
		if n, err := book.ParseNum(l[1]); err == nil && n == 0 {
			delete(side, l[0])
		} else {
			side[l[0]] = l[1]
		}
	}
}

// checksum is protocol.md's: CRC-32 of the top 10 levels, bid and ask
// alternating, "price:size" joined by ':'.
func (b *wireBook) checksum() uint32 {
	sorted := func(side map[string]string, desc bool) []string {
		ps := slices.Collect(maps.Keys(side))
		slices.SortFunc(ps, func(x, y string) int {
			nx, _ := book.ParseNum(x)
			ny, _ := book.ParseNum(y)
			if desc {
				nx, ny = ny, nx
			}
			return cmp.Compare(nx, ny)
		})
		return ps
	}
	bids, asks := sorted(b.bids, true), sorted(b.asks, false)
	var parts []string
	for i := range 10 {
		if i < len(bids) {
			parts = append(parts, bids[i], b.bids[bids[i]])
		}
		if i < len(asks) {
			parts = append(parts, asks[i], b.asks[asks[i]])
		}
	}
	return crc32.ChecksumIEEE([]byte(strings.Join(parts, ":")))
}

// servedBook is GET /v1/book/{symbol}?depth=0.
type servedBook struct {
	Seq        uint64
	Bids, Asks [][2]string
	Checksum   uint32
}

func getBook(url string) (servedBook, error) {
	var b servedBook
	resp, err := http.Get(url)
	if err != nil {
		return b, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return b, errors.New(resp.Status)
	}
	return b, json.NewDecoder(resp.Body).Decode(&b)
}

// rebuilt applies every record of the topic, independently of the
// service, and returns the books.
func rebuilt(ctx context.Context, t *testing.T, broker, topic string) map[string]book.Snapshot {
	t.Helper()
	books := map[string]*book.Book{}
	var ev book.Event
	for _, m := range readTopic(ctx, t, broker, topic) {
		if err := feed.Decode(m.Key, m.Value, m.Time, m.Offset, &ev); err != nil {
			t.Fatalf("record %d/%d: %v", m.Partition, m.Offset, err)
		}
		b := books[ev.Symbol]
		if b == nil {
			b = book.New(ev.Symbol)
			books[ev.Symbol] = b
		}
		if err := b.Apply(&ev); err != nil {
			t.Fatalf("record %d/%d: %v", m.Partition, m.Offset, err)
		}
	}
	out := map[string]book.Snapshot{}
	for s, b := range books {
		out[s] = b.Snapshot(0)
	}
	return out
}

// checkServed compares the served books with want, and the chain client's
// books with them.
func checkServed(t *testing.T, base string, want map[string]book.Snapshot, c *chainClient) {
	t.Helper()
	for sym, w := range want {
		checkFor(t, 30*time.Second, func() error {
			got, err := getBook(base + "/v1/book/" + sym + "?depth=0")
			if err != nil {
				return err
			}
			if got.Seq != w.Seq || got.Checksum != w.Checksum || !levelsEqual(got.Bids, w.Bids) || !levelsEqual(got.Asks, w.Asks) {
				return fmt.Errorf("%s: served seq %d checksum %d, rebuilt seq %d checksum %d", sym, got.Seq, got.Checksum, w.Seq, w.Checksum)
			}
			if c == nil {
				return nil
			}
			cb, ok, err := c.state(sym)
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			if !ok || cb.seq != w.Seq {
				return fmt.Errorf("%s: client at %+v, want seq %d", sym, cb, w.Seq)
			}
			if cb.checksum != w.Checksum || cb.nbids != len(w.Bids) || cb.nasks != len(w.Asks) {
				return fmt.Errorf("%s: the client's book differs: checksum %d, want %d", sym, cb.checksum, w.Checksum)
			}
			return nil
		})
	}
}

// TestBrokerRestart stops the Kafka broker during ingest while WebSocket
// clients are subscribed, restarts it on the same address and data
// directory, and produces more: the books equal a rebuild from the topic
// (no record lost, none applied twice), and the clients' update chains and
// checksums hold across the outage.
func TestBrokerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir, addr := t.TempDir(), freeAddr(t)
	topic := "faults.events"
	bcfg := feed.BrokerConfig{Addr: addr, Topics: []string{topic}, Partitions: 2, DataDir: dir}
	broker, err := feed.StartBroker(ctx, bcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { broker.Close() }()

	svc := startTestService(t, "-brokers", addr, "-topic", topic, "-simulate=false", "-checkpoint-interval", "0")
	produceLevels(ctx, t, addr, topic, 1500, 1)
	checkFor(t, 30*time.Second, func() error {
		if n := svc.ingester.Stats().Records; n != 1500 {
			return fmt.Errorf("ingested %d of 1500", n)
		}
		return nil
	})
	wsURL := strings.Replace(svc.URL("/v1/ws"), "http", "ws", 1)
	clients := []*chainClient{dialChain(ctx, t, wsURL, faultSymbols), dialChain(ctx, t, wsURL, faultSymbols[:1])}
	produceLevels(ctx, t, addr, topic, 500, 2)

	broker.Close()
	time.Sleep(500 * time.Millisecond) // ingest sees the broker gone
	if broker, err = feed.StartBroker(ctx, bcfg); err != nil {
		t.Fatalf("restart the broker: %v", err)
	}
	produceLevels(ctx, t, addr, topic, 1500, 3)
	checkFor(t, 60*time.Second, func() error {
		if n := svc.ingester.Stats().Records; n != 3500 {
			return fmt.Errorf("ingested %d of 3500", n)
		}
		return nil
	})
	st := svc.ingester.Stats()
	if st.Reconnects == 0 || st.Stale != 0 || st.BadTotal() != 0 {
		t.Errorf("ingest: %d reconnects, %d stale, %d bad; want > 0, 0, 0", st.Reconnects, st.Stale, st.BadTotal())
	}
	want := rebuilt(ctx, t, addr, topic)
	if len(want) != len(faultSymbols) {
		t.Fatalf("rebuilt %d books, want %d", len(want), len(faultSymbols))
	}
	checkServed(t, svc.URL(""), want, nil)
	for i, c := range clients {
		for sym, w := range want {
			if i == 1 && sym != faultSymbols[0] {
				continue
			}
			checkServed(t, svc.URL(""), map[string]book.Snapshot{sym: w}, c)
		}
		if st, _, _ := c.state(faultSymbols[0]); st.resynchronized > 0 {
			t.Logf("client %d: %d snapshots after the first (resynchronized)", i, st.resynchronized)
		}
	}
}

// TestProcessKilled runs the marketd binary on an embedded broker with a
// data directory, produces records, kills it with SIGKILL and restarts it
// on the same directory: every book and seq is what it was.
func TestProcessKilled(t *testing.T) {
	bin := marketdBinary(t)
	dir := t.TempDir()
	httpAddr, brokerAddr := freeAddr(t), freeAddr(t)
	start := func() (*exec.Cmd, *bytes.Buffer, <-chan error) {
		return startProcess(t, bin, httpAddr, "-embedded-addr", brokerAddr, "-embedded-dir", dir,
			"-simulate=false", "-log-format", "text", "-checkpoint-interval", "0", "-embedded-retention-mib", "0")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd, stderr, exited := start()
	const records = 3000
	produceLevels(ctx, t, brokerAddr, feed.DefaultTopic, records, 5)
	want := rebuilt(ctx, t, brokerAddr, feed.DefaultTopic)
	base := "http://" + httpAddr
	checkServed(t, base, want, nil)
	before := map[string]servedBook{}
	for sym := range want {
		b, err := getBook(base + "/v1/book/" + sym + "?depth=0")
		if err != nil {
			t.Fatal(err)
		}
		before[sym] = b
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("not dead 10 s after SIGKILL; stderr:\n%s", stderr)
	}
	_, stderr, _ = start()
	for sym, b := range before {
		checkFor(t, 30*time.Second, func() error {
			got, err := getBook(base + "/v1/book/" + sym + "?depth=0")
			if err != nil {
				return err
			}
			if got.Seq != b.Seq || got.Checksum != b.Checksum || !slices.Equal(got.Bids, b.Bids) || !slices.Equal(got.Asks, b.Asks) {
				return fmt.Errorf("%s after the restart: seq %d checksum %d, before seq %d checksum %d", sym, got.Seq, got.Checksum, b.Seq, b.Checksum)
			}
			return nil
		})
	}
	var symbols []string
	getJSON(t, base+"/v1/symbols", &symbols)
	if !slices.Equal(symbols, slices.Sorted(maps.Keys(before))) {
		t.Errorf("symbols after the restart %v", symbols)
	}
	if t.Failed() {
		t.Logf("stderr of the restarted process:\n%s", stderr)
	}
}
