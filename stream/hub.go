package stream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marketd/marketd/book"
)

// Hub is the fan-out: it receives every applied update of every book
// (Publish, from the books' owners), encodes each message once per
// subscription group, frames it once per compression variant and queues
// the same bytes on every subscribed connection. It implements book.Sink.
//
// Locks, in the order they nest: Hub.mu → topic.mu → client.mu (and
// Hub.ivMu alone or inside topic.mu). Nothing takes a lock to the left of
// one it holds.
type Hub struct {
	ringSize int
	stats    *stats

	// topics maps symbols to topics. It is copied on write (under mu) and
	// read without a lock by Publish.
	topics atomic.Pointer[map[string]*topic]

	mu sync.Mutex // serializes topic creation with wildcard (un)subscription
	// wild holds the clients subscribed to "*" per channel (ticker,
	// trades); guarded by mu.
	wild [numChannels]map[*client]struct{}

	ivMu sync.Mutex
	// Guarded by ivMu: the interval groups per interval, whether each
	// interval's flush loop runs, and whether the hub is stopped.
	ivGroups  [numIntervals]map[*group]struct{}
	ivRunning [numIntervals]bool
	stopped   bool
	stop      chan struct{} // closed by Close
	wg        sync.WaitGroup
}

var _ book.Sink = (*Hub)(nil)

func newHub(ringSize int, st *stats) *Hub {
	h := &Hub{ringSize: ringSize, stats: st, stop: make(chan struct{})}
	m := map[string]*topic{}
	h.topics.Store(&m)
	for ch := range h.wild {
		h.wild[ch] = map[*client]struct{}{}
	}
	for iv := range h.ivGroups {
		h.ivGroups[iv] = map[*group]struct{}{}
	}
	return h
}

// topic is everything the hub keeps of one symbol.
type topic struct {
	symbol string
	quoted []byte // symbol as a JSON string, encoded once

	mu sync.Mutex
	// Guarded by mu:
	raw        [len(book.Depths)]*group // raw book groups by view index
	merged     []*group                 // interval book groups
	ticker     group
	trades     group
	lastTicker *book.Ticker // the latest ticker published
	tickerMsg  *message     // lastTicker encoded, nil until needed
}

// group is a subscription group: the clients that get the same messages,
// keyed by (channel, symbol, depth, interval). Guarded by its topic's mu.
type group struct {
	t     *topic
	ch    channel
	view  int // index in book.Depths (book)
	depth int
	iv    interval

	members  []*member
	byClient map[*client]*member

	// lastSeq is the seq of the stream's last message: the prev_seq of its
	// next one. For a book group it starts at the book's seq when the
	// group is created and then moves with each message of the stream, so
	// a snapshot of the group's view carries lastSeq: the view is the same
	// at lastSeq as at the book's seq, and the next update chains from it.
	// Book groups only: trades chain from book.Update.PrevTradeSeq.
	lastSeq uint64
	ring    ring   // book groups: recent updates
	pending merger // interval groups: changes since the last flush
	dead    bool   // an interval group removed from its topic
}

// member is a client's membership of a group. Guarded by the topic's mu.
type member struct {
	c   *client
	g   *group
	idx int // in g.members
	// explicit and wild say which subscriptions hold the membership: the
	// symbol named, or "*" (ticker and trades).
	explicit, wild bool
	// behind is set while the client is conflated and has missed messages
	// of this stream after since.
	behind  bool
	since   uint64
	removed bool
}

func (g *group) add(c *client) *member {
	if m := g.byClient[c]; m != nil {
		return m
	}
	m := &member{c: c, g: g, idx: len(g.members)}
	g.members = append(g.members, m)
	if g.byClient == nil {
		g.byClient = map[*client]*member{}
	}
	g.byClient[c] = m
	return m
}

func (g *group) remove(m *member) {
	if m.removed {
		return
	}
	last := len(g.members) - 1
	g.members[m.idx] = g.members[last]
	g.members[m.idx].idx = m.idx
	g.members[last] = nil
	g.members = g.members[:last]
	delete(g.byClient, m.c)
	m.removed = true
}

// topic returns the topic of symbol, creating it when needed.
func (h *Hub) topic(symbol string) *topic {
	if t := (*h.topics.Load())[symbol]; t != nil {
		return t
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := *h.topics.Load()
	if t := old[symbol]; t != nil {
		return t
	}
	t := &topic{symbol: symbol, quoted: appendString(nil, symbol)}
	t.ticker = group{t: t, ch: chanTicker}
	t.trades = group{t: t, ch: chanTrades}
	// A new symbol joins the streams of the "*" subscribers at once.
	for c := range h.wild[chanTicker] {
		t.ticker.add(c).wild = true
	}
	for c := range h.wild[chanTrades] {
		t.trades.add(c).wild = true
	}
	m := make(map[string]*topic, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[symbol] = t
	h.topics.Store(&m)
	return t
}

// known reports whether a topic exists for symbol.
func (h *Hub) known(symbol string) bool { return (*h.topics.Load())[symbol] != nil }

// Publish fans out everything u changed. It is called by the owner of
// u's book, in seq order per symbol; it never blocks on a client and never
// touches a socket: it encodes and queues.
func (h *Hub) Publish(u *book.Update) {
	t := h.topic(u.Symbol)
	now := monoNow()
	h.stats.publishes.Add(1)
	t.mu.Lock()
	if len(u.Changes) > 0 {
		for _, g := range t.raw {
			if g != nil {
				h.publishBook(g, u, now)
			}
		}
		for _, g := range t.merged {
			g.pending.add(u.Changes, g.view, u.Seq, u.TS, u.Checksum(g.depth))
		}
	}
	if u.Trade != nil {
		g := &t.trades
		// The trades stream chains from the book's previous trade, which
		// checkpoints keep across restarts.
		prev := u.PrevTradeSeq
		if len(g.members) > 0 {
			buf := getBuf()
			*buf = appendTrade((*buf)[:0], t.quoted, u.Seq, prev, u.TS, u.Trade)
			h.deliver(g, h.newMessage(*buf, now), prev, false)
			putBuf(buf)
		}
	}
	if u.Ticker != nil {
		t.lastTicker, t.tickerMsg = u.Ticker, nil
		if len(t.ticker.members) > 0 {
			h.deliver(&t.ticker, h.tickerMessage(t, now), 0, true)
		}
	}
	t.mu.Unlock()
}

// publishBook appends u to a raw book group's stream, if u changed its
// view. Called with t.mu held.
func (h *Hub) publishBook(g *group, u *book.Update, now int64) {
	if !hasView(u.Changes, g.view) {
		return // the view did not change: no message, the chain skips u
	}
	e := update{seq: u.Seq, prevSeq: g.lastSeq, ts: u.TS, checksum: u.Checksum(g.depth), changes: u.Changes}
	g.lastSeq = u.Seq
	g.ring.push(e)
	if len(g.members) > 0 {
		h.deliver(g, h.updateMessage(g, &e, now), e.prevSeq, true)
	}
}

// newMessage frames an encoded payload into a shared message.
func (h *Hub) newMessage(payload []byte, now int64) *message {
	h.stats.encodes.Add(1)
	return newMessage(payload, now)
}

// updateMessage encodes a book update of g's view.
func (h *Hub) updateMessage(g *group, e *update, now int64) *message {
	buf := getBuf()
	*buf = appendUpdate((*buf)[:0], g.t.quoted, e, g.view)
	m := h.newMessage(*buf, now)
	putBuf(buf)
	return m
}

// tickerMessage returns t's latest ticker, encoded once. Called with t.mu
// held; nil while no ticker was published.
func (h *Hub) tickerMessage(t *topic, now int64) *message {
	if t.tickerMsg == nil && t.lastTicker != nil {
		buf := getBuf()
		*buf = appendTicker((*buf)[:0], t.quoted, t.lastTicker)
		t.tickerMsg = h.newMessage(*buf, now)
		putBuf(buf)
	}
	return t.tickerMsg
}

// deliver queues msg on every member of g. A conflatable stream (book,
// ticker) is not queued to a conflated client: the member is marked behind
// since prevSeq, the last message it got, and is caught up later.
// Called with g's topic locked.
func (h *Hub) deliver(g *group, msg *message, prevSeq uint64, conflatable bool) {
	for _, m := range g.members {
		c := m.c
		if conflatable {
			if m.behind {
				continue
			}
			if c.conflating.Load() {
				m.behind, m.since = true, prevSeq
				c.markBehind(m)
				continue
			}
		}
		c.pushShared(msg)
	}
}

// bookGroup returns the book group of (view, interval) of t, creating it
// with seq, the book's seq, as the start of its stream. Called with t.mu
// held, on the owner of t's book.
func (h *Hub) bookGroup(t *topic, view int, iv interval, seq uint64) *group {
	if iv == ivRaw {
		if t.raw[view] == nil {
			t.raw[view] = &group{t: t, ch: chanBook, view: view, depth: book.Depths[view], lastSeq: seq, ring: newRing(h.ringSize)}
		}
		return t.raw[view]
	}
	for _, g := range t.merged {
		if g.view == view && g.iv == iv {
			return g
		}
	}
	g := &group{t: t, ch: chanBook, view: view, depth: book.Depths[view], iv: iv, lastSeq: seq, ring: newRing(h.ringSize)}
	t.merged = append(t.merged, g)
	h.addInterval(g)
	return g
}

// joinBook subscribes c to the book stream (view, iv) of b's symbol. It
// runs on the owner of b (inside Books.Do), so no update of b is
// published meanwhile: what it queues (the missed updates of an exact
// resume, or a snapshot) is exactly followed by the stream's next update.
// It reports whether the resume was exact.
func (h *Hub) joinBook(c *client, b *book.Book, view int, iv interval, resume *uint64) (*member, bool) {
	t := h.topic(b.Symbol())
	t.mu.Lock()
	defer t.mu.Unlock()
	g := h.bookGroup(t, view, iv, b.Seq())
	exact := false
	if resume != nil {
		if *resume == g.lastSeq {
			exact = true // nothing missed
		} else if i, ok := g.ring.after(*resume); ok {
			exact = true
			h.pushRing(c, g, i)
		}
	}
	if !exact {
		c.pushSnapshot(t, g, b)
	}
	m := g.add(c)
	m.explicit = true
	return m, exact
}

// pushRing queues on c the updates of g's ring from index i on: what c
// missed of g's stream (no publish latency: they are not new). Called with
// g's topic locked.
func (h *Hub) pushRing(c *client, g *group, i int) {
	for ; i < g.ring.len(); i++ {
		c.pushShared(h.updateMessage(g, g.ring.at(i), 0))
	}
}

// joinTicker subscribes c to the ticker of b's symbol and queues the
// current ticker. It runs on the owner of b.
func (h *Hub) joinTicker(c *client, b *book.Book) *member {
	t := h.topic(b.Symbol())
	t.mu.Lock()
	defer t.mu.Unlock()
	tk := b.Ticker()
	c.pushOwn(appendTicker(nil, t.quoted, &tk))
	m := t.ticker.add(c)
	if m.behind {
		// A "*" membership conflated meanwhile: the ticker just queued
		// is the latest, so it is caught up.
		m.behind = false
	}
	m.explicit = true
	return m
}

// joinTrades subscribes c to the trades of symbol from the next trade on.
func (h *Hub) joinTrades(c *client, symbol string) *member {
	t := h.topic(symbol)
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.trades.add(c)
	m.explicit = true
	return m
}

// joinWild subscribes c to ch ("*": ticker or trades) of every symbol,
// present and future; for the ticker it queues the latest of each symbol.
func (h *Hub) joinWild(c *client, ch channel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wild[ch][c] = struct{}{}
	now := monoNow()
	for _, t := range *h.topics.Load() {
		t.mu.Lock()
		g := t.group(ch)
		m := g.add(c)
		m.wild = true
		if ch == chanTicker && !m.explicit {
			if msg := h.tickerMessage(t, now); msg != nil {
				c.pushShared(msg)
			}
		}
		t.mu.Unlock()
	}
}

// leaveWild ends c's "*" subscription of ch.
func (h *Hub) leaveWild(c *client, ch channel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.wild[ch], c)
	for _, t := range *h.topics.Load() {
		t.mu.Lock()
		g := t.group(ch)
		if m := g.byClient[c]; m != nil {
			m.wild = false
			if !m.explicit {
				g.remove(m)
			}
		}
		t.mu.Unlock()
	}
}

// leave ends an explicit subscription (the membership stays while a "*"
// subscription holds it). An interval group left without members is
// removed, so that its flushes stop.
func (h *Hub) leave(m *member) {
	t := m.g.t
	t.mu.Lock()
	m.explicit = false
	var dead *group
	if !m.wild {
		g := m.g
		g.remove(m)
		if g.iv != ivRaw && len(g.members) == 0 {
			g.dead = true
			for i, x := range t.merged {
				if x == g {
					t.merged = append(t.merged[:i], t.merged[i+1:]...)
					break
				}
			}
			dead = g
		}
	}
	t.mu.Unlock()
	if dead != nil {
		h.removeInterval(dead)
	}
}

// group returns t's ticker or trades group.
func (t *topic) group(ch channel) *group {
	if ch == chanTicker {
		return &t.ticker
	}
	return &t.trades
}

// catchUp queues what a conflated member missed: the merged updates since
// m.since when the ring still holds them, the latest ticker for a ticker
// member. It returns false when only a snapshot can catch m up (see
// catchUpSnapshot).
func (h *Hub) catchUp(m *member) bool {
	g := m.g
	t := g.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if m.removed || !m.behind {
		return true
	}
	c := m.c
	switch g.ch {
	case chanTicker:
		if msg := h.tickerMessage(t, monoNow()); msg != nil {
			c.pushShared(msg)
		}
	case chanBook:
		if g.lastSeq != m.since {
			i, ok := g.ring.after(m.since)
			if !ok {
				return false
			}
			var mg merger
			for ; i < g.ring.len(); i++ {
				e := g.ring.at(i)
				mg.add(e.changes, g.view, e.seq, e.ts, e.checksum)
			}
			u := update{seq: mg.seq, prevSeq: m.since, ts: mg.ts, checksum: mg.checksum, conflated: true, changes: mg.take()}
			c.pushOwn(appendUpdate(nil, t.quoted, &u, g.view))
		}
	}
	m.behind = false
	return true
}

// catchUpSnapshot catches up a conflated book member with a snapshot,
// taken on the book's owner so that the stream's next update follows it.
func (h *Hub) catchUpSnapshot(ctx context.Context, books Books, m *member) error {
	g := m.g
	t := g.t
	return books.Do(ctx, t.symbol, func(b *book.Book) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if m.removed || !m.behind {
			return
		}
		m.c.pushSnapshot(t, g, b)
		m.behind = false
	})
}

// addInterval registers an interval group with its flush loop, starting
// the loop when it is the interval's first group. Called with g's topic
// locked (topic.mu → ivMu).
func (h *Hub) addInterval(g *group) {
	h.ivMu.Lock()
	defer h.ivMu.Unlock()
	h.ivGroups[g.iv][g] = struct{}{}
	if !h.ivRunning[g.iv] && !h.stopped {
		h.ivRunning[g.iv] = true
		h.wg.Add(1)
		go h.flushLoop(g.iv)
	}
}

func (h *Hub) removeInterval(g *group) {
	h.ivMu.Lock()
	delete(h.ivGroups[g.iv], g)
	h.ivMu.Unlock()
}

// flushLoop flushes the interval groups of iv at every tick; it is the one
// timer of the interval, shared by all its groups, and ends when the
// interval has no group left or the hub is closed.
func (h *Hub) flushLoop(iv interval) {
	defer h.wg.Done()
	tick := time.NewTicker(intervalPeriods[iv])
	defer tick.Stop()
	var groups []*group
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		h.ivMu.Lock()
		if len(h.ivGroups[iv]) == 0 {
			h.ivRunning[iv] = false
			h.ivMu.Unlock()
			return
		}
		groups = groups[:0]
		for g := range h.ivGroups[iv] {
			groups = append(groups, g)
		}
		h.ivMu.Unlock()
		for _, g := range groups {
			h.flush(g)
		}
		clear(groups)
	}
}

// flush sends the changes an interval group merged since its last flush
// as one conflated update.
func (h *Hub) flush(g *group) {
	t := g.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if g.dead || g.pending.empty() {
		return
	}
	p := &g.pending
	e := update{seq: p.seq, prevSeq: g.lastSeq, ts: p.ts, checksum: p.checksum, conflated: true, changes: p.take()}
	g.lastSeq = e.seq
	g.ring.push(e)
	if len(g.members) > 0 {
		h.deliver(g, h.updateMessage(g, &e, monoNow()), e.prevSeq, true)
	}
}

// close stops the flush loops and waits for them.
func (h *Hub) close() {
	h.ivMu.Lock()
	if h.stopped {
		h.ivMu.Unlock()
		return
	}
	h.stopped = true
	close(h.stop)
	h.ivMu.Unlock()
	h.wg.Wait()
}

// epoch is the origin of monoNow.
var epoch = time.Now()

// monoNow returns monotonic nanoseconds since the process started.
func monoNow() int64 { return int64(time.Since(epoch)) }
