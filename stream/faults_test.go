package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestConnectStorm opens and ends 1,000 connections, 16 at a time, while
// the books change: a quarter subscribe and close cleanly, a quarter
// subscribe and reset the socket, a quarter hang up right after the
// upgrade, a quarter hang up in the middle of the handshake. Afterwards
// the connection gauge and the goroutines are back to the baseline and
// the heap has not grown (figures logged).
func TestConnectStorm(t *testing.T) {
	syms := []string{"STA-USD", "STB-USD", "STC-USD", "STD-USD"}
	ts := startServer(t, Config{}, syms...)
	addr := ts.http.Listener.Addr().String()

	// Warm up: one connection of each kind's code paths, so that pools
	// and lazily built state are in the baseline.
	warm := dial(t, ts.url, clientKinds[0])
	warm.do(`{"op":"subscribe","id":1,"channel":"trades","symbols":["STA-USD"]}`)
	warm.expect("ack")
	warm.close()
	waitFor(t, 5*time.Second, "the warm-up connection to end", func() bool { return ts.Stats().Connections == 0 })
	goBefore := runtime.NumGoroutine()
	heapBefore := heapInUse()

	// The books change throughout the storm.
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		gen := newEventGen(7)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			ts.books.apply(gen.next(syms[i%len(syms)], true))
		}
	})

	const total, workers = 1000, 16
	var next, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				if err := stormConn(t, addr, int(i), syms[i%int64(len(syms))]); err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					errMu.Unlock()
				}
			}
		})
	}
	start := time.Now()
	wg.Wait()
	close(stop)
	pub.Wait()
	if firstErr != nil {
		t.Fatalf("%d of %d connections failed; first: %v", failed.Load(), total, firstErr)
	}
	elapsed := time.Since(start)

	waitFor(t, 10*time.Second, "the connection gauge back to 0", func() bool { return ts.Stats().Connections == 0 })
	var goAfter int
	deadline := time.Now().Add(10 * time.Second)
	for {
		goAfter = runtime.NumGoroutine()
		if goAfter <= goBefore || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	heapAfter := heapInUse()
	st := ts.Stats()
	t.Logf("storm of %d connections in %v: goroutines %d before, %d after; heap %.2f MB before, %.2f MB after; closes %v",
		total, elapsed.Round(time.Millisecond), goBefore, goAfter, float64(heapBefore)/(1<<20), float64(heapAfter)/(1<<20), st.Closes)
	if goAfter > goBefore {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after, %d before\n%s", goAfter, goBefore, buf[:runtime.Stack(buf, true)])
	}
	// Per connection a leak would be kilobytes (a client's queue, reader
	// and buffers): 1,000 of them would pass 4 MB.
	if heapAfter > heapBefore+4<<20 {
		t.Errorf("heap grew from %d to %d bytes", heapBefore, heapAfter)
	}
	if st.QueuedBytes != 0 {
		t.Errorf("%d bytes still queued", st.QueuedBytes)
	}
	// The server still serves.
	c := dial(t, ts.url, clientKinds[2])
	c.do(`{"op":"ping","id":1}`)
	c.expect("pong")
}

// stormConn is one connection of the storm, of kind i%4.
func stormConn(t testing.TB, addr string, i int, sym string) error {
	sub := fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"book","symbols":[%q],"depth":10}`, i, sym)
	switch i % 4 {
	case 0: // subscribe, read the ack, close cleanly
		r, err := dialRaw(t, addr, 0, -1)
		if err != nil {
			return err
		}
		defer r.nc.Close()
		r.sendText(sub)
		acked := false
		if _, err := r.readMessages(10*time.Second, func(m wireMsg) bool {
			acked = acked || m.Type == "ack"
			return !acked
		}); err != nil || !acked {
			return fmt.Errorf("no ack: %v", err)
		}
		r.writeFrame(0x88, []byte{0x03, 0xe8}, true, -1)
		// The server answers the close and hangs up.
		for {
			f, err := r.readFrame(10 * time.Second)
			if errors.Is(err, io.EOF) || (err == nil && f.op == opClose) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("after the close: %w", err)
			}
		}
	case 1: // subscribe and reset the socket without a word
		r, err := dialRaw(t, addr, 0, -1)
		if err != nil {
			return err
		}
		r.sendText(sub)
		_ = r.nc.SetLinger(0)
		return r.nc.Close()
	case 2: // hang up right after the upgrade
		r, err := dialRaw(t, addr, 0, -1)
		if err != nil {
			return err
		}
		return r.nc.Close()
	default: // hang up in the middle of the handshake
		r, err := dialRaw(t, addr, 0, 40+i%60)
		if err != nil {
			return err
		}
		return r.nc.Close()
	}
}

// TestPingOnlyClient: a client that sends nothing but WebSocket pings is
// kept alive well past ReadTimeout, gets a pong for each ping, and gets
// no data.
func TestPingOnlyClient(t *testing.T) {
	ts := startServer(t, Config{PingInterval: 100 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}, symLevels)
	r := rawDial(t, ts, 0)
	gen := newEventGen(3)
	pongs := 0
	for i := range 12 { // 1.2 s, four times the read timeout
		ts.books.apply(gen.next(symLevels, true)) // data nobody subscribed to
		payload := fmt.Appendf(nil, "p%d", i)
		r.writeFrame(0x89, payload, true, -1)
		deadline := time.Now().Add(100 * time.Millisecond)
		for got := false; !got || time.Now().Before(deadline); {
			f, err := r.readFrame(time.Until(deadline) + 50*time.Millisecond)
			if err != nil {
				var ne net.Error
				if got && errors.As(err, &ne) && ne.Timeout() {
					break
				}
				t.Fatalf("ping %d: %v", i, err)
			}
			switch f.op {
			case opPong:
				if string(f.payload) != string(payload) {
					t.Fatalf("pong %q, want %q", f.payload, payload)
				}
				got = true
				pongs++
			case opPing: // the server's liveness ping; a pinging client need not answer
			default:
				t.Fatalf("ping %d: got frame op %d %q", i, f.op, f.payload)
			}
		}
	}
	if pongs != 12 {
		t.Errorf("%d pongs, want 12", pongs)
	}
	if ts.Stats().Connections != 1 {
		t.Errorf("connections %d, want 1", ts.Stats().Connections)
	}
}

// TestSlowloris: a client that sends its request headers a byte at a time
// is cut at the http.Server's ReadHeaderTimeout, without a WebSocket, while
// a healthy client is served.
func TestSlowloris(t *testing.T) {
	books := newTestBooks(t, symLevels)
	s, err := NewServer(Config{Books: books, HandshakeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	books.sink = s.Hub()
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 300 * time.Millisecond}
	ln := listen(t)
	go hs.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
		s.Shutdown(ctx)
	})
	addr := ln.Addr().String()
	healthy := dial(t, "ws://"+addr+"/v1/ws", clientKinds[0])

	const slow = 3
	cut := make(chan time.Duration, slow)
	for range slow {
		go func() {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				cut <- -1
				return
			}
			defer nc.Close()
			req := fmt.Sprintf("GET /v1/ws HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", addr, strings.Join(goodHandshake, "\r\n"))
			start := time.Now()
			for i := range len(req) - 2 { // never the final CRLF
				if _, err := nc.Write([]byte{req[i]}); err != nil {
					cut <- time.Since(start)
					return
				}
				// A read with a short deadline doubles as the pause
				// between bytes, and sees the server hang up.
				_ = nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				var b [512]byte
				if n, err := nc.Read(b[:]); n > 0 || !isTimeout(err) {
					if strings.Contains(string(b[:n]), "101") {
						t.Errorf("slow client upgraded: %q", b[:n])
					}
					cut <- time.Since(start)
					return
				}
			}
			cut <- -1 // sent it all without being cut
		}()
	}
	for i := 0; i < slow; i++ {
		select {
		case d := <-cut:
			if d < 0 || d > 3*time.Second {
				t.Errorf("slow client cut after %v, want about 300ms", d)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("slow clients not cut")
		}
		healthy.do(fmt.Sprintf(`{"op":"ping","id":%d}`, i))
		healthy.expect("pong")
	}
	if s.Stats().Connections != 1 {
		t.Errorf("connections %d, want 1 (the healthy client)", s.Stats().Connections)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestSubscribeEverything: one client subscribes to every symbol on every
// channel, the book at every depth in turn (a depth replaces the last), up
// to MaxSubscriptions; it gets every snapshot and then live data, and one
// subscription past the cap gets too_many_subscriptions while the others
// keep flowing.
func TestSubscribeEverything(t *testing.T) {
	const nsyms = 20
	var syms []string
	for i := range nsyms {
		syms = append(syms, fmt.Sprintf("E%02d-USD", i))
	}
	ts := startServer(t, Config{MaxSubscriptions: 3*nsyms - 1}, syms...)
	gen := newEventGen(11)
	for range 10 {
		for _, s := range syms {
			ts.books.apply(gen.next(s, true))
		}
	}
	ts.sync(t, syms...)
	c := dial(t, ts.url, clientKinds[1])
	quoted := `"` + strings.Join(syms, `","`) + `"`
	id := 0
	// expectAck reads until the ack of id, counting snapshots by symbol.
	expectAck := func(id int) map[string]int {
		snaps := map[string]int{}
		for {
			m := c.next()
			switch m.Type {
			case "snapshot":
				snaps[m.Symbol]++
			case "ack":
				if string(m.ID) != fmt.Sprint(id) {
					t.Fatalf("ack %s, want id %d", m.ID, id)
				}
				return snaps
			case "error":
				t.Fatalf("subscribe %d: %s", id, m.raw)
			}
		}
	}
	for _, depth := range []int{1, 10, 25, 50, 100, 500, 1000, 0} {
		id++
		c.do(fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"book","symbols":[%s],"depth":%d}`, id, quoted, depth))
		if snaps := expectAck(id); len(snaps) != nsyms {
			t.Fatalf("depth %d: snapshots of %d symbols, want %d", depth, len(snaps), nsyms)
		}
	}
	id++
	c.do(fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"trades","symbols":[%s]}`, id, quoted))
	expectAck(id)
	// The ticker of every symbol would be one past the cap.
	id++
	c.do(fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"ticker","symbols":[%s]}`, id, quoted))
	for m := c.next(); ; m = c.next() {
		if m.Type == "error" {
			if m.Code != "too_many_subscriptions" || string(m.ID) != fmt.Sprint(id) {
				t.Fatalf("got %s, want too_many_subscriptions", m.raw)
			}
			break
		}
		if m.Type == "ack" || m.Type == "ticker" {
			t.Fatalf("past the cap: %s", m.raw)
		}
	}
	id++
	c.do(fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"ticker","symbols":[%s]}`, id, `"`+strings.Join(syms[1:], `","`)+`"`))
	expectAck(id)
	id++
	c.do(fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"ticker","symbols":[%q]}`, id, syms[0]))
	if m := c.expect("error"); m.Code != "too_many_subscriptions" {
		t.Fatalf("got %s", m.raw)
	}
	if got := ts.Stats().Subscriptions; got["book"] != nsyms || got["trades"] != nsyms || got["ticker"] != nsyms-1 {
		t.Fatalf("subscriptions %v", got)
	}

	// Live data flows on every symbol's book stream (a removal of an
	// absent level changes nothing, so send a few).
	for range 20 {
		for _, s := range syms {
			ts.books.apply(gen.next(s, true))
		}
	}
	ts.sync(t, syms...)
	updated := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(updated) < nsyms {
		select {
		case m := <-c.msgs:
			if m.Channel == "book" && (m.Type == "update" || m.Type == "snapshot") {
				updated[m.Symbol] = true
			}
		case <-deadline:
			t.Fatalf("book data of %d symbols, want %d", len(updated), nsyms)
		}
	}
	c.checkErrs()
}
