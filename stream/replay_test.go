package stream

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
)

// eventLog is the history of the test books: every event applied, in
// order. It implements ReplaySource the way feed does over Kafka: a fresh
// book per symbol, rebuilt by applying the log with book.Apply, silently
// up to the range, then handing over each update of the range.
type eventLog struct {
	mu     sync.Mutex
	events []book.Event
	grew   chan struct{} // closed and replaced at each append
}

func newEventLog() *eventLog { return &eventLog{grew: make(chan struct{})} }

// append logs ev and applies it to the live books: the log is the topic,
// the test books the live path.
func (l *eventLog) append(tb *testBooks, ev book.Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	close(l.grew)
	l.grew = make(chan struct{})
	l.mu.Unlock()
	tb.apply(ev)
}

// from returns the events from index i on, and a channel closed when more come.
func (l *eventLog) from(i int) ([]book.Event, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.events[i:], l.grew
}

func (l *eventLog) Replay(ctx context.Context, req ReplayRequest, h ReplayHandler) error {
	books := map[string]*book.Book{}
	want := map[string]bool{}
	for _, s := range req.Symbols {
		want[s] = true
	}
	events, _ := l.from(0)
	from, to := req.From.UnixMicro(), req.To.UnixMicro()
	if req.To.IsZero() && len(events) > 0 {
		to = events[len(events)-1].TS // the end of the log now
	}
	apply := func(ev *book.Event) (*book.Update, error) {
		b := books[ev.Symbol]
		if b == nil {
			b = book.New(ev.Symbol)
			books[ev.Symbol] = b
		}
		if err := b.Apply(ev); err != nil {
			return nil, fmt.Errorf("event log: %w", err)
		}
		return b.LastUpdate(), nil
	}
	i := 0
	for ; i < len(events) && events[i].TS < from; i++ {
		if _, err := apply(&events[i]); err != nil {
			return err
		}
	}
	var start []ReplayStart
	for _, s := range req.Symbols {
		if b := books[s]; b != nil {
			start = append(start, ReplayStart{Book: b, LastTrade: b.LastTradeSeq()})
		}
	}
	if err := h.Begin(start); err != nil {
		return err
	}
	for {
		for ; i < len(events) && (req.Live || events[i].TS <= to); i++ {
			u, err := apply(&events[i])
			if err != nil {
				return err
			}
			if want[u.Symbol] {
				if err := h.Update(u); err != nil {
					return err
				}
			}
		}
		if !req.Live {
			return nil
		}
		if joined, err := h.CaughtUp(ctx); err != nil || joined {
			return err
		}
		more, grew := l.from(i)
		if len(more) == 0 {
			select {
			case <-grew:
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		events, _ = l.from(0)
	}
}

// replayEnv is a server with Config.Replay reading an event log of the test
// books, and a generator of the symbol's events.
type replayEnv struct {
	ts  *testServer
	log *eventLog
	gen *eventGen
}

func startReplayEnv(t *testing.T, cfg Config) *replayEnv {
	t.Helper()
	log := newEventLog()
	cfg.Replay = log
	ts := startServer(t, cfg, symOrders)
	return &replayEnv{ts: ts, log: log, gen: newEventGen(7)}
}

// produce appends n events of symOrders to the log and the live books.
func (e *replayEnv) produce(n int) {
	for range n {
		e.log.append(e.ts.books, e.gen.next(symOrders, false))
	}
}

// ts returns the event time of the i-th event of the log.
func (e *replayEnv) tsAt(i int) int64 {
	events, _ := e.log.from(0)
	return events[i].TS
}

// replayChecker follows the book stream of one replay: chain, checksums,
// and the replay marker on what comes before the switch to live.
type replayChecker struct {
	t    *testing.T
	lb   *localBook
	live bool // the replay_live notice came
	n    int
}

func (rc *replayChecker) check(m wireMsg) {
	rc.t.Helper()
	marked := strings.HasSuffix(m.raw, `,"replay":true}`)
	switch m.Type {
	case "snapshot", "update":
		if marked == rc.live {
			rc.t.Fatalf("replay marker %v after the switch to live %v: %s", marked, rc.live, m.raw)
		}
		if err := rc.lb.apply(m); err != nil {
			rc.t.Fatal(err)
		}
		rc.n++
	case "notice":
		if m.Code != "replay_live" {
			rc.t.Fatalf("unexpected notice %s", m.raw)
		}
		if !strings.Contains(m.raw, `"joined":"exact"`) {
			rc.t.Fatalf("the replay joined with a gap: %s", m.raw)
		}
		rc.live = true
	case "ack":
	default:
		rc.t.Fatalf("unexpected message %s", m.raw)
	}
}

// TestReplayRange replays a range of the book: a snapshot as the book was
// before the range, every update of the range marked and chained with
// verified checksums, the ack after the snapshot, a replay_end notice,
// and a book equal to the one rebuilt from the log up to the range's end.
func TestReplayRange(t *testing.T) {
	env := startReplayEnv(t, Config{})
	env.produce(1500)
	from, to := env.tsAt(500), env.tsAt(1199)

	c := dial(t, env.ts.url, clientKind{"coder", true})
	c.do(fmt.Sprintf(`{"op":"replay","id":"r1","channel":"book","symbols":["%s"],"depth":10,"from":%d,"to":"%s"}`,
		symOrders, from, time.UnixMicro(to).UTC().Format(time.RFC3339Nano)))
	lb := newLocalBook(symOrders, 10)
	snap := c.expect("snapshot")
	if !strings.HasSuffix(snap.raw, `,"replay":true}`) {
		t.Fatalf("snapshot not marked: %s", snap.raw)
	}
	if err := lb.apply(snap); err != nil {
		t.Fatal(err)
	}
	events, _ := env.log.from(0)
	if snap.Seq != events[499].Seq {
		t.Errorf("snapshot seq %d, want the seq of the last event before the range, %d", snap.Seq, events[499].Seq)
	}
	if ack := c.expect("ack"); ack.Op != "replay" || string(ack.ID) != `"r1"` || ack.Channel != "book" {
		t.Fatalf("ack %s", ack.raw)
	}
	for {
		m := c.next()
		if m.Type == "notice" {
			if m.Code != "replay_end" || string(m.ID) != `"r1"` {
				t.Fatalf("notice %s, want replay_end", m.raw)
			}
			break
		}
		if !strings.HasSuffix(m.raw, `,"replay":true}`) {
			t.Fatalf("not marked: %s", m.raw)
		}
		if err := lb.apply(m); err != nil {
			t.Fatal(err)
		}
	}
	if lb.seq > events[1199].Seq || lb.updates < 50 {
		t.Errorf("replayed %d updates up to seq %d; the range ends at seq %d", lb.updates, lb.seq, events[1199].Seq)
	}
	want := book.New(symOrders)
	for i := range events[:1200] {
		if err := want.Apply(&events[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := lb.equal(want.Snapshot(10)); err != nil {
		t.Error(err)
	}
	c.checkErrs()
}

// TestReplayToLive replays from the past to "live" while the market moves:
// the client's book stream goes from the replay's messages to the live
// ones with every prev_seq equal to the previous seq and every checksum
// right, and ends equal to the live book.
func TestReplayToLive(t *testing.T) {
	env := startReplayEnv(t, Config{})
	env.produce(1000)
	// A live subscriber of the same view, so that its ring bridges.
	other := dial(t, env.ts.url, clientKind{"gws", false})
	other.do(fmt.Sprintf(`{"op":"subscribe","id":1,"channel":"book","symbols":["%s"],"depth":25}`, symOrders))

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			env.produce(5)
			time.Sleep(time.Millisecond)
		}
	})
	c := dial(t, env.ts.url, clientKind{"coder", false})
	c.do(fmt.Sprintf(`{"op":"replay","id":2,"channel":"book","symbols":["%s"],"depth":25,"from":%d,"to":"live"}`, symOrders, env.tsAt(100)))
	rc := &replayChecker{t: t, lb: newLocalBook(symOrders, 25)}
	deadline := time.Now().Add(20 * time.Second)
	for !rc.live || rc.n < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("live %v after %d messages", rc.live, rc.n)
		}
		rc.check(c.next())
	}
	close(stop)
	wg.Wait()
	env.ts.sync(t, symOrders)
	for _, m := range c.drainUntilPong(3) {
		rc.check(m)
	}
	if err := rc.lb.equal(env.ts.books.snapshot(t, symOrders, 25)); err != nil {
		t.Error(err)
	}
	waitFor(t, 5*time.Second, "the joined replay to give its slot back", func() bool {
		env.ts.replays.mu.Lock()
		defer env.ts.replays.mu.Unlock()
		return env.ts.replays.reading == 0
	})
	// An unsubscribe ends the joined stream.
	c.do(fmt.Sprintf(`{"op":"unsubscribe","id":4,"channel":"book","symbols":["%s"]}`, symOrders))
	c.expect("ack")
	env.produce(50)
	env.ts.sync(t, symOrders)
	if ms := c.drainUntilPong(5); len(ms) != 0 {
		t.Errorf("after unsubscribe: %s", ms[0].raw)
	}
	c.checkErrs()
}

// TestReplayTrades replays the trades channel to live: trades chain by
// prev_seq across the switch.
func TestReplayTrades(t *testing.T) {
	env := startReplayEnv(t, Config{})
	env.produce(2000)
	c := dial(t, env.ts.url, clientKind{"gws", true})
	c.do(fmt.Sprintf(`{"op":"replay","id":1,"channel":"trades","symbols":["%s"],"from":%d,"to":"live"}`, symOrders, env.tsAt(1000)))
	var last uint64
	n, live := 0, false
	check := func(m wireMsg) {
		t.Helper()
		switch m.Type {
		case "trade":
			if m.PrevSeq == nil || (n > 0 && *m.PrevSeq != last) {
				t.Fatalf("trade prev_seq %v after %d: %s", m.PrevSeq, last, m.raw)
			}
			if strings.HasSuffix(m.raw, `,"replay":true}`) == live {
				t.Fatalf("marker wrong (live %v): %s", live, m.raw)
			}
			last = m.Seq
			n++
		case "notice":
			if m.Code != "replay_live" || !strings.Contains(m.raw, `"joined":"exact"`) {
				t.Fatalf("notice %s", m.raw)
			}
			live = true
		case "ack":
		default:
			t.Fatalf("unexpected %s", m.raw)
		}
	}
	for !live {
		check(c.next())
	}
	env.produce(1000)
	env.ts.sync(t, symOrders)
	for _, m := range c.drainUntilPong(2) {
		check(m)
	}
	if n < 50 {
		t.Errorf("%d trades", n)
	}
	c.checkErrs()
}

// TestReplayLimits: the cap of replays per server (too_many_replays), a
// slot freed by an unsubscribe, bad requests, and a server without a
// source (unknown_op).
func TestReplayLimits(t *testing.T) {
	env := startReplayEnv(t, Config{MaxReplays: 2})
	env.produce(300)
	c := dial(t, env.ts.url, clientKind{"coder", false})
	// Paced at a millionth of real time, these replays last.
	slow := func(id int) string {
		return fmt.Sprintf(`{"op":"replay","id":%d,"channel":"book","symbols":["%s"],"depth":1,"from":%d,"speed":0.000001}`, id, symOrders, env.tsAt(10))
	}
	for id := 1; id <= 2; id++ {
		c.do(slow(id))
		for m := c.next(); m.Type != "ack"; m = c.next() {
		}
	}
	c.do(slow(3))
	for m := c.next(); ; m = c.next() {
		if m.Type == "error" {
			if m.Code != "too_many_replays" || string(m.ID) != "3" {
				t.Fatalf("error %s", m.raw)
			}
			break
		}
	}
	// An unsubscribe ends both replays; their slots come back.
	c.do(fmt.Sprintf(`{"op":"unsubscribe","id":4,"channel":"book","symbols":["%s"]}`, symOrders))
	for m := c.next(); m.Type != "ack" || string(m.ID) != "4"; m = c.next() {
	}
	if ms := c.drainUntilPong(5); len(ms) != 0 {
		t.Errorf("after unsubscribe: %s", ms[0].raw)
	}
	waitFor(t, 5*time.Second, "the slots to come back", func() bool {
		env.ts.replays.mu.Lock()
		defer env.ts.replays.mu.Unlock()
		return env.ts.replays.reading == 0 && len(env.ts.replays.byClient) == 0
	})

	for _, bad := range []struct{ req, code string }{
		{`{"op":"replay","id":6,"channel":"book","symbols":["` + symOrders + `"]}`, "bad_request"},
		{`{"op":"replay","id":6,"channel":"book","symbols":["` + symOrders + `"],"from":"yesterday"}`, "bad_request"},
		{`{"op":"replay","id":6,"channel":"book","symbols":["` + symOrders + `"],"from":-5}`, "bad_request"},
		{`{"op":"replay","id":6,"channel":"book","symbols":["` + symOrders + `"],"from":5,"to":4}`, "bad_request"},
		{`{"op":"replay","id":6,"channel":"book","symbols":["` + symOrders + `"],"from":5,"speed":-1}`, "bad_request"},
		{`{"op":"replay","id":6,"channel":"ticker","symbols":["*"],"from":5}`, "bad_request"},
		{`{"op":"replay","id":6,"channel":"trades","symbols":["` + symOrders + `"],"from":5,"depth":10}`, "bad_request"},
		{`{"op":"replay","id":6,"channel":"book","symbols":["NOPE"],"from":5}`, "unknown_symbol"},
		{`{"op":"replay","id":6,"channel":"candles","symbols":["` + symOrders + `"],"from":5}`, "unknown_channel"},
	} {
		c.do(bad.req)
		if m := c.expect("error"); m.Code != bad.code || string(m.ID) != "6" {
			t.Errorf("%s: got %s, want %s", bad.req, m.raw, bad.code)
		}
	}

	plain := startServer(t, Config{}, symOrders)
	p := dial(t, plain.url, clientKind{"coder", false})
	p.do(slow(7))
	if m := p.expect("error"); m.Code != "unknown_op" {
		t.Errorf("without a source: %s", m.raw)
	}
	c.checkErrs()
}

// TestReplaySlowClient: a replaying client that does not read holds up its
// own replay — its queue stays under the soft limit, it is neither
// conflated nor closed — while a live client gets every update at once;
// once it reads, it gets every replayed message, in order, to replay_end.
func TestReplaySlowClient(t *testing.T) {
	const soft = 16 << 10
	env := startReplayEnv(t, Config{QueueSoftLimit: soft, QueueHardLimit: 4 * soft, SendBuffer: 4 << 10})
	env.produce(3000)
	slowC := rawDial(t, env.ts, 0)
	slowC.sendText(fmt.Sprintf(`{"op":"replay","id":1,"channel":"book","symbols":["%s"],"depth":0,"from":%d}`, symOrders, env.tsAt(0)))

	// The replay stalls on the slow client's queue.
	var sc *client
	waitFor(t, 5*time.Second, "the replaying client", func() bool {
		env.ts.replays.mu.Lock()
		defer env.ts.replays.mu.Unlock()
		for c := range env.ts.replays.byClient {
			sc = c
		}
		return sc != nil
	})
	queued := func() int {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.queued
	}
	waitFor(t, 5*time.Second, "the slow client's queue to fill", func() bool { return queued() > soft/8 })

	live := dial(t, env.ts.url, clientKind{"coder", false})
	live.do(fmt.Sprintf(`{"op":"subscribe","id":1,"channel":"book","symbols":["%s"],"depth":10}`, symOrders))
	lb := newLocalBook(symOrders, 10)
	for m := live.next(); m.Type != "ack"; m = live.next() {
		if err := lb.apply(m); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	env.produce(500)
	env.ts.sync(t, symOrders)
	for _, m := range live.drainUntilPong(2) {
		if err := lb.apply(m); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the live client took %v for 500 updates", took)
	}
	if err := lb.equal(env.ts.books.snapshot(t, symOrders, 10)); err != nil {
		t.Error(err)
	}
	if q := queued(); q > soft || sc.conflating.Load() {
		t.Errorf("slow replaying client: %d bytes queued, conflating %v (soft limit %d)", q, sc.conflating.Load(), soft)
	}
	env.ts.replays.mu.Lock()
	running := env.ts.replays.reading
	env.ts.replays.mu.Unlock()
	if running != 1 {
		t.Errorf("the replay should still be held up by its client, %d running", running)
	}

	// The slow client reads now: the whole replay, chained, to replay_end.
	rlb := newLocalBook(symOrders, 0)
	n := 0
	_, err := slowC.readMessages(10*time.Second, func(m wireMsg) bool {
		switch m.Type {
		case "snapshot", "update":
			if !strings.HasSuffix(m.raw, `,"replay":true}`) || m.Conflated {
				t.Fatalf("replay message %s", m.raw)
			}
			if err := rlb.apply(m); err != nil {
				t.Fatal(err)
			}
			n++
		case "notice":
			if m.Code != "replay_end" {
				t.Fatalf("notice %s", m.raw)
			}
			return false
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d replayed messages once the client read", n)
	if n < 1000 {
		t.Errorf("%d replayed messages", n)
	}
}

// TestReplaySpeed: at speed 4 the updates of a range come a quarter as far
// apart as their event times.
func TestReplaySpeed(t *testing.T) {
	env := startReplayEnv(t, Config{})
	env.produce(400)
	from, to := env.tsAt(100), env.tsAt(299)
	want := time.Duration(to-from) * time.Microsecond / 4
	c := dial(t, env.ts.url, clientKind{"coder", false})
	start := time.Now()
	c.do(fmt.Sprintf(`{"op":"replay","id":1,"channel":"ticker","symbols":["%s"],"from":%d,"to":%d,"speed":4}`, symOrders, from, to))
	for m := c.next(); m.Type != "notice"; m = c.next() {
		if m.Type == "error" {
			t.Fatal(m.raw)
		}
	}
	if took := time.Since(start); took < want*9/10 || took > want+5*time.Second {
		t.Errorf("the replay took %v, want about %v", took, want)
	}
	c.checkErrs()
}
