package feed

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/marketd/marketd/book"
)

// simRecords returns n records of the simulator's flow (seeded, no bad
// records), stamped from t0 one millisecond apart.
func simRecords(sim *simulator, t0 time.Time, n int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = sim.next(t0.Add(time.Duration(i) * time.Millisecond))
	}
	return msgs
}

// testBook returns a book of symbol with a few orders and a trade.
func testBook(t testing.TB, symbol string) *book.Book {
	t.Helper()
	b := book.New(symbol)
	evs := []book.Event{
		{Kind: book.KindAdd, OrderID: "a", Side: book.Buy, Price: 100 * book.Unit, Size: 2 * book.Unit},
		{Kind: book.KindAdd, OrderID: "b", Side: book.Sell, Price: 101 * book.Unit, Size: 3 * book.Unit},
		{Kind: book.KindTrade, TradeID: "t1", MakerOrderID: "a", Side: book.Sell, Price: 100 * book.Unit, Size: book.Unit},
	}
	for i := range evs {
		evs[i].Symbol, evs[i].Seq, evs[i].TS = symbol, uint64(10+i), 1_763_900_000_000_000+int64(i)
		if err := b.Apply(&evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestCheckpointRecord(t *testing.T) {
	b := testBook(t, "BTC-USD")
	blob, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	v := encodeBookRecord(3, 20, 12, blob)
	r, err := decodeRecord([]byte("BTC-USD"), v)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if r.kind != kindBook || r.partition != 3 || r.next != 20 || r.lastTrade != 12 {
		t.Errorf("decoded %+v", r)
	}
	if got, _ := r.book.MarshalBinary(); !bytes.Equal(got, blob) {
		t.Error("the restored book differs from the saved one")
	}
	m := encodeManifest(3, 20, []string{"BTC-USD", "ETH-USD"})
	r, err = decodeRecord(manifestKey(3), m)
	if err != nil || r.kind != kindManifest || r.next != 20 || !slices.Equal(r.symbols, []string{"BTC-USD", "ETH-USD"}) {
		t.Errorf("manifest: %+v, %v", r, err)
	}

	bad := []struct {
		name       string
		key, value []byte
	}{
		{"key is another symbol", []byte("ETH-USD"), v},
		{"seq past next", []byte("BTC-USD"), encodeBookRecord(3, 11, 12, blob)},
		{"last trade past seq", []byte("BTC-USD"), encodeBookRecord(3, 20, 13, blob)},
		{"manifest under another partition's key", manifestKey(2), m},
		{"manifest not sorted", manifestKey(3), encodeManifest(3, 20, []string{"b", "a"})},
		{"manifest with a symbol twice", manifestKey(3), encodeManifest(3, 20, []string{"a", "a"})},
		{"empty", []byte("BTC-USD"), nil},
		{"truncated", []byte("BTC-USD"), v[:len(v)-1]},
		{"not a book", []byte("BTC-USD"), appendCRC(appendRecordHeader(nil, kindBook, 3, 20))},
		{"unknown kind", []byte("BTC-USD"), appendCRC(appendRecordHeader(nil, 9, 3, 20))},
		{"newer version", []byte("BTC-USD"), appendCRC(append([]byte(recordMagic), 2, kindBook, 3, 20))},
	}
	for _, c := range bad {
		if _, err := decodeRecord(c.key, c.value); !errors.Is(err, errCheckpoint) {
			t.Errorf("%s: err = %v, want errCheckpoint", c.name, err)
		}
	}
	// Any single flipped bit is caught (by the CRC, if nothing else).
	for i := range len(v) * 8 {
		w := slices.Clone(v)
		w[i/8] ^= 1 << (i % 8)
		if _, err := decodeRecord([]byte("BTC-USD"), w); err == nil {
			t.Fatalf("bit %d flipped: decoded", i)
		}
	}
}

// FuzzCheckpointRecord: decodeRecord never panics, and what it accepts
// encodes back to the same bytes. Seeds (a book, manifests, a bad CRC) are
// in testdata/fuzz/FuzzCheckpointRecord.
func FuzzCheckpointRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, key, value []byte) {
		r, err := decodeRecord(key, value)
		if err != nil {
			return
		}
		var again []byte
		switch r.kind {
		case kindBook:
			blob, err := r.book.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			again = encodeBookRecord(r.partition, r.next, r.lastTrade, blob)
		case kindManifest:
			again = encodeManifest(r.partition, r.next, r.symbols)
		}
		if !bytes.Equal(again, value) {
			// A book blob of version 1 is re-encoded as the current
			// version: then the record must read back the same.
			if i := bytes.Index(value, []byte("mdbk\x01")); r.kind != kindBook || i < 0 {
				t.Fatalf("re-encoded %x, decoded from %x", again, value)
			}
			r2, err := decodeRecord(key, again)
			if err != nil {
				t.Fatalf("re-encoded %x does not decode: %v", again, err)
			}
			blob1, _ := r.book.MarshalBinary()
			blob2, _ := r2.book.MarshalBinary()
			if r2.partition != r.partition || r2.next != r.next || r2.lastTrade != r.lastTrade || !bytes.Equal(blob1, blob2) {
				t.Fatalf("re-encoded %x reads as another record than %x", again, value)
			}
		}
	})
}

func TestPlan(t *testing.T) {
	bk := func(s string, next int64) *savedBook { return &savedBook{symbol: s, next: next, book: book.New(s)} }
	man := func(next int64, syms ...string) *record {
		return &record{kind: kindManifest, next: next, symbols: syms}
	}
	sp := func(m *record, books ...*savedBook) *savedPartition {
		p := &savedPartition{books: map[string]*savedBook{}, manifest: m}
		for _, b := range books {
			p.books[b.symbol] = b
		}
		return p
	}
	cases := []struct {
		name  string
		sp    *savedPartition
		limit int64
		books []string
		start int64
		err   string
	}{
		{"nothing saved", nil, 100, nil, 0, "no checkpoint"},
		{"one round", sp(man(50, "A", "B"), bk("A", 50), bk("B", 50)), 100, []string{"A", "B"}, 50, ""},
		{"an older book starts it", sp(man(50, "A", "B"), bk("A", 30), bk("B", 50)), 100, []string{"A", "B"}, 30, ""},
		{"a book born later is restored", sp(man(50, "A"), bk("A", 50), bk("C", 60)), 100, []string{"A", "C"}, 50, ""},
		{"a book born later past the limit is rebuilt", sp(man(50, "A"), bk("A", 50), bk("C", 60)), 55, []string{"A"}, 50, ""},
		{"a listed book is missing", sp(man(50, "A", "B"), bk("A", 50)), 100, nil, 0, `checkpoint of "B"`},
		{"a listed book is past the limit", sp(man(50, "A"), bk("A", 70)), 60, nil, 0, "past 60"},
		{"the manifest is past the limit", sp(man(50, "A"), bk("A", 50)), 40, nil, 0, "past 40"},
		{"no manifest", sp(nil, bk("A", 50)), 100, nil, 0, "no manifest"},
		{"corrupt", &savedPartition{corrupt: errors.New("bad crc")}, 100, nil, 0, "bad crc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			books, start, err := c.sp.plan(c.limit)
			if c.err != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.err)) {
					t.Fatalf("err = %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var syms []string
			for _, b := range books {
				syms = append(syms, b.symbol)
			}
			if !slices.Equal(syms, c.books) || start != c.start {
				t.Errorf("restores %v from %d, want %v from %d", syms, start, c.books, c.start)
			}
		})
	}
}

// readCheckpoints returns the decoded records of a checkpoint topic, in
// order, with their keys.
func readCheckpoints(t testing.TB, addr, topic string) (keys []string, recs []*record) {
	t.Helper()
	for _, m := range readAll(t, addr, topic) {
		if m.Value == nil {
			continue
		}
		r, err := decodeRecord(m.Key, m.Value)
		if err != nil {
			t.Fatalf("checkpoint %q at offset %d: %v", m.Key, m.Offset, err)
		}
		keys, recs = append(keys, string(m.Key)), append(recs, r)
	}
	return keys, recs
}

// waitCheckpoint waits until in has written a checkpoint of every
// partition that has records, at its current offset.
func waitCheckpoint(t testing.TB, in *Ingester) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		for _, p := range in.Stats().Partitions {
			if p.Offset > 0 && p.Checkpoint != p.Offset {
				return fmt.Errorf("partition %d: checkpoint at %d, offset %d", p.Partition, p.Checkpoint, p.Offset)
			}
		}
		return nil
	})
}

// TestCheckpointRestart: an ingester checkpoints as it catches up and as
// it stops; the next one restores the books and reads only the records
// produced since, and ends with the same books as a full replay.
func TestCheckpointRestart(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"ck"}, Partitions: 2})
	sim := newSimulator(SimConfig{Seed: 3, BadEvery: -1})
	t0 := time.UnixMilli(1_763_900_000_000)
	const n1, n2 = 6000, 1500
	produce(t, br.Addr(), "ck", compress.None, false, simRecords(sim, t0, n1)...)

	in1, stop1 := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "ck", CheckpointRecords: 1000})
	waitRecords(t, in1, n1)
	waitCheckpoint(t, in1) // the round taken on catching up
	stop1()
	s1 := in1.Stats()
	if s1.CheckpointWrites == 0 || s1.CheckpointErrors != 0 || s1.Restored != 0 {
		t.Errorf("first run: %d checkpoint records written, %d rounds failed, %d books restored", s1.CheckpointWrites, s1.CheckpointErrors, s1.Restored)
	}
	// Every round ends with its manifest, which lists the books written
	// just before it, at the same offset.
	keys, recs := readCheckpoints(t, br.Addr(), "ck"+CheckpointSuffix)
	manifests := 0
	for i, r := range recs {
		if r.kind != kindManifest {
			continue
		}
		manifests++
		for j, s := range r.symbols {
			k := i - len(r.symbols) + j
			if k < 0 || keys[k] != s || recs[k].next != r.next || recs[k].partition != r.partition {
				t.Fatalf("manifest of partition %d at offset %d lists %s, which is not written before it", r.partition, r.next, s)
			}
		}
	}
	if manifests < 2 {
		t.Errorf("%d manifests written, want one per partition at least", manifests)
	}

	tail := simRecords(sim, t0.Add(n1*time.Millisecond), n2)
	produce(t, br.Addr(), "ck", compress.None, false, tail...)
	all := readAll(t, br.Addr(), "ck")
	sink := newUpdateLog()
	in2, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "ck", Sink: sink})
	waitRecords(t, in2, n2)
	checkBooks(t, in2, model(t, all))
	s2 := in2.Stats()
	if n := len(in1.Symbols()); s2.Restored != uint64(n) || s2.Stale != 0 || s2.BadTotal() != 0 {
		t.Errorf("second run: restored %d books (want %d), stale %d, bad %d", s2.Restored, n, s2.Stale, s2.BadTotal())
	}
	for i, p := range s2.Partitions {
		if p.Start != s1.Partitions[i].Offset {
			t.Errorf("partition %d started at %d, want %d (where the first run stopped)", p.Partition, p.Start, s1.Partitions[i].Offset)
		}
	}
	// One update per restored book, then one per applied record.
	sink.check(t, int(s2.Restored)+n2)

	in3, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "ck", FullReplay: true, CheckpointInterval: -1})
	waitRecords(t, in3, n1+n2)
	checkBooks(t, in3, model(t, all))
	if s := in3.Stats(); s.Restored != 0 || s.CheckpointWrites != 0 {
		t.Errorf("full replay without checkpoints: restored %d, wrote %d checkpoint records", s.Restored, s.CheckpointWrites)
	}
}

// TestCheckpointOlderBook: a partition whose books were checkpointed at
// different offsets (another instance wrote one later, from an older
// state) starts from the oldest, and every other book skips the records
// it reflects already: counted as stale, not bad.
func TestCheckpointOlderBook(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"old"}, Partitions: 1})
	sim := newSimulator(SimConfig{Seed: 4, BadEvery: -1})
	t0 := time.UnixMilli(1_763_900_000_000)
	const n1, n2 = 3000, 1000
	produce(t, br.Addr(), "old", compress.None, false, simRecords(sim, t0, n1)...)
	in1, stop1 := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "old"})
	waitRecords(t, in1, n1)
	stop1()
	old := readAll(t, br.Addr(), "old"+CheckpointSuffix)

	produce(t, br.Addr(), "old", compress.None, false, simRecords(sim, t0.Add(n1*time.Millisecond), n2)...)
	in2, stop2 := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "old"})
	waitRecords(t, in2, n2)
	stop2()

	// An instance that lagged writes BTC-USD's checkpoint at n1 again.
	var again kafka.Message
	for _, m := range old {
		if string(m.Key) == "BTC-USD" {
			again = kafka.Message{Key: m.Key, Value: m.Value}
		}
	}
	if again.Key == nil {
		t.Fatal("no checkpoint of BTC-USD")
	}
	produce(t, br.Addr(), "old"+CheckpointSuffix, compress.None, true, again)

	all := readAll(t, br.Addr(), "old")
	in3, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "old", CheckpointInterval: -1})
	waitRecords(t, in3, n2)
	checkBooks(t, in3, model(t, all))
	var btc int
	for _, m := range all[n1:] {
		if string(m.Key) == "BTC-USD" {
			btc++
		}
	}
	s := in3.Stats()
	if s.Partitions[0].Start != n1 || s.Stale != uint64(n2-btc) || s.BadTotal() != 0 {
		t.Errorf("started at %d, %d stale, %d bad; want %d, %d, 0", s.Partitions[0].Start, s.Stale, s.BadTotal(), n1, n2-btc)
	}
}

// TestCheckpointUnusable: checkpoints that cannot be trusted are ignored,
// and the partition is read in full; the other partitions still restore.
func TestCheckpointUnusable(t *testing.T) {
	cases := []struct {
		name string
		// spoil returns records that make partition 0's checkpoints unusable.
		spoil func(recs []kafka.Message) []kafka.Message
	}{
		{"corrupt", func(recs []kafka.Message) []kafka.Message {
			for _, m := range recs {
				if m.Partition == 0 && m.Key[0] != 0 {
					v := slices.Clone(m.Value)
					v[len(v)/2] ^= 0xff
					return []kafka.Message{{Key: m.Key, Value: v, Partition: 0}}
				}
			}
			return nil
		}},
		{"a listed book deleted", func(recs []kafka.Message) []kafka.Message {
			for _, m := range recs {
				if m.Partition == 0 && m.Key[0] != 0 {
					return []kafka.Message{{Key: m.Key, Value: nil, Partition: 0}}
				}
			}
			return nil
		}},
		{"past the end of the partition", func([]kafka.Message) []kafka.Message {
			return []kafka.Message{{Key: manifestKey(0), Value: encodeManifest(0, 1<<40, nil), Partition: 0}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			br := startBroker(t, BrokerConfig{Topics: []string{"spoil"}, Partitions: 2})
			sim := newSimulator(SimConfig{Seed: 5, BadEvery: -1})
			const n = 3000
			produce(t, br.Addr(), "spoil", compress.None, false, simRecords(sim, time.UnixMilli(1_763_900_000_000), n)...)
			in1, stop1 := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "spoil"})
			waitRecords(t, in1, n)
			stop1()
			ck := readAll(t, br.Addr(), "spoil"+CheckpointSuffix)
			bad := c.spoil(ck)
			if bad == nil {
				t.Fatal("nothing to spoil")
			}
			produce(t, br.Addr(), "spoil"+CheckpointSuffix, compress.None, true, bad...)

			in2, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "spoil", CheckpointInterval: -1})
			waitFor(t, 20*time.Second, in2.Ready)
			checkBooks(t, in2, model(t, readAll(t, br.Addr(), "spoil")))
			s := in2.Stats()
			if s.Partitions[0].Start != 0 || s.Partitions[1].Start == 0 {
				t.Errorf("partitions started at %d and %d; want 0 (in full) and the checkpoint's", s.Partitions[0].Start, s.Partitions[1].Start)
			}
			if want := in1.Stats().Partitions[0].Offset; s.Records != uint64(want) || s.BadTotal() != 0 {
				t.Errorf("read %d records (want all %d of partition 0), %d bad", s.Records, want, s.BadTotal())
			}
		})
	}
}

// TestCheckpointsOff: with CheckpointInterval < 0 nothing is written.
func TestCheckpointsOff(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"off"}, Partitions: 2})
	sim := newSimulator(SimConfig{Seed: 6, BadEvery: -1})
	produce(t, br.Addr(), "off", compress.None, false, simRecords(sim, time.UnixMilli(1_763_900_000_000), 500)...)
	in, stop := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "off", CheckpointInterval: -1})
	waitRecords(t, in, 500)
	stop()
	if n := len(readAll(t, br.Addr(), "off"+CheckpointSuffix)); n != 0 || in.Stats().CheckpointWrites != 0 {
		t.Errorf("%d checkpoint records with checkpoints off", n)
	}
}

// TestCheckpointSubset: instances reading disjoint partitions share the
// checkpoint topic; each restores only its own partitions' books.
func TestCheckpointSubset(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"sub"}, Partitions: 2})
	msgs := append(orderFlow("BTC-USD", 0), orderFlow("ETH-USD", 1)...)
	produce(t, br.Addr(), "sub", compress.None, true, msgs...)
	for _, p := range []int{0, 1} {
		in, stop := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "sub", Partitions: []int{p}})
		waitRecords(t, in, 7)
		stop()
	}
	for p, sym := range []string{"BTC-USD", "ETH-USD"} {
		in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "sub", Partitions: []int{p}})
		waitFor(t, 10*time.Second, in.Ready)
		if got := in.Symbols(); !slices.Equal(got, []string{sym}) || in.Stats().Restored != 1 || in.Stats().Records != 0 {
			t.Errorf("partition %d: symbols %v, restored %d, read %d; want [%s], 1, 0", p, got, in.Stats().Restored, in.Stats().Records, sym)
		}
	}
}

// TestCheckpointTopicMissing: without the checkpoint topic, ingest works
// (and reads everything); the failed writes are counted, not fatal.
func TestCheckpointTopicMissing(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"other"}, Partitions: 1})
	createTopic(t, br.Addr(), "bare", 1)
	produce(t, br.Addr(), "bare", compress.None, true, orderFlow("BTC-USD", 0)...)
	in, stop := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "bare"})
	waitRecords(t, in, 7)
	checkBooks(t, in, model(t, readAll(t, br.Addr(), "bare")))
	stop()
	if s := in.Stats(); s.CheckpointWrites != 0 || s.CheckpointErrors == 0 {
		t.Errorf("checkpoint writes %d, errors %d; want 0, > 0", s.CheckpointWrites, s.CheckpointErrors)
	}
}

// BenchmarkRestart measures restart-to-ready with 1,000,000 records of the
// simulator's flow in 4 partitions of the embedded broker: the time from
// starting an Ingester until Ready, reading everything (full), restoring
// checkpoints taken 100,000 records before the end and reading that tail
// (tail-100k), and restoring checkpoints taken at the end (at-end); and a
// Replay of the whole topic (replay-all). The broker runs in the same
// process, on the same cores.
func BenchmarkRestart(b *testing.B) {
	const n, tail = 1_000_000, 100_000
	br := startBroker(b, BrokerConfig{Topics: []string{"restart"}, Partitions: 4})
	sim := newSimulator(SimConfig{Seed: 1, BadEvery: -1})
	t0 := time.Now()
	produceN := func(from, count int) {
		for i := from; i < from+count; i += 50_000 {
			produce(b, br.Addr(), "restart", compress.None, false, simRecords(sim, t0.Add(time.Duration(i)*time.Microsecond), min(50_000, from+count-i))...)
		}
	}
	checkpoint := func() { // a marketd that reads everything and stops, checkpointing
		in, stop := runIngester(b, Config{Brokers: []string{br.Addr()}, Topic: "restart", DisableDLQ: true})
		waitFor(b, 5*time.Minute, in.Ready)
		waitCheckpoint(b, in)
		stop()
	}
	produceN(0, n-tail)
	checkpoint()
	produceN(n-tail, tail)

	restart := func(b *testing.B, cfg Config, wantRecords uint64) {
		cfg.Brokers, cfg.Topic, cfg.DisableDLQ, cfg.CheckpointInterval = []string{br.Addr()}, "restart", true, -1
		var total time.Duration
		for b.Loop() {
			start := time.Now()
			in, stop := runIngester(b, cfg)
			for in.Ready() != nil {
				if time.Since(start) > 5*time.Minute {
					b.Fatalf("not ready after 5 minutes: %v", in.Ready())
				}
				time.Sleep(time.Millisecond)
			}
			total += time.Since(start)
			b.StopTimer()
			stop()
			if s := in.Stats(); s.Records != wantRecords {
				b.Fatalf("read %d records, want %d", s.Records, wantRecords)
			}
			b.StartTimer()
		}
		b.ReportMetric(total.Seconds()/float64(b.N), "s/ready")
		b.ReportMetric(float64(wantRecords), "records-read")
	}
	b.Run("full", func(b *testing.B) { restart(b, Config{FullReplay: true}, n) })
	b.Run("tail-100k", func(b *testing.B) { restart(b, Config{}, tail) })
	checkpoint()
	b.Run("at-end", func(b *testing.B) { restart(b, Config{}, 0) })
	// For comparison: a replay of the whole topic (what marketd replay
	// does for a range that ends at the end), every update handed over.
	b.Run("replay-all", func(b *testing.B) {
		for b.Loop() {
			l := &countUpdates{}
			st, err := Replay(b.Context(), ReplayConfig{Brokers: []string{br.Addr()}, Topic: "restart", FullReplay: true, Logger: testLogger(b)}, l)
			if err != nil || st.Records != n || l.n == 0 {
				b.Fatalf("replay: %v, %d records, %d updates", err, st.Records, l.n)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}

// countUpdates is a ReplayHandler that counts updates.
type countUpdates struct{ n int }

func (c *countUpdates) Begin([]ReplayBook) error  { return nil }
func (c *countUpdates) Update(*book.Update) error { c.n++; return nil }
func (c *countUpdates) End([]ReplayBook) error    { return nil }
