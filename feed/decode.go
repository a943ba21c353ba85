package feed

import (
	"errors"
	"strconv"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/marketd/marketd/book"
)

// Reason says why a record was rejected. Reasons start at 1 so that the
// zero value means "no reason"; String gives the metric label and the value
// of the `reason` header of a dead-lettered record.
type Reason uint8

// Reasons for rejecting a record (protocol.md §1).
const (
	// ReasonNotJSON: the value is not one well-formed JSON object.
	ReasonNotJSON Reason = iota + 1
	// ReasonUnknownType: `type` is not one of the event types.
	ReasonUnknownType
	// ReasonMissingField: a field the event type needs is absent or null.
	ReasonMissingField
	// ReasonBadField: a field has the wrong JSON type, is empty, or does not parse.
	ReasonBadField
	// ReasonNonPositive: a price or size that must be > 0 (or a level size
	// that must be >= 0, or a ts) is not.
	ReasonNonPositive
	// ReasonPrecision: a decimal has more fractional digits than the book holds.
	ReasonPrecision
	// ReasonOverflow: a decimal, or a level or volume it would make, is out of range.
	ReasonOverflow
	// ReasonKeyMismatch: the record key is not the event's symbol.
	ReasonKeyMismatch
	// ReasonUnknownOrder: modify, cancel or a maker fill names no resting order.
	ReasonUnknownOrder
	// ReasonDuplicateOrder: add names an order id that is already resting.
	ReasonDuplicateOrder
	// ReasonModeMismatch: an order event on a level-based symbol, or the reverse.
	ReasonModeMismatch
	// ReasonOverfill: a maker fill is larger than the resting order.
	ReasonOverfill
	// ReasonWrongPartition: the symbol's book lives in another partition,
	// so this record cannot be ordered with the symbol's other events.
	ReasonWrongPartition
	// ReasonRejected: the book rejected the event for another reason.
	ReasonRejected

	numReasons = iota + 1 // one past the last reason
)

var reasonLabels = [numReasons]string{
	ReasonNotJSON:        "not_json",
	ReasonUnknownType:    "unknown_type",
	ReasonMissingField:   "missing_field",
	ReasonBadField:       "bad_field",
	ReasonNonPositive:    "non_positive",
	ReasonPrecision:      "precision",
	ReasonOverflow:       "overflow",
	ReasonKeyMismatch:    "key_mismatch",
	ReasonUnknownOrder:   "unknown_order",
	ReasonDuplicateOrder: "duplicate_order",
	ReasonModeMismatch:   "mode_mismatch",
	ReasonOverfill:       "overfill",
	ReasonWrongPartition: "wrong_partition",
	ReasonRejected:       "rejected",
}

// String returns the metric label of r, e.g. "not_json".
func (r Reason) String() string {
	if r > 0 && int(r) < len(reasonLabels) {
		return reasonLabels[r]
	}
	return "invalid"
}

// Reasons returns every Reason in order, e.g. to pre-register metric labels.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := Reason(1); r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// RecordError is the error of a record that was rejected: by the decoder, or
// by the book it was applied to. It never means the input stopped.
type RecordError struct {
	Reason Reason
	// Field is the JSON field at fault, or "" when the record as a whole is.
	Field string
	// Err is the underlying cause, e.g. book.ErrUnknownOrder or book.ErrNumPrecision.
	Err error
}

// Error returns "reason field: cause", e.g. "bad_field price: not a decimal number".
func (e *RecordError) Error() string {
	s := e.Reason.String()
	if e.Field != "" {
		s += " " + e.Field
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *RecordError) Unwrap() error { return e.Err }

// Causes of decoder rejections, wrapped in a RecordError.
var (
	// ErrSyntax: the record value is not well-formed JSON.
	ErrSyntax = errors.New("invalid JSON")
	// ErrNotObject: the record value is JSON but not an object.
	ErrNotObject = errors.New("value is not a JSON object")
	// ErrMissing: a required field is absent or null.
	ErrMissing = errors.New("required field is missing")
	// ErrWrongType: a field has the wrong JSON type.
	ErrWrongType = errors.New("wrong JSON type")
	// ErrEmpty: a string field that must not be empty is.
	ErrEmpty = errors.New("empty string")
	// ErrUnknownType: the type field names no event type.
	ErrUnknownType = errors.New("unknown event type")
	// ErrKeyMismatch: the record key differs from the symbol field.
	ErrKeyMismatch = errors.New("record key is not the symbol")
	// ErrBadLevel: a snapshot level is not a [price, size] pair.
	ErrBadLevel = errors.New("level is not a [price, size] pair")
	// ErrBadTS: ts is not an integer number of microseconds.
	ErrBadTS = errors.New("ts is not an integer")
)

// BookReason maps an error of book.Apply to a Reason. It returns 0 for
// book.ErrStale, which is not a bad record but one already applied.
func BookReason(err error) Reason {
	switch {
	case err == nil, errors.Is(err, book.ErrStale):
		return 0
	case errors.Is(err, book.ErrOverfill):
		return ReasonOverfill
	case errors.Is(err, book.ErrUnknownOrder):
		return ReasonUnknownOrder
	case errors.Is(err, book.ErrDuplicateOrder):
		return ReasonDuplicateOrder
	case errors.Is(err, book.ErrNonPositive):
		return ReasonNonPositive
	case errors.Is(err, book.ErrModeMismatch):
		return ReasonModeMismatch
	case errors.Is(err, book.ErrOverflow):
		return ReasonOverflow
	case errors.Is(err, book.ErrSymbol):
		return ReasonKeyMismatch
	case errors.Is(err, book.ErrBadSide), errors.Is(err, book.ErrBadEvent):
		return ReasonBadField
	}
	return ReasonRejected
}

// The fields the decoder knows, in the order their errors take precedence
// after type and symbol. A fixed order (rather than the order in the
// record) makes the reason independent of how a producer orders keys.
type field uint8

const (
	fType field = iota
	fSymbol
	fTS
	fOrderID
	fTradeID
	fMaker
	fSide
	fPrice
	fSize
	fBids
	fAsks
	numFields
)

var fieldNames = [numFields]string{"type", "symbol", "ts", "order_id", "trade_id", "maker_order_id", "side", "price", "size", "bids", "asks"}

// required lists, per event kind, the fields it needs besides type and symbol.
var required = [...][]field{
	book.KindAdd:      {fOrderID, fSide, fPrice, fSize},
	book.KindModify:   {fOrderID, fSize},
	book.KindCancel:   {fOrderID},
	book.KindTrade:    {fTradeID, fSide, fPrice, fSize},
	book.KindLevel:    {fSide, fPrice, fSize},
	book.KindSnapshot: {fBids, fAsks},
}

// maxDepth bounds the nesting of JSON values, as encoding/json does.
const maxDepth = 10000

// maxInterned bounds the symbols a Decoder keeps, so that a stream of
// made-up symbols cannot grow it without limit.
const maxInterned = 4096

// Decoder decodes records like Decode and also interns symbols, so that
// decoding a known symbol does not allocate. Its zero value is ready to use.
// A Decoder is owned by one goroutine.
type Decoder struct {
	symbols map[string]string
	scratch []byte
	spans   [numFields]span
}

// span is the position of a field's JSON value in the record: [start, end).
// end == 0 means the field is absent.
type span struct{ start, end int }

// Decode decodes and validates one record (protocol.md §1) into ev, which
// the caller owns and may reuse: its Bids and Asks slices are reused. key is
// the record key, which must be the symbol; recordTime is used when the
// record has no `ts`; offset is the record's Kafka offset, and ev.Seq is set
// to offset+1. On error, which is always a *RecordError, ev holds garbage.
func Decode(key, value []byte, recordTime time.Time, offset int64, ev *book.Event) error {
	var d Decoder
	return d.Decode(key, value, recordTime, offset, ev)
}

// Decode is the package's Decode, with symbol interning.
func (d *Decoder) Decode(key, value []byte, recordTime time.Time, offset int64, ev *book.Event) error {
	// Pass 1: check the syntax of the whole value and note where each known
	// field's value is (the last occurrence wins, as in encoding/json).
	if err := d.scan(value); err != nil {
		return err
	}
	sp := &d.spans
	data := value

	// Pass 2: interpret the fields.
	if sp[fType].end == 0 {
		return &RecordError{Reason: ReasonMissingField, Field: "type", Err: ErrMissing}
	}
	t, err := d.str(data, sp[fType])
	if err != nil {
		return &RecordError{Reason: ReasonBadField, Field: "type", Err: err}
	}
	kind := parseKind(t)
	if kind == 0 {
		return &RecordError{Reason: ReasonUnknownType, Field: "type", Err: ErrUnknownType}
	}
	if sp[fSymbol].end == 0 {
		return &RecordError{Reason: ReasonMissingField, Field: "symbol", Err: ErrMissing}
	}
	sym, err := d.str(data, sp[fSymbol])
	if err == nil && len(sym) == 0 {
		err = ErrEmpty
	}
	if err != nil {
		return &RecordError{Reason: ReasonBadField, Field: "symbol", Err: err}
	}
	if string(sym) != string(key) {
		return &RecordError{Reason: ReasonKeyMismatch, Field: "symbol", Err: ErrKeyMismatch}
	}
	ev.Symbol = d.intern(ev.Symbol, sym)
	ev.Kind = kind
	ev.Seq = uint64(offset) + 1

	ev.TS = 0
	if !recordTime.IsZero() {
		ev.TS = recordTime.UnixMicro()
	}
	if s := sp[fTS]; s.end != 0 {
		ts, err := parseTS(data[s.start:s.end])
		if err != nil {
			return &RecordError{Reason: ReasonBadField, Field: "ts", Err: err}
		}
		if ts <= 0 {
			return &RecordError{Reason: ReasonNonPositive, Field: "ts", Err: book.ErrNonPositive}
		}
		ev.TS = ts
	}

	ev.OrderID, ev.TradeID, ev.MakerOrderID = "", "", ""
	ev.Side, ev.Price, ev.Size = 0, 0, 0
	ev.Bids, ev.Asks = ev.Bids[:0], ev.Asks[:0]
	for f := fOrderID; f < numFields; f++ {
		s := sp[f]
		if s.end == 0 {
			continue
		}
		if err := d.setField(ev, f, data, s); err != nil {
			return err
		}
	}
	for _, f := range required[kind] {
		if sp[f].end == 0 {
			return &RecordError{Reason: ReasonMissingField, Field: fieldNames[f], Err: ErrMissing}
		}
	}
	return checkValues(ev)
}

// setField parses field f from data[s.start:s.end] into ev.
func (d *Decoder) setField(ev *book.Event, f field, data []byte, s span) error {
	bad := func(err error) error {
		return &RecordError{Reason: ReasonBadField, Field: fieldNames[f], Err: err}
	}
	switch f {
	case fOrderID, fTradeID, fMaker:
		b, err := d.str(data, s)
		if err == nil && len(b) == 0 {
			err = ErrEmpty
		}
		if err != nil {
			return bad(err)
		}
		id := string(b)
		switch f {
		case fOrderID:
			ev.OrderID = id
		case fTradeID:
			ev.TradeID = id
		default:
			ev.MakerOrderID = id
		}
	case fSide:
		b, err := d.str(data, s)
		if err != nil {
			return bad(err)
		}
		switch string(b) {
		case "buy":
			ev.Side = book.Buy
		case "sell":
			ev.Side = book.Sell
		default:
			return bad(book.ErrBadSide)
		}
	case fPrice, fSize:
		n, err := d.num(data, s)
		if err != nil {
			return numError(fieldNames[f], err)
		}
		if f == fPrice {
			ev.Price = n
		} else {
			ev.Size = n
		}
	case fBids, fAsks:
		levels := ev.Bids
		if f == fAsks {
			levels = ev.Asks
		}
		levels, err := d.levels(levels[:0], data, s)
		if err != nil {
			if re, ok := err.(*RecordError); ok {
				re.Field = fieldNames[f]
				return re
			}
			return bad(err)
		}
		if f == fBids {
			ev.Bids = levels
		} else {
			ev.Asks = levels
		}
	}
	return nil
}

// checkValues checks the signs of ev's values for its kind and clears the
// fields its kind does not use, so that an Event has one canonical form.
func checkValues(ev *book.Event) error {
	np := func(f field) error {
		return &RecordError{Reason: ReasonNonPositive, Field: fieldNames[f], Err: book.ErrNonPositive}
	}
	switch ev.Kind {
	case book.KindAdd:
		ev.TradeID, ev.MakerOrderID = "", ""
	case book.KindModify:
		ev.TradeID, ev.MakerOrderID, ev.Side, ev.Price = "", "", 0, 0
	case book.KindCancel:
		ev.TradeID, ev.MakerOrderID, ev.Side, ev.Price, ev.Size = "", "", 0, 0, 0
	case book.KindTrade:
		ev.OrderID = ""
	case book.KindLevel:
		ev.OrderID, ev.TradeID, ev.MakerOrderID = "", "", ""
	case book.KindSnapshot:
		ev.OrderID, ev.TradeID, ev.MakerOrderID, ev.Side, ev.Price, ev.Size = "", "", "", 0, 0, 0
	}
	if ev.Kind != book.KindSnapshot {
		ev.Bids, ev.Asks = ev.Bids[:0], ev.Asks[:0]
	}
	switch ev.Kind {
	case book.KindAdd, book.KindTrade:
		if ev.Price <= 0 {
			return np(fPrice)
		}
		if ev.Size <= 0 {
			return np(fSize)
		}
	case book.KindModify:
		if ev.Size <= 0 {
			return np(fSize)
		}
	case book.KindLevel:
		if ev.Price <= 0 {
			return np(fPrice)
		}
		if ev.Size < 0 {
			return np(fSize)
		}
	case book.KindSnapshot:
		for _, l := range ev.Bids {
			if l.Price <= 0 || l.Size <= 0 {
				return np(fBids)
			}
		}
		for _, l := range ev.Asks {
			if l.Price <= 0 || l.Size <= 0 {
				return np(fAsks)
			}
		}
	}
	return nil
}

// numError maps an error of book.ParseNumBytes (or of the JSON type) to a
// RecordError for field name.
func numError(name string, err error) error {
	r := ReasonBadField
	switch {
	case errors.Is(err, book.ErrNumPrecision):
		r = ReasonPrecision
	case errors.Is(err, book.ErrNumRange):
		r = ReasonOverflow
	}
	return &RecordError{Reason: r, Field: name, Err: err}
}

func parseKind(b []byte) book.Kind {
	switch string(b) {
	case "add":
		return book.KindAdd
	case "modify":
		return book.KindModify
	case "cancel":
		return book.KindCancel
	case "trade":
		return book.KindTrade
	case "level":
		return book.KindLevel
	case "snapshot":
		return book.KindSnapshot
	}
	return 0
}

// intern returns a string equal to b, reusing prev or an interned copy when
// one exists so that the common case does not allocate.
func (d *Decoder) intern(prev string, b []byte) string {
	if prev == string(b) {
		return prev
	}
	if s, ok := d.symbols[string(b)]; ok {
		return s
	}
	s := string(b)
	if d.symbols == nil {
		d.symbols = make(map[string]string)
	}
	if len(d.symbols) < maxInterned {
		d.symbols[s] = s
	}
	return s
}

// str returns the contents of the JSON string at data[s.start:s.end],
// unescaped. The result aliases data or d.scratch: copy it to keep it.
func (d *Decoder) str(data []byte, s span) ([]byte, error) {
	v := data[s.start:s.end]
	if v[0] != '"' {
		return nil, ErrWrongType
	}
	return d.unquote(v), nil
}

// num parses the decimal at data[s.start:s.end]: a JSON string holding a
// decimal, or a bare JSON number parsed from its literal text.
func (d *Decoder) num(data []byte, s span) (book.Num, error) {
	v := data[s.start:s.end]
	switch c := v[0]; {
	case c == '"':
		return book.ParseNumBytes(d.unquote(v))
	case c == '-' || (c >= '0' && c <= '9'):
		return book.ParseNumBytes(v)
	}
	return 0, ErrWrongType
}

// levels parses a JSON array of [price, size] pairs (already checked for
// syntax) from data[s.start:s.end], appending to dst.
func (d *Decoder) levels(dst []book.Level, data []byte, s span) ([]book.Level, error) {
	v := data[s.start:s.end]
	if v[0] != '[' {
		return dst, ErrWrongType
	}
	i := skipWS(v, 1)
	if v[i] == ']' {
		return dst, nil
	}
	for {
		// One level: '[' price ',' size ']'.
		if v[i] != '[' {
			return dst, ErrBadLevel
		}
		var l book.Level
		for k := range 2 {
			i = skipWS(v, i+1)
			end, err := skipValue(v, i, 1)
			if err != nil {
				return dst, ErrBadLevel // cannot happen: the syntax was checked
			}
			n, err := d.num(v, span{i, end})
			if errors.Is(err, ErrWrongType) {
				return dst, ErrBadLevel
			}
			if err != nil {
				return dst, numError("", err)
			}
			if k == 0 {
				l.Price = n
			} else {
				l.Size = n
			}
			i = skipWS(v, end)
			if k == 0 && v[i] != ',' {
				return dst, ErrBadLevel
			}
		}
		if v[i] != ']' {
			return dst, ErrBadLevel
		}
		dst = append(dst, l)
		i = skipWS(v, i+1)
		if v[i] == ']' {
			return dst, nil
		}
		i = skipWS(v, i+1) // the ','
	}
}

// parseTS parses an integer JSON number that fits int64.
func parseTS(v []byte) (int64, error) {
	if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return 0, ErrWrongType
	}
	for _, c := range v[1:] {
		if c < '0' || c > '9' {
			return 0, ErrBadTS
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, ErrBadTS
	}
	return n, nil
}

// scan checks that data is one JSON object and records in d.spans where
// the value of each known field is. A field whose last value is null is
// absent.
func (d *Decoder) scan(data []byte) error {
	d.spans = [numFields]span{}
	i := skipWS(data, 0)
	if i == len(data) {
		return errNotJSON()
	}
	if data[i] != '{' {
		// Tell "valid JSON but not an object" from garbage.
		end, err := skipValue(data, i, 0)
		if err != nil || skipWS(data, end) != len(data) {
			return errNotJSON()
		}
		return &RecordError{Reason: ReasonNotJSON, Err: ErrNotObject}
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			if i >= len(data) || data[i] != '"' {
				return errNotJSON()
			}
			kstart := i
			kend, plain, err := skipString(data, i)
			if err != nil {
				return errNotJSON()
			}
			i = skipWS(data, kend)
			if i >= len(data) || data[i] != ':' {
				return errNotJSON()
			}
			vstart := skipWS(data, i+1)
			vend, err := skipValue(data, vstart, 1)
			if err != nil {
				return errNotJSON()
			}
			key := data[kstart+1 : kend-1]
			if !plain {
				key = d.unquote(data[kstart:kend])
			}
			if f, ok := lookupField(key); ok {
				if string(data[vstart:vend]) == "null" {
					d.spans[f] = span{}
				} else {
					d.spans[f] = span{vstart, vend}
				}
			}
			i = skipWS(data, vend)
			if i >= len(data) {
				return errNotJSON()
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return errNotJSON()
			}
			i = skipWS(data, i+1)
		}
	}
	if skipWS(data, i) != len(data) {
		return errNotJSON()
	}
	return nil
}

func errNotJSON() error { return &RecordError{Reason: ReasonNotJSON, Err: ErrSyntax} }

// lookupField returns the known field named key.
func lookupField(key []byte) (field, bool) {
	switch string(key) {
	case "type":
		return fType, true
	case "symbol":
		return fSymbol, true
	case "ts":
		return fTS, true
	case "order_id":
		return fOrderID, true
	case "trade_id":
		return fTradeID, true
	case "maker_order_id":
		return fMaker, true
	case "side":
		return fSide, true
	case "price":
		return fPrice, true
	case "size":
		return fSize, true
	case "bids":
		return fBids, true
	case "asks":
		return fAsks, true
	}
	return 0, false
}

// skipWS returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the JSON string starting at
// data[i] (a '"'), and plain = true when the string holds neither escapes
// nor non-ASCII bytes, so that its contents can be used as they are.
func skipString(data []byte, i int) (end int, plain bool, err error) {
	plain = true
	for j := i + 1; j < len(data); {
		c := data[j]
		switch {
		case c == '"':
			return j + 1, plain, nil
		case c == '\\':
			plain = false
			if j+1 >= len(data) {
				return 0, false, ErrSyntax
			}
			switch data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(data) {
					return 0, false, ErrSyntax
				}
				for _, h := range data[j+2 : j+6] {
					if unhex(h) < 0 {
						return 0, false, ErrSyntax
					}
				}
				j += 6
			default:
				return 0, false, ErrSyntax
			}
		case c < 0x20:
			return 0, false, ErrSyntax
		default:
			if c >= utf8.RuneSelf {
				plain = false
			}
			j++
		}
	}
	return 0, false, ErrSyntax
}

// skipValue returns the index just past the JSON value starting at data[i].
// depth is the number of arrays and objects enclosing it.
func skipValue(data []byte, i, depth int) (int, error) {
	if i >= len(data) {
		return 0, ErrSyntax
	}
	switch c := data[i]; c {
	case '"':
		end, _, err := skipString(data, i)
		return end, err
	case '{', '[':
		if depth >= maxDepth {
			return 0, ErrSyntax
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipWS(data, i+1)
		if i < len(data) && data[i] == closer {
			return i + 1, nil
		}
		for {
			if c == '{' {
				if i >= len(data) || data[i] != '"' {
					return 0, ErrSyntax
				}
				end, _, err := skipString(data, i)
				if err != nil {
					return 0, err
				}
				i = skipWS(data, end)
				if i >= len(data) || data[i] != ':' {
					return 0, ErrSyntax
				}
				i = skipWS(data, i+1)
			}
			end, err := skipValue(data, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(data, end)
			if i >= len(data) {
				return 0, ErrSyntax
			}
			if data[i] == closer {
				return i + 1, nil
			}
			if data[i] != ',' {
				return 0, ErrSyntax
			}
			i = skipWS(data, i+1)
		}
	case 't':
		return skipLiteral(data, i, "true")
	case 'f':
		return skipLiteral(data, i, "false")
	case 'n':
		return skipLiteral(data, i, "null")
	}
	return skipNumber(data, i)
}

func skipLiteral(data []byte, i int, lit string) (int, error) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return 0, ErrSyntax
	}
	return i + len(lit), nil
}

// skipNumber returns the index just past the JSON number starting at
// data[i]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(data []byte, i int) (int, error) {
	n := len(data)
	if i < n && data[i] == '-' {
		i++
	}
	switch {
	case i < n && data[i] == '0':
		i++
	case i < n && data[i] >= '1' && data[i] <= '9':
		for i++; i < n && data[i] >= '0' && data[i] <= '9'; i++ {
		}
	default:
		return 0, ErrSyntax
	}
	if i < n && data[i] == '.' {
		i++
		if i >= n || data[i] < '0' || data[i] > '9' {
			return 0, ErrSyntax
		}
		for ; i < n && data[i] >= '0' && data[i] <= '9'; i++ {
		}
	}
	if i < n && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < n && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= n || data[i] < '0' || data[i] > '9' {
			return 0, ErrSyntax
		}
		for ; i < n && data[i] >= '0' && data[i] <= '9'; i++ {
		}
	}
	return i, nil
}

func unhex(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// getu4 decodes \uXXXX from the front of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		h := unhex(c)
		if h < 0 {
			return -1
		}
		r = r<<4 | h
	}
	return r
}

// unquote returns the contents of the JSON string v (quotes included, its
// syntax already checked), unescaped, with invalid UTF-8 replaced by U+FFFD
// exactly as encoding/json does. The result aliases v or d.scratch.
func (d *Decoder) unquote(v []byte) []byte {
	s := v[1 : len(v)-1]
	r := 0
	for r < len(s) {
		c := s[r]
		if c == '\\' {
			break
		}
		if c < utf8.RuneSelf {
			r++
			continue
		}
		rr, size := utf8.DecodeRune(s[r:])
		if rr == utf8.RuneError && size == 1 {
			break
		}
		r += size
	}
	if r == len(s) {
		return s
	}
	b := append(d.scratch[:0], s[:r]...)
	for r < len(s) {
		switch c := s[r]; {
		case c == '\\':
			switch s[r+1] {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, getu4(s[r:])); dec != unicode.ReplacementChar {
						r += 6
						b = utf8.AppendRune(b, dec)
						continue
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			default: // '"', '\\', '/'
				b = append(b, s[r+1])
			}
			r += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			b = utf8.AppendRune(b, rr)
		}
	}
	d.scratch = b
	return b
}
