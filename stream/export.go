package stream

import (
	"fmt"

	"github.com/marketd/marketd/book"
)

// MessageEncoder encodes the streams of one symbol that a client of the
// live server would get — the book at one depth, the trades, the ticker —
// with the server's own encoders, so that the bytes are the same, seq and
// prev_seq chained the same way. Replays use it to re-stream history
// (`marketd replay -format jsonl`); with Replay set every message also
// carries "replay":true, as its last field.
//
// A MessageEncoder follows the streams as the hub does: it must be given
// every update of the symbol, in seq order, after the snapshot that starts
// the book stream. It is not safe for concurrent use.
type MessageEncoder struct {
	// Replay marks every message with "replay":true.
	Replay bool

	symbol []byte // quoted
	depth  int
	view   int
	// bookSeq is the seq of the book stream's last message: the prev_seq
	// of its next update (the hub's group.lastSeq). tradeSeq is the same
	// for the trades stream.
	bookSeq, tradeSeq uint64
}

// NewMessageEncoder returns an encoder of symbol's streams with the book
// at depth, one of the depths a subscription may ask for (book.Depths).
func NewMessageEncoder(symbol string, depth int) (*MessageEncoder, error) {
	view, ok := book.ViewIndex(depth)
	if !ok {
		return nil, fmt.Errorf("depth %d is not one of 1, 10, 25, 50, 100, 500, 1000, 0", depth)
	}
	return &MessageEncoder{symbol: appendString(nil, symbol), depth: depth, view: view}, nil
}

// AppendSnapshot appends a book snapshot of b at the encoder's depth, as a
// subscription starts with, and starts the book stream at b's seq: the
// next update's prev_seq.
func (e *MessageEncoder) AppendSnapshot(dst []byte, b *book.Book) []byte {
	s := b.Snapshot(e.depth)
	e.bookSeq = s.Seq
	start := len(dst)
	return e.mark(appendSnapshot(dst, e.symbol, nil, s.Seq, &s), start)
}

// SetTradeSeq sets the seq of the symbol's last trade before the stream
// (0 when none): the prev_seq of the next trade message.
func (e *MessageEncoder) SetTradeSeq(seq uint64) { e.tradeSeq = seq }

// AppendUpdate appends the book update that u makes at the encoder's depth
// and moves the book stream on; when u leaves that view unchanged there is
// no message, and dst is returned as it is (as the live server sends
// nothing).
func (e *MessageEncoder) AppendUpdate(dst []byte, u *book.Update) []byte {
	if !hasView(u.Changes, e.view) {
		return dst
	}
	up := update{seq: u.Seq, prevSeq: e.bookSeq, ts: u.TS, checksum: u.Checksum(e.depth), changes: u.Changes}
	e.bookSeq = u.Seq
	start := len(dst)
	return e.mark(appendUpdate(dst, e.symbol, &up, e.view), start)
}

// AppendTrade appends the trade message of u, when u is a trade, and moves
// the trades stream on; else it returns dst as it is.
func (e *MessageEncoder) AppendTrade(dst []byte, u *book.Update) []byte {
	if u.Trade == nil {
		return dst
	}
	prev := e.tradeSeq
	e.tradeSeq = u.Seq
	start := len(dst)
	return e.mark(appendTrade(dst, e.symbol, u.Seq, prev, u.TS, u.Trade), start)
}

// AppendTicker appends a ticker message: t is a book's Ticker (as a ticker
// subscription starts with) or an update's.
func (e *MessageEncoder) AppendTicker(dst []byte, t *book.Ticker) []byte {
	start := len(dst)
	return e.mark(appendTicker(dst, e.symbol, t), start)
}

// mark adds "replay":true to the message that starts at dst[start], when
// the encoder is a replay's. Every message ends with its object's '}'.
func (e *MessageEncoder) mark(dst []byte, start int) []byte {
	if !e.Replay || len(dst) == start {
		return dst
	}
	dst = dst[:len(dst)-1]
	return append(dst, `,"replay":true}`...)
}

// AppendBook appends s as the JSON body of GET /v1/book/{symbol}
// ({symbol, seq, ts, bids, asks, checksum}), newline included.
func AppendBook(dst []byte, s *book.Snapshot) []byte { return appendBookBody(dst, s) }
