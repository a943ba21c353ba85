package stream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"
	"github.com/lxzan/gws"
	"github.com/marketd/marketd/book"
)

// permessage-deflate with real clients (RFC 7692), in both server modes:
// without context takeover (the default) and with Config.ContextTakeover,
// where a compressed message may refer back into the messages the
// connection received before it, so that a client that mishandles its
// window decodes garbage. Each client runs the same session (deflateSession
// below, and the scripts of testdata/clients) and reports a clientSummary.

const (
	// takeoverAnswer is the answer to an offer without
	// server_no_context_takeover on a ContextTakeover server.
	takeoverAnswer = "permessage-deflate; client_no_context_takeover"

	// deflateEvents is how many events each case publishes once the client
	// is subscribed, in bursts of deflateBurst.
	deflateEvents = 320
	deflateBurst  = 40
	// deflateEndID is the id of the ping that ends a session.
	deflateEndID = 99
	// deflateSnapshotEvery is how many data messages a client receives
	// between two of its full-snapshot requests.
	deflateSnapshotEvery = 50
	// deflateCaseTimeout bounds one case, external process included.
	deflateCaseTimeout = 20 * time.Second

	// nodePath is where Debian's node-ws installs the ws module;
	// pythonPath is Debian's Python, with python3-websockets. test.sh
	// installs both when missing.
	nodePath   = "/usr/share/nodejs"
	pythonPath = "/usr/bin/python3"
)

// The session every client runs (the scripts spell it out again).
var deflateSubscribe = []string{
	`{"op":"subscribe","id":1,"channel":"book","symbols":["LVL-USD","ORD-USD"],"depth":10}`,
	`{"op":"subscribe","id":2,"channel":"trades","symbols":["LVL-USD"]}`,
	`{"op":"subscribe","id":3,"channel":"ticker","symbols":["*"]}`,
	// then {"op":"snapshot","id":4,"symbol":"LVL-USD","depth":0}
}

// takeoverNegotiationCases are offers and the exact answer of a
// ContextTakeover server: the default answer (negotiationCases) when the
// client asks for server_no_context_takeover or declines, else one without
// it. Offers of the clients of TestDeflateClients are among them.
var takeoverNegotiationCases = []negotiationCase{
	{"no offer", nil, ""},
	{"plain (Firefox, coder ContextTakeover, ws clientMaxWindowBits:false)", []string{"permessage-deflate"}, takeoverAnswer},
	{"client_max_window_bits (Chrome, ws true)", []string{"permessage-deflate; client_max_window_bits"}, takeoverAnswer},
	{"client_max_window_bits=10", []string{"permessage-deflate; client_max_window_bits=10"}, takeoverAnswer},
	{"client_no_context_takeover", []string{"permessage-deflate; client_no_context_takeover"}, takeoverAnswer},
	{"gws ServerContextTakeover", []string{"permessage-deflate; client_no_context_takeover"}, takeoverAnswer},
	{"gws both takeovers", []string{"permessage-deflate; client_max_window_bits"}, takeoverAnswer},
	{"server_no_context_takeover (ws, websockets)", []string{"permessage-deflate; server_no_context_takeover; client_max_window_bits"}, canonicalAnswer},
	{"both no_context_takeover (gorilla, coder, gws default)", []string{"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}, canonicalAnswer},
	{"server_max_window_bits=15", []string{"permessage-deflate; server_max_window_bits=15"}, takeoverAnswer},
	{"server_max_window_bits=10", []string{"permessage-deflate; server_max_window_bits=10; client_max_window_bits"}, takeoverAnswer + "; server_max_window_bits=10"},
	{"server_max_window_bits=8 without takeover", []string{"permessage-deflate; server_no_context_takeover; server_max_window_bits=8"}, canonicalAnswer + "; server_max_window_bits=8"},
	{"gws ServerMaxWindowBits 10", []string{"permessage-deflate; client_no_context_takeover; server_max_window_bits=10"}, takeoverAnswer + "; server_max_window_bits=10"},
	{"unknown parameter", []string{"permessage-deflate; foo=bar"}, ""},
	{"server_no_context_takeover with a value", []string{"permessage-deflate; server_no_context_takeover=1"}, ""},
	{"bad offer then takeover", []string{"permessage-deflate; foo, permessage-deflate"}, takeoverAnswer},
	{"takeover offer then bad", []string{"permessage-deflate; server_max_window_bits=99", "permessage-deflate; server_max_window_bits=12"}, takeoverAnswer + "; server_max_window_bits=12"},
}

// TestNegotiateDeflateTakeover checks the answer of a ContextTakeover server
// to each offer on a real handshake; what the clients then decode is
// TestDeflateClients's part.
func TestNegotiateDeflateTakeover(t *testing.T) {
	ts := startServer(t, Config{ContextTakeover: true}, symLevels)
	for _, tc := range takeoverNegotiationCases {
		t.Run(tc.name, func(t *testing.T) {
			dialOffer(t, ts, tc.offer, tc.answer)
			// The oracle of TestDeflateClients agrees on single offers.
			if len(tc.offer) == 1 && !strings.Contains(tc.offer[0], ",") && tc.answer != "" {
				if want := expectedAnswer(tc.offer[0], true); want != tc.answer {
					t.Errorf("expectedAnswer(%q) = %q, table says %q", tc.offer[0], want, tc.answer)
				}
			}
		})
	}
}

// expectedAnswer is the answer a server gives to a client's single offer
// of permessage-deflate (as the clients send it: no quoting, no list, valid
// parameters): "" without an offer; with takeover and an offer without
// server_no_context_takeover, takeoverAnswer; else the default answer; and
// server_max_window_bits=N echoed when the offer set N below 15.
func expectedAnswer(offer string, takeover bool) string {
	if offer == "" {
		return ""
	}
	noTakeover, bits := false, ""
	for _, p := range strings.Split(offer, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch name {
		case "server_no_context_takeover":
			noTakeover = true
		case "server_max_window_bits":
			if value != "15" {
				bits = value
			}
		}
	}
	answer := canonicalAnswer
	if takeover && !noTakeover {
		answer = takeoverAnswer
	}
	if bits != "" {
		answer += "; server_max_window_bits=" + bits
	}
	return answer
}

// clientSummary is what a client reports of its session.
type clientSummary struct {
	Offer  string `json:"offer"`  // its request's Sec-WebSocket-Extensions
	Answer string `json:"answer"` // the response's
	// Frames counts the data frames received, Compressed those with RSV1.
	Frames     int `json:"frames"`
	Compressed int `json:"compressed"`
	// Messages counts the JSON messages, frames split on '\n'.
	Messages int `json:"messages"`
	// Counts holds the data messages (update, trade, ticker) per
	// "channel:symbol"; Last the seq of the last message of each stream.
	Counts map[string]int    `json:"counts"`
	Last   map[string]uint64 `json:"last"`
	// Snapshots counts the book subscription snapshots, OpSnapshots the
	// replies to snapshot ops.
	Snapshots   int    `json:"snapshots"`
	OpSnapshots int    `json:"op_snapshots"`
	Error       string `json:"error"` // the first thing that went wrong
}

// clientRun is a client running the session against a server.
type clientRun interface {
	// ready waits until the client holds its acks and first snapshot.
	ready(ctx context.Context) error
	// sync has the client ping with id and waits for its pong: the client
	// then has received everything queued before.
	sync(ctx context.Context, id int) error
	// finish has the client ping, read up to the pong and the replies to
	// every snapshot it asked for, close, and report.
	finish(ctx context.Context) (clientSummary, error)
}

// deflateClient is one client configuration of the matrix.
type deflateClient struct {
	name  string
	offer string // what the library offers in this configuration
	start func(t *testing.T, ctx context.Context, url string) clientRun
}

// deflateClients lists the matrix's clients. The offers are what each
// library sends; the test checks them, so that a library that changes its
// offer shows up here instead of as a wrong expectation.
func deflateClients() []deflateClient {
	var cs []deflateClient
	for _, c := range []struct {
		mode  websocket.CompressionMode
		name  string
		offer string
	}{
		{websocket.CompressionDisabled, "Disabled", ""},
		{websocket.CompressionNoContextTakeover, "NoContextTakeover", "permessage-deflate; client_no_context_takeover; server_no_context_takeover"},
		{websocket.CompressionContextTakeover, "ContextTakeover", "permessage-deflate"},
	} {
		cs = append(cs, deflateClient{"coder/" + c.name, c.offer, func(t *testing.T, ctx context.Context, url string) clientRun {
			return startGoSession(t, dialCoderTap(t, ctx, url, c.mode))
		}})
	}
	for _, on := range []bool{false, true} {
		offer := ""
		if on {
			offer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
		}
		cs = append(cs, deflateClient{fmt.Sprintf("gorilla/EnableCompression=%v", on), offer, func(t *testing.T, ctx context.Context, url string) clientRun {
			return startGoSession(t, dialGorillaTap(t, ctx, url, on))
		}})
	}
	for _, c := range []struct {
		name  string
		pd    gws.PermessageDeflate
		offer string
	}{
		{"off", gws.PermessageDeflate{}, ""},
		{"Enabled", gws.PermessageDeflate{Enabled: true}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"ServerContextTakeover", gws.PermessageDeflate{Enabled: true, ServerContextTakeover: true}, "permessage-deflate; client_no_context_takeover"},
		{"both ContextTakeover", gws.PermessageDeflate{Enabled: true, ServerContextTakeover: true, ClientContextTakeover: true}, "permessage-deflate; client_max_window_bits"},
		{"ServerMaxWindowBits=10", gws.PermessageDeflate{Enabled: true, ServerMaxWindowBits: 10}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"},
		{"ServerContextTakeover ServerMaxWindowBits=10", gws.PermessageDeflate{Enabled: true, ServerContextTakeover: true, ServerMaxWindowBits: 10}, "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"},
	} {
		cs = append(cs, deflateClient{"gws/" + c.name, c.offer, func(t *testing.T, ctx context.Context, url string) clientRun {
			return startGoSession(t, dialGWSTap(t, url, c.pd))
		}})
	}
	for _, c := range []struct{ option, offer string }{
		{`false`, ""},
		{`true`, "permessage-deflate; client_max_window_bits"},
		{`{"clientMaxWindowBits":false}`, "permessage-deflate"},
		{`{"serverNoContextTakeover":true}`, "permessage-deflate; server_no_context_takeover; client_max_window_bits"},
		{`{"serverMaxWindowBits":10}`, "permessage-deflate; server_max_window_bits=10; client_max_window_bits"},
	} {
		cs = append(cs, deflateClient{"node-ws/" + c.option, c.offer, func(t *testing.T, ctx context.Context, url string) clientRun {
			node, err := exec.LookPath("node")
			if err != nil {
				skipOrFail(t, fmt.Sprintf("node (apt-get install nodejs): %v", err))
			}
			if _, err := os.Stat(filepath.Join(nodePath, "ws")); err != nil {
				skipOrFail(t, fmt.Sprintf("the ws module (apt-get install node-ws): %v", err))
			}
			return startScript(t, ctx, []string{"NODE_PATH=" + nodePath}, node, filepath.Join("testdata", "clients", "ws_client.js"), url, c.option)
		}})
	}
	for _, c := range []struct{ name, config, offer string }{
		{"None", `{"compression":null}`, ""},
		{"deflate", `{"compression":"deflate"}`, "permessage-deflate; client_max_window_bits"},
		{"server_max_window_bits=10", `{"factory":{"server_max_window_bits":10}}`, "permessage-deflate; server_max_window_bits=10; client_max_window_bits"},
		{"server_no_context_takeover", `{"factory":{"server_no_context_takeover":true}}`, "permessage-deflate; server_no_context_takeover; client_max_window_bits"},
	} {
		cs = append(cs, deflateClient{"websockets/" + c.name, c.offer, func(t *testing.T, ctx context.Context, url string) clientRun {
			if out, err := exec.CommandContext(ctx, pythonPath, "-c", "import websockets").CombinedOutput(); err != nil {
				skipOrFail(t, fmt.Sprintf("%s with websockets (apt-get install python3-websockets): %v %s", pythonPath, err, out))
			}
			return startScript(t, ctx, nil, pythonPath, filepath.Join("testdata", "clients", "ws_client.py"), url, c.config)
		}})
	}
	return cs
}

// skipOrFail skips a test whose client runtime is missing, except in CI.
func skipOrFail(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "" {
		t.Skipf("missing %s", what)
	}
	t.Fatalf("CI needs %s", what)
}

// TestDeflateClients runs every client configuration against a server
// without and with context takeover. Each case checks the exact answer the
// client saw against its offer; then, while the test publishes
// deflateEvents random book and trade events over two symbols, the client
// decodes every message of its book, trades and ticker streams and of its
// full-snapshot requests (per-connection messages of a few KiB, between the
// shared ones), and checks every stream's prev_seq chain. Its counts and
// last seq per stream must be what the books published, and a connection
// that negotiated compression must have received compressed frames.
func TestDeflateClients(t *testing.T) {
	start := time.Now()
	clients := deflateClients()
	for _, takeover := range []bool{false, true} {
		name := "no-takeover"
		if takeover {
			name = "takeover"
		}
		t.Run(name, func(t *testing.T) {
			for i, c := range clients {
				t.Run(c.name, func(t *testing.T) {
					runDeflateCase(t, takeover, c, uint64(i+1))
				})
			}
		})
	}
	t.Logf("%d cases in %v", 2*len(clients), time.Since(start).Round(time.Millisecond))
}

// runDeflateCase runs one client against a new server.
func runDeflateCase(t *testing.T, takeover bool, c deflateClient, seed uint64) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), deflateCaseTimeout)
	defer cancel()
	// Queue limits far above what a case queues: no conflation, so that
	// every change reaches the client and the counts are exact.
	ts := startServer(t, Config{ContextTakeover: takeover, QueueSoftLimit: 64 << 20, QueueHardLimit: 128 << 20}, symLevels, symOrders)
	pub := newPublished(ts.Hub())
	ts.books.sink = pub // before the first event: the owners see it after

	// A full LVL-USD book of several KiB away from where the events move.
	gen := newEventGen(seed)
	for i := range 200 {
		ts.books.apply(levelEv(symLevels, uint64(2*i+1), book.Buy, fmt.Sprintf("%d.25", 500+i), "1.5"))
		ts.books.apply(levelEv(symLevels, uint64(2*i+2), book.Sell, fmt.Sprintf("%d.75", 1300+i), "2.5"))
	}
	gen.seq[symLevels] = 400
	for range 60 {
		ts.books.apply(gen.next(symOrders, false))
	}
	ts.sync(t, symLevels, symOrders)
	pub.reset()

	run := c.start(t, ctx, ts.url)
	if err := run.ready(ctx); err != nil {
		t.Fatalf("client not ready: %v", err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range deflateEvents {
		if rng.IntN(5) < 3 {
			ts.books.apply(gen.next(symLevels, true))
		} else {
			ts.books.apply(gen.next(symOrders, false))
		}
		if (i+1)%deflateBurst == 0 {
			// The client's snapshot requests of this burst are answered
			// among the next one's messages.
			ts.sync(t, symLevels, symOrders)
			if err := run.sync(ctx, (i+1)/deflateBurst); err != nil {
				t.Fatalf("sync: %v", err)
			}
		}
	}
	ts.sync(t, symLevels, symOrders)
	s, err := run.finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("offer %q answer %q: %d frames, %d compressed, %d messages, %d op snapshots, %v",
		s.Offer, s.Answer, s.Frames, s.Compressed, s.Messages, s.OpSnapshots, time.Since(began).Round(time.Millisecond))

	if s.Error != "" {
		t.Errorf("client: %s", s.Error)
	}
	if s.Offer != c.offer {
		t.Errorf("client offered %q, the table says %q", s.Offer, c.offer)
	}
	if want := expectedAnswer(s.Offer, takeover); s.Answer != want {
		t.Errorf("answer %q to %q, want %q", s.Answer, s.Offer, want)
	}
	switch {
	case s.Answer == "" && s.Compressed != 0:
		t.Errorf("%d compressed frames without permessage-deflate", s.Compressed)
	case s.Answer != "" && s.Compressed == 0:
		t.Errorf("permessage-deflate negotiated, but none of %d frames was compressed", s.Frames)
	}
	want := pub.summary()
	data := 0
	for k, n := range s.Counts {
		data += n
		if _, ok := want.Counts[k]; !ok {
			t.Errorf("%d messages of an unexpected stream %s", n, k)
		}
	}
	for k, n := range want.Counts {
		if s.Counts[k] != n || s.Last[k] != want.Last[k] {
			t.Errorf("%s: %d messages up to seq %d, want %d up to %d", k, s.Counts[k], s.Last[k], n, want.Last[k])
		}
	}
	if s.Snapshots != 2 {
		t.Errorf("%d book snapshots, want 2", s.Snapshots)
	}
	if n := 1 + data/deflateSnapshotEvery; s.OpSnapshots != n {
		t.Errorf("%d snapshot replies after %d data messages, want %d", s.OpSnapshots, data, n)
	}
	if data < deflateEvents/2 {
		t.Errorf("only %d data messages for %d events", data, deflateEvents)
	}
}

// published counts what the books publish per stream of the session: book
// updates that change the depth-10 view, LVL-USD's trades, every ticker.
type published struct {
	hub  *Hub
	mu   sync.Mutex
	want clientSummary
}

func newPublished(hub *Hub) *published {
	p := &published{hub: hub}
	p.reset()
	return p
}

// Publish forwards u to the hub, then counts it.
func (p *published) Publish(u *book.Update) {
	p.hub.Publish(u)
	v10, _ := book.ViewIndex(10)
	p.mu.Lock()
	defer p.mu.Unlock()
	count := func(key string) {
		p.want.Counts[key]++
		p.want.Last[key] = u.Seq
	}
	for _, ch := range u.Changes {
		if ch.Views.Has(v10) {
			count("book:" + u.Symbol)
			break
		}
	}
	if u.Trade != nil && u.Symbol == symLevels {
		count("trades:" + u.Symbol)
	}
	if u.Ticker != nil {
		count("ticker:" + u.Symbol)
	}
}

// reset forgets what was published so far but the last ticker of each
// symbol, which a ticker "*" subscription starts with.
func (p *published) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.want
	p.want = clientSummary{Counts: map[string]int{}, Last: map[string]uint64{}}
	for k, seq := range old.Last {
		if strings.HasPrefix(k, "ticker:") {
			p.want.Counts[k], p.want.Last[k] = 1, seq
		}
	}
}

func (p *published) summary() clientSummary {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want
}

// goConn is a connection of a Go client library, with the tap on its
// socket.
type goConn struct {
	tap    *wireTap
	answer string
	send   func(string) error // called by one goroutine at a time
	recv   func() ([]byte, error)
	close  func()
}

// goSession runs the session of a Go client: a reader goroutine (run)
// checks what arrives and asks for snapshots; the test's pings go out from
// its own goroutine, one send at a time.
type goSession struct {
	c       *goConn
	sendMu  sync.Mutex
	readyCh chan struct{}
	synced  chan int // pong ids but the last
	done    chan struct{}
	sum     clientSummary // run's until done
}

func startGoSession(t *testing.T, c *goConn) *goSession {
	s := &goSession{c: c, readyCh: make(chan struct{}), synced: make(chan int, 1), done: make(chan struct{})}
	s.sum = clientSummary{Answer: c.answer, Counts: map[string]int{}, Last: map[string]uint64{}}
	go s.run()
	t.Cleanup(func() {
		c.close()
		<-s.done
	})
	return s
}

func (s *goSession) send(msg string) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.c.send(msg)
}

func (s *goSession) fail(format string, args ...any) {
	if s.sum.Error == "" {
		s.sum.Error = fmt.Sprintf(format, args...)
	}
}

// run is the session's reader: the same steps and checks as the scripts'.
func (s *goSession) run() {
	defer close(s.done)
	pending := map[int]bool{} // snapshot ops not yet answered
	askSnapshot := func(id int) error {
		pending[id] = true
		return s.send(fmt.Sprintf(`{"op":"snapshot","id":%d,"symbol":"LVL-USD","depth":0}`, id))
	}
	for _, m := range deflateSubscribe {
		if err := s.send(m); err != nil {
			s.fail("send %s: %v", m, err)
			return
		}
	}
	if err := askSnapshot(4); err != nil {
		s.fail("ask for a snapshot: %v", err)
		return
	}
	acks, ready, data, ended := map[int]bool{}, false, 0, false
	for !ended || len(pending) > 0 {
		p, err := s.c.recv()
		if err != nil {
			s.fail("read: %v", err)
			return
		}
		for _, line := range strings.Split(string(p), "\n") {
			var m wireMsg
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				s.fail("bad JSON %.80q: %v", line, err)
				continue
			}
			s.sum.Messages++
			var id int
			_ = json.Unmarshal(m.ID, &id)
			key := m.Channel + ":" + m.Symbol
			last, started := s.sum.Last[key]
			switch m.Type {
			case "ack":
				acks[id] = true
			case "snapshot":
				switch {
				case m.Bids == nil || m.Asks == nil:
					s.fail("bad snapshot %.80s", line)
				case m.ID != nil:
					s.sum.OpSnapshots++
					delete(pending, id)
				default:
					s.sum.Snapshots++
					s.sum.Last[key] = m.Seq
				}
			case "update", "trade":
				switch {
				case m.Type == "update" && !started:
					s.fail("%s: update before snapshot", key)
				case m.PrevSeq == nil:
					s.fail("%s: no prev_seq: %.80s", key, line)
				case started && *m.PrevSeq != last:
					s.fail("%s: prev_seq %d after seq %d", key, *m.PrevSeq, last)
				}
			case "ticker":
				if started && m.Seq <= last {
					s.fail("%s: seq %d after %d", key, m.Seq, last)
				}
			case "pong":
				if id == deflateEndID {
					ended = true
				} else {
					select {
					case s.synced <- id:
					default:
						s.fail("unexpected pong %d", id)
					}
				}
			default:
				s.fail("unexpected message %.120s", line)
			}
			if m.Type == "update" || m.Type == "trade" || m.Type == "ticker" {
				s.sum.Last[key] = m.Seq
				s.sum.Counts[key]++
				data++
				if data%deflateSnapshotEvery == 0 {
					if err := askSnapshot(1000 + data/deflateSnapshotEvery); err != nil {
						s.fail("ask for a snapshot: %v", err)
						return
					}
				}
			}
		}
		if !ready && acks[1] && acks[2] && acks[3] && s.sum.OpSnapshots == 1 {
			ready = true
			close(s.readyCh)
		}
	}
}

func (s *goSession) ready(ctx context.Context) error {
	select {
	case <-s.readyCh:
		return nil
	case <-s.done:
		return errors.New(s.sum.Error)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *goSession) sync(ctx context.Context, id int) error {
	if err := s.send(fmt.Sprintf(`{"op":"ping","id":%d}`, id)); err != nil {
		return fmt.Errorf("send ping: %w", err)
	}
	select {
	case got := <-s.synced:
		if got != id {
			return fmt.Errorf("pong %d, want %d", got, id)
		}
		return nil
	case <-s.done:
		return fmt.Errorf("session ended: %s", s.sum.Error)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *goSession) finish(ctx context.Context) (clientSummary, error) {
	if err := s.send(fmt.Sprintf(`{"op":"ping","id":%d}`, deflateEndID)); err != nil {
		return clientSummary{}, fmt.Errorf("send ping: %w", err)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.c.close() // ends the session's read
		<-s.done
		return s.sum, fmt.Errorf("no end: %w (%s)", ctx.Err(), s.sum.Error)
	}
	s.c.close()
	s.sum.Offer = s.c.tap.offer()
	s.sum.Frames, s.sum.Compressed = s.c.tap.counts()
	return s.sum, nil
}

// wireTap is a client's TCP connection, read along: it records the
// handshake request's permessage-deflate offer and parses the server's
// frames after the response head (unmasked, RFC 6455 §5.2), counting the
// data frames and those with RSV1 set.
type wireTap struct {
	net.Conn
	mu         sync.Mutex
	req        []byte // the request head so far, until parsed
	reqOffer   string
	reqDone    bool
	head       []byte // the response head so far
	headDone   bool
	hdr        []byte // the header of the frame being read
	skip       uint64 // payload bytes of the current frame left to skip
	frames     int
	compressed int
}

var crlf2 = []byte("\r\n\r\n")

func (w *wireTap) Write(p []byte) (int, error) {
	w.mu.Lock()
	if !w.reqDone {
		w.req = append(w.req, p...)
		if bytes.Contains(w.req, crlf2) {
			w.reqDone = true
			if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(w.req))); err == nil {
				w.reqOffer = strings.Join(req.Header.Values("Sec-WebSocket-Extensions"), ", ")
			}
			w.req = nil
		}
	}
	w.mu.Unlock()
	return w.Conn.Write(p)
}

func (w *wireTap) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.mu.Lock()
	w.scan(p[:n])
	w.mu.Unlock()
	return n, err
}

// scan parses the bytes read. Called with w.mu held.
func (w *wireTap) scan(b []byte) {
	if !w.headDone {
		w.head = append(w.head, b...)
		i := bytes.Index(w.head, crlf2)
		if i < 0 {
			return
		}
		b, w.head, w.headDone = w.head[i+len(crlf2):], nil, true
	}
	for len(b) > 0 {
		if w.skip > 0 {
			k := min(w.skip, uint64(len(b)))
			w.skip -= k
			b = b[k:]
			continue
		}
		w.hdr = append(w.hdr, b[0])
		b = b[1:]
		if len(w.hdr) < 2 {
			continue
		}
		need := 2
		switch w.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if w.hdr[1]&0x80 != 0 {
			need += 4
		}
		if len(w.hdr) < need {
			continue
		}
		n := uint64(w.hdr[1] & 0x7f)
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(w.hdr[2:]))
		case 127:
			n = binary.BigEndian.Uint64(w.hdr[2:])
		}
		if w.hdr[0]&0x0f < 0x8 { // text, binary, continuation
			w.frames++
			if w.hdr[0]&bitRSV1 != 0 {
				w.compressed++
			}
		}
		w.hdr, w.skip = w.hdr[:0], n
	}
}

func (w *wireTap) offer() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reqOffer
}

func (w *wireTap) counts() (frames, compressed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frames, w.compressed
}

// tapDialer dials TCP connections wrapped in a wireTap; it keeps the last.
type tapDialer struct {
	mu  sync.Mutex
	tap *wireTap
}

func (d *tapDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w := &wireTap{Conn: c}
	d.mu.Lock()
	d.tap = w
	d.mu.Unlock()
	return w, nil
}

// Dial is gws's Dialer.
func (d *tapDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d *tapDialer) last() *wireTap {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tap
}

// deflateReadLimit bounds a message a Go client accepts.
const deflateReadLimit = 16 << 20

func dialCoderTap(t *testing.T, ctx context.Context, url string, mode websocket.CompressionMode) *goConn {
	t.Helper()
	d := &tapDialer{}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, CompressionMode: mode})
	if err != nil {
		t.Fatalf("coder dial: %v", err)
	}
	conn.SetReadLimit(deflateReadLimit)
	return &goConn{
		tap:    d.last(),
		answer: resp.Header.Get("Sec-WebSocket-Extensions"),
		send:   func(s string) error { return conn.Write(ctx, websocket.MessageText, []byte(s)) },
		recv: func() ([]byte, error) {
			_, p, err := conn.Read(ctx)
			return p, err
		},
		close: func() { _ = conn.CloseNow() },
	}
}

func dialGorillaTap(t *testing.T, ctx context.Context, url string, compress bool) *goConn {
	t.Helper()
	d := &tapDialer{}
	dialer := gorilla.Dialer{NetDialContext: d.DialContext, EnableCompression: compress, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := dialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("gorilla dial: %v", err)
	}
	conn.SetReadLimit(deflateReadLimit)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
		_ = conn.SetWriteDeadline(dl)
	}
	var once sync.Once
	return &goConn{
		tap:    d.last(),
		answer: resp.Header.Get("Sec-WebSocket-Extensions"),
		send:   func(s string) error { return conn.WriteMessage(gorilla.TextMessage, []byte(s)) },
		recv: func() ([]byte, error) {
			_, p, err := conn.ReadMessage()
			return p, err
		},
		close: func() { once.Do(func() { _ = conn.Close() }) },
	}
}

// gwsMessages hands a gws client's messages to the session.
type gwsMessages struct {
	gws.BuiltinEventHandler
	msgs   chan []byte
	closed chan struct{}
	err    error // why the connection closed, set before closed
}

func (h *gwsMessages) OnMessage(_ *gws.Conn, m *gws.Message) {
	p := bytes.Clone(m.Bytes())
	m.Close()
	select {
	case h.msgs <- p:
	case <-h.closed:
	}
}

func (h *gwsMessages) OnClose(_ *gws.Conn, err error) {
	h.err = err
	close(h.closed)
}

func dialGWSTap(t *testing.T, url string, pd gws.PermessageDeflate) *goConn {
	t.Helper()
	d := &tapDialer{}
	h := &gwsMessages{msgs: make(chan []byte, 64), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(h, &gws.ClientOption{
		Addr:               url,
		PermessageDeflate:  pd,
		ReadMaxPayloadSize: deflateReadLimit,
		CheckUtf8Enabled:   true,
		NewDialer:          func() (gws.Dialer, error) { return d, nil },
	})
	if err != nil {
		t.Fatalf("gws dial: %v", err)
	}
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		conn.ReadLoop()
	}()
	var once sync.Once
	return &goConn{
		tap:    d.last(),
		answer: resp.Header.Get("Sec-WebSocket-Extensions"),
		send:   conn.WriteString,
		recv: func() ([]byte, error) {
			select {
			case p := <-h.msgs:
				return p, nil
			case <-h.closed:
				return nil, fmt.Errorf("gws closed: %w", h.err)
			}
		},
		close: func() {
			once.Do(func() {
				_ = conn.NetConn().Close()
				<-loopDone
			})
		},
	}
}

// scriptRun is a client script in a process of its own, talking over its
// stdin ("end") and stdout (a ready line, then the summary line).
type scriptRun struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *bytes.Buffer
	waited chan error
}

func startScript(t *testing.T, ctx context.Context, env []string, argv ...string) *scriptRun {
	t.Helper()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 2 * time.Second
	r := &scriptRun{cmd: cmd, lines: make(chan string, 16), stderr: new(bytes.Buffer), waited: make(chan error, 1)}
	cmd.Stderr = r.stderr
	var err error
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.waited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for range r.lines {
		}
		<-r.waited
	})
	return r
}

// line returns the next stdout line; ok is false at the end of the output.
func (r *scriptRun) line(ctx context.Context) (string, bool, error) {
	select {
	case l, ok := <-r.lines:
		return l, ok, nil
	case <-ctx.Done():
		return "", false, fmt.Errorf("%w; stderr: %s", ctx.Err(), r.stderr)
	}
}

// expect reads the next stdout line, which must be want.
func (r *scriptRun) expect(ctx context.Context, want string) error {
	l, ok, err := r.line(ctx)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("script ended; stderr: %s", r.stderr)
	case l != want:
		return fmt.Errorf("script said %q, want %q; stderr: %s", l, want, r.stderr)
	}
	return nil
}

func (r *scriptRun) ready(ctx context.Context) error {
	return r.expect(ctx, `{"ready":true}`)
}

func (r *scriptRun) sync(ctx context.Context, id int) error {
	if _, err := fmt.Fprintf(r.stdin, "sync %d\n", id); err != nil {
		return fmt.Errorf("write to the script: %w; stderr: %s", err, r.stderr)
	}
	return r.expect(ctx, fmt.Sprintf(`{"synced":%d}`, id))
}

func (r *scriptRun) finish(ctx context.Context) (clientSummary, error) {
	var s clientSummary
	if _, err := io.WriteString(r.stdin, "end\n"); err != nil {
		return s, fmt.Errorf("tell the script to end: %w; stderr: %s", err, r.stderr)
	}
	var last string
	for {
		l, ok, err := r.line(ctx)
		if err != nil {
			return s, err
		}
		if !ok {
			break
		}
		last = l
	}
	if err := json.Unmarshal([]byte(last), &s); err != nil {
		return s, fmt.Errorf("summary %q: %v; stderr: %s", last, err, r.stderr)
	}
	return s, nil
}

// TestDeflateTakeoverWindow reads the frames of a ContextTakeover
// connection raw. Inflated with the connection's window (RFC 7692 §7.2.2:
// the output of every compressed message before), every frame holds valid
// JSON messages. Inflated on their own, as by a client that ignored the
// answer and kept no window, some do not: the server does refer back into
// earlier messages, so TestDeflateClients's clients would have caught
// a window mishandled.
func TestDeflateTakeoverWindow(t *testing.T) {
	ts := startServer(t, Config{ContextTakeover: true}, symLevels, symOrders)
	gen := newEventGen(42)
	for range 60 {
		ts.books.apply(gen.next(symOrders, false))
	}
	ts.sync(t, symOrders)
	r := rawDial(t, ts, 0, "Sec-WebSocket-Extensions: permessage-deflate")
	if got := r.resp.Header.Get("Sec-WebSocket-Extensions"); got != takeoverAnswer {
		t.Fatalf("answer %q, want %q", got, takeoverAnswer)
	}
	var window []byte // the last 32 KiB the connection inflated
	compressed, standaloneBad, messages := 0, 0, 0
	// untilPong reads and checks frames up to the pong of a ping op.
	untilPong := func(id int) {
		t.Helper()
		r.sendText(fmt.Sprintf(`{"op":"ping","id":%d}`, id))
		for done := false; !done; {
			f, err := r.readFrame(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if f.op != opText {
				continue
			}
			p := f.payload
			if f.b0&bitRSV1 != 0 {
				compressed++
				if p, err = inflateDict(f.payload, window); err != nil {
					t.Fatalf("frame %d with the window: %v", compressed, err)
				}
				window = append(window, p...)
				window = window[max(0, len(window)-32<<10):]
				if alone, err := inflate(f.payload); err != nil || !bytes.Equal(alone, p) {
					standaloneBad++
				}
			}
			for _, line := range strings.Split(string(p), "\n") {
				var m wireMsg
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("frame %d: bad JSON %.80q: %v", compressed, line, err)
				}
				messages++
				done = done || m.Type == "pong" && string(m.ID) == fmt.Sprint(id)
			}
		}
	}
	for _, op := range deflateSubscribe {
		r.sendText(op)
	}
	untilPong(1)
	for range 200 {
		if gen.rng.IntN(2) == 0 {
			ts.books.apply(gen.next(symLevels, true))
		} else {
			ts.books.apply(gen.next(symOrders, false))
		}
	}
	ts.sync(t, symLevels, symOrders)
	untilPong(deflateEndID)
	t.Logf("%d messages, %d compressed frames, %d of which do not inflate on their own", messages, compressed, standaloneBad)
	if compressed < 100 || standaloneBad < compressed/2 {
		t.Errorf("%d compressed frames, %d need the window: want most of at least 100", compressed, standaloneBad)
	}
}
