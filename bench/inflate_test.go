package bench

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/lxzan/gws"
)

// bookDeltas returns n book updates of one stream as marketd encodes them.
func bookDeltas(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, n)
	seq, ts := int64(1_000_000), int64(1_763_900_000_001_000)
	for i := range out {
		ts += int64(rng.IntN(3000))
		price := fmt.Sprintf("%d.%02d", 100+rng.IntN(3), rng.IntN(100))
		size := fmt.Sprintf("%d.%d", rng.IntN(50), rng.IntN(10))
		side := `"bids":[["` + price + `","` + size + `"]],"asks":[]`
		if rng.IntN(2) == 0 {
			side = `"bids":[],"asks":[["` + price + `","` + size + `"]]`
		}
		out[i] = fmt.Appendf(nil, `{"type":"update","channel":"book","symbol":"SYM00","seq":%d,"prev_seq":%d,"ts":%d,%s,"checksum":%d}`,
			seq+1, seq, ts, side, rng.Uint32())
		seq++
	}
	return out
}

// deflateMessages compresses msgs as a server sends them (each ending with
// a sync flush whose 00 00 ff ff is removed): "takeover" with one
// flate.Writer kept across them (a server keeping its context),
// "stateless" each on its own (marketd without takeover), "previous" each
// against the message before it (marketd's takeover, stream/takeover.go).
func deflateMessages(t testing.TB, mode string, msgs [][]byte) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, 5)
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		buf.Reset()
		switch mode {
		case "takeover":
			_, _ = fw.Write(m)
			if err := fw.Flush(); err != nil {
				t.Fatal(err)
			}
		case "stateless", "previous":
			var dict []byte
			if mode == "previous" && i > 0 {
				dict = msgs[i-1]
			}
			if err := flate.StatelessDeflate(&buf, m, false, dict); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("mode %q", mode)
		}
		z := buf.Bytes()
		if !bytes.HasSuffix(z, deflateTail) {
			t.Fatalf("message %d does not end with a sync flush", i)
		}
		out[i] = bytes.Clone(z[:len(z)-4])
	}
	return out
}

func TestInflater(t *testing.T) {
	deltas := bookDeltas(300)
	// 4 KiB messages: eight of them end exactly where the decoder's
	// window wraps, the case in which it must be restarted.
	rng := rand.New(rand.NewPCG(3, 4))
	var big [][]byte
	for range 20 {
		m := make([]byte, 4096)
		for j := range m {
			m[j] = "abcdefgh{}:,\""[rng.IntN(13)]
		}
		big = append(big, m)
	}
	for _, tt := range []struct {
		mode     string
		msgs     [][]byte
		takeover bool
		restarts bool
	}{
		{"takeover", deltas, true, false},
		{"stateless", deltas, false, false},
		{"previous", deltas, true, false},
		{"takeover", big, true, true},
		{"stateless", big, false, true},
	} {
		t.Run(fmt.Sprintf("%s/%d", tt.mode, len(tt.msgs[0])), func(t *testing.T) {
			z := deflateMessages(t, tt.mode, tt.msgs)
			f := newInflater(tt.takeover, nil)
			var out []byte
			for i, m := range z {
				var err error
				out, err = f.inflate(out[:0], m)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(out, tt.msgs[i]) {
					t.Fatalf("message %d: got %q, want %q", i, out, tt.msgs[i])
				}
			}
			if tt.restarts != (f.restarts > 0) {
				t.Errorf("%d decoder restarts", f.restarts)
			}
		})
	}
}

// TestInflateCache: connections without context takeover share
// inflations, and inflate strictly: a message that refers back into an
// earlier one fails.
func TestInflateCache(t *testing.T) {
	msgs := bookDeltas(50)
	cache := newInflateCache()
	a, b := newInflater(false, cache), newInflater(false, cache)
	for i, m := range deflateMessages(t, "stateless", msgs) {
		for _, f := range []*inflater{a, b} {
			out, err := f.inflate([]byte("x"), m)
			if err != nil || string(out) != "x"+string(msgs[i]) {
				t.Fatalf("message %d: %q, %v", i, out, err)
			}
		}
	}
	if len(cache.cur) != len(msgs) {
		t.Errorf("%d inflations kept, want %d", len(cache.cur), len(msgs))
	}
	z := deflateMessages(t, "previous", msgs[:2])
	if _, err := newInflater(false, cache).inflate(nil, z[1]); err == nil {
		t.Error("a message referring to the one before inflated without context takeover")
	}
	// Generations: the oldest goes, a kept one survives a turn.
	cache = newInflateCache()
	for i := range inflateCacheEntries + 1 {
		cache.put([]byte(strconv.Itoa(i)), []byte{1})
	}
	if _, ok := cache.get([]byte("0")); !ok || len(cache.cur) != 2 {
		t.Errorf("after a turn: %d entries in the newest generation", len(cache.cur))
	}
}

// TestInflaterFinal: a message that ends the DEFLATE stream (BFINAL) and,
// with takeover, a next message that refers back into it.
func TestInflaterFinal(t *testing.T) {
	msgs := bookDeltas(3)
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, 5)
	_, _ = fw.Write(msgs[0])
	_ = fw.Close()
	first := bytes.Clone(buf.Bytes()) // no sync flush: the final block ends it
	buf.Reset()
	fw, _ = flate.NewWriterDict(&buf, 5, msgs[0])
	_, _ = fw.Write(msgs[1])
	_ = fw.Flush()
	second := bytes.Clone(bytes.TrimSuffix(buf.Bytes(), deflateTail))

	f := newInflater(true, nil)
	for i, m := range [][]byte{first, second} {
		out, err := f.inflate(nil, m)
		if err != nil || !bytes.Equal(out, msgs[i]) {
			t.Fatalf("message %d: %q, %v", i, out, err)
		}
	}
	if _, err := f.inflate(nil, []byte{0xff, 0xff, 0xff}); err == nil {
		t.Error("corrupt message inflated")
	}
}

// scriptedServer answers a WebSocket handshake on c with the given
// Sec-WebSocket-Extensions, reads one frame of clientFrame bytes if
// clientFrame > 0, then writes frames; it returns that client frame once
// the client closed.
func scriptedServer(t testing.TB, c net.Conn, extensions string, clientFrame int, frames []byte) <-chan []byte {
	done := make(chan []byte, 1)
	go func() {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Errorf("read handshake: %v", err)
			done <- nil
			return
		}
		if got := req.Header.Get("Sec-WebSocket-Extensions"); got != deflateOffer {
			t.Errorf("offer %q, want %q", got, deflateOffer)
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			base64.StdEncoding.EncodeToString(h[:]) + "\r\n"
		if extensions != "" {
			resp += "Sec-WebSocket-Extensions: " + extensions + "\r\n"
		}
		if _, err := io.WriteString(c, resp+"\r\n"); err != nil {
			t.Errorf("write handshake: %v", err)
		}
		first := make([]byte, clientFrame)
		if _, err := io.ReadFull(br, first); err != nil {
			t.Errorf("read the client's frame: %v", err)
		}
		if _, err := c.Write(frames); err != nil {
			t.Errorf("write frames: %v", err)
		}
		_, _ = io.Copy(io.Discard, br)
		done <- first
	}()
	return done
}

// frame returns a server frame: fin, rsv1, opcode and payload.
func frame(fin, rsv1 bool, op byte, p []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	if rsv1 {
		b0 |= 0x40
	}
	h := []byte{b0, 0}
	switch {
	case len(p) <= 125:
		h[1] = byte(len(p))
	case len(p) <= 0xffff:
		h[1] = 126
		h = binary.BigEndian.AppendUint16(h, uint16(len(p)))
	default:
		h[1] = 127
		h = binary.BigEndian.AppendUint64(h, uint64(len(p)))
	}
	return append(h, p...)
}

// recorder is a gws handler that keeps the messages and pings it gets.
type recorder struct {
	mu    sync.Mutex
	msgs  []string
	pings int
	err   error
	done  chan struct{}
}

func (r *recorder) OnOpen(*gws.Conn) {}
func (r *recorder) OnClose(_ *gws.Conn, err error) {
	r.err = err
	close(r.done)
}
func (r *recorder) OnPing(*gws.Conn, []byte) { r.pings++ }
func (r *recorder) OnPong(*gws.Conn, []byte) {}
func (r *recorder) OnMessage(_ *gws.Conn, m *gws.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m.Data.String())
	r.mu.Unlock()
	_ = m.Close()
}

// TestInflateConn runs a gws client over inflateConn against a scripted
// server: compressed messages with takeover, fragmented with a ping
// between the fragments, a plain message among them, lengths of every
// header size, and a client message that must go out as written.
func TestInflateConn(t *testing.T) {
	large := bytes.Repeat([]byte(`{"type":"snapshot","bids":[["1.5","2"]]}`), 2000) // > 64 KiB inflated
	msgs := append(bookDeltas(5), large, []byte(strings.Repeat("x", 300)))
	z := deflateMessages(t, "takeover", msgs)
	var frames []byte
	for i, m := range z[:4] {
		if i == 2 {
			// Fragmented in three, a ping between the first two.
			frames = append(frames, frame(false, true, 1, m[:3])...)
			frames = append(frames, frame(true, false, 9, []byte("hi"))...)
			frames = append(frames, frame(false, false, 0, m[3:7])...)
			frames = append(frames, frame(true, false, 0, m[7:])...)
			continue
		}
		frames = append(frames, frame(true, true, 1, m)...)
	}
	frames = append(frames, frame(true, false, 1, []byte("plain"))...) // not in the window
	for _, m := range z[4:] {
		frames = append(frames, frame(true, true, 1, m)...)
	}
	frames = append(frames, frame(true, false, 8, []byte{0x03, 0xe8})...)

	cc, sc := net.Pipe()
	const answer = "permessage-deflate; client_no_context_takeover"
	const sub = `{"op":"subscribe"}`
	sent := scriptedServer(t, sc, answer, 2+4+len(sub), frames)
	ic := newInflateConn(cc, 512, nil, nil)
	rec := &recorder{done: make(chan struct{})}
	opt := &gws.ClientOption{Addr: "ws://example/v1/ws", HandshakeTimeout: 5 * time.Second,
		RequestHeader: http.Header{"Sec-Websocket-Extensions": {deflateOffer}}}
	conn, _, err := gws.NewClientFromConn(rec, opt, ic)
	if err != nil {
		t.Fatal(err)
	}
	if ic.extensions != answer || ic.fl == nil || !ic.fl.takeover {
		t.Fatalf("negotiated %q (inflater %v)", ic.extensions, ic.fl)
	}
	if err := conn.WriteMessage(gws.OpcodeText, []byte(sub)); err != nil {
		t.Fatal(err)
	}
	go conn.ReadLoop()
	select {
	case <-rec.done:
	case <-time.After(10 * time.Second):
		t.Fatal("read loop did not end")
	}
	want := []string{string(msgs[0]), string(msgs[1]), string(msgs[2]), string(msgs[3]), "plain", string(msgs[4]), string(large), string(msgs[6])}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) != len(want) {
		t.Fatalf("%d messages, want %d (close: %v)", len(rec.msgs), len(want), rec.err)
	}
	for i := range want {
		if rec.msgs[i] != want[i] {
			t.Errorf("message %d: got %.80q, want %.80q", i, rec.msgs[i], want[i])
		}
	}
	if rec.pings != 1 {
		t.Errorf("%d pings", rec.pings)
	}
	// The client's message went out plain (gws compresses nothing).
	if b := <-sent; len(b) != 2+4+len(sub) || b[0] != 0x81 || b[1] != 0x80|byte(len(sub)) {
		t.Errorf("client frame %x", b)
	} else {
		for i := range sub {
			b[6+i] ^= b[2+i%4]
		}
		if string(b[6:]) != sub {
			t.Errorf("client sent %q", b[6:])
		}
	}
}

func TestDeflateAnswer(t *testing.T) {
	for _, tt := range []struct {
		answer            string
		deflate, takeover bool
	}{
		{"", false, false},
		{"x-webkit-deflate-frame", false, false},
		{"permessage-deflate", true, true},
		{"permessage-deflate; client_no_context_takeover", true, true},
		{"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true, false},
		{"permessage-deflate;server_no_context_takeover", true, false},
	} {
		if d, tk := deflateAnswer(tt.answer); d != tt.deflate || tk != tt.takeover {
			t.Errorf("deflateAnswer(%q) = %v, %v; want %v, %v", tt.answer, d, tk, tt.deflate, tt.takeover)
		}
	}
}

// TestInflateConnErrors: a corrupt compressed message ends the connection
// with errInflate; without the extension, frames go through untouched.
func TestInflateConnErrors(t *testing.T) {
	for _, tt := range []struct {
		name, ext string
		frames    []byte
		want      error
	}{
		{"corrupt", "permessage-deflate", frame(true, true, 1, []byte{0xff, 0xff, 0xff, 0xff}), errInflate},
		{"rsv1 on continuation", "permessage-deflate", append(frame(false, true, 1, []byte{0x02}), frame(true, true, 0, []byte{0})...), errInflate},
		{"no extension", "", frame(true, true, 1, []byte{0x4a, 0x04, 0}), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cc, sc := net.Pipe()
			scriptedServer(t, sc, tt.ext, 0, tt.frames)
			ic := newInflateConn(cc, 512, nil, nil)
			rec := &recorder{done: make(chan struct{})}
			conn, _, err := gws.NewClientFromConn(rec, &gws.ClientOption{Addr: "ws://example/v1/ws",
				RequestHeader: http.Header{"Sec-Websocket-Extensions": {deflateOffer}}}, ic)
			if err != nil {
				t.Fatal(err)
			}
			go conn.ReadLoop()
			<-rec.done
			if tt.want != nil && !errors.Is(rec.err, tt.want) {
				t.Errorf("close error %v, want %v", rec.err, tt.want)
			}
			if tt.want == nil && (ic.fl != nil || errors.Is(rec.err, errInflate) || len(rec.msgs) > 0) {
				t.Errorf("without the extension: inflater %v, close error %v, messages %q", ic.fl, rec.err, rec.msgs)
			}
		})
	}
}

// BenchmarkClientInflate measures a load-generator client reading
// compressed book deltas (1,000 per connection, over net.Pipe): gws's own
// inflation against inflateConn's, alone and sharing inflations with the
// connections before it (as the clients of a run do without takeover),
// for frames without context takeover (each compressed on its own) and
// with it (each against the one before, as marketd does). The figure is
// ns per message: the load generator's cost of a compressed delivery,
// framing, inflation, scan and seq check.
func BenchmarkClientInflate(b *testing.B) {
	const perConn = 1000
	deltas := bookDeltas(perConn)
	for _, mode := range []struct{ name, deflate, answer string }{
		{"no-takeover", "stateless", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"takeover", "previous", "permessage-deflate; client_no_context_takeover"},
	} {
		var frames []byte
		for _, m := range deflateMessages(b, mode.deflate, deltas) {
			frames = append(frames, frame(true, true, 1, m)...)
		}
		frames = append(frames, frame(true, false, 8, []byte{0x03, 0xe8})...)
		for _, client := range []string{"gws", "inflateConn", "inflateConn-shared"} {
			b.Run(mode.name+"/"+client, func(b *testing.B) {
				b.ReportAllocs()
				c := newCounters()
				var cache *inflateCache
				if client == "inflateConn-shared" {
					cache = newInflateCache() // every connection gets the same frames
				}
				for b.Loop() {
					cc, sc := net.Pipe()
					sent := scriptedServer(b, sc, mode.answer, 0, frames)
					opt := &gws.ClientOption{Addr: "ws://example/v1/ws", ReadBufferSize: clientReadBuffer}
					var conn net.Conn = cc
					if client == "gws" {
						opt.PermessageDeflate = gws.PermessageDeflate{Enabled: true, ServerContextTakeover: true, ClientContextTakeover: true}
					} else {
						conn = newInflateConn(cc, clientReadBuffer, nil, cache)
						opt.RequestHeader = http.Header{"Sec-Websocket-Extensions": {deflateOffer}}
					}
					lc := newLoadClient(c, 0)
					ws, _, err := gws.NewClientFromConn(lc, opt, conn)
					if err != nil {
						b.Fatal(err)
					}
					lc.conn = ws
					ws.ReadLoop()
					_ = cc.Close()
					<-sent
				}
				if got := c.deliveries.Load(); got != int64(b.N*perConn) || c.gaps.Load() != 0 || c.bad.Load() != 0 {
					b.Fatalf("%d deliveries of %d, %d gaps, %d unreadable", got, b.N*perConn, c.gaps.Load(), c.bad.Load())
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perConn), "ns/msg")
				b.ReportMetric(float64(len(frames))/perConn, "wire-B/msg")
			})
		}
	}
}
