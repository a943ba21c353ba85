// Package stream is marketd's WebSocket fan-out and HTTP read side
// (protocol.md §3 and §4).
//
// # Data flow
//
// The owners of the books (feed's ingester) call Hub.Publish with every
// applied book.Update. The hub keeps, per symbol, a topic of subscription
// groups keyed by (channel, depth, interval); for each update and each
// group the update concerns it encodes the message once (a hand-written
// append encoder, numbers through book.Num.Append so that the wire text is
// the checksum text), frames it once uncompressed and, only when a member
// negotiated permessage-deflate, once compressed on its own and, for
// members with server context takeover, once per distinct context (the
// messages those members got just before, takeover.go), and queues the
// same immutable bytes on every member. Publishing costs per group and
// context, not per client: allocations, encodes and compressions per
// publish do not grow with subscribers.
//
// # Ownership and concurrency
//
//   - Publish runs on the goroutine that owns the symbol's book and never
//     blocks on a client: it takes the topic's mutex for short, encodes and
//     enqueues.
//   - Subscribing to a book runs inside Books.Do, on that same owner, so the
//     snapshot (or the missed updates of an exact resume) and the client's
//     registration are atomic with respect to the update stream: a
//     snapshot's seq is exactly the prev_seq of the client's next update.
//     A book stream's snapshot carries the seq of the stream's last message
//     (the view is unchanged since), which can be lower than the book's.
//   - Each connection has one reader goroutine (gws's ReadLoop, started by
//     the HTTP handler, which then returns), which handles the client's ops
//     and owns its subscriptions, and one writer goroutine that exists only
//     while something is queued. Everyone else enqueues; the writer drains the
//     queue with one writev per chunk (shared frames as they are, runs of
//     per-client messages joined by '\n' in one frame) under a write
//     deadline. gws is used for the upgrade and the read path only; every
//     server frame (data, ping, pong, close) is written by the writer,
//     gws's own close frames included (frameGuard routes them), so no
//     reply ever follows a close frame. The reader stays shallow: each
//     client op runs on a short-lived goroutine while the reader waits, so
//     an idle connection keeps only a parked read's stack.
//   - frameGuard, the net.Conn gws reads from, rejects the frame headers gws
//     lets through (RSV2/RSV3 with permessage-deflate, RSV1 on control or
//     continuation frames, 64-bit lengths with the top bit set) with 1002.
//   - Interval groups (100ms, 1s) merge their changes between the ticks of
//     one hub-owned ticker per interval; the loop exists while such groups
//     do.
//   - Liveness uses one timer per connection (time.AfterFunc), no goroutine.
//   - A "replay" op (replay.go) runs on a goroutine of its own, counted in
//     the server's wait group and stopped by the connection's context or an
//     unsubscribe; it reads history through Config.Replay, queues per-client
//     messages only while the connection's queue has room, and joins the
//     live stream inside Books.Do, like a subscribe.
//   - Lock order: Hub.mu → topic.mu → replay.mu → client.mu; Hub.ivMu
//     innermost; the replay set's and the connection limiter's mutexes
//     are taken alone.
//
// # Admission
//
// Before an upgrade, /v1/ws checks (security.go) the handshake itself
// (400, or 426 with Sec-WebSocket-Version: 13: gws would answer 400 to a
// wrong version), then, when configured, the per-IP connection rate (429
// with Retry-After), the Origin allow-list (403) and the tokens (401,
// compared in constant time); each refusal is counted by reason. A token
// in the query is removed from the request; no token is logged. The
// limiter's buckets are guarded by its own mutex, taken alone.
//
// # Backpressure
//
// Each connection's queue is bounded in bytes when enqueueing. Past
// Config.QueueSoftLimit the client is conflated: its book and ticker
// streams stop getting individual messages, each stream is marked behind
// since the last message it got, and a "conflated" notice is queued. When
// the writer drains the queue under a quarter of the soft limit it catches
// each stream up: one "conflated":true update merging the stream's ring
// entries since then (the seq chain stays intact), or a fresh snapshot when
// the ring no longer reaches back; the latest ticker. Trades, acks, errors,
// snapshots and notices are never dropped. Past Config.QueueHardLimit the
// client is closed with 4008 without waiting.
//
// # Replies
//
// Every client op gets exactly one reply carrying its id: subscribe,
// unsubscribe and snapshot an ack, queued after the data the op produced
// (snapshots, the current ticker, resumed updates); ping a pong; a bad op
// an error, and the connection stays up.
package stream
