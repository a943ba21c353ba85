package stream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"
)

// rawConn is a hand-driven WebSocket client on a plain TCP connection, for
// frames no library would send and for a client that stops reading.
type rawConn struct {
	t    testing.TB
	nc   *net.TCPConn
	br   *bufio.Reader
	resp *http.Response
	// pending holds the messages of a frame not yet handed out.
	pending []wireMsg
	// window is the end of what was decompressed, for a connection with
	// server context takeover (nil without).
	window    []byte
	windowMax int // its size: 2^server_max_window_bits
	// wireText and plainText count the payload bytes of text frames as
	// received and after decompression.
	wireText, plainText int
}

// rawDial connects and upgrades with extra request header lines
// ("Name: value"). readBuf, if not 0, shrinks the socket's receive buffer
// first, so that a client that does not read stalls the server at once.
func rawDial(t testing.TB, ts *testServer, readBuf int, header ...string) *rawConn {
	t.Helper()
	r, err := dialRaw(t, ts.http.Listener.Addr().String(), readBuf, -1, header...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.nc.Close() })
	return r
}

// dialRaw connects (with rawDial's readBuf) and sends the first n bytes of
// a valid upgrade request with extra header lines (all of it when n < 0);
// with the whole request it reads and checks the 101. It reports errors
// instead of failing, for use off the test goroutine.
func dialRaw(t testing.TB, addr string, readBuf, n int, header ...string) (*rawConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	tc := nc.(*net.TCPConn)
	fail := func(format string, args ...any) (*rawConn, error) {
		tc.Close()
		return nil, fmt.Errorf(format, args...)
	}
	if readBuf > 0 {
		if err := tc.SetReadBuffer(readBuf); err != nil {
			return fail("read buffer: %w", err)
		}
	}
	r := &rawConn{t: t, nc: tc, br: bufio.NewReader(tc)}
	req := fmt.Sprintf("GET /v1/ws HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", addr, strings.Join(append(slices.Clone(goodHandshake), header...), "\r\n"))
	if n >= 0 && n < len(req) {
		_, err := io.WriteString(tc, req[:n])
		return r, err
	}
	if _, err := io.WriteString(tc, req); err != nil {
		return fail("handshake: %w", err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r.resp, err = http.ReadResponse(r.br, nil); err != nil {
		return fail("handshake: %w", err)
	}
	if r.resp.StatusCode != http.StatusSwitchingProtocols {
		return fail("handshake: status %s", r.resp.Status)
	}
	if got := r.resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		return fail("handshake: Sec-WebSocket-Accept %q", got)
	}
	_ = tc.SetReadDeadline(time.Time{})
	if ext := r.resp.Header.Get("Sec-WebSocket-Extensions"); strings.HasPrefix(ext, extPermessageDeflate) && !strings.Contains(ext, "server_no_context_takeover") {
		r.window, r.windowMax = []byte{}, 1<<maxWindowBits
		if _, bits, ok := strings.Cut(ext, "server_max_window_bits="); ok {
			n, err := strconv.Atoi(bits)
			if err != nil {
				return fail("handshake: answer %q", ext)
			}
			r.windowMax = 1 << n
		}
	}
	return r, nil
}

// writeFrame writes one frame: b0 is FIN/RSV/opcode; masked as a client must
// be unless told otherwise; length is the declared payload length (-1: the
// payload's).
func (r *rawConn) writeFrame(b0 byte, payload []byte, masked bool, length int) {
	r.t.Helper()
	if length < 0 {
		length = len(payload)
	}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	h := []byte{b0}
	switch {
	case length < 126:
		h = append(h, mbit|byte(length))
	case length <= 0xffff:
		h = append(h, mbit|126, byte(length>>8), byte(length))
	default:
		h = append(h, mbit|127)
		h = binary.BigEndian.AppendUint64(h, uint64(length))
	}
	p := bytes.Clone(payload)
	if masked {
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		h = append(h, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	if _, err := r.nc.Write(append(h, p...)); err != nil {
		r.t.Logf("write frame: %v", err) // the server may have closed already
	}
}

// writeRawHeader writes a frame header with a 64-bit length as given.
func (r *rawConn) writeRawHeader(b0 byte, length uint64) {
	h := []byte{b0, 0x80 | 127}
	h = binary.BigEndian.AppendUint64(h, length)
	h = append(h, 1, 2, 3, 4)
	_, _ = r.nc.Write(h)
}

func (r *rawConn) sendText(s string) { r.writeFrame(0x81, []byte(s), true, -1) }

// frame is a frame read from the server.
type frame struct {
	b0      byte
	op      byte
	payload []byte
}

// readFrame reads one frame; server frames must be unmasked.
func (r *rawConn) readFrame(timeout time.Duration) (frame, error) {
	_ = r.nc.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return frame{}, err
	}
	if h[1]&0x80 != 0 {
		return frame{}, fmt.Errorf("masked server frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return frame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return frame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return frame{}, err
	}
	return frame{b0: h[0], op: h[0] & 0x0f, payload: p}, nil
}

// inflate decompresses a permessage-deflate payload.
func inflate(p []byte) ([]byte, error) { return inflateDict(p, nil) }

// inflateDict decompresses a permessage-deflate payload that may refer
// back into dict, the window of a context-takeover connection.
func inflateDict(p, dict []byte) ([]byte, error) {
	fr := flate.NewReaderDict(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff})), dict)
	defer fr.Close()
	var out bytes.Buffer
	_, err := io.Copy(&out, fr)
	if err == io.ErrUnexpectedEOF {
		err = nil // the stream ends with the sync block, not with a final block
	}
	return out.Bytes(), err
}

// readMessages reads frames until a close frame (returning its code), the
// timeout between frames, or each returning false (code 0, nil error);
// data messages are decoded, pings answered.
func (r *rawConn) readMessages(timeout time.Duration, each func(wireMsg) bool) (closeCode int, err error) {
	for len(r.pending) > 0 {
		m := r.pending[0]
		r.pending = r.pending[1:]
		if !each(m) {
			return 0, nil
		}
	}
	for {
		f, err := r.readFrame(timeout)
		if err != nil {
			return 0, err
		}
		if f.b0&0x30 != 0 {
			return 0, fmt.Errorf("RSV2/RSV3 set in a server frame")
		}
		switch f.op {
		case opClose:
			if len(f.payload) < 2 {
				return 0, fmt.Errorf("close frame without code")
			}
			return int(binary.BigEndian.Uint16(f.payload)), nil
		case opPing:
			r.writeFrame(0x80|opPong, f.payload, true, -1)
			continue
		case opPong:
			continue
		case opText:
		default:
			return 0, fmt.Errorf("unexpected opcode %#x", f.op)
		}
		if f.b0&0x80 == 0 {
			return 0, fmt.Errorf("fragmented server message")
		}
		p := f.payload
		if f.b0&0x40 != 0 {
			if p, err = inflateDict(p, r.window); err != nil {
				return 0, fmt.Errorf("inflate: %w", err)
			}
			if r.window != nil && r.windowMax < 1<<maxWindowBits {
				// Strictly within the window the client allowed: no
				// reference reaches further back than windowMax bytes
				// from the end of the message.
				keep := max(0, min(len(r.window), r.windowMax-len(p)))
				if q, err := inflateDict(f.payload, r.window[len(r.window)-keep:]); err != nil || !bytes.Equal(q, p) {
					return 0, fmt.Errorf("a %d-byte message refers back beyond the %d-byte window", len(p), r.windowMax)
				}
			}
			if r.window != nil {
				r.window = append(r.window, p...)
				if n := len(r.window); n > r.windowMax {
					r.window = append(r.window[:0], r.window[n-r.windowMax:]...)
				}
			}
		}
		r.wireText += len(f.payload)
		r.plainText += len(p)
		for _, line := range strings.Split(string(p), "\n") {
			var m wireMsg
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				return 0, fmt.Errorf("bad JSON %q: %w", line, err)
			}
			m.raw = line
			r.pending = append(r.pending, m)
		}
		for len(r.pending) > 0 {
			m := r.pending[0]
			r.pending = r.pending[1:]
			if !each(m) {
				return 0, nil
			}
		}
	}
}

// expectClose reads until the close frame and checks its code.
func (r *rawConn) expectClose(code int) {
	r.t.Helper()
	got, err := r.readMessages(5*time.Second, func(wireMsg) bool { return true })
	if err != nil || got != code {
		r.t.Fatalf("got close code %d (err %v), want %d", got, err, code)
	}
}
