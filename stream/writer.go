package stream

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// The outbound path of a connection. Everyone (the hub's publishers, the
// interval flushers, the connection's reader, its liveness timer) enqueues;
// one writer goroutine per connection writes. Enqueueing never blocks and
// never touches the socket. The writer exists only while something is
// queued: enqueue starts it when the queue goes non-empty and it exits when
// the queue is drained, so an idle connection has no goroutine of its own
// beyond its reader.
//
// The writer takes everything queued at once and writes it with one
// writev (net.Buffers) per chunk: shared frames go out as they are, and
// runs of per-client messages (acks, errors, snapshots, notices) are joined
// by '\n' into one frame. Each writev has a deadline (WriteTimeout); a
// socket that accepts nothing for that long is closed.
//
// Queued bytes are counted at enqueue and uncounted once written. Past the
// soft limit the client is conflated (see Hub.deliver), past the hard limit
// it is closed with 4008: the queue is dropped, a close frame is queued
// after the chunk being written, and the publisher goes on at once.

// itemKind says what a queued item is.
type itemKind uint8

const (
	itemData    itemKind = iota // a message: counts as a delivery
	itemControl                 // ping, pong
	itemClose                   // close frame; the writer ends the connection after it
)

// outItem is one queued item: a complete frame (shared message, control,
// close) or a per-client JSON message the writer frames.
type outItem struct {
	frame []byte
	own   []byte
	born  int64 // publish time of a shared message, 0 when not measured
	raw   int   // uncompressed length of a shared message's frame
	kind  itemKind
}

func (it *outItem) size() int { return len(it.frame) + len(it.own) }

// Chunk bounds of one writev: Linux takes at most 1024 iovecs per call.
const (
	maxChunkIovecs = 1024
	maxChunkBytes  = 256 << 10
)

// scratch is a writer's working memory, pooled between writer runs so that
// an idle connection holds none.
type scratch struct {
	bufs net.Buffers
	own  []byte // frames of joined per-client messages
	join []byte // a joined payload before framing
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// push queues it and starts the writer if needed. It returns false when the
// connection is closing (the item is dropped).
func (c *client) push(it outItem) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pushLocked(it)
}

// pushLocked is push with c.mu held.
func (c *client) pushLocked(it outItem) bool {
	if c.closing {
		return false
	}
	n := it.size()
	c.queue = append(c.queue, it)
	c.queued += n
	switch {
	case c.queued > c.srv.cfg.QueueHardLimit:
		c.srv.stats.slowConsumers.Add(1)
		c.beginClose(CloseSlowConsumer, true)
	case c.queued > c.srv.cfg.QueueSoftLimit && !c.conflating.Load():
		c.conflating.Store(true)
		c.srv.stats.conflations.Add(1)
	}
	c.startWriter()
	return true
}

// pushShared queues the frame of a shared message that fits the
// connection. Called with the lock of the message's topic held (see
// message.frame). Without context takeover the frame depends on the
// message alone and is chosen (on first use, compressed) before c.mu is
// taken; with it, it depends on what was queued before, so the choice and
// the enqueue are one step under c.mu.
func (c *client) pushShared(m *message) {
	it := outItem{born: m.born, raw: len(m.plain)}
	if !c.takeover {
		it.frame = m.frame(c.deflateLimit, c.srv.cfg.CompressThreshold, &c.srv.stats.compressions)
		c.push(it)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	it.frame = takeoverFrame(m, &c.hist, c.deflateLimit, &c.srv.stats.compressions)
	c.pushLocked(it)
}

// pushOwn queues a per-client JSON message; payload becomes the queue's.
// The writer may compress it, so a takeover connection's context ends;
// except that a message too small to be compressed (a pong, say) is
// framed plain here, on its own, and leaves the context as it was.
func (c *client) pushOwn(payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.takeover && len(payload) < c.srv.cfg.CompressThreshold {
		f := newFrame(opText, false, payload)
		c.pushLocked(outItem{frame: f, raw: len(f)})
		return
	}
	c.hist.reset()
	c.pushLocked(outItem{own: payload})
}

// pushControl queues a control frame (ping, pong).
func (c *client) pushControl(frame []byte) {
	c.push(outItem{frame: frame, kind: itemControl})
}

// startWriter starts the writer goroutine unless it runs. Called with c.mu
// held; the connection's reader is still counted in the server's wait
// group (closing is false), so the Add below never races a Wait at zero.
func (c *client) startWriter() {
	if c.writing {
		return
	}
	c.writing = true
	c.srv.wg.Add(1)
	go c.writeLoop()
}

// beginClose starts closing the connection for reason: no more enqueues;
// the close frame of reason is queued after what is queued, or, with drop,
// instead of it. Called with c.mu held; never blocks.
func (c *client) beginClose(reason CloseReason, drop bool) {
	if c.closing {
		return
	}
	c.beginCloseFrame(reason, reason.frame(), drop)
}

// beginCloseFrame is beginClose with the close frame given. Called with c.mu
// held.
func (c *client) beginCloseFrame(reason CloseReason, f []byte, drop bool) {
	c.closing = true
	c.reason = reason
	c.stopOps()
	if drop {
		for i := range c.queue {
			c.queued -= c.queue[i].size()
			c.queue[i] = outItem{}
		}
		c.queue = c.queue[:0]
	}
	c.queue = append(c.queue, outItem{frame: f, kind: itemClose})
	c.queued += len(f)
	c.signalRoom()
	c.startWriter()
}

// signalRoom wakes whoever waits for queue room (replay.waitRoom) once the
// queue is down to their mark or the connection is closing. Called with
// c.mu held, wherever queued falls or closing is set.
func (c *client) signalRoom() {
	if c.room != nil && (c.queued <= c.roomMark || c.closing) {
		close(c.room)
		c.room = nil
	}
}

// writeLoop is the connection's writer: it drains the queue and exits when
// it is empty (or the connection is done).
func (c *client) writeLoop() {
	defer c.srv.wg.Done()
	s := scratchPool.Get().(*scratch)
	defer func() {
		s.bufs = s.bufs[:0]
		if cap(s.own) > maxPooledBuf {
			s.own = nil
		}
		if cap(s.join) > maxPooledBuf {
			s.join = nil
		}
		scratchPool.Put(s)
	}()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()

		closed, err := c.writeBatch(batch, s)
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
		catchUp := !c.closing && (c.conflating.Load() || len(c.behind) > 0) && c.queued <= c.srv.cfg.QueueSoftLimit/lowMarkDivisor
		c.mu.Unlock()
		if err != nil {
			c.writeFailed(err)
			return
		}
		if closed {
			c.finishClose()
			return
		}
		if catchUp {
			c.catchUp()
		}
	}
}

// lowMarkDivisor sets the low mark under which a conflated client is caught
// up: QueueSoftLimit / lowMarkDivisor.
const lowMarkDivisor = 4

// writeBatch writes the items of a batch in chunks of one writev each. It
// reports whether it wrote a close item (which is always last).
func (c *client) writeBatch(batch []outItem, s *scratch) (closed bool, err error) {
	st := c.srv.stats
	for i := 0; i < len(batch); {
		s.bufs, s.own = s.bufs[:0], s.own[:0]
		bytes, raw, deliveries := 0, 0, 0
		var oldest int64
		j := i
		for j < len(batch) && len(s.bufs) < maxChunkIovecs && bytes < maxChunkBytes {
			it := &batch[j]
			if it.own != nil {
				// A run of per-client messages becomes one frame.
				k := j
				s.join = s.join[:0]
				for k < len(batch) && batch[k].own != nil && len(s.join) < maxChunkBytes {
					if k > j {
						s.join = append(s.join, '\n')
					}
					s.join = append(s.join, batch[k].own...)
					k++
				}
				start := len(s.own)
				s.own = c.appendOwnFrame(s.own, s.join)
				s.bufs = append(s.bufs, s.own[start:])
				bytes += len(s.own) - start
				raw += len(s.join)
				deliveries += k - j
				j = k
				continue
			}
			switch it.kind {
			case itemClose:
				closed = true
			case itemData:
				deliveries++
				raw += it.raw
				if it.born != 0 && (oldest == 0 || it.born < oldest) {
					oldest = it.born
				}
			}
			if it.frame != nil {
				s.bufs = append(s.bufs, it.frame)
				bytes += len(it.frame)
			}
			j++
			if closed {
				break
			}
		}
		if len(s.bufs) > 0 {
			if err = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout)); err == nil {
				bufs := s.bufs // WriteTo consumes its receiver
				_, err = bufs.WriteTo(c.nc)
			}
			st.writes.Add(1)
		}
		n := 0
		for k := i; k < j; k++ {
			n += batch[k].size()
		}
		c.mu.Lock()
		c.queued -= n
		c.signalRoom()
		c.mu.Unlock()
		if err != nil {
			return false, err
		}
		st.deliveries.Add(uint64(deliveries))
		st.bytesWire.Add(uint64(bytes))
		st.bytesRaw.Add(uint64(raw))
		if oldest != 0 {
			st.observeLatency(time.Duration(monoNow() - oldest))
		}
		i = j
	}
	return closed, nil
}

// appendOwnFrame appends the frame of a per-client payload, compressed when
// the connection negotiated permessage-deflate and it pays.
func (c *client) appendOwnFrame(dst, payload []byte) []byte {
	if c.deflateLimit != 0 && len(payload) <= c.deflateLimit && len(payload) >= c.srv.cfg.CompressThreshold {
		buf := getBuf()
		z := appendDeflate((*buf)[:0], payload, nil)
		if len(z) < len(payload) {
			dst = appendFrameHeader(dst, opText, true, len(z))
			dst = append(dst, z...)
			*buf = z
			putBuf(buf)
			return dst
		}
		*buf = z
		putBuf(buf)
	}
	dst = appendFrameHeader(dst, opText, false, len(payload))
	return append(dst, payload...)
}

// writeFailed ends a connection whose socket write failed or timed out:
// no close frame can follow a partial write, so the socket is closed.
func (c *client) writeFailed(err error) {
	reason := CloseNetError
	if errors.Is(err, os.ErrDeadlineExceeded) {
		reason = CloseWriteTimeout
	}
	c.mu.Lock()
	if !c.closing || c.reason == 0 {
		c.reason = reason
	}
	c.closing = true
	c.writing = false
	c.stopOps()
	for i := range c.queue {
		c.queue[i] = outItem{}
	}
	c.queue = c.queue[:0]
	c.queued = 0
	c.signalRoom()
	c.mu.Unlock()
	_ = c.nc.Close()
	c.closeDone.Do(func() { close(c.done) })
}

// finishClose runs after the close frame is written. It shuts the write
// side (the client sees the close frame, then EOF) and gives the client
// closeGrace to answer with its close frame before the reader gives up;
// closing the socket at once could reset it before the client reads.
func (c *client) finishClose() {
	c.mu.Lock()
	c.writing = false
	c.queued = 0
	c.signalRoom()
	c.mu.Unlock()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = c.nc.SetReadDeadline(time.Now().Add(closeGrace))
	} else {
		_ = c.nc.Close()
	}
	c.closeDone.Do(func() { close(c.done) })
}

// closeGrace is how long the server waits for the client's close frame
// after sending its own.
const closeGrace = 2 * time.Second
