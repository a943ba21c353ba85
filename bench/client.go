package bench

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/lxzan/gws"
)

// counters are the load generator's shared tallies. Read loops add to them;
// Run reads them at the edges of the measurement window.
type counters struct {
	deliveries atomic.Int64 // update, ticker and trade messages
	snapshots  atomic.Int64
	payload    atomic.Int64 // bytes of WebSocket payload after decompression
	wireRead   atomic.Int64 // bytes read from the sockets
	wireWrite  atomic.Int64 // bytes written to the sockets
	gaps       atomic.Int64 // updates whose prev_seq is not the last seq held
	notices    atomic.Int64
	conflated  atomic.Int64 // updates marked "conflated":true
	errors     atomic.Int64 // error messages from the server
	bad        atomic.Int64 // messages the scanner could not read
	frames     atomic.Int64
	inflated   atomic.Int64 // frames that came compressed

	measuring atomic.Bool // the window is open: record latencies
	latency   Histogram

	mu         sync.Mutex
	closeCodes map[int]int    // closes initiated by the server, by code
	extensions map[string]int // the server's permessage-deflate answers, by clients

	inflations *inflateCache // shared by the clients without context takeover; nil: none
}

// newCounters returns the tallies of one run of clients, with the maps
// dialClient and OnClose write to and the cache of inflations they share.
func newCounters() *counters {
	return &counters{closeCodes: make(map[int]int), extensions: make(map[string]int), inflations: newInflateCache()}
}

type countersSnapshot struct {
	deliveries, snapshots, payload, wireRead, wireWrite, gaps, notices, conflated, errors, bad, frames, inflated int64
}

func (c *counters) snapshot() countersSnapshot {
	return countersSnapshot{
		deliveries: c.deliveries.Load(), snapshots: c.snapshots.Load(), payload: c.payload.Load(),
		wireRead: c.wireRead.Load(), wireWrite: c.wireWrite.Load(), gaps: c.gaps.Load(),
		notices: c.notices.Load(), conflated: c.conflated.Load(), errors: c.errors.Load(),
		bad: c.bad.Load(), frames: c.frames.Load(), inflated: c.inflated.Load(),
	}
}

func (a countersSnapshot) sub(b countersSnapshot) countersSnapshot {
	return countersSnapshot{
		deliveries: a.deliveries - b.deliveries, snapshots: a.snapshots - b.snapshots, payload: a.payload - b.payload,
		wireRead: a.wireRead - b.wireRead, wireWrite: a.wireWrite - b.wireWrite, gaps: a.gaps - b.gaps,
		notices: a.notices - b.notices, conflated: a.conflated - b.conflated, errors: a.errors - b.errors,
		bad: a.bad - b.bad, frames: a.frames - b.frames, inflated: a.inflated - b.inflated,
	}
}

// channel indexes of loadClient.last.
const (
	chBook = iota
	chTicker
	chTrades
	numChannels
)

func channelIndex(ch []byte) int {
	switch string(ch) {
	case "book":
		return chBook
	case "ticker":
		return chTicker
	case "trades":
		return chTrades
	}
	return -1
}

// loadClient is one WebSocket client of the load generator. Its fields are
// owned by its read loop (gws calls the handler methods from it), except
// pending and done, which Run reads.
type loadClient struct {
	c    *counters
	conn *gws.Conn

	// last holds, per channel and symbol, the seq of the last message of
	// the stream, to check each update's prev_seq against it.
	last [numChannels]map[string]*int64
	msg  wireMsg

	lastRead int64 // when the last bytes were read from the socket, Unix µs (see countingConn)

	pending atomic.Int32  // subscriptions not yet acknowledged
	closing atomic.Bool   // Run is closing the connection
	done    chan struct{} // closed when the read loop returned
}

func newLoadClient(c *counters, subs int) *loadClient {
	lc := &loadClient{c: c, done: make(chan struct{})}
	lc.pending.Store(int32(subs))
	return lc
}

var _ gws.Event = (*loadClient)(nil)

// OnOpen is called when the connection is established.
func (*loadClient) OnOpen(*gws.Conn) {}

// OnClose records closes that the server initiated.
func (lc *loadClient) OnClose(_ *gws.Conn, err error) {
	if lc.closing.Load() {
		return
	}
	if errors.Is(err, errInflate) {
		lc.c.bad.Add(1) // the client could not read the server's message
		return
	}
	code := 1006 // abnormal: the connection ended without a close frame
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		code = int(ce.Code)
	}
	lc.c.mu.Lock()
	lc.c.closeCodes[code]++
	lc.c.mu.Unlock()
}

// OnPing answers the server's pings, as a browser does.
func (*loadClient) OnPing(socket *gws.Conn, payload []byte) { _ = socket.WritePong(payload) }

// OnPong ignores pongs.
func (*loadClient) OnPong(*gws.Conn, []byte) {}

// OnMessage reads every message of a frame (several may be joined by '\n').
func (lc *loadClient) OnMessage(_ *gws.Conn, message *gws.Message) {
	defer message.Close()
	now := lc.lastRead
	c := lc.c
	measuring := c.measuring.Load()
	payload := message.Bytes()
	c.frames.Add(1)
	c.payload.Add(int64(len(payload)))
	for len(payload) > 0 {
		line := payload
		if i := bytes.IndexByte(payload, '\n'); i >= 0 {
			line, payload = payload[:i], payload[i+1:]
		} else {
			payload = nil
		}
		if len(line) == 0 {
			continue
		}
		lc.handle(line, now, measuring)
	}
}

func (lc *loadClient) handle(line []byte, now int64, measuring bool) {
	c, m := lc.c, &lc.msg
	if err := scanMessage(line, m); err != nil {
		c.bad.Add(1)
		return
	}
	switch string(m.Type) {
	case "update", "trade", "ticker":
		c.deliveries.Add(1)
		if m.Conflated {
			c.conflated.Add(1)
		}
		if measuring && m.HasTS {
			c.latency.RecordMicros(now - m.TS)
		}
		lc.follow(m)
	case "snapshot":
		c.snapshots.Add(1)
		lc.follow(m)
	case "ack":
		lc.pending.Add(-1)
	case "error":
		c.errors.Add(1)
		lc.pending.Add(-1)
	case "notice":
		c.notices.Add(1)
	}
}

// follow checks the seq chain of the message's stream.
func (lc *loadClient) follow(m *wireMsg) {
	ch := channelIndex(m.Channel)
	if ch < 0 || !m.HasSeq {
		return
	}
	last := lc.last[ch]
	if last == nil {
		last = make(map[string]*int64)
		lc.last[ch] = last
	}
	held := last[string(m.Symbol)] // a lookup by string(bytes) does not allocate
	if held == nil {
		held = new(int64)
		*held = -1
		last[string(m.Symbol)] = held
	}
	if m.HasPrev && *held >= 0 && *held != m.PrevSeq {
		lc.c.gaps.Add(1)
	}
	*held = m.Seq
}

// appendSubscribe appends the subscribe op of sub with the given id.
func appendSubscribe(buf []byte, id int, sub Sub) []byte {
	buf = append(buf, `{"op":"subscribe","id":`...)
	buf = strconv.AppendInt(buf, int64(id), 10)
	buf = append(buf, `,"channel":"`...)
	buf = append(buf, sub.Channel...)
	buf = append(buf, `","symbols":[`...)
	for i, s := range sub.Symbols {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendQuote(buf, s)
	}
	buf = append(buf, ']')
	if sub.Depth > 0 {
		buf = append(buf, `,"depth":`...)
		buf = strconv.AppendInt(buf, int64(sub.Depth), 10)
	}
	if sub.Interval != "" {
		buf = append(buf, `,"interval":"`...)
		buf = append(buf, sub.Interval...)
		buf = append(buf, '"')
	}
	return append(buf, '}')
}
