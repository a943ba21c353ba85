package feed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/marketd/marketd/book"
)

// orderFlow is a hand-checked order-based flow for symbol on partition p:
// after it, the book is bids 100.5 x 1.5, asks 101 x 0.6.
func orderFlow(symbol string, p int) []kafka.Message {
	h := `"symbol":"` + symbol + `","ts":1763900000000000`
	return []kafka.Message{
		rec(symbol, p, `{"type":"add",`+h+`,"order_id":"o1","side":"buy","price":"100.5","size":"1"}`),
		rec(symbol, p, `{"type":"add",`+h+`,"order_id":"o2","side":"buy","price":"100.50","size":2}`),
		rec(symbol, p, `{"type":"add",`+h+`,"order_id":"o3","side":"sell","price":"101","size":"1"}`),
		rec(symbol, p, `{"type":"modify",`+h+`,"order_id":"o2","size":"1.5"}`),
		rec(symbol, p, `{"type":"cancel",`+h+`,"order_id":"o1"}`),
		rec(symbol, p, `{"type":"trade",`+h+`,"trade_id":"t1","side":"buy","price":"101","size":"0.4","maker_order_id":"o3"}`),
		rec(symbol, p, `{"type":"trade",`+h+`,"trade_id":"t2","side":"sell","price":"100.5","size":"0.1"}`),
	}
}

// levelFlow is a hand-checked level-based flow: after it, the book is
// bids 9 x 3, 8 x 1, asks 11 x 5.
func levelFlow(symbol string, p int) []kafka.Message {
	h := `"symbol":"` + symbol + `"`
	return []kafka.Message{
		rec(symbol, p, `{"type":"level",`+h+`,"side":"buy","price":"7","size":"1"}`),
		rec(symbol, p, `{"type":"snapshot",`+h+`,"bids":[["9","2"],["8","1"]],"asks":[["10","1"],["11","4"]]}`),
		rec(symbol, p, `{"type":"level",`+h+`,"side":"buy","price":"9","size":"3"}`),
		rec(symbol, p, `{"type":"level",`+h+`,"side":"sell","price":"10","size":"0"}`),
		rec(symbol, p, `{"type":"level",`+h+`,"side":"sell","price":"11","size":5}`),
		rec(symbol, p, `{"type":"trade",`+h+`,"trade_id":"x","side":"buy","price":"11","size":"1"}`),
	}
}

func levels(kv ...string) []book.Level {
	var out []book.Level
	for i := 0; i < len(kv); i += 2 {
		out = append(out, book.Level{Price: num(kv[i]), Size: num(kv[i+1])})
	}
	return out
}

func TestIngestExactBooks(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"exact"}, Partitions: 3})
	// BTC and SOL share partition 0, ETH has partition 2; partition 1 is empty.
	var msgs []kafka.Message
	btc, sol, eth := orderFlow("BTC-USD", 0), levelFlow("SOL-USD", 0), orderFlow("ETH-USD", 2)
	for i := range max(len(btc), len(sol)) {
		if i < len(btc) {
			msgs = append(msgs, btc[i])
		}
		if i < len(sol) {
			msgs = append(msgs, sol[i])
		}
	}
	msgs = append(msgs, eth...)
	produce(t, br.Addr(), "exact", compress.None, true, msgs...)

	sink := newUpdateLog()
	in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "exact", Sink: sink})
	waitRecords(t, in, uint64(len(msgs)))

	if got := in.Symbols(); !slices.Equal(got, []string{"BTC-USD", "ETH-USD", "SOL-USD"}) {
		t.Fatalf("Symbols() = %v", got)
	}
	// Offsets in partition 0 alternate BTC (even) and SOL (odd) while both
	// last; seq is offset+1 of the last record applied to the book.
	want := map[string]book.Snapshot{
		"BTC-USD": {Symbol: "BTC-USD", Seq: 13, TS: 1763900000000000, Bids: levels("100.5", "1.5"), Asks: levels("101", "0.6")},
		"ETH-USD": {Symbol: "ETH-USD", Seq: 7, TS: 1763900000000000, Bids: levels("100.5", "1.5"), Asks: levels("101", "0.6")},
		"SOL-USD": {Symbol: "SOL-USD", Seq: 12, Bids: levels("9", "3", "8", "1"), Asks: levels("11", "5")},
	}
	for sym, w := range want {
		got := snapshotOf(t, in, sym)
		w.Checksum = book.Checksum(w.Bids, w.Asks)
		if sym == "SOL-USD" {
			w.TS = got.TS // the record timestamp the producer set
		}
		if !snapshotsEqual(got, w) {
			t.Errorf("%s: book is\n%s\nwant\n%s", sym, fmtSnapshot(got), fmtSnapshot(w))
		}
	}
	var tk book.Ticker
	if err := in.Do(t.Context(), "BTC-USD", func(b *book.Book) { tk = b.Ticker() }); err != nil {
		t.Fatal(err)
	}
	if !tk.HasLast || tk.Last != num("100.5") || tk.LastSize != num("0.1") {
		t.Errorf("BTC ticker last = %v x %v, want 100.5 x 0.1", tk.Last, tk.LastSize)
	}
	sink.check(t, len(msgs))

	// An idle ingester long-polls: empty fetches are not errors.
	time.Sleep(300 * time.Millisecond)
	s := in.Stats()
	if s.Books != 3 || s.BadTotal() != 0 || s.Stale != 0 || s.Reconnects != 0 || len(s.Partitions) != 3 {
		t.Errorf("stats = %+v", s)
	}
	for _, ps := range s.Partitions {
		wantOff := map[int]int64{0: 13, 1: 0, 2: 7}[ps.Partition]
		if ps.Offset != wantOff || ps.HighWatermark != wantOff || ps.Lag != 0 || !ps.Connected {
			t.Errorf("partition stats %+v, want offset = high watermark = %d", ps, wantOff)
		}
	}
}

func TestDoAndSymbols(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"do"}, Partitions: 2})
	produce(t, br.Addr(), "do", compress.None, true, orderFlow("BTC-USD", 1)...)
	in, stop := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "do"})

	if err := in.Do(t.Context(), "NOPE", func(*book.Book) { t.Error("fn ran") }); !errors.Is(err, book.ErrUnknownSymbol) {
		t.Errorf("Do(unknown) = %v, want ErrUnknownSymbol", err)
	}
	waitRecords(t, in, 7)
	if got := in.Symbols(); !slices.Equal(got, []string{"BTC-USD"}) {
		t.Errorf("Symbols() = %v", got)
	}
	var seq uint64
	if err := in.Do(t.Context(), "BTC-USD", func(b *book.Book) { seq = b.Seq() }); err != nil || seq != 7 {
		t.Errorf("Do = %v, seq %d; want nil, 7", err, seq)
	}
	// Many concurrent Do calls all run, each on the owner.
	errc := make(chan error, 50)
	for range 50 {
		go func() {
			errc <- in.Do(t.Context(), "BTC-USD", func(b *book.Book) { _ = b.Snapshot(10) })
		}()
	}
	for range 50 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	// A cancelled context: fn does not run.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := in.Do(ctx, "BTC-USD", func(*book.Book) {})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Do(cancelled) = %v", err)
	}
	stop()
	if err := in.Do(t.Context(), "BTC-USD", func(*book.Book) { t.Error("fn ran after stop") }); !errors.Is(err, ErrStopped) {
		t.Errorf("Do after stop = %v, want ErrStopped", err)
	}
	if err := in.Ready(); !errors.Is(err, ErrStopped) {
		t.Errorf("Ready after stop = %v, want ErrStopped", err)
	}
}

// badRecords returns one bad record of every kind for the BTC-USD flow of
// orderFlow on partition p (which must come first), with the reason each
// must be rejected with.
func badRecords(p int) ([]kafka.Message, []Reason) {
	h := `"symbol":"BTC-USD"`
	bad := []struct {
		r Reason
		m kafka.Message
	}{
		{ReasonNotJSON, rec("BTC-USD", p, `{"type":"add",`)},
		{ReasonUnknownType, rec("BTC-USD", p, `{"type":"teleport",`+h+`}`)},
		{ReasonMissingField, rec("BTC-USD", p, `{"type":"add",`+h+`,"order_id":"z","side":"buy","size":"1"}`)},
		{ReasonBadField, rec("BTC-USD", p, `{"type":"add",`+h+`,"order_id":"z","side":"up","price":"1","size":"1"}`)},
		{ReasonNonPositive, rec("BTC-USD", p, `{"type":"modify",`+h+`,"order_id":"o2","size":"0"}`)},
		{ReasonPrecision, rec("BTC-USD", p, `{"type":"modify",`+h+`,"order_id":"o2","size":"0.123456789"}`)},
		{ReasonOverflow, rec("BTC-USD", p, `{"type":"add",`+h+`,"order_id":"z","side":"buy","price":"100.5","size":"99999999999"}`)},
		{ReasonKeyMismatch, rec("ETH-USD", p, `{"type":"cancel",`+h+`,"order_id":"o2"}`)},
		{ReasonUnknownOrder, rec("BTC-USD", p, `{"type":"cancel",`+h+`,"order_id":"nope"}`)},
		{ReasonDuplicateOrder, rec("BTC-USD", p, `{"type":"add",`+h+`,"order_id":"o2","side":"buy","price":"1","size":"1"}`)},
		{ReasonModeMismatch, rec("BTC-USD", p, `{"type":"level",`+h+`,"side":"buy","price":"1","size":"1"}`)},
		{ReasonOverfill, rec("BTC-USD", p, `{"type":"trade",`+h+`,"trade_id":"t9","side":"buy","price":"101","size":"5","maker_order_id":"o3"}`)},
		{ReasonOverflow, rec("BTC-USD", p, `{"type":"add",`+h+`,"order_id":"big1","side":"sell","price":"200","size":"50000000000"}`)},
	}
	var msgs []kafka.Message
	var reasons []Reason
	for _, b := range bad {
		msgs = append(msgs, b.m)
		reasons = append(reasons, b.r)
	}
	// The last overflow needs a level near the top of Num's range first:
	// an add of 50000000000 that applies, then one that would overflow it.
	msgs = slices.Insert(msgs, len(msgs)-1, rec("BTC-USD", p, `{"type":"add",`+h+`,"order_id":"big0","side":"sell","price":"200","size":"50000000000"}`))
	reasons = slices.Insert(reasons, len(reasons)-1, 0)
	return msgs, reasons
}

func TestIngestBadRecords(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"bad"}, Partitions: 2})
	good := orderFlow("BTC-USD", 1)
	bad, reasons := badRecords(1)
	// Good records, then the bad ones, interleaved with records of another
	// symbol on partition 0.
	msgs := slices.Clone(good)
	for _, m := range bad {
		msgs = append(msgs, m, rec("SOL-USD", 0, `{"type":"level","symbol":"SOL-USD","side":"buy","price":"1","size":"1"}`))
	}
	produce(t, br.Addr(), "bad", compress.None, true, msgs...)

	sink := newUpdateLog()
	in, stop := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "bad", Sink: sink})
	waitRecords(t, in, uint64(len(msgs)))

	wantBad := map[string]uint64{}
	nbad := 0
	for _, r := range reasons {
		if r != 0 {
			wantBad[r.String()]++
			nbad++
		}
	}
	s := in.Stats()
	for _, r := range Reasons() {
		if s.Bad[r.String()] != wantBad[r.String()] {
			t.Errorf("Stats.Bad[%s] = %d, want %d", r, s.Bad[r.String()], wantBad[r.String()])
		}
	}
	sink.check(t, len(msgs)-nbad)
	// Bad records left the books as the good ones made them; the book's
	// seq is that of its last good record (the add of big0).
	all := readAll(t, br.Addr(), "bad")
	checkBooks(t, in, model(t, all))
	btc := snapshotOf(t, in, "BTC-USD")
	if btc.Seq != uint64(len(good)+len(bad)-1) {
		t.Errorf("BTC seq = %d, want %d (offset+1 of big0)", btc.Seq, len(good)+len(bad)-1)
	}

	// The DLQ holds exactly the bad records, with their headers.
	var dlq []kafka.Message
	waitFor(t, 10*time.Second, func() error {
		dlq = readAll(t, br.Addr(), "bad"+DLQSuffix)
		if len(dlq) < nbad {
			return fmt.Errorf("DLQ has %d records, want %d", len(dlq), nbad)
		}
		return nil
	})
	checkDLQ(t, dlq, all)
	if len(dlq) != nbad {
		t.Errorf("DLQ has %d records, want %d", len(dlq), nbad)
	}
	// Each bad record is there with the reason it was produced for.
	wantReason := map[int64]string{}
	for i, r := range reasons {
		if r != 0 {
			wantReason[int64(len(good)+i)] = r.String() // partition 1 holds only BTC
		}
	}
	for _, d := range dlq {
		off, _ := header(d, HeaderOffset)
		if r, _ := header(d, HeaderReason); r != wantReason[atoi(t, off)] {
			t.Errorf("DLQ record of offset %s has reason %q, want %q", off, r, wantReason[atoi(t, off)])
		}
	}
	if s := in.Stats(); s.DLQWrites != uint64(nbad) || s.DLQDropped != 0 {
		t.Errorf("DLQ writes %d dropped %d, want %d, 0", s.DLQWrites, s.DLQDropped, nbad)
	}

	// A restart that replays the topic from the start (not from the
	// checkpoints the first run wrote): same books, and no record is
	// dead-lettered twice.
	stop()
	in2, stop2 := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "bad", FullReplay: true})
	waitRecords(t, in2, uint64(len(msgs)))
	checkBooks(t, in2, model(t, all))
	stop2() // lets the DLQ writer finish what it would write
	if dlq2 := readAll(t, br.Addr(), "bad"+DLQSuffix); len(dlq2) != len(dlq) {
		t.Errorf("after a restart the DLQ has %d records, want %d", len(dlq2), len(dlq))
	}
}

// checkDLQ checks that each DLQ record is a copy of the input record its
// headers name, once, with a reason and an error message, in the DLQ
// partition of its input partition.
func checkDLQ(t testing.TB, dlq, input []kafka.Message) {
	t.Helper()
	byPos := map[[2]int64]kafka.Message{}
	for _, m := range input {
		byPos[[2]int64{int64(m.Partition), m.Offset}] = m
	}
	seen := map[[2]int64]bool{}
	for _, d := range dlq {
		ps, _ := header(d, HeaderPartition)
		os, _ := header(d, HeaderOffset)
		reason, _ := header(d, HeaderReason)
		msg, _ := header(d, HeaderError)
		pos := [2]int64{atoi(t, ps), atoi(t, os)}
		orig, ok := byPos[pos]
		if !ok {
			t.Errorf("DLQ record names %v, not an input record", pos)
			continue
		}
		if seen[pos] {
			t.Errorf("DLQ has input record %v twice", pos)
		}
		seen[pos] = true
		if string(d.Key) != string(orig.Key) || string(d.Value) != string(orig.Value) {
			t.Errorf("DLQ record %v is %q=%q, input was %q=%q", pos, d.Key, d.Value, orig.Key, orig.Value)
		}
		if !strings.HasPrefix(msg, reason) || reason == "" {
			t.Errorf("DLQ record %v: reason %q, error %q", pos, reason, msg)
		}
		if d.Partition != int(pos[0]) {
			t.Errorf("DLQ record of input partition %d is in DLQ partition %d", pos[0], d.Partition)
		}
	}
}

func TestIngestCodecs(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"none"}, Partitions: 1})
	for _, codec := range []compress.Compression{compress.Gzip, compress.Snappy, compress.Lz4, compress.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			topic := "codec-" + codec.String()
			createTopic(t, br.Addr(), topic, 2)
			var msgs []kafka.Message
			for i := range 300 {
				msgs = append(msgs, orderFlowN("BTC-USD", 0, i)...)
				msgs = append(msgs, levelFlow("SOL-USD", 1)...)
			}
			produce(t, br.Addr(), topic, codec, true, msgs...)
			in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: topic})
			waitRecords(t, in, uint64(len(msgs)))
			checkBooks(t, in, model(t, readAll(t, br.Addr(), topic)))
			if s := in.Stats(); s.BadTotal() != 0 {
				t.Errorf("bad records: %v", s.Bad)
			}
		})
	}
}

// orderFlowN is orderFlow with order ids unique to round i.
func orderFlowN(symbol string, p, i int) []kafka.Message {
	msgs := orderFlow(symbol, p)
	for j := range msgs {
		v := string(msgs[j].Value)
		for _, id := range []string{"o1", "o2", "o3", "t1", "t2"} {
			v = strings.ReplaceAll(v, `:"`+id+`"`, fmt.Sprintf(`:"r%d-%s"`, i, id))
		}
		msgs[j].Value = []byte(v)
	}
	return msgs
}

func TestIngestWrongPartitionOrder(t *testing.T) {
	// A symbol whose records reach two partitions stays with the partition
	// that applied it first; the other's records are rejected.
	br := startBroker(t, BrokerConfig{Topics: []string{"wp"}, Partitions: 2})
	produce(t, br.Addr(), "wp", compress.None, true, orderFlow("BTC-USD", 0)...)
	in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "wp", DisableDLQ: true})
	waitRecords(t, in, 7)
	produce(t, br.Addr(), "wp", compress.None, true, rec("BTC-USD", 1, `{"type":"cancel","symbol":"BTC-USD","order_id":"o2"}`))
	waitRecords(t, in, 8)
	if s := in.Stats(); s.Bad[ReasonWrongPartition.String()] != 1 || s.DLQWrites != 0 {
		t.Errorf("stats: %+v", s)
	}
	if got := snapshotOf(t, in, "BTC-USD"); got.Seq != 7 || len(got.Bids) != 1 {
		t.Errorf("BTC book changed: %s", fmtSnapshot(got))
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Brokers: []string{"x:1"}}, true},
		{"no brokers", Config{}, false},
		{"empty broker", Config{Brokers: []string{""}}, false},
		{"dlq is input", Config{Brokers: []string{"x:1"}, Topic: "a", DLQTopic: "a"}, false},
		{"negative timeout", Config{Brokers: []string{"x:1"}, DialTimeout: -1}, false},
		{"backoff order", Config{Brokers: []string{"x:1"}, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, false},
		{"negative partition", Config{Brokers: []string{"x:1"}, Partitions: []int{-1}}, false},
		{"repeated partition", Config{Brokers: []string{"x:1"}, Partitions: []int{1, 1}}, false},
		{"subset", Config{Brokers: []string{"x:1"}, Partitions: []int{3, 1}}, true},
		{"negative fetch", Config{Brokers: []string{"x:1"}, FetchMaxBytes: -1}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v", tt.name, err)
		}
		if _, nerr := New(tt.cfg); (nerr == nil) != tt.ok {
			t.Errorf("%s: New() = %v", tt.name, nerr)
		}
	}
	c := Config{Brokers: []string{"x:1"}, Topic: "t"}.withDefaults()
	if c.DLQTopic != "t.dlq" || c.DialTimeout != DefaultDialTimeout || c.MaxBackoff != DefaultMaxBackoff || c.FetchMaxBytes != DefaultFetchMaxBytes {
		t.Errorf("defaults: %+v", c)
	}
}

func TestIngestPartitionSubset(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"subset"}, Partitions: 3})
	msgs := append(orderFlow("BTC-USD", 0), orderFlow("ETH-USD", 2)...)
	produce(t, br.Addr(), "subset", compress.None, true, msgs...)
	in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "subset", Partitions: []int{2}})
	waitRecords(t, in, 7)
	if got := in.Symbols(); !slices.Equal(got, []string{"ETH-USD"}) {
		t.Errorf("Symbols() = %v, want [ETH-USD]", got)
	}
	if s := in.Stats(); len(s.Partitions) != 1 || s.Partitions[0].Partition != 2 {
		t.Errorf("partitions: %+v", s.Partitions)
	}
}

func TestRateLimit(t *testing.T) {
	l := rateLimit{interval: 50 * time.Millisecond}
	if ok, _ := l.allow(ReasonNotJSON); !ok {
		t.Fatal("first event held back")
	}
	for range 3 {
		if ok, _ := l.allow(ReasonNotJSON); ok {
			t.Fatal("event within the interval let through")
		}
	}
	if ok, _ := l.allow(ReasonOverfill); !ok {
		t.Error("another reason is limited separately")
	}
	time.Sleep(60 * time.Millisecond)
	if ok, suppressed := l.allow(ReasonNotJSON); !ok || suppressed != 3 {
		t.Errorf("after the interval: %v, %d suppressed; want true, 3", ok, suppressed)
	}
}
