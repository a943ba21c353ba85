package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"slices"
)

// errNoExtensionAnswer fails an upgrade whose response (written by gws)
// has no Sec-WebSocket-Extensions header for the server's own answer.
var errNoExtensionAnswer = errors.New("handshake response without the permessage-deflate answer")

// errFrameGuard ends a connection whose client sent a frame RFC 6455 forbids
// and gws would accept (or crash on).
var errFrameGuard = errors.New("invalid frame header")

// frameGuard is the net.Conn gws reads from. It follows the frame
// boundaries of the client's byte stream and stops it at the first header
// that gws does not check:
//
//   - RSV2 or RSV3 set (gws checks them only without permessage-deflate);
//   - RSV1 set without permessage-deflate, on a control frame or on a
//     continuation frame (RFC 7692 §6.1: only a message's first frame);
//   - a 64-bit payload length with its most significant bit set, which gws
//     turns into a negative int and panics on.
//
// On such a header it has the connection closed with 1002 (after the close
// frame is written) and fails the read. It also feeds the connection's
// liveness clock, and first serves the bytes the HTTP server had read past
// the upgrade request. Owned by the reader goroutine.
//
// gws writes on it too: the 101 response, then only the close frames with
// which it ends a connection (a protocol error it found, the client's
// close echoed, the end of the client's bytes). Those go through the
// connection's writer like every other frame (see Write), so that no
// queued reply can follow them.
type frameGuard struct {
	net.Conn
	pre     []byte // bytes buffered by the HTTP server, served first
	deflate bool
	// answer replaces the Sec-WebSocket-Extensions value of gws's 101
	// response when set (negotiate.go).
	answer string
	c      *client // set before the first read

	hdr    [14]byte
	hn     int    // header bytes collected
	need   int    // header length, once the first two bytes are known
	remain uint64 // payload bytes left in the current frame
	failed bool
}

// Read reads from the client and checks the frame headers it passes on.
func (g *frameGuard) Read(p []byte) (int, error) {
	if g.failed {
		return 0, errFrameGuard
	}
	var n int
	var err error
	if len(g.pre) > 0 {
		n = copy(p, g.pre)
		g.pre = g.pre[n:]
	} else {
		n, err = g.Conn.Read(p)
	}
	if n > 0 {
		if g.c != nil {
			g.c.lastRead.Store(monoNow())
		}
		if !g.scan(p[:n]) {
			g.failed = true
			if g.c != nil {
				g.c.closeAndWait(CloseProtocolError)
			}
			return 0, errFrameGuard
		}
	}
	return n, err
}

// scan advances the frame state over b; false on a forbidden header.
func (g *frameGuard) scan(b []byte) bool {
	for len(b) > 0 {
		if g.remain > 0 {
			k := uint64(len(b))
			if k > g.remain {
				k = g.remain
			}
			g.remain -= k
			b = b[k:]
			continue
		}
		g.hdr[g.hn] = b[0]
		g.hn++
		b = b[1:]
		if g.hn == 2 {
			g.need = 2
			switch g.hdr[1] & 0x7f {
			case 126:
				g.need += 2
			case 127:
				g.need += 8
			}
			if g.hdr[1]&0x80 != 0 {
				g.need += 4 // mask key; gws rejects unmasked frames itself
			}
		}
		if g.hn < 2 || g.hn < g.need {
			continue
		}
		if !g.check() {
			return false
		}
		g.hn, g.need = 0, 0
	}
	return true
}

// check validates a complete header and sets the payload length.
func (g *frameGuard) check() bool {
	b0 := g.hdr[0]
	rsv1, rsv23, op := b0&0x40 != 0, b0&0x30 != 0, b0&0x0f
	if rsv23 {
		return false
	}
	control := op >= 0x8
	if rsv1 && (!g.deflate || control || op == 0) {
		return false
	}
	switch g.hdr[1] & 0x7f {
	case 126:
		g.remain = uint64(binary.BigEndian.Uint16(g.hdr[2:4]))
	case 127:
		g.remain = binary.BigEndian.Uint64(g.hdr[2:10])
		if g.remain>>63 != 0 {
			return false
		}
	default:
		g.remain = uint64(g.hdr[1] & 0x7f)
	}
	return true
}

// Write passes the handshake response through, with the server's own
// extension answer; after it, what gws writes
// is a close frame, which is queued on the connection's writer instead
// (after the chunk being written, replacing the rest of the queue) or
// dropped when the server is already closing. It returns once the writer
// is done with the close, so that gws's Close comes after.
func (g *frameGuard) Write(p []byte) (int, error) {
	if g.c == nil {
		if g.answer != "" {
			// The answer must replace gws's: the connection's frames follow
			// it (with context takeover, frames gws's answer would forbid).
			q, ok := replaceHeader(p, "Sec-WebSocket-Extensions", g.answer)
			if !ok {
				return 0, errNoExtensionAnswer
			}
			if _, err := g.Conn.Write(q); err != nil {
				return 0, err
			}
			return len(p), nil
		}
		return g.Conn.Write(p)
	}
	g.c.closeWithFrame(gwsCloseReason(p), slices.Clone(p))
	g.c.waitClosed()
	return len(p), nil
}

// Close closes the connection once the writer is done with the close
// under way, if any.
func (g *frameGuard) Close() error {
	if g.c != nil && g.c.isClosing() {
		g.c.waitClosed()
	}
	return g.Conn.Close()
}

// gwsCloseReason classifies a close frame written by gws by its code.
func gwsCloseReason(f []byte) CloseReason {
	if len(f) < 4 || f[0]&0x0f != opClose || f[1]&0x7f < 2 {
		return CloseByClient
	}
	if r := errorCodeReason(binary.BigEndian.Uint16(f[2:4])); r != 0 {
		return r
	}
	return CloseByClient // the client's close echoed, or the end of its bytes
}

// replaceHeader returns the HTTP response head p with the value of header
// name (matched without regard to case, at the start of a line) replaced
// by value; false when p has no such header.
func replaceHeader(p []byte, name, value string) ([]byte, bool) {
	for i := 0; i < len(p); {
		end := bytes.Index(p[i:], crlf)
		if end < 0 {
			return nil, false
		}
		line := p[i : i+end]
		if len(line) == 0 {
			return nil, false // the end of the head
		}
		if k, _, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			q := make([]byte, 0, len(p)-len(line)+len(name)+2+len(value))
			q = append(q, p[:i]...)
			q = append(q, name...)
			q = append(q, ": "...)
			q = append(q, value...)
			return append(q, p[i+end:]...), true
		}
		i += end + len(crlf)
	}
	return nil, false
}

var crlf = []byte("\r\n")
