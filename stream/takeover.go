package stream

import "sync/atomic"

// Server context takeover (RFC 7692 §7.1.1.1), compressed once per context.
//
// Without context takeover every compressed message is a DEFLATE stream of
// its own, so one compressed frame serves every connection; but a book
// delta then shrinks by a sixth: deflate has nothing to refer back to. With
// context takeover the client keeps its LZ77 window from one compressed
// message to the next, and a message may refer back into what the
// connection received before it. The next book delta of a stream then
// repeats most of the previous one (keys, symbol, seq and ts digits,
// prices) and shrinks to about a third. `go test -run '^$' -bench
// 'BenchmarkEncode/frame' ./stream` reports wire/plain 0.84 on its own
// (frame+deflate) and 0.31 against the two deltas before (frame+context)
// for depth-10 deltas of about 170 bytes.
//
// A connection's window differs from every other's, yet its tail is very
// often the same: every subscriber of one book stream received that
// stream's previous update just before the next one. So a shared message
// is compressed against a context — the last compressed messages the
// connection was sent, at most histDepth of them and maxDict bytes — and
// the frame is kept in the message, keyed by the context (the ids of
// those messages and the bytes used). Every connection with the same
// context writes the same bytes: the cost of a publish grows with the
// number of distinct contexts among its subscribers (one when they all
// follow the same stream, a few when they mix streams), never with the
// number of subscribers. Contexts of two messages take at most half of a
// message's maxVariants frames; past that a subscriber's context is its
// last message alone, which subscribers of different streams share more
// often; past maxVariants a message goes out compressed on its own (or
// plain when that does not pay), which is valid whatever the window holds.
// `go test -run '^$' -bench BenchmarkTakeoverMixed ./stream` (1,000
// clients each on 1-3 of 10 books) reports about 11 compressions per
// message (compressions/publish over encodes/publish) and wire/plain 0.31;
// with maxVariants 8, 0.39.
//
// Only compressed messages enter a receiver's window (RFC 7692 §7.2.2
// decompresses only messages with RSV1 set), so a message sent plain leaves
// the context as it was. A per-client message (ack, snapshot, notice) is
// joined and compressed by the writer, which the publisher cannot foresee:
// it clears the context, and the next shared message goes out on its own.
//
// The server keeps no window of its own: a connection's context is a few
// pointers to messages that are shared anyway. The receiver's window bound
// (server_max_window_bits) is kept by using a context only when it and the
// message together fit in the window (client.deflateLimit).

const (
	// histDepth is how many earlier messages a context spans.
	histDepth = 2
	// maxDict bounds a context's bytes: the references that pay are to the
	// messages just before.
	maxDict = 4 << 10
	// maxVariants bounds the contexts a message is compressed for (half
	// of them of histDepth messages).
	maxVariants = 16
)

// history is a context-takeover connection's context: the last compressed
// shared messages queued on it, newest first, with no compressed message
// between them. Guarded by the client's mu.
type history struct {
	last [histDepth]*message
	n    int
}

// add records that m was queued compressed.
func (h *history) add(m *message) {
	copy(h.last[1:], h.last[:histDepth-1])
	h.last[0] = m
	h.n = min(h.n+1, histDepth)
}

// reset forgets the context: something else entered the window.
func (h *history) reset() {
	*h = history{}
}

// variantKey names a context: the ids of the messages it ends with (id1 is
// 0 when only the newest is used) and its length in bytes.
type variantKey struct {
	id0, id1 uint64
	n        int
}

// variant is a message's frame compressed against one context.
type variant struct {
	key   variantKey
	frame []byte
}

// key returns the context of at most room bytes and at most depth
// messages that h holds, and false when it holds none.
func (h *history) key(room, depth int) (variantKey, bool) {
	if h.n == 0 || room <= 0 {
		return variantKey{}, false
	}
	room = min(room, maxDict)
	p0 := h.last[0].payload()
	if len(p0) >= room || h.n == 1 || depth == 1 {
		return variantKey{id0: h.last[0].id, n: min(len(p0), room)}, true
	}
	p1 := h.last[1].payload()
	return variantKey{id0: h.last[0].id, id1: h.last[1].id, n: min(len(p0)+len(p1), room)}, true
}

// appendDict appends the bytes of context k (a key of h) to dst.
func (h *history) appendDict(dst []byte, k variantKey) []byte {
	p0 := h.last[0].payload()
	if k.id1 == 0 {
		return append(dst, p0[len(p0)-k.n:]...)
	}
	p1 := h.last[1].payload()
	dst = append(dst, p1[len(p1)-(k.n-len(p0)):]...)
	return append(dst, p0...)
}

// contextFrame returns m's frame compressed against context k of h, built
// on first use; nil when m has maxVariants contexts already. Called under
// the same lock as message.frame; a compression is counted in n.
func (m *message) contextFrame(h *history, k variantKey, n *atomic.Uint64) []byte {
	for i := range m.variants {
		if m.variants[i].key == k {
			return m.variants[i].frame
		}
	}
	if len(m.variants) >= maxVariants || k.id1 != 0 && len(m.variants) >= maxVariants/2 {
		// Contexts of two messages take half the slots at most: the rest
		// go to contexts of the last message alone, which more
		// subscribers share when they follow different streams.
		return nil
	}
	n.Add(1)
	dict := getBuf()
	*dict = h.appendDict((*dict)[:0], k)
	f := newDeflatedFrame(m.payload(), *dict)
	putBuf(dict)
	m.variants = append(m.variants, variant{key: k, frame: f})
	return f
}

// takeoverFrame returns the frame of m for a context-takeover connection
// whose window holds limit bytes and whose context is h, and records in h
// what it chose. Called with the client's mu held and m's frames locked
// as for message.frame; compressions are counted in n.
func takeoverFrame(m *message, h *history, limit int, n *atomic.Uint64) []byte {
	p := m.payload()
	if len(p) > limit {
		return m.plain // not in the window: h stays
	}
	if k, ok := h.key(limit-len(p), histDepth); ok {
		f := m.contextFrame(h, k, n)
		if f == nil && k.id1 != 0 {
			// Too many contexts of two messages (subscribers that follow
			// different streams): the last message alone is shared by more.
			k, _ = h.key(limit-len(p), 1)
			f = m.contextFrame(h, k, n)
		}
		if f == nil {
			// Too many contexts: m on its own when that pays. Plain
			// leaves the context as it was, which stays valid.
			f = m.statelessFrame(n)
		}
		if len(f) >= len(m.plain) {
			return m.plain
		}
		h.add(m)
		return f
	}
	// No context yet: m compressed on its own starts one for the next
	// message, even when a little larger than plain.
	h.add(m)
	return m.statelessFrame(n)
}
