package feed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/marketd/marketd/book"
)

// replayLog is a ReplayHandler that writes down everything it gets, as text.
type replayLog struct {
	begin, end []string
	updates    []string
	stopAfter  int // Update fails after that many, when > 0
}

var errStopReplay = errors.New("enough")

func (l *replayLog) Begin(books []ReplayBook) error {
	l.begin = fmtBooks(books)
	return nil
}

func (l *replayLog) Update(u *book.Update) error {
	if l.stopAfter > 0 && len(l.updates) == l.stopAfter {
		return errStopReplay
	}
	l.updates = append(l.updates, fmtUpdate(u))
	return nil
}

func (l *replayLog) End(books []ReplayBook) error {
	l.end = fmtBooks(books)
	return nil
}

func fmtBooks(books []ReplayBook) []string {
	var out []string
	for _, b := range books {
		out = append(out, fmt.Sprintf("%s last trade %d\n%s", b.Book.Symbol(), b.LastTrade, fmtSnapshot(b.Book.Snapshot(0))))
	}
	return out
}

func fmtUpdate(u *book.Update) string {
	s := fmt.Sprintf("%s seq %d ts %d changes %v checksums %d %d", u.Symbol, u.Seq, u.TS, u.Changes, u.Checksum1, u.Checksum10)
	if u.Trade != nil {
		s += fmt.Sprintf(" trade %+v", *u.Trade)
	}
	if u.Ticker != nil {
		s += fmt.Sprintf(" ticker %+v", *u.Ticker)
	}
	return s
}

// replayModel computes what a replay should hand over: the records are
// applied in order of (time, partition, offset), those before the range
// silently, and the books are taken at the start and at the end of the
// range. inRange says whether a record is in the range, before is whether
// it comes before it.
func replayModel(t testing.TB, msgs []kafka.Message, only []string, before, inRange func(m *kafka.Message) bool) *replayLog {
	t.Helper()
	msgs = slices.Clone(msgs)
	slices.SortStableFunc(msgs, func(a, b kafka.Message) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	books := map[string]*book.Book{}
	trades := map[string]uint64{}
	var d Decoder
	var ev book.Event
	apply := func(m *kafka.Message) *book.Update {
		if d.Decode(m.Key, m.Value, m.Time, m.Offset, &ev) != nil {
			return nil
		}
		b := books[ev.Symbol]
		if b == nil {
			b = book.New(ev.Symbol)
		}
		if b.Apply(&ev) != nil {
			return nil
		}
		books[ev.Symbol] = b
		if ev.Kind == book.KindTrade {
			trades[ev.Symbol] = ev.Seq
		}
		return b.LastUpdate()
	}
	selected := func(s string) bool { return only == nil || slices.Contains(only, s) }
	snap := func() []string {
		var rbs []ReplayBook
		for _, s := range slices.Sorted(maps.Keys(books)) {
			if selected(s) {
				rbs = append(rbs, ReplayBook{Book: books[s], LastTrade: trades[s]})
			}
		}
		return fmtBooks(rbs)
	}
	l := &replayLog{}
	for i := range msgs {
		if before(&msgs[i]) {
			apply(&msgs[i])
		}
	}
	l.begin = snap()
	for i := range msgs {
		if inRange(&msgs[i]) {
			if u := apply(&msgs[i]); u != nil && selected(u.Symbol) {
				l.updates = append(l.updates, fmtUpdate(u))
			}
		}
	}
	l.end = snap()
	return l
}

// checkReplay compares what a replay handed over with the model's.
func checkReplay(t testing.TB, got, want *replayLog) {
	t.Helper()
	for _, c := range []struct {
		what      string
		got, want []string
	}{{"books at the start", got.begin, want.begin}, {"updates", got.updates, want.updates}, {"books at the end", got.end, want.end}} {
		if len(c.got) != len(c.want) {
			t.Errorf("%s: got %d, want %d", c.what, len(c.got), len(c.want))
		}
		for i := range min(len(c.got), len(c.want)) {
			if c.got[i] != c.want[i] {
				t.Fatalf("%s: #%d is\n%s\nwant\n%s", c.what, i, c.got[i], c.want[i])
			}
		}
	}
	if len(want.updates) == 0 {
		t.Fatal("the model expects no updates: the test tests little")
	}
}

// replayTopic makes a topic of n simulated records over 4 partitions (SOL-USD
// in 0, BTC-USD and DOGE-USD in 1, none in 2, ETH-USD in 3),
// stamped 1 ms apart from t0, with bad records among them, and returns them
// as the broker holds them.
func replayTopic(t testing.TB, topic string, n int) (*Broker, []kafka.Message) {
	t.Helper()
	br := startBroker(t, BrokerConfig{Topics: []string{topic}, Partitions: 4})
	sim := newSimulator(SimConfig{Seed: 11, BadEvery: 40})
	produce(t, br.Addr(), topic, compress.None, false, simRecords(sim, replayT0, n)...)
	return br, readAll(t, br.Addr(), topic)
}

var replayT0 = time.UnixMilli(1_763_900_000_000)

func runReplay(t testing.TB, cfg ReplayConfig) (*replayLog, ReplayStats) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l := &replayLog{}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := Replay(ctx, cfg, l)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return l, st
}

// TestReplayTimeRange replays a time range given in microseconds (Kafka
// stamps in milliseconds): the books at its start and end and every update
// between are those of the live path, in time order.
func TestReplayTimeRange(t *testing.T) {
	const n = 3000
	br, all := replayTopic(t, "rt", n)
	from := replayT0.Add(1000*time.Millisecond + 500*time.Microsecond) // rounds up to record 1001
	to := replayT0.Add(2000*time.Millisecond + 999*time.Microsecond)   // rounds down to record 2000
	first, last := replayT0.Add(1001*time.Millisecond), replayT0.Add(2000*time.Millisecond)
	want := replayModel(t, all, nil,
		func(m *kafka.Message) bool { return m.Time.Before(first) },
		func(m *kafka.Message) bool { return !m.Time.Before(first) && !m.Time.After(last) })

	var logged lockedBuffer
	got, st := runReplay(t, ReplayConfig{Brokers: []string{br.Addr()}, Topic: "rt", From: from, To: to, FullReplay: true,
		Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	checkReplay(t, got, want)
	// History's bad records are news for a replay, not warnings.
	if lines := logged.String(); !strings.Contains(lines, `level=INFO msg="feed: bad record skipped"`) || strings.Contains(lines, "level=WARN") {
		t.Errorf("want the bad records logged at info and no warning; the log:\n%s", lines)
	}
	var bad uint64
	for _, m := range all {
		if !m.Time.After(last) {
			if _, ok := header(m, SimBadHeader); ok {
				bad++
			}
		}
	}
	if st.Records != 2001 || st.BadTotal() != bad || bad == 0 || st.Updates != uint64(len(want.updates)) || st.Restored != 0 {
		t.Errorf("stats: %d records (want 2001), %d bad (want %d), %d updates (want %d), %d restored", st.Records, st.BadTotal(), bad, st.Updates, len(want.updates), st.Restored)
	}
	if len(st.Ranges) != 4 {
		t.Fatalf("ranges %+v", st.Ranges)
	}
	for _, r := range st.Ranges {
		for _, m := range all {
			if m.Partition != r.Partition {
				continue
			}
			in := m.Offset >= r.From && m.Offset < r.End
			if in != (!m.Time.Before(first) && !m.Time.After(last)) {
				t.Fatalf("partition %d range [%d, %d) and the record at offset %d stamped %v", r.Partition, r.From, r.End, m.Offset, m.Time)
			}
		}
	}

	// Open ends: from the start, to the end.
	got, _ = runReplay(t, ReplayConfig{Brokers: []string{br.Addr()}, Topic: "rt", FullReplay: true})
	checkReplay(t, got, replayModel(t, all, nil, func(*kafka.Message) bool { return false }, func(*kafka.Message) bool { return true }))
}

// TestReplayDeterministic: the same range gives the same updates every
// time, whether the books at its start come from checkpoints or from the
// start of the topic.
func TestReplayDeterministic(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"rd"}, Partitions: 4})
	sim := newSimulator(SimConfig{Seed: 12, BadEvery: 40})
	produce(t, br.Addr(), "rd", compress.None, false, simRecords(sim, replayT0, 2000)...)
	// A marketd ran on the first 2000 records and checkpointed as it stopped.
	in, stop := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "rd"})
	waitRecords(t, in, 2000)
	stop()
	produce(t, br.Addr(), "rd", compress.None, false, simRecords(sim, replayT0.Add(2000*time.Millisecond), 2000)...)

	cfg := ReplayConfig{Brokers: []string{br.Addr()}, Topic: "rd", From: replayT0.Add(2500 * time.Millisecond), To: replayT0.Add(3500 * time.Millisecond)}
	a, sa := runReplay(t, cfg)
	b, _ := runReplay(t, cfg)
	cfg.FullReplay = true
	c, sc := runReplay(t, cfg)
	if sa.Restored == 0 || sc.Restored != 0 || sa.Records >= sc.Records {
		t.Errorf("with checkpoints: %d restored, %d records read; without: %d, %d", sa.Restored, sa.Records, sc.Restored, sc.Records)
	}
	for _, r := range sa.Ranges {
		if r.Start == 0 && r.From > 0 {
			t.Errorf("partition %d read from 0 despite its checkpoint", r.Partition)
		}
	}
	checkReplay(t, b, a)
	checkReplay(t, c, a)

	// A range that starts before the checkpoints cannot use them.
	cfg.FullReplay, cfg.From = false, replayT0.Add(1000*time.Millisecond)
	if _, s := runReplay(t, cfg); s.Restored != 0 {
		t.Errorf("%d books restored from checkpoints taken after the range's start", s.Restored)
	}
}

// TestReplayOffsetsAndSymbols replays an offset range of one partition,
// for one symbol.
func TestReplayOffsetsAndSymbols(t *testing.T) {
	br, all := replayTopic(t, "ro", 2000)
	var p1 []kafka.Message
	for _, m := range all {
		if m.Partition == 1 {
			p1 = append(p1, m)
		}
	}
	if len(p1) < 200 {
		t.Fatalf("partition 1 holds %d records", len(p1))
	}
	sym := string(p1[0].Key)
	from, to := int64(len(p1)/3), int64(2*len(p1)/3)
	want := replayModel(t, p1, []string{sym},
		func(m *kafka.Message) bool { return m.Offset < from },
		func(m *kafka.Message) bool { return m.Offset >= from && m.Offset <= to })
	got, st := runReplay(t, ReplayConfig{Brokers: []string{br.Addr()}, Topic: "ro", Offsets: &OffsetRange{Partition: 1, From: from, To: to}, Symbols: []string{sym}})
	checkReplay(t, got, want)
	if len(st.Ranges) != 1 || st.Ranges[0] != (ReplayRange{Partition: 1, Start: 0, From: from, End: to + 1}) {
		t.Errorf("ranges %+v", st.Ranges)
	}
	// To past the end, or negative: the end.
	for _, end := range []int64{-1, 1 << 40} {
		_, st = runReplay(t, ReplayConfig{Brokers: []string{br.Addr()}, Topic: "ro", Offsets: &OffsetRange{Partition: 1, From: from, To: end}})
		if st.Ranges[0].End != int64(len(p1)) {
			t.Errorf("to %d: range ends at %d, want %d", end, st.Ranges[0].End, len(p1))
		}
	}
	// A range after the last record: the books, no update.
	got, st = runReplay(t, ReplayConfig{Brokers: []string{br.Addr()}, Topic: "ro", From: replayT0.Add(time.Hour)})
	if len(got.updates) != 0 || len(got.begin) == 0 || !slices.Equal(got.begin, got.end) || st.Records != uint64(len(all)) {
		t.Errorf("empty range: %d updates, %d books, %d records read", len(got.updates), len(got.begin), st.Records)
	}
}

func TestReplayErrors(t *testing.T) {
	br, _ := replayTopic(t, "re", 300)
	addr := []string{br.Addr()}
	cases := []struct {
		name string
		cfg  ReplayConfig
		want string
	}{
		{"no brokers", ReplayConfig{Topic: "re"}, "no brokers"},
		{"to before from", ReplayConfig{Brokers: addr, Topic: "re", From: replayT0, To: replayT0.Add(-time.Second)}, "ends"},
		{"offsets and times", ReplayConfig{Brokers: addr, Topic: "re", From: replayT0, Offsets: &OffsetRange{}}, "excludes"},
		{"offsets backwards", ReplayConfig{Brokers: addr, Topic: "re", Offsets: &OffsetRange{From: 5, To: 4}}, "ends (offset 4) before it starts"},
		{"negative offset", ReplayConfig{Brokers: addr, Topic: "re", Offsets: &OffsetRange{From: -2}}, "bad offset"},
		{"no such partition", ReplayConfig{Brokers: addr, Topic: "re", Offsets: &OffsetRange{Partition: 7}}, "partition 7 does not exist"},
		{"no such partition in a list", ReplayConfig{Brokers: addr, Topic: "re", Partitions: []int{0, 9}}, "partition 9 does not exist"},
		{"offset past the end", ReplayConfig{Brokers: addr, Topic: "re", Offsets: &OffsetRange{Partition: 0, From: 1 << 40, To: -1}}, "past the end of partition 0"},
		{"no such topic", ReplayConfig{Brokers: addr, Topic: "nope"}, "nope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c.cfg.Logger = testLogger(t)
			_, err := Replay(ctx, c.cfg, &replayLog{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one saying %q", err, c.want)
			}
		})
	}
	// The handler's error stops the replay, and Replay returns it.
	l := &replayLog{stopAfter: 10}
	if _, err := Replay(t.Context(), ReplayConfig{Brokers: addr, Topic: "re", Logger: testLogger(t)}, l); !errors.Is(err, errStopReplay) || len(l.updates) != 10 {
		t.Errorf("err = %v after %d updates, want errStopReplay after 10", err, len(l.updates))
	}
}

// TestReplayTiesByPartition: records stamped alike come partition by
// partition.
func TestReplayTiesByPartition(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"tie"}, Partitions: 2})
	var msgs []kafka.Message
	for _, m := range append(orderFlow("ETH-USD", 1), orderFlow("BTC-USD", 0)...) {
		m.Time = replayT0
		msgs = append(msgs, m)
	}
	produce(t, br.Addr(), "tie", compress.None, true, msgs...)
	got, _ := runReplay(t, ReplayConfig{Brokers: []string{br.Addr()}, Topic: "tie"})
	if len(got.updates) < 2 || !strings.HasPrefix(got.updates[0], "BTC-USD") || !strings.HasPrefix(got.updates[len(got.updates)-1], "ETH-USD") {
		t.Errorf("updates %v: want BTC-USD's (partition 0) then ETH-USD's", got.updates)
	}
}

// liveLog is a replayLog for ReplayLive: at its first CaughtUp it calls
// more (which may produce records past the range and set want), and it
// reports caught up once it has want updates.
type liveLog struct {
	replayLog
	more  func(l *liveLog)
	want  int
	atEnd int // the updates handed over before End
	calls int
}

func (l *liveLog) End(books []ReplayBook) error {
	l.atEnd = len(l.updates)
	return l.replayLog.End(books)
}

func (l *liveLog) CaughtUp(context.Context) (bool, error) {
	if l.calls++; l.calls == 1 {
		l.more(l)
	}
	return l.want > 0 && len(l.updates) >= l.want, nil
}

// bySymbol groups formatted updates by their symbol, each in its order.
func bySymbol(updates []string) map[string][]string {
	out := map[string][]string{}
	for _, u := range updates {
		sym, _, _ := strings.Cut(u, " ")
		out[sym] = append(out[sym], u)
	}
	return out
}

// TestReplayLive: ReplayLive hands over the range in time order, then the
// records produced after it as they come (in order per symbol), with the
// same books and code, until its handler has caught up; past the range too,
// a symbol's record in another partition than its book's is rejected, and
// the handler's error stops the replay.
func TestReplayLive(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"rl"}, Partitions: 4})
	addr := br.Addr()
	sim := newSimulator(SimConfig{Seed: 11, BadEvery: 40})
	produce(t, addr, "rl", compress.None, false, simRecords(sim, replayT0, 1500)...)
	from := replayT0.Add(time.Second)
	cfg := ReplayConfig{Brokers: []string{addr}, Topic: "rl", From: from, Logger: testLogger(t)}
	var want *replayLog
	l := &liveLog{more: func(l *liveLog) {
		// More of the market, then in partition 2 (empty so far) a record
		// of BTC-USD, whose book is in partition 1, and a book of its own.
		produce(t, addr, "rl", compress.None, false, simRecords(sim, replayT0.Add(1500*time.Millisecond), 1500)...)
		produce(t, addr, "rl", compress.None, true, append([]kafka.Message{
			rec("BTC-USD", 2, `{"type":"cancel","symbol":"BTC-USD","order_id":"o1"}`)}, orderFlow("ZZZ-USD", 2)...)...)
		want = replayModel(t, readAll(t, addr, "rl"), nil,
			func(m *kafka.Message) bool { return m.Time.Before(from) },
			func(m *kafka.Message) bool { return !m.Time.Before(from) })
		l.want = len(want.updates)
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := ReplayLive(ctx, cfg, l)
	if err != nil {
		t.Fatalf("ReplayLive: %v (%d updates of %d)", err, len(l.updates), l.want)
	}
	if !slices.Equal(l.begin, want.begin) {
		t.Errorf("books at the start:\n%v\nwant\n%v", l.begin, want.begin)
	}
	if l.atEnd == 0 || len(l.updates) != l.want || !slices.Equal(l.updates[:l.atEnd], want.updates[:l.atEnd]) {
		t.Fatalf("%d updates, %d of them in the range; want %d, the range's in time order", len(l.updates), l.atEnd, l.want)
	}
	got, exp := bySymbol(l.updates), bySymbol(want.updates)
	if len(exp["ZZZ-USD"]) == 0 || len(got) != len(exp) {
		t.Errorf("updates of %d symbols, want %d with ZZZ-USD's", len(got), len(exp))
	}
	for sym, us := range exp {
		if !slices.Equal(got[sym], us) {
			t.Errorf("%s: %d updates, want %d, the same", sym, len(got[sym]), len(us))
		}
	}
	if n := st.Bad[ReasonWrongPartition.String()]; n != 1 {
		t.Errorf("%d records rejected for their partition, want 1", n)
	}

	// The handler's error past the range stops the replay.
	stop := &liveLog{replayLog: replayLog{stopAfter: len(l.updates) + 5}, more: func(*liveLog) {
		produce(t, addr, "rl", compress.None, false, simRecords(sim, replayT0.Add(3000*time.Millisecond), 100)...)
	}}
	if _, err := ReplayLive(ctx, cfg, stop); !errors.Is(err, errStopReplay) || stop.atEnd != len(l.updates) {
		t.Errorf("err = %v after %d updates (%d in the range), want errStopReplay after %d", err, len(stop.updates), stop.atEnd, stop.stopAfter)
	}
}

// lockedBuffer is a log's destination that several goroutines may write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
