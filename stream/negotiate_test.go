package stream

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lxzan/gws"
	"github.com/marketd/marketd/book"
)

const canonicalAnswer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// negotiationCase is an offer (Sec-WebSocket-Extensions request lines) and
// the exact answer expected ("" declines).
type negotiationCase struct {
	name   string
	offer  []string
	answer string
}

// negotiationCases are offers (Sec-WebSocket-Extensions request lines) and
// the exact answer RFC 7692 lets the server give ("" declines).
var negotiationCases = []negotiationCase{
	{"no offer", nil, ""},
	{"plain", []string{"permessage-deflate"}, canonicalAnswer},
	{"client_max_window_bits without value", []string{"permessage-deflate; client_max_window_bits"}, canonicalAnswer},
	{"client_max_window_bits=10", []string{"permessage-deflate; client_max_window_bits=10"}, canonicalAnswer},
	{"client_max_window_bits quoted", []string{`permessage-deflate; client_max_window_bits="12"`}, canonicalAnswer},
	{"server_no_context_takeover", []string{"permessage-deflate; server_no_context_takeover"}, canonicalAnswer},
	{"client_no_context_takeover", []string{"permessage-deflate; client_no_context_takeover"}, canonicalAnswer},
	{"both no_context_takeover", []string{"permessage-deflate; server_no_context_takeover; client_no_context_takeover"}, canonicalAnswer},
	{"server_max_window_bits=15", []string{"permessage-deflate; server_max_window_bits=15"}, canonicalAnswer},
	{"server_max_window_bits=10", []string{"permessage-deflate; server_max_window_bits=10"}, canonicalAnswer + "; server_max_window_bits=10"},
	{"server_max_window_bits=8", []string{"permessage-deflate; server_max_window_bits=8; client_max_window_bits"}, canonicalAnswer + "; server_max_window_bits=8"},
	{"Chrome's offer", []string{"permessage-deflate; client_max_window_bits"}, canonicalAnswer},
	{"Firefox's offer", []string{"permessage-deflate"}, canonicalAnswer},
	{"unknown parameter", []string{"permessage-deflate; foo=bar"}, ""},
	{"server_max_window_bits without value", []string{"permessage-deflate; server_max_window_bits"}, ""},
	{"server_max_window_bits=16", []string{"permessage-deflate; server_max_window_bits=16"}, ""},
	{"server_max_window_bits=7", []string{"permessage-deflate; server_max_window_bits=7"}, ""},
	{"server_max_window_bits leading zero", []string{"permessage-deflate; server_max_window_bits=09"}, ""},
	{"client_max_window_bits=x", []string{"permessage-deflate; client_max_window_bits=x"}, ""},
	{"no_context_takeover with a value", []string{"permessage-deflate; server_no_context_takeover=1"}, ""},
	{"repeated parameter", []string{"permessage-deflate; server_no_context_takeover; server_no_context_takeover"}, ""},
	{"unclosed quote", []string{`permessage-deflate; client_max_window_bits="10`}, ""},
	{"garbage", []string{";;;,,, =;"}, ""},
	{"other extension", []string{"x-webkit-deflate-frame"}, ""},
	{"bad offer then good", []string{"permessage-deflate; foo, permessage-deflate; client_max_window_bits"}, canonicalAnswer},
	{"bad line then good line", []string{"permessage-deflate; server_max_window_bits=99", "permessage-deflate"}, canonicalAnswer},
	{"other extension first", []string{"x-foo; a=1, permessage-deflate; server_max_window_bits=12"}, canonicalAnswer + "; server_max_window_bits=12"},
}

// dialOffer connects to ts with the extension offer lines and checks that
// the answer is want.
func dialOffer(t *testing.T, ts *testServer, offer []string, want string) *rawConn {
	t.Helper()
	var header []string
	for _, o := range offer {
		header = append(header, "Sec-WebSocket-Extensions: "+o)
	}
	r := rawDial(t, ts, 0, header...)
	if got := r.resp.Header.Get("Sec-WebSocket-Extensions"); got != want {
		t.Fatalf("offer %q: answer %q, want %q", offer, got, want)
	}
	return r
}

// TestNegotiateDeflate checks the answer to each offer on a real
// handshake, and that a connection that accepted compression gets valid
// compressed frames — within the window it asked for.
func TestNegotiateDeflate(t *testing.T) {
	ts := startServer(t, Config{}, symLevels)
	// A book whose full snapshot is a few KiB, and a small one.
	for i := range 100 {
		ts.books.apply(levelEv(symLevels, uint64(i+1), book.Buy, fmt.Sprintf("%d.5", 100+i), "1.25"))
	}
	ts.sync(t, symLevels)
	for _, tc := range negotiationCases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialOffer(t, ts, tc.offer, tc.answer)
			limit := 1 << 30
			if i := strings.Index(tc.answer, "server_max_window_bits="); i >= 0 {
				var bits int
				fmt.Sscan(tc.answer[i+len("server_max_window_bits="):], &bits)
				limit = 1 << bits
			}
			compressed := 0
			// One op at a time, so that each reply is a frame of its own.
			for _, op := range []string{
				`{"op":"snapshot","id":1,"symbol":"LVL-USD","depth":0}`,
				`{"op":"snapshot","id":2,"symbol":"LVL-USD","depth":1}`,
			} {
				r.sendText(op)
				snapshots := 0
				for done := false; !done; {
					f, err := r.readFrame(5 * time.Second)
					if err != nil {
						t.Fatal(err)
					}
					p := f.payload
					if f.b0&bitRSV1 != 0 {
						if tc.answer == "" {
							t.Fatal("compressed frame without permessage-deflate")
						}
						compressed++
						if p, err = inflate(p); err != nil {
							t.Fatal(err)
						}
						if len(p) > limit {
							t.Errorf("compressed a %d-byte payload for a %d-byte window", len(p), limit)
						}
					}
					for _, line := range strings.Split(string(p), "\n") {
						switch {
						case strings.HasPrefix(line, `{"type":"snapshot"`):
							snapshots++
						case strings.HasPrefix(line, `{"type":"ack"`):
							done = true
						default:
							t.Fatalf("payload %.60q", line)
						}
					}
				}
				if snapshots != 1 {
					t.Fatalf("%d snapshots", snapshots)
				}
			}
			if tc.answer != "" && compressed == 0 {
				t.Error("nothing compressed")
			}
		})
	}
}

// TestNegotiateClients completes the handshake with the real clients in
// each of their configurations, compressed messages included.
func TestNegotiateClients(t *testing.T) {
	ts := startServer(t, Config{}, symLevels)
	for i := range 50 {
		ts.books.apply(levelEv(symLevels, uint64(i+1), book.Sell, fmt.Sprintf("%d", 200+i), "3"))
	}
	ts.sync(t, symLevels)
	check := func(t *testing.T, send func(string), next func() string) {
		t.Helper()
		send(`{"op":"snapshot","id":1,"symbol":"LVL-USD","depth":0}`)
		if m := next(); !strings.HasPrefix(m, `{"type":"snapshot","id":1`) {
			t.Fatalf("got %.80q", m)
		}
	}
	for _, mode := range []websocket.CompressionMode{websocket.CompressionDisabled, websocket.CompressionNoContextTakeover, websocket.CompressionContextTakeover} {
		t.Run(fmt.Sprintf("coder mode %d", mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, resp, err := websocket.Dial(ctx, ts.url, &websocket.DialOptions{CompressionMode: mode, CompressionThreshold: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			t.Logf("answer %q", resp.Header.Get("Sec-WebSocket-Extensions"))
			conn.SetReadLimit(1 << 20)
			check(t, func(s string) {
				if err := conn.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
					t.Fatal(err)
				}
			}, func() string {
				_, p, err := conn.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return string(p)
			})
		})
	}
	for _, pd := range []gws.PermessageDeflate{
		{},
		{Enabled: true},
		{Enabled: true, ServerContextTakeover: true, ClientContextTakeover: true},
		{Enabled: true, ServerContextTakeover: true},
		{Enabled: true, ClientContextTakeover: true, Threshold: 1},
		{Enabled: true, ServerMaxWindowBits: 10, ClientMaxWindowBits: 9},
	} {
		t.Run(fmt.Sprintf("gws %+v", pd), func(t *testing.T) {
			got := make(chan string, 4)
			h := &gwsFuncs{onMessage: func(m *gws.Message) { got <- m.Data.String(); m.Close() }}
			conn, resp, err := gws.NewClient(h, &gws.ClientOption{Addr: ts.url, PermessageDeflate: pd, ReadMaxPayloadSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("answer %q", resp.Header.Get("Sec-WebSocket-Extensions"))
			go conn.ReadLoop()
			defer conn.NetConn().Close()
			check(t, func(s string) {
				if err := conn.WriteString(s); err != nil {
					t.Fatal(err)
				}
			}, func() string {
				select {
				case m := <-got:
					return m
				case <-time.After(5 * time.Second):
					t.Fatal("no message")
				}
				return ""
			})
		})
	}
}

type gwsFuncs struct {
	gws.BuiltinEventHandler
	onMessage func(*gws.Message)
}

func (h *gwsFuncs) OnMessage(_ *gws.Conn, m *gws.Message) { h.onMessage(m) }

// TestCompressionDisabled checks that DisableCompression declines every offer.
func TestCompressionDisabled(t *testing.T) {
	ts := startServer(t, Config{DisableCompression: true}, symLevels)
	r := rawDial(t, ts, 0, "Sec-WebSocket-Extensions: permessage-deflate")
	if got := r.resp.Header.Get("Sec-WebSocket-Extensions"); got != "" {
		t.Errorf("answered %q", got)
	}
}
