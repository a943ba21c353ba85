package stream

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
)

// WebSocket framing (RFC 6455 §5.2) of what the server writes. The server
// writes every frame itself (see writer.go), so that one frame built per
// message can be shared by every connection: server frames are unmasked,
// a compressed frame sets RSV1 (RFC 7692 §6).

// Opcodes and header bits.
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA

	bitFIN  = 0x80
	bitRSV1 = 0x40
)

// frameHeaderLen returns the header length of an unmasked frame of n bytes.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// appendFrameHeader appends the header of a final, unmasked frame.
func appendFrameHeader(dst []byte, op byte, compressed bool, n int) []byte {
	b0 := bitFIN | op
	if compressed {
		b0 |= bitRSV1
	}
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	}
	dst = append(dst, b0, 127)
	return binary.BigEndian.AppendUint64(dst, uint64(n))
}

// newFrame returns a new slice holding one complete frame of payload.
func newFrame(op byte, compressed bool, payload []byte) []byte {
	f := make([]byte, 0, frameHeaderLen(len(payload))+len(payload))
	f = appendFrameHeader(f, op, compressed, len(payload))
	return append(f, payload...)
}

// closeFrame returns a close frame with a status code and a reason (cut to
// the 123 bytes a control frame leaves for it).
func closeFrame(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 0, 2+len(reason))
	p = binary.BigEndian.AppendUint16(p, code)
	p = append(p, reason...)
	return newFrame(opClose, false, p)
}

// appendWriter is an io.Writer that appends to a byte slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// appendDeflate appends the permessage-deflate payload of p (RFC 7692
// §7.2.1): the DEFLATE stream of p alone (no context takeover), ending
// with an empty stored block whose 00 00 ff ff tail is removed. With a
// dict, the stream may refer back into it as if it had just been
// decompressed: valid only for a receiver whose window ends with dict
// (context takeover, takeover.go). It uses klauspost's stateless
// encoder: no state to pool or reset, a dict per call, and on the small
// JSON messages of a market feed it compresses where a flate.Writer at
// BestSpeed does not, at a cost: `go test -run '^$' -bench
// 'BenchmarkEncode/frame\+(deflate|bestspeed)' ./stream` reports wire/plain
// 0.84 against 1.05 (whose block header outweighs the gain) for a 165-byte
// depth-10 delta, and about 3 µs against 0.2 µs per message.
func appendDeflate(dst, p, dict []byte) []byte {
	aw := appendWriter{b: dst}
	if err := flate.StatelessDeflate(&aw, p, false, dict); err != nil {
		return dst // cannot happen: an appendWriter never fails
	}
	out := aw.b
	if n := len(out); n-len(dst) >= 4 && out[n-4] == 0 && out[n-3] == 0 && out[n-2] == 0xff && out[n-1] == 0xff {
		out = out[:n-4]
	}
	return out
}

// message is one encoded server message shared by every subscriber of a
// group: its frames are built once and never modified afterwards, so any
// number of connection writers may write them concurrently.
type message struct {
	// plain is the complete uncompressed text frame; its payload starts at hdr.
	plain []byte
	hdr   int
	// id names the message in the context variants of later messages
	// (takeover.go); unique in the process.
	id uint64
	// deflated is the complete frame compressed on its own (no context
	// takeover), built on first use; it may be larger than plain.
	deflated []byte
	// variants are the frames compressed against what a context-takeover
	// connection received just before (takeover.go), one per distinct
	// context, built on first use.
	variants []variant
	// born is when the message was published (monoNow), for the
	// publish-to-write latency.
	born int64
}

// messageIDs numbers messages.
var messageIDs atomic.Uint64

// newMessage frames payload (copied) into a new message.
func newMessage(payload []byte, born int64) *message {
	f := newFrame(opText, false, payload)
	return &message{plain: f, hdr: len(f) - len(payload), id: messageIDs.Add(1), born: born}
}

// payload returns the JSON text of m.
func (m *message) payload() []byte { return m.plain[m.hdr:] }

// The frame methods build frames lazily. They are called only with the
// lock of the topic that owns m held (or by the only goroutine that knows
// m), which orders every build before every writer that reads it.

// frame returns the frame of m for a connection without context takeover
// whose deflateLimit is limit (see client.deflateLimit: 0 without
// permessage-deflate): compressed when m is at least threshold bytes, fits
// the connection's window and shrinks, else plain.
// Compressions are counted in n.
func (m *message) frame(limit, threshold int, n *atomic.Uint64) []byte {
	p := m.payload()
	if limit == 0 || len(p) > limit || len(p) < threshold {
		return m.plain
	}
	if f := m.statelessFrame(n); len(f) < len(m.plain) {
		return f
	}
	return m.plain
}

// statelessFrame returns m's frame compressed on its own, without
// references to earlier messages: valid on every permessage-deflate
// connection whose window holds m. A compression is counted in n.
func (m *message) statelessFrame(n *atomic.Uint64) []byte {
	if m.deflated == nil {
		n.Add(1)
		m.deflated = newDeflatedFrame(m.payload(), nil)
	}
	return m.deflated
}

// newDeflatedFrame returns a new compressed text frame of p, which may
// refer back into dict (see appendDeflate).
func newDeflatedFrame(p, dict []byte) []byte {
	buf := getBuf()
	z := appendDeflate((*buf)[:0], p, dict)
	f := newFrame(opText, true, z)
	*buf = z
	putBuf(buf)
	return f
}

// bufPool holds scratch buffers for encoding and compressing.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 4096)
	return &b
}}

// maxPooledBuf bounds the buffers kept in bufPool, so that one huge
// snapshot does not pin its buffer forever.
const maxPooledBuf = 256 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
