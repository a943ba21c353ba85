package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/marketd/marketd/book"
)

// The "replay" op re-streams history (protocol.md §3, "Replay"): the
// messages a subscriber of the channel got over a time range, each marked
// "replay":true, read from Kafka by a ReplaySource with its own reader, then
// a "replay_end" notice, or, with "to":"live", a switch to the live stream
// with the seq chain intact.
//
// Each replay runs on a goroutine of its own, counted in the server's wait
// group and stopped by the connection's context (or by an unsubscribe).
// It paces itself on the client's queue: before each message it waits
// until the connection's queue is under half the soft limit, so a slow
// replaying client holds up its own replay and nothing else; replay
// messages are per-client messages, never conflated or dropped.

// ReplaySource reads history for replays; cmd implements it with feed's
// replay reader, which rebuilds the books with the live path's code.
type ReplaySource interface {
	// Replay reads the range of req and hands it to h from one goroutine:
	// h.Begin once with the books at the start of the range, h.Update with
	// every update of the range, in seq order per symbol. Without req.Live
	// it returns nil at the end of the range. With req.Live it then reads
	// on, calling h.CaughtUp each time it has handed over every record the
	// topic held when it looked, and returns nil once CaughtUp returns
	// true. It returns h's error, ctx's, or one reading the range.
	Replay(ctx context.Context, req ReplayRequest, h ReplayHandler) error
}

// ReplayRequest is the range a replay reads.
type ReplayRequest struct {
	// Symbols are the symbols whose updates the handler gets.
	Symbols []string
	// From and To bound the range by record time, inclusive; a zero To is
	// the end of the topic when the replay starts.
	From, To time.Time
	// Live asks the source to read on past To (zero) until the replay has
	// joined the live stream.
	Live bool
}

// ReplayStart is a book at the start of a replay's range.
type ReplayStart struct {
	// Book belongs to the source; the handler reads it during Begin only.
	Book *book.Book
	// LastTrade is the seq of the symbol's last trade before the range,
	// 0 when none: the prev_seq of the trades stream's next message.
	LastTrade uint64
}

// ReplayHandler receives a replay from a ReplaySource.
type ReplayHandler interface {
	// Begin gets the books of the requested symbols at the start of the
	// range (a symbol born in the range has none).
	Begin(books []ReplayStart) error
	// Update gets one update of the range; it may block (the replay's pace).
	Update(u *book.Update) error
	// CaughtUp reports whether the replay has joined the live stream
	// (req.Live only).
	CaughtUp(ctx context.Context) (bool, error)
}

// Replay limits.
const (
	// maxLiveChase is how long a replay to "live" may chase the live
	// position, from its first try to join, before it joins with a gap
	// (book: a fresh snapshot) instead of reading on.
	maxLiveChase = 10 * time.Second
	// roomDivisor sets the queue room a replay waits for before each
	// message: queued bytes under QueueSoftLimit / roomDivisor.
	roomDivisor = 2
)

// replaySet is the server's replays: how many read history (capped by
// Config.MaxReplays) and each connection's, for unsubscribe. The zero
// value is ready.
type replaySet struct {
	mu       sync.Mutex
	reading  int
	byClient map[*client][]*replay
}

// replay is one "replay" op of a connection.
type replay struct {
	c      *client
	id     []byte // the op's id, echoed
	ch     channel
	syms   []string
	depth  int
	req    ReplayRequest
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// Guarded by mu (lock order: topic.mu → replay.mu → client.mu):
	stopped bool      // unsubscribed: nothing more is queued
	reading bool      // holds one of the server's replay slots
	members []*member // live memberships joined

	// Owned by the replay's goroutine:
	begun  bool
	chase  time.Time // the first try to join the live stream
	encs   map[string]*MessageEncoder
	seqs   map[string]uint64 // the book seq the replay reached, per symbol
	joined map[string]bool
	pacer  Pacer
}

// replayOp handles {"op":"replay"}: it validates the request, takes one of
// the server's replay slots and starts the replay; the ack comes from the
// replay, after the messages that start it.
func (c *client) replayOp(req *request) *opError {
	s := c.srv
	if s.cfg.Replay == nil {
		return errorf(CodeUnknownOp, "replay is not enabled on this server")
	}
	r, oe := c.newReplay(req)
	if oe != nil {
		return oe
	}
	if unknown := s.unknownSymbols(r.syms); len(unknown) > 0 {
		return errorf(CodeUnknownSymbol, "unknown symbols %q", unknown)
	}
	set := &s.replays
	set.mu.Lock()
	if set.reading >= s.cfg.MaxReplays {
		set.mu.Unlock()
		return errorf(CodeTooManyReplays, "the server runs %d replays already: try again later", s.cfg.MaxReplays)
	}
	set.reading++
	r.reading = true
	if set.byClient == nil {
		set.byClient = map[*client][]*replay{}
	}
	set.byClient[c] = append(set.byClient[c], r)
	set.mu.Unlock()
	// The reader (waiting for this op) is counted in the wait group, so
	// the count is above zero here.
	s.wg.Add(1)
	go r.run()
	return nil
}

// newReplay validates a replay request.
func (c *client) newReplay(req *request) (*replay, *opError) {
	ch, syms, oe := symbolsOf(req, c.srv.cfg.MaxSubscriptions)
	if oe != nil {
		return nil, oe
	}
	for _, sym := range syms {
		if sym == wildcard {
			return nil, errorf(CodeBadRequest, "a replay names its symbols: \"*\" is for subscriptions")
		}
	}
	depth, _, oe := depthOf(req.Depth)
	if oe != nil {
		return nil, oe
	}
	if ch != chanBook && req.Depth != nil {
		return nil, errorf(CodeBadRequest, "depth is for the book channel")
	}
	if req.Interval != "" || req.Resume != nil {
		return nil, errorf(CodeBadRequest, "a replay takes neither interval nor resume")
	}
	r := &replay{c: c, id: req.ID, ch: ch, syms: syms, depth: depth, req: ReplayRequest{Symbols: syms}}
	var err error
	if req.From == nil {
		return nil, errorf(CodeBadRequest, "missing from")
	}
	if r.req.From, err = replayTime(req.From); err != nil {
		return nil, errorf(CodeBadRequest, "from: %v", err)
	}
	switch {
	case req.To == "live":
		r.req.Live = true
	case req.To != nil:
		if r.req.To, err = replayTime(req.To); err != nil {
			return nil, errorf(CodeBadRequest, "to: %v", err)
		}
		if r.req.To.Before(r.req.From) {
			return nil, errorf(CodeBadRequest, "the range ends before it starts")
		}
	}
	if req.Speed != nil {
		r.pacer.Speed = *req.Speed
		if r.pacer.Speed < 0 || math.IsInf(r.pacer.Speed, 0) {
			return nil, errorf(CodeBadRequest, "speed %v: want 0 (as fast as possible), 1 (real time) or another factor", r.pacer.Speed)
		}
	}
	r.ctx, r.cancel = context.WithCancel(c.ctx)
	r.encs = map[string]*MessageEncoder{}
	r.seqs = map[string]uint64{}
	r.joined = map[string]bool{}
	return r, nil
}

// replayTime parses a replay bound: Unix microseconds (a positive JSON
// integer) or an RFC 3339 string.
func replayTime(v any) (time.Time, error) {
	switch v := v.(type) {
	case json.Number:
		us, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || us <= 0 {
			return time.Time{}, fmt.Errorf("%s is not a positive integer of Unix microseconds", v)
		}
		return time.UnixMicro(us), nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", v)
		}
		return t, nil
	}
	return time.Time{}, errors.New("want Unix microseconds or an RFC 3339 string")
}

// stopReplays ends c's replays of ch that name any of syms (unsubscribe):
// nothing of theirs is queued after it returns, and the live memberships
// they joined are left.
func (s *Server) stopReplays(c *client, ch channel, syms []string) {
	s.replays.mu.Lock()
	list := append([]*replay(nil), s.replays.byClient[c]...)
	s.replays.mu.Unlock()
	for _, r := range list {
		if r.ch == ch && r.names(syms) {
			r.stop()
		}
	}
}

// names reports whether r replays any of syms.
func (r *replay) names(syms []string) bool {
	return slices.ContainsFunc(syms, func(s string) bool { return slices.Contains(r.syms, s) })
}

// stop ends r: nothing more of it is queued once stop returns, its
// goroutine is told to end, and the live memberships it joined are left.
func (r *replay) stop() {
	r.mu.Lock()
	r.stopped = true
	members := r.members
	r.members = nil
	r.mu.Unlock()
	r.cancel()
	for _, m := range members {
		r.c.srv.hub.leave(m)
	}
}

// run is the replay's goroutine.
func (r *replay) run() {
	s := r.c.srv
	defer s.wg.Done()
	defer r.finish()
	err := s.cfg.Replay.Replay(r.ctx, r.req, r)
	switch {
	case r.ctx.Err() != nil:
		return // the connection ended, or an unsubscribe stopped it
	case err != nil && !r.begun:
		s.stats.badMessages[CodeReplayFailed].Add(1)
		r.push(appendError(nil, r.id, CodeReplayFailed, err.Error()))
		return
	case err != nil:
		r.push(r.appendNotice(nil, "replay_failed", nil, "", err.Error()))
		return
	case !r.begun:
		// A source that returned without a Begin: an empty range.
		if err := r.Begin(nil); err != nil {
			return
		}
	}
	if !r.req.Live {
		r.push(r.appendNotice(nil, "replay_end", nil, "", "the replay reached the end of its range"))
		return
	}
	// Joined the live stream: the slot is free, and the memberships last
	// until the connection ends or an unsubscribe ends them.
	r.release()
	<-r.ctx.Done()
}

// release gives the replay's slot back.
func (r *replay) release() {
	r.mu.Lock()
	reading := r.reading
	r.reading = false
	r.mu.Unlock()
	if reading {
		set := &r.c.srv.replays
		set.mu.Lock()
		set.reading--
		set.mu.Unlock()
	}
}

// finish releases everything the replay holds.
func (r *replay) finish() {
	r.release()
	r.stop()
	set := &r.c.srv.replays
	set.mu.Lock()
	list := slices.DeleteFunc(set.byClient[r.c], func(x *replay) bool { return x == r })
	if len(list) == 0 {
		delete(set.byClient, r.c)
	} else {
		set.byClient[r.c] = list
	}
	set.mu.Unlock()
}

// push queues a message of the replay unless it was stopped.
func (r *replay) push(payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.c.pushOwn(payload)
	}
}

// waitRoom waits until the connection's queue has room for the replay:
// backpressure that holds up the replay only. It returns ctx's error, or
// errClosing when the connection is closing.
func (r *replay) waitRoom() error {
	c := r.c
	room := c.srv.cfg.QueueSoftLimit / roomDivisor
	for {
		c.mu.Lock()
		switch {
		case c.closing:
			c.mu.Unlock()
			return errClosing
		case c.queued <= room:
			c.mu.Unlock()
			return nil
		}
		// The writer closes c.room when the queue is down to room
		// (signalRoom); every replay of the connection waits for the
		// same room.
		if c.room == nil {
			c.room = make(chan struct{})
		}
		c.roomMark = room
		wake := c.room
		c.mu.Unlock()
		select {
		case <-wake:
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
}

// encoder returns the encoder of symbol's stream, creating it.
func (r *replay) encoder(symbol string) *MessageEncoder {
	e := r.encs[symbol]
	if e == nil {
		e, _ = NewMessageEncoder(symbol, r.depth) // the depth is valid
		e.Replay = true
		r.encs[symbol] = e
	}
	return e
}

// Begin queues what starts each stream — the book's snapshot, the
// current ticker — then the op's ack.
func (r *replay) Begin(books []ReplayStart) error {
	if r.begun {
		return nil // a later pass of a replay to "live"
	}
	r.begun = true
	var buf []byte
	for _, rb := range books {
		sym := rb.Book.Symbol()
		if !slices.Contains(r.syms, sym) {
			continue
		}
		e := r.encoder(sym)
		r.seqs[sym] = rb.Book.Seq()
		e.SetTradeSeq(rb.LastTrade)
		switch r.ch {
		case chanBook:
			buf = e.AppendSnapshot(buf[:0], rb.Book)
		case chanTicker:
			t := rb.Book.Ticker()
			buf = e.AppendTicker(buf[:0], &t)
		default:
			continue
		}
		if err := r.waitRoom(); err != nil {
			return err
		}
		r.push(append([]byte(nil), buf...))
	}
	r.push(appendAck(nil, r.id, &ackInfo{op: "replay", channel: r.ch, symbols: r.syms}))
	return nil
}

// Update queues the messages of one update of the range, paced by event
// time at the requested speed and by the client's queue.
func (r *replay) Update(u *book.Update) error {
	sym := u.Symbol
	if r.joined[sym] || (r.begun && u.Seq <= r.seqs[sym] && r.encs[sym] != nil) {
		return nil
	}
	if err := r.pacer.Wait(r.ctx, u.TS, nil); err != nil {
		return err
	}
	var buf []byte
	e := r.encs[sym]
	if e == nil {
		e = r.encoder(sym)
		if r.ch == chanBook {
			// A symbol born in the range starts with its empty book.
			buf = append(e.AppendSnapshot(buf, book.New(sym)), '\n')
		}
	}
	r.seqs[sym] = u.Seq
	switch r.ch {
	case chanBook:
		buf = e.AppendUpdate(buf, u)
	case chanTrades:
		buf = e.AppendTrade(buf, u)
	case chanTicker:
		if u.Ticker != nil {
			buf = e.AppendTicker(buf, u.Ticker)
		}
	}
	if len(buf) == 0 {
		return nil
	}
	if buf[len(buf)-1] == '\n' {
		buf = buf[:len(buf)-1] // the empty snapshot alone
	}
	if err := r.waitRoom(); err != nil {
		return err
	}
	r.push(buf)
	return nil
}

// CaughtUp tries to join the live stream with each symbol not joined yet,
// on the owner of its book, so that no live update slips between the last
// replayed message and the first live one. It reports whether every
// symbol has joined.
func (r *replay) CaughtUp(ctx context.Context) (bool, error) {
	if r.chase.IsZero() {
		r.chase = time.Now()
		// Past the range the records come as the market makes them: they
		// are played as fast as they come, or the replay would never
		// catch up with the live stream.
		r.pacer.Speed = 0
	}
	final := time.Since(r.chase) >= maxLiveChase
	books := r.c.srv.cfg.Books
	all := true
	for _, sym := range r.syms {
		if r.joined[sym] {
			continue
		}
		var ok bool
		err := books.Do(ctx, sym, func(b *book.Book) { ok = r.join(b, final) })
		if err != nil {
			return false, fmt.Errorf("join the live stream of %s: %w", sym, err)
		}
		if ok {
			r.joined[sym] = true
		} else {
			all = false
		}
	}
	return all, nil
}

// join makes the client a live member of the replay's stream of b's symbol
// if the replay has reached the live position: b has applied no record of
// the symbol that the replay has not, and the stream's next live message
// chains from the last replayed one (a book stream may bridge the gap from
// its ring of recent updates). With final it joins anyway, announcing a
// gap (a book stream restarts with a snapshot). It runs on b's owner and
// reports whether it joined (or the replay was stopped).
func (r *replay) join(b *book.Book, final bool) bool {
	sym := b.Symbol()
	if b.Seq() < r.seqs[sym] && !final {
		return false // the live books lag behind the replay
	}
	h := r.c.srv.hub
	t := h.topic(sym)
	t.mu.Lock()
	defer t.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return true
	}
	c := r.c
	e := r.encs[sym]
	var m *member
	exact := true
	switch r.ch {
	case chanBook:
		_, view, _ := depthOf(&r.depth)
		g := h.bookGroup(t, view, ivRaw, b.Seq())
		bridge := g.ring.len() // the ring entries from here on bridge the gap: none yet
		switch {
		case e == nil:
			exact = false // nothing replayed: the stream starts with a snapshot
		case g.lastSeq == e.bookSeq:
		case b.Seq() == r.seqs[sym] && len(g.members) == 0 && g.ring.len() == 0:
			// A group created after the view last changed starts at the
			// book's seq; nobody has chained from it yet, and its view is
			// the same at the last replayed seq, so the stream goes on
			// from there.
			g.lastSeq = e.bookSeq
		default:
			if i, ok := g.ring.after(e.bookSeq); ok {
				bridge = i
			} else if !final {
				return false
			} else {
				exact = false
			}
		}
		c.pushOwn(r.appendNotice(nil, "replay_live", t.quoted, joinedName(exact), "the replay joined the live stream"))
		h.pushRing(c, g, bridge)
		if !exact {
			c.pushSnapshot(t, g, b)
		}
		m = g.add(c)
	case chanTrades:
		var last uint64
		if e != nil {
			last = e.tradeSeq
		}
		// The live stream's next trade chains from the book's last one.
		if b.LastTradeSeq() != last {
			if !final && b.Seq() <= r.seqs[sym] {
				// The live book does not know the trade the replay read
				// (restored from a checkpoint written before books kept
				// it): reading on changes nothing.
				final = true
			}
			if !final {
				return false
			}
			exact = false
		}
		c.pushOwn(r.appendNotice(nil, "replay_live", t.quoted, joinedName(exact), "the replay joined the live stream"))
		m = t.trades.add(c)
	case chanTicker:
		c.pushOwn(r.appendNotice(nil, "replay_live", t.quoted, joinedName(true), "the replay joined the live stream"))
		if b.Seq() != r.seqs[sym] || e == nil {
			tk := b.Ticker()
			c.pushOwn(appendTicker(nil, t.quoted, &tk))
		}
		m = t.ticker.add(c)
		m.behind = false
	}
	m.explicit = true
	r.members = append(r.members, m)
	return true
}

func joinedName(exact bool) string {
	if exact {
		return "exact"
	}
	return "gap"
}

// appendNotice appends a notice of the replay: code "replay_end",
// "replay_failed" or, per symbol, "replay_live" with how it joined.
func (r *replay) appendNotice(dst []byte, code string, symbol []byte, joined, msg string) []byte {
	dst = append(dst, `{"type":"notice","code":"`...)
	dst = append(dst, code...)
	dst = append(dst, `","channel":"`...)
	dst = append(dst, r.ch.String()...)
	dst = append(dst, '"')
	if r.id != nil {
		dst = append(dst, `,"id":`...)
		dst = append(dst, r.id...)
	}
	if symbol != nil {
		dst = append(dst, `,"symbol":`...)
		dst = append(dst, symbol...)
	} else {
		dst = append(dst, `,"symbols":`...)
		dst = appendStrings(dst, r.syms)
	}
	if joined != "" {
		dst = append(dst, `,"joined":"`...)
		dst = append(dst, joined...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}
