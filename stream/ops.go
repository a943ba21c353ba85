package stream

import (
	"errors"
	"slices"
	"time"

	"github.com/marketd/marketd/book"
)

// handle processes one client message for the reader goroutine. Every op
// gets exactly one reply carrying its id: an ack (subscribe, unsubscribe,
// snapshot — after the data the op queued; replay — from the replay, after
// the messages that start it), a pong (ping) or an error.
func (c *client) handle(data []byte, text bool) {
	now := monoNow()
	switch c.limiter.take(now) {
	case limitOK:
	case limitRejected:
		c.replyError(nil, errorf(CodeRateLimited, "more than %g messages per second", c.srv.cfg.RateLimit))
		return
	case limitAbuse:
		c.srv.stats.badMessages[CodeRateLimited].Add(1)
		c.closeAndWait(CloseRateLimit)
		return
	}
	if !text {
		c.replyError(nil, errorf(CodeBadRequest, "binary messages are not supported: send JSON text"))
		return
	}
	req, err := parseRequest(data)
	if err != nil {
		c.replyError(req.ID, errorf(CodeBadRequest, "%v", err))
		return
	}
	var oe *opError
	switch req.Op {
	case "subscribe":
		oe = c.subscribe(req)
	case "unsubscribe":
		oe = c.unsubscribe(req)
	case "snapshot":
		oe = c.snapshot(req)
	case "replay":
		oe = c.replayOp(req)
	case "ping":
		c.pushOwn(appendPong(nil, req.ID, time.Now().UnixMicro()))
	case "":
		oe = errorf(CodeBadRequest, "missing op")
	default:
		oe = errorf(CodeUnknownOp, "unknown op %q", req.Op)
	}
	if oe != nil {
		c.replyError(req.ID, oe)
	}
}

func (c *client) replyError(id []byte, e *opError) {
	c.srv.stats.badMessages[e.code].Add(1)
	c.pushOwn(appendError(nil, id, e.code, e.msg))
}

// symbolsOf validates the channel and symbols of a (un)subscribe request
// and returns them without duplicates, in request order.
func symbolsOf(req *request, max int) (channel, []string, *opError) {
	ch, ok := parseChannel(req.Channel)
	switch {
	case req.Channel == "":
		return 0, nil, errorf(CodeBadRequest, "missing channel")
	case !ok:
		return 0, nil, errorf(CodeUnknownChannel, "unknown channel %q", req.Channel)
	case len(req.Symbols) == 0:
		return 0, nil, errorf(CodeBadRequest, "missing symbols")
	case len(req.Symbols) > max:
		return 0, nil, errorf(CodeTooManySubscriptions, "%d symbols: at most %d subscriptions per connection", len(req.Symbols), max)
	}
	syms := make([]string, 0, len(req.Symbols))
	for _, s := range req.Symbols {
		switch {
		case s == "":
			return 0, nil, errorf(CodeBadRequest, "empty symbol")
		case s == wildcard && ch == chanBook:
			return 0, nil, errorf(CodeBadRequest, `"*" is for the ticker and trades channels`)
		}
		if !slices.Contains(syms, s) {
			syms = append(syms, s)
		}
	}
	return ch, syms, nil
}

// subscribe handles {"op":"subscribe"}: it validates the whole request
// first (nothing is subscribed on error), then subscribes symbol by
// symbol, each atomically with its book's update stream.
func (c *client) subscribe(req *request) *opError {
	cfg := &c.srv.cfg
	ch, syms, oe := symbolsOf(req, cfg.MaxSubscriptions)
	if oe != nil {
		return oe
	}
	var view int
	iv := ivRaw
	if ch == chanBook {
		if _, view, oe = depthOf(req.Depth); oe != nil {
			return oe
		}
		var ok bool
		if iv, ok = parseInterval(req.Interval); !ok {
			return errorf(CodeBadRequest, "interval %q is not one of raw, 100ms, 1s", req.Interval)
		}
	}
	added := 0
	for _, s := range syms {
		if _, ok := c.subs[subKey{ch, s}]; !ok {
			added++
		}
	}
	if len(c.subs)+added > cfg.MaxSubscriptions {
		return errorf(CodeTooManySubscriptions, "at most %d subscriptions per connection", cfg.MaxSubscriptions)
	}
	if unknown := c.srv.unknownSymbols(syms); len(unknown) > 0 {
		return errorf(CodeUnknownSymbol, "unknown symbols %q", unknown)
	}

	h := c.srv.hub
	ack := ackInfo{op: "subscribe", channel: ch, symbols: syms}
	for _, s := range syms {
		key := subKey{ch, s}
		if old, ok := c.subs[key]; ok {
			// A new subscription of the same stream replaces the old one
			// (a book stream's depth or interval may change).
			c.unsub(key, old)
		}
		var m *member
		var err error
		switch {
		case s == wildcard:
			h.joinWild(c, ch)
		case ch == chanTrades:
			m = h.joinTrades(c, s)
		case ch == chanTicker:
			err = cfg.Books.Do(c.ctx, s, func(b *book.Book) { m = h.joinTicker(c, b) })
		default:
			var resume *uint64
			if seq, ok := req.Resume[s]; ok {
				resume = &seq
			}
			exact := false
			err = cfg.Books.Do(c.ctx, s, func(b *book.Book) { m, exact = h.joinBook(c, b, view, iv, resume) })
			if err == nil && resume != nil {
				ack.resumed = append(ack.resumed, resumeResult{symbol: s, exact: exact})
			}
		}
		if err != nil {
			if errors.Is(err, book.ErrUnknownSymbol) {
				return errorf(CodeUnknownSymbol, "unknown symbol %q", s)
			}
			return errorf(CodeBadRequest, "subscribe %s: %v", s, err) // the connection is ending
		}
		c.subs[key] = m
		c.srv.stats.subs[ch].Add(1)
	}
	c.pushOwn(appendAck(nil, req.ID, &ack))
	return nil
}

// unsub ends one subscription.
func (c *client) unsub(key subKey, m *member) {
	if m == nil {
		c.srv.hub.leaveWild(c, key.ch)
	} else {
		c.srv.hub.leave(m)
	}
	delete(c.subs, key)
	c.srv.stats.subs[key.ch].Add(-1)
}

// unsubscribe handles {"op":"unsubscribe"}; symbols not subscribed are
// acknowledged too. It also ends the replays of the channel that name one
// of the symbols (see replay.go).
func (c *client) unsubscribe(req *request) *opError {
	ch, syms, oe := symbolsOf(req, c.srv.cfg.MaxSubscriptions)
	if oe != nil {
		return oe
	}
	for _, s := range syms {
		key := subKey{ch, s}
		if m, ok := c.subs[key]; ok {
			c.unsub(key, m)
		}
	}
	c.srv.stopReplays(c, ch, syms)
	c.pushOwn(appendAck(nil, req.ID, &ackInfo{op: "unsubscribe", channel: ch, symbols: syms}))
	return nil
}

// snapshot handles {"op":"snapshot"}: one snapshot message of the book at
// the requested depth, carrying the op's id and the book's seq, then the
// ack. It subscribes to nothing.
func (c *client) snapshot(req *request) *opError {
	if req.Symbol == "" {
		return errorf(CodeBadRequest, "missing symbol")
	}
	depth, _, oe := depthOf(req.Depth)
	if oe != nil {
		return oe
	}
	var snap book.Snapshot
	err := c.srv.cfg.Books.Do(c.ctx, req.Symbol, func(b *book.Book) { snap = b.Snapshot(depth) })
	switch {
	case errors.Is(err, book.ErrUnknownSymbol):
		return errorf(CodeUnknownSymbol, "unknown symbol %q", req.Symbol)
	case err != nil:
		return errorf(CodeBadRequest, "snapshot %s: %v", req.Symbol, err)
	}
	c.pushOwn(appendSnapshot(nil, appendString(nil, req.Symbol), req.ID, snap.Seq, &snap))
	c.pushOwn(appendAck(nil, req.ID, &ackInfo{op: "snapshot", channel: chanBook, symbol: req.Symbol}))
	return nil
}
