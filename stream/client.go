package stream

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/marketd/marketd/book"
)

// client is one WebSocket connection.
//
// Goroutines: the reader (Server.readLoop, running gws's ReadLoop) handles
// the client's messages, each on a short-lived goroutine it waits for, and
// owns the subscriptions; the writer (writer.go) exists while something is
// queued; the liveness timer fires on its own. Publishers only enqueue.
type client struct {
	srv *Server
	ws  *gws.Conn
	nc  net.Conn // the raw connection, written with writev by the writer
	// deflateLimit is 0 without permessage-deflate; otherwise the largest
	// payload sent compressed: a client that bounds the server's window to
	// 2^N bytes gets compressed only payloads that fit in it.
	deflateLimit int
	// takeover: the connection negotiated server context takeover, and
	// shared messages are compressed against hist (takeover.go).
	takeover bool

	ctx    context.Context // canceled when the connection ends
	cancel context.CancelFunc

	lastRead atomic.Int64 // monoNow of the last bytes from the client
	timer    *time.Timer  // liveness; set under mu

	// conflating is set while the queue is past the soft limit and until
	// the writer caught the client up.
	conflating atomic.Bool

	mu sync.Mutex
	// Guarded by mu:
	queue   []outItem
	spare   []outItem // the previous batch, reused as the next queue
	queued  int       // bytes queued or being written
	writing bool      // the writer goroutine runs
	closing bool      // a close is under way: nothing more is queued
	reason  CloseReason
	behind  []*member // conflated memberships to catch up
	hist    history   // the context of a takeover connection
	// room is closed (and cleared) when queued falls to roomMark or the
	// connection closes: what a replay waiting for queue room waits on.
	room     chan struct{}
	roomMark int

	done      chan struct{} // closed when the close frame is out (or cannot be)
	closeDone sync.Once

	// Owned by the reader:
	subs    map[subKey]*member // explicit subscriptions; "*" ones have a nil member
	limiter rateLimiter
}

// subKey is a client's subscription of one channel and symbol (or "*").
type subKey struct {
	ch     channel
	symbol string
}

func (s *Server) newClient(ws *gws.Conn, nc net.Conn, deflateLimit int, takeover bool) *client {
	c := &client{
		srv:          s,
		ws:           ws,
		nc:           nc,
		deflateLimit: deflateLimit,
		takeover:     takeover,
		done:         make(chan struct{}),
		subs:         map[subKey]*member{},
		limiter:      newRateLimiter(s.cfg.RateLimit, s.cfg.RateBurst, monoNow()),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.lastRead.Store(monoNow())
	c.mu.Lock() // onTimer reads c.timer under mu
	c.timer = time.AfterFunc(s.cfg.PingInterval, c.onTimer)
	c.mu.Unlock()
	return c
}

// close starts closing the connection for reason, after what is queued.
// It never blocks.
func (c *client) close(reason CloseReason) {
	c.mu.Lock()
	c.beginClose(reason, false)
	c.mu.Unlock()
}

// closeAndWait closes the connection for reason and waits until the close
// frame is written (see waitClosed). The reader uses it before it stops
// reading.
func (c *client) closeAndWait(reason CloseReason) {
	c.close(reason)
	c.waitClosed()
}

// isClosing reports whether a close is under way.
func (c *client) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// stopOps cancels the connection's context: an op or a catch-up waiting
// in Books.Do for a book's owner gives up, so that a closing connection's
// goroutines end even if an owner is stuck.
func (c *client) stopOps() {
	if c.cancel != nil {
		c.cancel()
	}
}

// closeWithFrame closes the connection with a close frame built by gws,
// dropping what is queued, unless a close is under way already.
func (c *client) closeWithFrame(reason CloseReason, frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.beginCloseFrame(reason, frame, true)
}

// waitClosed waits until the writer has written the close frame or given
// up on the socket: at most the write timeout of the chunk in flight and
// of the close frame.
func (c *client) waitClosed() {
	t := time.NewTimer(2*c.srv.cfg.WriteTimeout + time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
}

// onTimer is the liveness timer: it closes a connection from which
// nothing arrived for ReadTimeout and pings one that has been quiet for
// PingInterval. One timer per connection, rearmed at each run.
func (c *client) onTimer() {
	cfg := &c.srv.cfg
	idle := time.Duration(monoNow() - c.lastRead.Load())
	if idle >= cfg.ReadTimeout {
		c.close(CloseReadTimeout)
		return
	}
	c.mu.Lock()
	closing, timer := c.closing, c.timer
	c.mu.Unlock()
	if closing {
		return
	}
	if idle >= cfg.PingInterval {
		c.pushControl(pingFrame)
	}
	next := cfg.PingInterval
	if rest := cfg.ReadTimeout - idle; rest < next {
		next = rest
	}
	timer.Reset(next)
}

// pingFrame is the server's ping, shared by every connection.
var pingFrame = newFrame(opPing, false, nil)

// markBehind records that m missed a message while c is conflated and
// queues a notice. Called with m's topic locked.
func (c *client) markBehind(m *member) {
	payload := appendNotice(nil, m.g.ch, m.g.t.quoted)
	c.mu.Lock()
	c.behind = append(c.behind, m)
	c.mu.Unlock()
	c.pushOwn(payload)
}

// pushSnapshot queues a snapshot of g's view of b starting g's stream.
// Called with g's topic locked, on b's owner.
func (c *client) pushSnapshot(t *topic, g *group, b *book.Book) {
	snap := b.Snapshot(g.depth)
	c.pushOwn(appendSnapshot(nil, t.quoted, nil, g.lastSeq, &snap))
}

// catchUp brings the conflated memberships of c up to date; the writer
// runs it when the queue has drained under the low mark. A publisher that
// saw the conflating flag before it was cleared may still mark a member
// behind afterwards: markBehind queues a notice, which runs the writer,
// which sees the behind list and comes back here.
func (c *client) catchUp() {
	c.conflating.Store(false)
	h := c.srv.hub
	for {
		c.mu.Lock()
		list := c.behind
		c.behind = nil
		closing := c.closing
		c.mu.Unlock()
		if len(list) == 0 || closing {
			return
		}
		for _, m := range list {
			if !h.catchUp(m) {
				if err := h.catchUpSnapshot(c.ctx, c.srv.cfg.Books, m); err != nil {
					return // the connection is ending
				}
			}
		}
		if c.conflating.Load() {
			return // behind again: the next drain continues
		}
	}
}

// teardown runs when the reader ends: it records the close, leaves every
// subscription and releases the connection.
func (c *client) teardown(err error) {
	c.timer.Stop()
	c.mu.Lock()
	reason := c.reason
	if reason == 0 {
		reason = reasonOf(err)
		c.reason = reason
	}
	c.closing = true
	c.signalRoom()
	c.mu.Unlock()
	c.stopOps()
	h := c.srv.hub
	for k, m := range c.subs {
		if m == nil {
			h.leaveWild(c, k.ch)
		} else {
			h.leave(m)
		}
		c.srv.stats.subs[k.ch].Add(-1)
		delete(c.subs, k)
	}
	_ = c.nc.Close()
	c.srv.stats.closes[reason].Add(1)
}

// errClosing is returned by ops that found the connection ending.
var errClosing = errors.New("connection closing")
