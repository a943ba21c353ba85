package stream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/marketd/marketd/book"
)

// benchUpdates returns n consecutive updates of a level-based book that
// holds about 100 levels a side, each changing the depth-10 view.
func benchUpdates(b *testing.B, n int) (*book.Book, []*book.Update) {
	b.Helper()
	bk := book.New(symLevels)
	gen := newEventGen(42)
	for range 2000 {
		ev := gen.next(symLevels, true)
		if err := bk.Apply(&ev); err != nil {
			b.Fatal(err)
		}
	}
	view, _ := book.ViewIndex(10)
	var ups []*book.Update
	for len(ups) < n {
		ev := gen.next(symLevels, true)
		if err := bk.Apply(&ev); err != nil {
			b.Fatal(err)
		}
		if u := bk.LastUpdate(); hasView(u.Changes, view) {
			ups = append(ups, u)
		}
	}
	return bk, ups
}

// BenchmarkEncode measures the encoders of the publish path: one book
// update of the depth-10 view, a trade and a ticker.
func BenchmarkEncode(b *testing.B) {
	_, ups := benchUpdates(b, 64)
	view, _ := book.ViewIndex(10)
	sym := appendString(nil, symLevels)
	buf := make([]byte, 0, 4096)
	b.Run("update", func(b *testing.B) {
		b.ReportAllocs()
		i, bytes := 0, 0
		for b.Loop() {
			u := ups[i%len(ups)]
			e := update{seq: u.Seq, prevSeq: u.Seq - 1, ts: u.TS, checksum: u.Checksum10, changes: u.Changes}
			buf = appendUpdate(buf[:0], sym, &e, view)
			bytes += len(buf)
			i++
		}
		b.ReportMetric(float64(bytes)/float64(i), "B/msg")
	})
	tr := &book.Trade{TradeID: "t-123456", Price: 50_000_10 * book.Unit / 100, Size: book.Unit / 10, Side: book.Buy}
	b.Run("trade", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendTrade(buf[:0], sym, 1234571, 1234400, 1763900000002000, tr)
		}
	})
	bk, _ := benchUpdates(b, 1)
	tk := bk.Ticker()
	b.Run("ticker", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendTicker(buf[:0], sym, &tk)
		}
	})
	b.Run("frame+deflate", func(b *testing.B) {
		u := ups[0]
		e := update{seq: u.Seq, prevSeq: u.Seq - 1, ts: u.TS, checksum: u.Checksum10, changes: u.Changes}
		payload := appendUpdate(nil, sym, &e, view)
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		var out int
		var n atomic.Uint64
		for b.Loop() {
			m := newMessage(payload, 0)
			out = len(m.frame(1<<30, 1, &n))
		}
		b.ReportMetric(float64(out)/float64(len(payload)+2), "wire/plain")
	})
	// frame+bestspeed: what frame+deflate would cost with a flate.Writer at
	// BestSpeed, reset for each message, instead of the stateless encoder
	// (see appendDeflate).
	b.Run("frame+bestspeed", func(b *testing.B) {
		u := ups[0]
		e := update{seq: u.Seq, prevSeq: u.Seq - 1, ts: u.TS, checksum: u.Checksum10, changes: u.Changes}
		payload := appendUpdate(nil, sym, &e, view)
		w, err := flate.NewWriter(io.Discard, flate.BestSpeed)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		var out int
		for b.Loop() {
			aw := appendWriter{b: buf[:0]}
			w.Reset(&aw)
			_, _ = w.Write(payload)
			_ = w.Flush()
			buf = aw.b
			out = frameHeaderLen(len(buf)-4) + len(buf) - 4 // without the 00 00 ff ff tail
		}
		b.ReportMetric(float64(out)/float64(len(payload)+2), "wire/plain")
	})
	// frame+context: with context takeover, each update compressed against
	// the two before it, as every subscriber of one stream gets it.
	b.Run("frame+context", func(b *testing.B) {
		msgs := make([]*message, len(ups))
		var plain int
		for i, u := range ups {
			e := update{seq: u.Seq, prevSeq: u.Seq - 1, ts: u.TS, checksum: u.Checksum10, changes: u.Changes}
			msgs[i] = newMessage(appendUpdate(nil, sym, &e, view), 0)
			plain += len(msgs[i].plain)
		}
		b.ReportAllocs()
		var wire, i int
		var h history
		var n atomic.Uint64
		for b.Loop() {
			m := msgs[i%len(msgs)]
			m.variants, m.deflated = nil, nil // compress anew each time
			wire += len(takeoverFrame(m, &h, 1<<30, &n))
			i++
		}
		b.ReportMetric(float64(wire)/float64(plain)*float64(len(msgs))/float64(i), "wire/plain")
	})
}

// BenchmarkPublish measures Hub.Publish of book updates to one group of
// subs subscribers, without sockets: the clients' writers are held, and
// their queues are emptied outside the timer. Allocations and encodes per
// publish must not grow with the subscribers; the cost per subscriber is
// one enqueue.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000, 10000} {
		for _, mode := range []string{"", "/deflate", "/takeover"} {
			b.Run(fmt.Sprintf("subs=%d%s", n, mode), func(b *testing.B) { benchPublish(b, n, mode) })
		}
	}
}

func benchPublish(b *testing.B, n int, mode string) {
	bk, ups := benchUpdates(b, 256)
	s, err := NewServer(Config{Books: newTestBooks(b), QueueSoftLimit: 1 << 40, QueueHardLimit: 1 << 41})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Hub()
	view, _ := book.ViewIndex(10)
	clients := make([]*client, n)
	for i := range clients {
		// A client in steady state: its queue has grown to its usual size.
		c := &client{srv: s, writing: true, done: make(chan struct{}), subs: map[subKey]*member{}, queue: make([]outItem, 0, 128)}
		if mode != "" {
			c.deflateLimit = 1 << 30
			c.takeover = mode == "/takeover"
		}
		h.joinBook(c, bk, view, ivRaw, nil)
		clients[i] = c
	}
	drain := func() { drainQueues(clients, nil) }
	drain()
	seq := bk.Seq()
	encodes, compressions := s.stats.encodes.Load(), s.stats.compressions.Load()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		u := *ups[i%len(ups)]
		seq++
		u.Seq = seq
		h.Publish(&u)
		i++
		if i%64 == 0 {
			b.StopTimer()
			drain()
			b.StartTimer()
		}
	}
	el := b.Elapsed().Seconds()
	b.ReportMetric(float64(s.stats.encodes.Load()-encodes)/float64(i), "encodes/publish")
	b.ReportMetric(float64(s.stats.compressions.Load()-compressions)/float64(i), "compressions/publish")
	b.ReportMetric(float64(i)*float64(n)/el, "deliveries/s")
	// allocs/op is per publish; the copy of the Update above is one of them.
}

// drainQueues empties the queues of clients whose writers the benchmark
// holds, handing each queued item to each first (when not nil).
func drainQueues(clients []*client, each func(*outItem)) {
	for _, c := range clients {
		c.mu.Lock()
		if each != nil {
			for i := range c.queue {
				each(&c.queue[i])
			}
		}
		clear(c.queue)
		c.queue, c.queued = c.queue[:0], 0
		c.mu.Unlock()
	}
}

// fanoutClient is a raw WebSocket reader that counts the messages it gets.
type fanoutClient struct {
	nc   net.Conn
	msgs atomic.Int64
}

// dialFanout connects n raw clients and subscribes each to sub.
func dialFanout(b *testing.B, addr string, n int, sub string) []*fanoutClient {
	b.Helper()
	cs := make([]*fanoutClient, n)
	for i := range cs {
		r, err := dialRaw(b, addr, 0, -1)
		if err != nil {
			b.Fatal(err)
		}
		if sub != "" {
			writeMasked(r.nc, sub)
		}
		cs[i] = &fanoutClient{nc: r.nc}
		go cs[i].read(r.br)
	}
	return cs
}

func writeMasked(w io.Writer, s string) {
	h := []byte{0x81, 0x80 | byte(len(s)), 0, 0, 0, 0} // zero mask key
	_, _ = w.Write(append(h, s...))
}

// read counts messages ('\n'-joined ones included) until the socket closes.
func (fc *fanoutClient) read(br *bufio.Reader) {
	var h [8]byte
	p := make([]byte, 0, 64<<10)
	for {
		if _, err := io.ReadFull(br, h[:2]); err != nil {
			return
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, h[:2]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint16(h[:2]))
		case 127:
			if _, err := io.ReadFull(br, h[:8]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint64(h[:8]))
		}
		if cap(p) < n {
			p = make([]byte, n)
		}
		p = p[:n]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		fc.msgs.Add(int64(1 + bytes.Count(p, []byte{'\n'})))
	}
}

// BenchmarkFanout measures the whole path over loopback: Publish, encode
// once, enqueue, coalesced writev, to N real connections whose clients
// read in other goroutines. Each op is one book update delivered to every
// client; the timer stops after the last client got the last message.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			bk, ups := benchUpdates(b, 256)
			tb := newTestBooks(b, symLevels)
			// Queue limits far above a burst's backlog: a client passing
			// the soft limit would get merged updates, fewer messages than
			// published, and the wait for the last one would time out.
			s, err := NewServer(Config{Books: tb, RateLimit: 1e6, QueueSoftLimit: 64 << 20, QueueHardLimit: 128 << 20})
			if err != nil {
				b.Fatal(err)
			}
			tb.sink = s.Hub()
			// The books' owner holds the benchmark's book: replay its state.
			snap := bk.Snapshot(0)
			tb.apply(book.Event{Kind: book.KindSnapshot, Symbol: symLevels, Seq: bk.Seq(), Bids: snap.Bids, Asks: snap.Asks})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			hs := newHTTPServer(s)
			go func() { _ = hs.Serve(ln) }()
			cs := dialFanout(b, ln.Addr().String(), n, `{"op":"subscribe","channel":"book","symbols":["LVL-USD"],"depth":10}`)
			// Snapshot and ack of every client.
			waitAll := func(want int64) {
				deadline := time.Now().Add(time.Minute)
				for _, c := range cs {
					for c.msgs.Load() < want {
						if time.Now().After(deadline) {
							b.Fatalf("a client has %d of %d messages", c.msgs.Load(), want)
						}
						time.Sleep(time.Millisecond)
					}
				}
			}
			waitAll(2)
			h := s.Hub()
			seq := bk.Seq()
			st0 := s.Stats()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				u := *ups[i%len(ups)]
				seq++
				u.Seq = seq
				h.Publish(&u)
				i++
			}
			waitAll(int64(2 + i))
			el := b.Elapsed().Seconds()
			st := s.Stats()
			del := st.Deliveries - st0.Deliveries
			b.ReportMetric(float64(del)/el, "deliveries/s")
			b.ReportMetric(float64(st.Writes-st0.Writes)/float64(del), "writes/delivery")
			b.ReportMetric(float64(st.BytesWire-st0.BytesWire)/float64(del), "B/delivery")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = hs.Shutdown(ctx)
			if err := s.Shutdown(ctx); err != nil {
				b.Error(err)
			}
			for _, c := range cs {
				c.nc.Close()
			}
		})
	}
}

// BenchmarkIdleConn measures the memory an idle subscribed connection
// costs the process: live heap and goroutine stacks, server and raw
// client together, per connection. One op is 2,000 connections: run it
// with -benchtime 1x.
func BenchmarkIdleConn(b *testing.B) {
	const n = 2000
	tb := newTestBooks(b, symLevels)
	s, err := NewServer(Config{Books: tb})
	if err != nil {
		b.Fatal(err)
	}
	tb.sink = s.Hub()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := newHTTPServer(s)
	go func() { _ = hs.Serve(ln) }()
	for b.Loop() {
		before := liveBytes()
		var cs []net.Conn
		var wg sync.WaitGroup
		for range n {
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(nc, "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
			writeMasked(nc, `{"op":"subscribe","channel":"trades","symbols":["LVL-USD"]}`)
			cs = append(cs, nc)
		}
		// Wait until every connection has its ack (read the handshake and ack bytes).
		for _, nc := range cs {
			wg.Go(func() {
				buf := make([]byte, 512)
				got := ""
				for !strings.Contains(got, `"type":"ack"`) {
					k, err := nc.Read(buf)
					if err != nil {
						return
					}
					got += string(buf[:k])
				}
			})
		}
		wg.Wait()
		after := liveBytes()
		b.ReportMetric(float64(after-before)/n, "B/conn")
		b.ReportMetric(float64(runtime.NumGoroutine())/n, "goroutines/conn")
		for _, nc := range cs {
			nc.Close()
		}
		waitFor(b, 10*time.Second, "connections to end", func() bool { return s.Stats().Connections == 0 })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(ctx)
	_ = s.Shutdown(ctx)
}

// liveBytes returns the heap in use and the goroutine stacks after a GC.
func liveBytes() int64 {
	// Several cycles: each may halve the stack of a goroutine that uses
	// little of it, as an idle reader does after its subscribe.
	for range 4 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// BenchmarkTakeoverMixed publishes book updates of 10 symbols to 1,000
// context-takeover clients that each follow the depth-10 book of 1 to 3
// symbols drawn at random, so that the messages just before an update
// differ between its subscribers: it reports how many compressions a
// publish takes (the distinct contexts, capped by maxVariants) and the
// wire bytes of the shared frames against their plain frames.
func BenchmarkTakeoverMixed(b *testing.B) {
	const symbols, clients = 10, 1000
	s, err := NewServer(Config{Books: newTestBooks(b), QueueSoftLimit: 1 << 40, QueueHardLimit: 1 << 41})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Hub()
	view, _ := book.ViewIndex(10)
	gen := newEventGen(3)
	books := make([]*book.Book, symbols)
	for i := range books {
		books[i] = book.New(fmt.Sprintf("S%02d-USD", i))
		for range 300 {
			ev := gen.next(books[i].Symbol(), true)
			if err := books[i].Apply(&ev); err != nil {
				b.Fatal(err)
			}
		}
	}
	rnd := newEventGen(4).rng
	all := make([]*client, clients)
	for i := range all {
		c := &client{srv: s, writing: true, done: make(chan struct{}), subs: map[subKey]*member{}, deflateLimit: 1 << 30, takeover: true}
		for _, k := range rnd.Perm(symbols)[:1+rnd.IntN(3)] {
			h.joinBook(c, books[k], view, ivRaw, nil)
		}
		all[i] = c
	}
	var wire, plain int
	drain := func() {
		drainQueues(all, func(it *outItem) {
			if it.own == nil {
				wire, plain = wire+len(it.frame), plain+it.raw
			}
		})
	}
	drain()
	wire, plain = 0, 0
	encodes, compressions := s.stats.encodes.Load(), s.stats.compressions.Load()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		bk := books[rnd.IntN(symbols)]
		ev := gen.next(bk.Symbol(), true)
		if err := bk.Apply(&ev); err != nil {
			b.Fatal(err)
		}
		h.Publish(bk.LastUpdate())
		i++
		if i%64 == 0 {
			b.StopTimer()
			drain()
			b.StartTimer()
		}
	}
	drain()
	b.ReportMetric(float64(s.stats.encodes.Load()-encodes)/float64(i), "encodes/publish")
	b.ReportMetric(float64(s.stats.compressions.Load()-compressions)/float64(i), "compressions/publish")
	b.ReportMetric(float64(wire)/float64(plain), "wire/plain")
}
