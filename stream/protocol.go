package stream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/marketd/marketd/book"
)

// channel is a subscription channel of protocol.md §3.
type channel uint8

const (
	chanBook channel = iota + 1
	chanTicker
	chanTrades
	numChannels = iota + 1 // index bound for arrays indexed by channel
)

var channelNames = [...]string{chanBook: "book", chanTicker: "ticker", chanTrades: "trades"}

// String returns the wire name of ch.
func (ch channel) String() string {
	if int(ch) < len(channelNames) && channelNames[ch] != "" {
		return channelNames[ch]
	}
	return "invalid"
}

func parseChannel(s string) (channel, bool) {
	for ch, name := range channelNames {
		if name != "" && name == s {
			return channel(ch), true
		}
	}
	return 0, false
}

// interval is the merge interval of a book subscription.
type interval uint8

const (
	ivRaw interval = iota // every change
	iv100ms
	iv1s
	numIntervals = iota
)

var intervalNames = [...]string{ivRaw: "raw", iv100ms: "100ms", iv1s: "1s"}

// intervalPeriods holds the flush period of each merged interval.
var intervalPeriods = [...]time.Duration{iv100ms: 100 * time.Millisecond, iv1s: time.Second}

// String returns the wire name of iv.
func (iv interval) String() string { return intervalNames[iv] }

func parseInterval(s string) (interval, bool) {
	if s == "" {
		return ivRaw, true
	}
	for iv, name := range intervalNames {
		if name == s {
			return interval(iv), true
		}
	}
	return 0, false
}

// DefaultDepth is the book depth of a subscription or snapshot that names none.
const DefaultDepth = 50

// wildcard is the symbol that stands for every symbol (ticker and trades).
const wildcard = "*"

// ErrorCode is the code of an error message sent to a client (protocol.md §3).
type ErrorCode uint8

// Error codes, as sent in the "code" field of an error message.
const (
	// CodeBadRequest: malformed JSON, a missing or invalid field.
	CodeBadRequest ErrorCode = iota + 1
	// CodeUnknownOp: the op is none of subscribe, unsubscribe, snapshot, ping,
	// replay (nor replay on a server without Config.Replay).
	CodeUnknownOp
	// CodeUnknownChannel: the channel is none of book, ticker, trades.
	CodeUnknownChannel
	// CodeUnknownSymbol: no event has named the symbol yet.
	CodeUnknownSymbol
	// CodeTooManySubscriptions: the subscription would pass the per-connection cap.
	CodeTooManySubscriptions
	// CodeRateLimited: the client sends messages faster than the rate limit.
	CodeRateLimited
	// CodeTooManyReplays: the server runs Config.MaxReplays replays already.
	CodeTooManyReplays
	// CodeReplayFailed: the replay's range cannot be read (a broker that
	// does not answer, a range the topic no longer holds).
	CodeReplayFailed
	numErrorCodes = iota + 1
)

var errorCodeNames = [...]string{
	CodeBadRequest:           "bad_request",
	CodeUnknownOp:            "unknown_op",
	CodeUnknownChannel:       "unknown_channel",
	CodeUnknownSymbol:        "unknown_symbol",
	CodeTooManySubscriptions: "too_many_subscriptions",
	CodeRateLimited:          "rate_limited",
	CodeTooManyReplays:       "too_many_replays",
	CodeReplayFailed:         "replay_failed",
}

// String returns the wire code of c, e.g. "bad_request".
func (c ErrorCode) String() string {
	if int(c) < len(errorCodeNames) && errorCodeNames[c] != "" {
		return errorCodeNames[c]
	}
	return "invalid"
}

// opError is a request that gets an error message instead of an ack.
type opError struct {
	code ErrorCode
	msg  string
}

func (e *opError) Error() string { return e.code.String() + ": " + e.msg }

func errorf(code ErrorCode, format string, args ...any) *opError {
	return &opError{code: code, msg: fmt.Sprintf(format, args...)}
}

// request is one client message (protocol.md §3, client → server).
type request struct {
	Op       string            `json:"op"`
	ID       json.RawMessage   `json:"id"`
	Channel  string            `json:"channel"`
	Symbols  []string          `json:"symbols"`
	Symbol   string            `json:"symbol"`
	Depth    *int              `json:"depth"`
	Interval string            `json:"interval"`
	Resume   map[string]uint64 `json:"resume"`
	// From and To bound a replay: Unix microseconds (a JSON number) or
	// RFC 3339 (a string); To may also be "live". Decoded as they are
	// (json.Number or string) and checked by newReplay.
	From  any      `json:"from"`
	To    any      `json:"to"`
	Speed *float64 `json:"speed"`
}

// maxIDLen bounds the text of a request id, which is echoed in the reply.
const maxIDLen = 64

// errNotObject is the error of a message that is not one JSON object.
var errNotObject = errors.New("message is not one JSON object")

// parseRequest decodes one client message. On error it still returns the
// request's id when that much could be read, so that the error carries it.
func parseRequest(data []byte) (*request, error) {
	var req request
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(data, &idOnly) == nil && validID(idOnly.ID) {
			req.ID = idOnly.ID
		} else {
			req.ID = nil
		}
		return &req, fmt.Errorf("decode request: %w", err)
	}
	if string(req.ID) == "null" {
		req.ID = nil
	}
	if req.ID != nil && !validID(req.ID) {
		req.ID = nil
		return &req, errors.New("id must be an integer or a string of at most 64 bytes")
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return &req, errNotObject // with the id, which is valid
	}
	return &req, nil
}

// validID reports whether raw is an id the server echoes: a JSON integer or
// a short string.
func validID(raw json.RawMessage) bool {
	if len(raw) == 0 || len(raw) > maxIDLen {
		return false
	}
	if raw[0] == '"' {
		var s string
		return json.Unmarshal(raw, &s) == nil
	}
	i := 0
	if raw[0] == '-' {
		i++
	}
	if i == len(raw) {
		return false
	}
	for ; i < len(raw); i++ {
		if raw[i] < '0' || raw[i] > '9' {
			return false
		}
	}
	return true
}

// depthOf returns the depth a request asks for (DefaultDepth when absent)
// and its view index in book.Depths.
func depthOf(d *int) (depth, view int, err *opError) {
	depth = DefaultDepth
	if d != nil {
		depth = *d
	}
	view, ok := book.ViewIndex(depth)
	if !ok {
		return 0, 0, errorf(CodeBadRequest, "depth %d is not one of 1, 10, 25, 50, 100, 500, 1000, 0", depth)
	}
	return depth, view, nil
}
