package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
)

// The load generator's side of permessage-deflate (RFC 7692).
//
// gws's client inflates every message from scratch: it resets a flate
// reader with the connection's window as its dictionary (a 32 KiB copy once
// the window is full), copies the output twice, and, with server context
// takeover, slides its own 32 KiB window down by each message (another
// 32 KiB memmove). With a thousand clients on one core that cost, not the
// server, bounded the compressed runs. So the load generator's clients
// leave gws's compression off and inflate beneath it: inflateConn sits
// between gws and the socket, makes the offer itself, and hands gws every
// compressed message already inflated, as a plain frame. Each connection
// keeps one DEFLATE decoder for its whole life and feeds it the messages
// back to back, as the single stream RFC 7692 §7.2.2 describes: the window
// is the decoder's own, and per message nothing is copied but the output.
//
// What remains per message is the decoder's work proper, mostly building
// the Huffman tables of each message's dynamic block: for a book delta
// compressed on its own, the difference between no-takeover/inflateConn
// and no-takeover/inflateConn-shared (which copies an inflation instead) in
// `go test -run '^$' -bench ClientInflate ./bench/`. With server context takeover every client
// inflates every compressed message with its own decoder and window, as a
// browser does, so a server that sent a frame compressed against the
// wrong context shows as unreadable messages or prev_seq gaps. Without
// context takeover a compressed message is a DEFLATE stream of its own:
// it inflates to the same bytes whoever inflates it, so the clients of a
// run share the inflation of identical frames (inflateCache): the first
// inflates it with an empty window (a back-reference out of the message
// fails, as in a strict client), the others copy the result. Each client
// still scans and chains every message it received.

const (
	// deflateOffer is the Sec-WebSocket-Extensions offer of the load
	// generator's clients: what browsers send. It lets the server choose
	// context takeover, which the clients then follow.
	deflateOffer = "permessage-deflate; client_max_window_bits"
	// deflateWindow is the DEFLATE window the clients keep (the largest,
	// as they bound nothing with server_max_window_bits).
	deflateWindow = 1 << 15
	// maxInflated bounds one inflated message: past it the connection is
	// dropped (a decompression bomb or a corrupt stream).
	maxInflated = 16 << 20
	// maxFrameHeader is the longest WebSocket frame header a server sends
	// (no masking key).
	maxFrameHeader = 10
)

// deflateTail ends every compressed message on the wire as its sender
// removed it (RFC 7692 §7.2.1): the LEN and NLEN of an empty stored block.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

// errInflate marks the errors of a compressed message the client could not
// inflate (the load generator counts them as unreadable).
var errInflate = errors.New("inflate")

// inflater inflates the compressed messages of one connection in order,
// with one decoder kept across them. Not safe for concurrent use: its
// connection's read loop owns it.
type inflater struct {
	in bytes.Reader  // the message being inflated, tail included
	fr io.ReadCloser // the decoder, reading in; its window spans messages
	// takeover is whether the server kept its context (no
	// server_no_context_takeover in its answer): the window then matters
	// from one message to the next, and hist keeps a copy of it.
	takeover bool
	// hist is a ring of the last deflateWindow bytes of output, at
	// hist[:histLen] written up to histPos: what restart hands a fresh
	// decoder. Only with takeover.
	hist    []byte
	histPos int
	histLen int
	// restarts counts the decoders replaced (see inflate).
	restarts int
	// cache, without takeover, shares inflations among connections.
	cache *inflateCache
}

// newInflater returns the inflater of a connection with or without server
// context takeover; without, it shares inflations through cache (if not
// nil).
func newInflater(takeover bool, cache *inflateCache) *inflater {
	f := &inflater{takeover: takeover}
	if !takeover {
		f.cache = cache
	}
	f.fr = flate.NewReader(&f.in)
	if takeover {
		f.hist = make([]byte, deflateWindow)
	}
	return f
}

// inflate appends to dst the inflation of msg, one compressed message as
// it came in its frames (without the tail); msg must have room for the
// tail after len(msg), or it is copied.
//
// The decoder returns a sync-flushed message's output when it reaches the
// empty stored block at its end, and returns only once it has output or
// an error: so the message is complete when all its input has been read
// and the decoder's output was drained (a read that did not fill the
// buffer). Rarely the decoder has nothing left to flush at that block
// (its window wrapped exactly at the message's end); it then reads on
// past the message and fails for want of input, and a new decoder takes
// over with the window as its dictionary. A message that ends the stream
// (BFINAL, RFC 7692 §7.2.3.4 allows it) likewise starts a new decoder.
func (f *inflater) inflate(dst, msg []byte) ([]byte, error) {
	if !f.takeover {
		// Each message on its own: a fresh window, shared results.
		if out, ok := f.cache.get(msg); ok {
			return append(dst, out...), nil
		}
		start := len(dst)
		_ = f.fr.(flate.Resetter).Reset(&f.in, nil) // never fails
		dst, err := f.decode(dst, msg)
		if err == nil {
			f.cache.put(msg, dst[start:])
		}
		return dst, err
	}
	return f.decode(dst, msg)
}

// decode inflates msg with the decoder as it is (see inflate).
func (f *inflater) decode(dst, msg []byte) ([]byte, error) {
	f.in.Reset(append(msg, deflateTail...))
	start := len(dst)
	for {
		if cap(dst)-len(dst) < 512 {
			dst = slices.Grow(dst, max(4096, cap(dst)))
		}
		free := dst[len(dst):cap(dst)]
		n, err := f.fr.Read(free)
		dst = dst[:len(dst)+n]
		if len(dst)-start > maxInflated {
			return dst[:start], fmt.Errorf("%w: message larger than %d bytes", errInflate, maxInflated)
		}
		if err != nil {
			// Past the message's end for want of input, or at the end of a
			// final block (the tail appended after it is not read).
			if f.in.Len() == 0 && errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF && f.in.Len() <= len(deflateTail) {
				f.remember(dst[start:])
				f.restart()
				return dst, nil
			}
			return dst[:start], fmt.Errorf("%w: %v", errInflate, err)
		}
		if f.in.Len() == 0 && n < len(free) {
			f.remember(dst[start:])
			return dst, nil
		}
	}
}

// inflateCacheEntries is the number of inflations an inflateCache keeps
// in each of its two generations: far more than the distinct messages
// that are in flight at once.
const inflateCacheEntries = 1 << 14

// inflateCache holds the inflations of self-contained compressed messages
// (no context takeover), keyed by their compressed bytes, for all the
// connections of a run. Safe for concurrent use; a nil cache keeps
// nothing.
type inflateCache struct {
	mu       sync.Mutex
	cur, old map[string][]byte // inflations, never modified once stored
}

func newInflateCache() *inflateCache {
	return &inflateCache{cur: make(map[string][]byte)}
}

// get returns the inflation of msg if it is kept.
func (c *inflateCache) get(msg []byte) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if out, ok := c.cur[string(msg)]; ok {
		return out, true
	}
	out, ok := c.old[string(msg)]
	if ok {
		c.cur[string(msg)] = out
	}
	return out, ok
}

// put keeps out as the inflation of msg; the oldest generation goes when
// the newest is full.
func (c *inflateCache) put(msg, out []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) >= inflateCacheEntries {
		c.old, c.cur = c.cur, make(map[string][]byte, inflateCacheEntries)
	}
	c.cur[string(msg)] = bytes.Clone(out)
}

// restart replaces the decoder with one whose window is the last output.
func (f *inflater) restart() {
	f.restarts++
	var dict []byte
	if f.takeover && f.histLen > 0 {
		dict = make([]byte, 0, f.histLen)
		if f.histLen == len(f.hist) {
			dict = append(dict, f.hist[f.histPos:]...)
		}
		dict = append(dict, f.hist[:f.histPos]...)
	}
	_ = f.fr.(flate.Resetter).Reset(&f.in, dict) // never fails
}

// remember adds out to the copy of the window (with takeover).
func (f *inflater) remember(out []byte) {
	if !f.takeover {
		return
	}
	if len(out) >= len(f.hist) {
		copy(f.hist, out[len(out)-len(f.hist):])
		f.histPos, f.histLen = 0, len(f.hist)
		return
	}
	n := copy(f.hist[f.histPos:], out)
	copy(f.hist, out[n:])
	f.histPos = (f.histPos + len(out)) % len(f.hist)
	f.histLen = min(f.histLen+len(out), len(f.hist))
}

// inflateConn is a client connection that inflates what it reads: it
// passes the server's handshake response through, noting the
// permessage-deflate answer, then rewrites every compressed message as one
// plain frame (RSV1 clear) and passes every other frame as it came. Writes
// go to the socket unchanged. Read is called by the connection's read loop
// only.
type inflateConn struct {
	net.Conn
	br         *bufio.Reader
	handshaken bool
	// extensions is the server's Sec-WebSocket-Extensions answer, set once
	// the handshake response went through.
	extensions string
	fl         *inflater // nil unless the server accepted permessage-deflate

	out []byte // bytes for the reader, out[off:] not yet read
	off int
	// msg holds the compressed payload of the message being received
	// (its fragments joined); msgOp is its opcode, 0 when none is.
	msg   []byte
	msgOp byte
	// inflated counts the compressed messages inflated (shared by the
	// connections of a run; nil: not counted).
	inflated *atomic.Int64
	// cache is the run's inflateCache (nil: none).
	cache *inflateCache
}

// newInflateConn returns c reading through a buffer of readBuffer bytes,
// counting the compressed messages it inflates in *inflated and sharing
// inflations through cache (either may be nil).
func newInflateConn(c net.Conn, readBuffer int, inflated *atomic.Int64, cache *inflateCache) *inflateConn {
	return &inflateConn{Conn: c, br: bufio.NewReaderSize(c, readBuffer), inflated: inflated, cache: cache}
}

// Read returns the handshake response, then the frames, compressed
// messages inflated.
func (c *inflateConn) Read(p []byte) (int, error) {
	for c.off == len(c.out) {
		c.out, c.off = c.out[:0], 0
		var err error
		if c.handshaken {
			err = c.readFrame()
		} else {
			err = c.readResponse()
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, c.out[c.off:])
	c.off += n
	return n, nil
}

// readResponse passes one line of the handshake response through; at its
// end it sets up inflation as the server answered.
func (c *inflateConn) readResponse() error {
	line, err := c.br.ReadSlice('\n')
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	c.out = append(c.out, line...)
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil // the rest of a long line follows
	}
	if name, value, ok := strings.Cut(string(line), ":"); ok && strings.EqualFold(strings.TrimSpace(name), "Sec-WebSocket-Extensions") {
		c.extensions = strings.TrimSpace(value)
	}
	if len(bytes.TrimRight(line, "\r\n")) > 0 {
		return nil
	}
	c.handshaken = true
	if deflate, takeover := deflateAnswer(c.extensions); deflate {
		c.fl = newInflater(takeover, c.cache)
	}
	return nil
}

// deflateAnswer reads a server's Sec-WebSocket-Extensions answer to the
// offer: whether it accepted permessage-deflate, and whether it then keeps
// its context (no server_no_context_takeover).
func deflateAnswer(answer string) (deflate, takeover bool) {
	params := strings.Split(answer, ";")
	if strings.TrimSpace(params[0]) != "permessage-deflate" {
		return false, false
	}
	for _, p := range params[1:] {
		if strings.TrimSpace(p) == "server_no_context_takeover" {
			return true, false
		}
	}
	return true, true
}

// readFrame reads one frame and appends what the reader gets of it to out:
// the frame itself, nothing (a fragment of a compressed message), or the
// whole compressed message inflated into one frame.
func (c *inflateConn) readFrame() error {
	hdr, err := c.br.Peek(2)
	if err != nil {
		return err
	}
	b0, b1 := hdr[0], hdr[1]
	fin, rsv1, op, masked := b0&0x80 != 0, b0&0x40 != 0, b0&0x0f, b1&0x80 != 0
	hlen, size := 2, uint64(b1&0x7f)
	switch size {
	case 126:
		hlen = 4
	case 127:
		hlen = 10
	}
	if masked {
		hlen += 4
	}
	if hdr, err = c.br.Peek(hlen); err != nil {
		return err
	}
	switch size {
	case 126:
		size = uint64(binary.BigEndian.Uint16(hdr[2:4]))
	case 127:
		size = binary.BigEndian.Uint64(hdr[2:10])
	}
	if size > maxInflated {
		return fmt.Errorf("%w: frame of %d bytes", errInflate, size)
	}
	compressed := c.fl != nil && !masked && (rsv1 && (op == 1 || op == 2) || op == 0 && c.msgOp != 0)
	if !compressed {
		// As it came: control frames, plain messages, and anything gws
		// should reject (a masked frame, RSV1 without the extension).
		c.out = append(c.out, hdr...)
		_, _ = c.br.Discard(hlen)
		return c.readPayload(&c.out, int(size))
	}
	if op != 0 {
		if c.msgOp != 0 {
			return fmt.Errorf("%w: a new message inside a fragmented one", errInflate)
		}
		c.msgOp, c.msg = op, c.msg[:0]
	} else if rsv1 {
		return fmt.Errorf("%w: RSV1 on a continuation frame", errInflate)
	}
	_, _ = c.br.Discard(hlen)
	if err := c.readPayload(&c.msg, int(size)); err != nil {
		return err
	}
	if len(c.msg) > maxInflated {
		return fmt.Errorf("%w: message of more than %d bytes", errInflate, maxInflated)
	}
	if !fin {
		return nil
	}
	c.msg = slices.Grow(c.msg, len(deflateTail)) // decode appends the tail in place
	// Inflate after room for the longest header, then write the header
	// just before the payload.
	if cap(c.out) < maxFrameHeader {
		c.out = make([]byte, 0, 4096)
	}
	c.out = c.out[:maxFrameHeader]
	if c.out, err = c.fl.inflate(c.out, c.msg); err != nil {
		return err
	}
	n := len(c.out) - maxFrameHeader
	h := c.out[:maxFrameHeader]
	switch {
	case n <= 125:
		c.off = maxFrameHeader - 2
		h[c.off+1] = byte(n)
	case n <= 0xffff:
		c.off = maxFrameHeader - 4
		h[c.off+1] = 126
		binary.BigEndian.PutUint16(h[c.off+2:], uint16(n))
	default:
		c.off = 0
		h[1] = 127
		binary.BigEndian.PutUint64(h[2:], uint64(n))
	}
	h[c.off] = 0x80 | c.msgOp
	c.msgOp = 0
	if c.inflated != nil {
		c.inflated.Add(1)
	}
	return nil
}

// readPayload appends the next n bytes of the socket to *dst.
func (c *inflateConn) readPayload(dst *[]byte, n int) error {
	l := len(*dst)
	*dst = slices.Grow(*dst, n)[:l+n]
	_, err := io.ReadFull(c.br, (*dst)[l:])
	return err
}
