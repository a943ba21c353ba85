package stream

import (
	"strconv"
	"unicode/utf8"

	"github.com/marketd/marketd/book"
)

// The encoders below append the server messages of protocol.md §3 to a
// byte slice. They are hand-written so that the publish path encodes a
// message without reflection or allocation: numbers go through Num.Append
// (the exact text the checksum hashes), integers through strconv.

// appendString appends s as a JSON string. Symbols and ids come from the
// outside, so everything that JSON requires is escaped; invalid UTF-8 is
// replaced by U+FFFD so that the text frame stays valid.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default: // other control characters
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendStrings appends ss as a JSON array of strings.
func appendStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

// appendNum appends n as a JSON string holding its canonical decimal text.
func appendNum(dst []byte, n book.Num) []byte {
	dst = append(dst, '"')
	dst = n.Append(dst)
	return append(dst, '"')
}

// appendNumKey appends key and the quoted decimal n.
func appendNumKey(dst []byte, key string, n book.Num) []byte {
	return appendNum(append(dst, key...), n)
}

func appendUint(dst []byte, key string, v uint64) []byte {
	dst = append(dst, key...)
	return strconv.AppendUint(dst, v, 10)
}

func appendInt(dst []byte, key string, v int64) []byte {
	dst = append(dst, key...)
	return strconv.AppendInt(dst, v, 10)
}

// appendHead appends the fields every data message starts with:
// {"type":T,"channel":C,"symbol":S — symbol already quoted.
func appendHead(dst []byte, typ string, ch channel, symbol []byte) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","channel":"`...)
	dst = append(dst, ch.String()...)
	dst = append(dst, `","symbol":`...)
	return append(dst, symbol...)
}

// appendLevels appends a JSON array of [price, size] pairs.
func appendLevels(dst []byte, levels []book.Level) []byte {
	dst = append(dst, '[')
	for i := range levels {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		dst = appendNum(dst, levels[i].Price)
		dst = append(dst, ',')
		dst = appendNum(dst, levels[i].Size)
		dst = append(dst, ']')
	}
	return append(dst, ']')
}

// appendSnapshot appends a book snapshot message. seq is the seq of the
// stream the snapshot starts (which is the group's, see group.lastSeq); id,
// when not nil, is the id of the snapshot op that asked for it.
func appendSnapshot(dst []byte, symbol []byte, id []byte, seq uint64, s *book.Snapshot) []byte {
	dst = append(dst, `{"type":"snapshot"`...)
	if id != nil {
		dst = append(dst, `,"id":`...)
		dst = append(dst, id...)
	}
	dst = append(dst, `,"channel":"book","symbol":`...)
	dst = append(dst, symbol...)
	dst = appendUint(dst, `,"seq":`, seq)
	dst = appendInt(dst, `,"ts":`, s.TS)
	dst = append(dst, `,"bids":`...)
	dst = appendLevels(dst, s.Bids)
	dst = append(dst, `,"asks":`...)
	dst = appendLevels(dst, s.Asks)
	dst = appendUint(dst, `,"checksum":`, uint64(s.Checksum))
	return append(dst, '}')
}

// appendBookBody appends the JSON object of GET /v1/book/{symbol}.
func appendBookBody(dst []byte, s *book.Snapshot) []byte {
	dst = append(dst, `{"symbol":`...)
	dst = appendString(dst, s.Symbol)
	dst = appendUint(dst, `,"seq":`, s.Seq)
	dst = appendInt(dst, `,"ts":`, s.TS)
	dst = append(dst, `,"bids":`...)
	dst = appendLevels(dst, s.Bids)
	dst = append(dst, `,"asks":`...)
	dst = appendLevels(dst, s.Asks)
	dst = appendUint(dst, `,"checksum":`, uint64(s.Checksum))
	return append(dst, '}', '\n')
}

// update is one book update of a stream, as kept in a group's ring.
// Changes holds every change of the underlying book update: only those
// tagged with the group's view belong to the message (see inView).
type update struct {
	seq, prevSeq uint64
	ts           int64
	checksum     uint32
	conflated    bool
	changes      []book.Change
}

// hasView reports whether any change belongs to view.
func hasView(changes []book.Change, view int) bool {
	for i := range changes {
		if changes[i].Views.Has(view) {
			return true
		}
	}
	return false
}

// appendSide appends the changes of one side that belong to view.
func appendSide(dst []byte, changes []book.Change, side book.Side, view int) []byte {
	dst = append(dst, '[')
	first := true
	for i := range changes {
		c := &changes[i]
		if c.Side != side || !c.Views.Has(view) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '[')
		dst = appendNum(dst, c.Price)
		dst = append(dst, ',')
		dst = appendNum(dst, c.Size)
		dst = append(dst, ']')
	}
	return append(dst, ']')
}

// appendUpdate appends a book update message of the given view.
func appendUpdate(dst []byte, symbol []byte, u *update, view int) []byte {
	dst = appendHead(dst, "update", chanBook, symbol)
	dst = appendUint(dst, `,"seq":`, u.seq)
	dst = appendUint(dst, `,"prev_seq":`, u.prevSeq)
	dst = appendInt(dst, `,"ts":`, u.ts)
	dst = append(dst, `,"bids":`...)
	dst = appendSide(dst, u.changes, book.Buy, view)
	dst = append(dst, `,"asks":`...)
	dst = appendSide(dst, u.changes, book.Sell, view)
	dst = appendUint(dst, `,"checksum":`, uint64(u.checksum))
	if u.conflated {
		dst = append(dst, `,"conflated":true`...)
	}
	return append(dst, '}')
}

// appendTrade appends a trade message.
func appendTrade(dst []byte, symbol []byte, seq, prevSeq uint64, ts int64, t *book.Trade) []byte {
	dst = appendHead(dst, "trade", chanTrades, symbol)
	dst = appendUint(dst, `,"seq":`, seq)
	dst = appendUint(dst, `,"prev_seq":`, prevSeq)
	dst = appendInt(dst, `,"ts":`, ts)
	dst = append(dst, `,"trade_id":`...)
	dst = appendString(dst, t.TradeID)
	dst = appendNumKey(dst, `,"price":`, t.Price)
	dst = appendNumKey(dst, `,"size":`, t.Size)
	dst = append(dst, `,"side":"`...)
	dst = append(dst, t.Side.String()...)
	return append(dst, '"', '}')
}

// appendTicker appends a ticker message. Best bid, best ask and last trade
// fields are left out while the book has none; the 24h statistics are "0"
// while no trade is in the window.
func appendTicker(dst []byte, symbol []byte, t *book.Ticker) []byte {
	dst = appendHead(dst, "ticker", chanTicker, symbol)
	dst = appendUint(dst, `,"seq":`, t.Seq)
	dst = appendInt(dst, `,"ts":`, t.TS)
	if t.HasBid {
		dst = appendNumKey(dst, `,"bid":`, t.Bid)
		dst = appendNumKey(dst, `,"bid_size":`, t.BidSize)
	}
	if t.HasAsk {
		dst = appendNumKey(dst, `,"ask":`, t.Ask)
		dst = appendNumKey(dst, `,"ask_size":`, t.AskSize)
	}
	if t.HasLast {
		dst = appendNumKey(dst, `,"last":`, t.Last)
		dst = appendNumKey(dst, `,"last_size":`, t.LastSize)
	}
	dst = appendNumKey(dst, `,"open_24h":`, t.Open24h)
	dst = appendNumKey(dst, `,"high_24h":`, t.High24h)
	dst = appendNumKey(dst, `,"low_24h":`, t.Low24h)
	dst = append(dst, `,"volume_24h":"`...)
	dst = append(dst, t.Volume24h.String()...)
	return append(dst, '"', '}')
}

// ackInfo is what an ack echoes of its op.
type ackInfo struct {
	op      string
	channel channel  // 0: no channel field
	symbols []string // subscribe, unsubscribe
	symbol  string   // snapshot
	resumed []resumeResult
}

// resumeResult says how a resumed subscription of a symbol started.
type resumeResult struct {
	symbol string
	exact  bool
}

// appendAck appends an ack message.
func appendAck(dst []byte, id []byte, a *ackInfo) []byte {
	dst = append(dst, `{"type":"ack"`...)
	if id != nil {
		dst = append(dst, `,"id":`...)
		dst = append(dst, id...)
	}
	dst = append(dst, `,"op":`...)
	dst = appendString(dst, a.op)
	if a.channel != 0 {
		dst = append(dst, `,"channel":"`...)
		dst = append(dst, a.channel.String()...)
		dst = append(dst, '"')
	}
	if a.symbols != nil {
		dst = append(dst, `,"symbols":`...)
		dst = appendStrings(dst, a.symbols)
	}
	if a.symbol != "" {
		dst = append(dst, `,"symbol":`...)
		dst = appendString(dst, a.symbol)
	}
	if len(a.resumed) > 0 {
		dst = append(dst, `,"resumed":{`...)
		for i, r := range a.resumed {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, r.symbol)
			if r.exact {
				dst = append(dst, `:"exact"`...)
			} else {
				dst = append(dst, `:"snapshot"`...)
			}
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendError appends an error message.
func appendError(dst []byte, id []byte, code ErrorCode, msg string) []byte {
	dst = append(dst, `{"type":"error"`...)
	if id != nil {
		dst = append(dst, `,"id":`...)
		dst = append(dst, id...)
	}
	dst = append(dst, `,"code":"`...)
	dst = append(dst, code.String()...)
	dst = append(dst, `","message":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}

// appendPong appends the answer to {"op":"ping"}; ts is Unix microseconds.
func appendPong(dst []byte, id []byte, ts int64) []byte {
	dst = append(dst, `{"type":"pong"`...)
	if id != nil {
		dst = append(dst, `,"id":`...)
		dst = append(dst, id...)
	}
	dst = appendInt(dst, `,"ts":`, ts)
	return append(dst, '}')
}

// appendNotice appends a notice that a stream of symbol is conflated.
func appendNotice(dst []byte, ch channel, symbol []byte) []byte {
	dst = append(dst, `{"type":"notice","code":"conflated","channel":"`...)
	dst = append(dst, ch.String()...)
	dst = append(dst, `","symbol":`...)
	dst = append(dst, symbol...)
	dst = append(dst, `,"message":"the client reads too slowly: changes are merged until it catches up"}`...)
	return dst
}
