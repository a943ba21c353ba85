package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestLiveness runs the server with short intervals: a client that answers
// pings stays, a silent one is pinged then closed after the read timeout,
// and a client that keeps sending is never pinged.
func TestLiveness(t *testing.T) {
	const ping, timeout = 250 * time.Millisecond, 750 * time.Millisecond
	ts := startServer(t, Config{PingInterval: ping, ReadTimeout: timeout}, symLevels)

	// Silent: never answers (the raw client answers pings only inside
	// readMessages; here it reads frames by hand).
	silent := rawDial(t, ts, 0)
	start := time.Now()
	pings := 0
	var code int
	for code == 0 {
		f, err := silent.readFrame(5 * time.Second)
		if err != nil {
			t.Fatalf("silent client: %v after %d pings", err, pings)
		}
		switch f.op {
		case opPing:
			pings++
		case opClose:
			code = int(f.payload[0])<<8 | int(f.payload[1])
			if string(f.payload[2:]) != "read timeout" {
				t.Errorf("close reason %q", f.payload[2:])
			}
		}
	}
	if d := time.Since(start); code != 1001 || pings < 2 || d < timeout-50*time.Millisecond || d > timeout+3*time.Second {
		t.Errorf("silent client: close %d after %d pings and %v; want 1001 after %v and pings", code, pings, d, timeout)
	}
	waitFor(t, 5*time.Second, "the read timeout to be counted", func() bool { return ts.Stats().Closes["read_timeout"] == 1 })

	// Answering pings (coder/websocket does so by itself while reading):
	// alive after several read timeouts.
	alive := dial(t, ts.url, clientKinds[0])
	time.Sleep(3 * timeout)
	alive.do(`{"op":"ping","id":1}`)
	if m := alive.expect("pong"); string(m.ID) != "1" {
		t.Fatalf("got %s", m.raw)
	}

	// Busy: sends data more often than the ping interval, gets no ping.
	busy := rawDial(t, ts, 0)
	deadline := time.Now().Add(3 * ping)
	for i := 0; time.Now().Before(deadline); i++ {
		busy.sendText(fmt.Sprintf(`{"op":"ping","id":%d}`, i))
		f, err := busy.readFrame(2 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.op != opText {
			t.Fatalf("busy client got opcode %#x", f.op)
		}
		time.Sleep(20 * time.Millisecond)
	}
	alive.checkErrs()
}

// TestShutdown checks that Shutdown flushes what is queued, closes every
// client with 1001, refuses new connections and waits for all of them.
func TestShutdown(t *testing.T) {
	tb := newTestBooks(t, symLevels)
	s, err := NewServer(Config{Books: tb})
	if err != nil {
		t.Fatal(err)
	}
	tb.sink = s.Hub()
	hs := &http.Server{Handler: s.Handler()}
	ts := &testServer{Server: s, books: tb}
	ln := listen(t)
	go func() { _ = hs.Serve(ln) }()
	ts.url = "ws://" + ln.Addr().String() + "/v1/ws"

	var clients []*wsClient
	var books []*localBook
	for _, k := range clientKinds {
		c := dial(t, ts.url, k)
		c.do(`{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD"],"depth":10,"interval":"100ms"}`)
		lb := newLocalBook(symLevels, 10)
		if err := lb.apply(c.expect("snapshot")); err != nil {
			t.Fatal(err)
		}
		c.expect("ack")
		clients, books = append(clients, c), append(books, lb)
	}
	gen := newEventGen(3)
	for range 500 {
		tb.apply(gen.next(symLevels, true))
	}
	ts.sync(t, symLevels)
	time.Sleep(150 * time.Millisecond) // one flush of the interval stream

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	want := tb.snapshot(t, symLevels, 10)
	for i, c := range clients {
		<-c.closed
		if c.closeCode != 1001 {
			t.Errorf("%s: close code %d, want 1001", c.name, c.closeCode)
		}
		for len(c.msgs) > 0 {
			if err := books[i].apply(<-c.msgs); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if err := books[i].equal(want); err != nil {
			t.Errorf("%s: not flushed: %v", c.name, err)
		}
		c.checkErrs()
	}
	if st := s.Stats(); st.Connections != 0 || st.Closes["shutdown"] != uint64(len(clients)) {
		t.Errorf("after shutdown: %+v", st)
	}
	// A late upgrade on the same handler is refused.
	rec := &responseRecorder{header: http.Header{}}
	req, _ := http.NewRequest("GET", "/v1/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	s.Handler().ServeHTTP(rec, req)
	if rec.status != http.StatusServiceUnavailable {
		t.Errorf("upgrade after shutdown: %d", rec.status)
	}
}

// TestShutdownDeadline checks that Shutdown gives up at its context's end
// on a client that reads nothing, cutting it.
func TestShutdownDeadline(t *testing.T) {
	ts := startServer(t, Config{SendBuffer: 4 << 10}, symLevels)
	r := rawDial(t, ts, 128)
	r.sendText(`{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD"],"depth":0}`)
	gen := newEventGen(5)
	for range 3000 {
		ts.books.apply(gen.next(symLevels, true))
	}
	ts.sync(t, symLevels)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown: %v, want the deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if n := ts.Stats().Connections; n != 0 {
		t.Errorf("%d connections left", n)
	}
}

// responseRecorder is a minimal http.ResponseWriter without Hijack.
type responseRecorder struct {
	header http.Header
	status int
}

func (r *responseRecorder) Header() http.Header { return r.header }

func (r *responseRecorder) Write(p []byte) (int, error) { return len(p), nil }

func (r *responseRecorder) WriteHeader(s int) { r.status = s }

// TestCoderCloseStatus double-checks with coder/websocket's own close
// parsing that a 1001 close carries its reason.
func TestCoderCloseStatus(t *testing.T) {
	ts := startServer(t, Config{}, symLevels)
	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, ts.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := conn.Read(ctx)
		done <- err
	}()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	err = <-done
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "server shutting down" {
		t.Errorf("read after shutdown: %v", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
