package feed

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
)

var recTime = time.UnixMicro(1_763_900_000_000_000)

func num(s string) book.Num {
	n, err := book.ParseNum(s)
	if err != nil {
		panic(err)
	}
	return n
}

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  book.Event
	}{
		{"add", `{"type":"add","symbol":"BTC-USD","ts":1763900000000001,"order_id":"o1","side":"buy","price":"50000.10","size":"1.5"}`,
			book.Event{Kind: book.KindAdd, Symbol: "BTC-USD", Seq: 8, TS: 1763900000000001, OrderID: "o1", Side: book.Buy, Price: num("50000.1"), Size: num("1.5")}},
		{"add bare numbers, no ts", `{"type":"add","symbol":"BTC-USD","order_id":"o1","side":"sell","price":50000.10,"size":15e-1}`,
			book.Event{Kind: book.KindAdd, Symbol: "BTC-USD", Seq: 8, TS: recTime.UnixMicro(), OrderID: "o1", Side: book.Sell, Price: num("50000.1"), Size: num("1.5")}},
		{"modify", `{"type":"modify","symbol":"BTC-USD","ts":5,"order_id":"o1","size":"0.00000001"}`,
			book.Event{Kind: book.KindModify, Symbol: "BTC-USD", Seq: 8, TS: 5, OrderID: "o1", Size: 1}},
		{"cancel, irrelevant fields dropped", `{"type":"cancel","symbol":"BTC-USD","ts":5,"order_id":"o1","price":"1","side":"buy"}`,
			book.Event{Kind: book.KindCancel, Symbol: "BTC-USD", Seq: 8, TS: 5, OrderID: "o1"}},
		{"trade with maker", `{"type":"trade","symbol":"BTC-USD","ts":5,"trade_id":"t1","price":"1","size":"2","side":"buy","maker_order_id":"o1"}`,
			book.Event{Kind: book.KindTrade, Symbol: "BTC-USD", Seq: 8, TS: 5, TradeID: "t1", MakerOrderID: "o1", Side: book.Buy, Price: num("1"), Size: num("2")}},
		{"trade without maker", `{"type":"trade","symbol":"BTC-USD","ts":5,"trade_id":"t1","price":"1","size":"2","side":"sell"}`,
			book.Event{Kind: book.KindTrade, Symbol: "BTC-USD", Seq: 8, TS: 5, TradeID: "t1", Side: book.Sell, Price: num("1"), Size: num("2")}},
		{"level", `{"type":"level","symbol":"BTC-USD","ts":5,"side":"sell","price":"3.25","size":"0"}`,
			book.Event{Kind: book.KindLevel, Symbol: "BTC-USD", Seq: 8, TS: 5, Side: book.Sell, Price: num("3.25")}},
		{"snapshot", `{"type":"snapshot","symbol":"BTC-USD","ts":5,"bids":[["2","1"],[1.5, "0.5"]],"asks":[ [ "3" , 4 ] ]}`,
			book.Event{Kind: book.KindSnapshot, Symbol: "BTC-USD", Seq: 8, TS: 5,
				Bids: []book.Level{{Price: num("2"), Size: num("1")}, {Price: num("1.5"), Size: num("0.5")}},
				Asks: []book.Level{{Price: num("3"), Size: num("4")}}}},
		{"empty snapshot", `{"type":"snapshot","symbol":"BTC-USD","ts":5,"bids":[],"asks":[]}`,
			book.Event{Kind: book.KindSnapshot, Symbol: "BTC-USD", Seq: 8, TS: 5, Bids: []book.Level{}, Asks: []book.Level{}}},
		{"escapes, unknown fields, whitespace, duplicates", " {\"t\\u0079pe\" : \"cancel\", \"x\":{\"a\":[1,{\"b\":null}],\"c\":\"\\\"\"},\n\"symbol\":\"BTC\\u002dUSD\",\"order_id\":\"first\",\"order_id\":\"\\u00e9\\ud83d\\ude00\",\"ts\":null,\"y\":[true,false,-0.5e+3]\t} ",
			book.Event{Kind: book.KindCancel, Symbol: "BTC-USD", Seq: 8, TS: recTime.UnixMicro(), OrderID: "é😀"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := book.Event{Bids: make([]book.Level, 0, 4), OrderID: "stale", TradeID: "stale"}
			if err := Decode([]byte("BTC-USD"), []byte(tt.value), recTime, 7, &ev); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if tt.want.Kind != book.KindSnapshot {
				ev.Bids, ev.Asks = nil, nil
			}
			if !eventsEqual(&ev, &tt.want) {
				t.Errorf("got  %+v\nwant %+v", ev, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	const add = `"type":"add","symbol":"BTC-USD","order_id":"o1","side":"buy"`
	tests := []struct {
		name   string
		key    string // "" means BTC-USD
		value  string
		reason Reason
		field  string
		err    error
	}{
		{"empty", "", ``, ReasonNotJSON, "", ErrSyntax},
		{"garbage", "", `hello`, ReasonNotJSON, "", ErrSyntax},
		{"truncated", "", `{"type":"add","symbol":`, ReasonNotJSON, "", ErrSyntax},
		{"trailing data", "", `{"type":"add"} x`, ReasonNotJSON, "", ErrSyntax},
		{"two objects", "", `{}{}`, ReasonNotJSON, "", ErrSyntax},
		{"trailing comma", "", `{"type":"add",}`, ReasonNotJSON, "", ErrSyntax},
		{"bad escape", "", `{"type":"a\qdd"}`, ReasonNotJSON, "", ErrSyntax},
		{"control char", "", "{\"type\":\"a\x01\"}", ReasonNotJSON, "", ErrSyntax},
		{"bad number", "", `{"ts":01}`, ReasonNotJSON, "", ErrSyntax},
		{"bad literal", "", `{"ts":nul}`, ReasonNotJSON, "", ErrSyntax},
		{"too deep", "", `{"x":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}`, ReasonNotJSON, "", ErrSyntax},
		{"array", "", `[1,2]`, ReasonNotJSON, "", ErrNotObject},
		{"string", "", `"add"`, ReasonNotJSON, "", ErrNotObject},
		{"null", "", `null`, ReasonNotJSON, "", ErrNotObject},
		{"no type", "", `{"symbol":"BTC-USD"}`, ReasonMissingField, "type", ErrMissing},
		{"null type", "", `{"type":null,"symbol":"BTC-USD"}`, ReasonMissingField, "type", ErrMissing},
		{"type not string", "", `{"type":1,"symbol":"BTC-USD"}`, ReasonBadField, "type", ErrWrongType},
		{"unknown type", "", `{"type":"teleport","symbol":"BTC-USD"}`, ReasonUnknownType, "type", ErrUnknownType},
		{"type case", "", `{"type":"ADD","symbol":"BTC-USD"}`, ReasonUnknownType, "type", ErrUnknownType},
		{"no symbol", "", `{"type":"add"}`, ReasonMissingField, "symbol", ErrMissing},
		{"symbol not string", "", `{"type":"add","symbol":7}`, ReasonBadField, "symbol", ErrWrongType},
		{"empty symbol", "", `{"type":"add","symbol":""}`, ReasonBadField, "symbol", ErrEmpty},
		{"key mismatch", "ETH-USD", `{` + add + `,"price":"1","size":"1"}`, ReasonKeyMismatch, "symbol", ErrKeyMismatch},
		{"no key", "-", `{` + add + `,"price":"1","size":"1"}`, ReasonKeyMismatch, "symbol", ErrKeyMismatch},
		{"ts string", "", `{` + add + `,"ts":"5","price":"1","size":"1"}`, ReasonBadField, "ts", ErrWrongType},
		{"ts fraction", "", `{` + add + `,"ts":5.5,"price":"1","size":"1"}`, ReasonBadField, "ts", ErrBadTS},
		{"ts exponent", "", `{` + add + `,"ts":5e3,"price":"1","size":"1"}`, ReasonBadField, "ts", ErrBadTS},
		{"ts overflow", "", `{` + add + `,"ts":99999999999999999999,"price":"1","size":"1"}`, ReasonBadField, "ts", ErrBadTS},
		{"ts zero", "", `{` + add + `,"ts":0,"price":"1","size":"1"}`, ReasonNonPositive, "ts", book.ErrNonPositive},
		{"ts negative", "", `{` + add + `,"ts":-1,"price":"1","size":"1"}`, ReasonNonPositive, "ts", book.ErrNonPositive},
		{"order_id number", "", `{"type":"cancel","symbol":"BTC-USD","order_id":5}`, ReasonBadField, "order_id", ErrWrongType},
		{"order_id empty", "", `{"type":"cancel","symbol":"BTC-USD","order_id":""}`, ReasonBadField, "order_id", ErrEmpty},
		{"trade_id empty", "", `{"type":"trade","symbol":"BTC-USD","trade_id":"","side":"buy","price":"1","size":"1"}`, ReasonBadField, "trade_id", ErrEmpty},
		{"maker empty", "", `{"type":"trade","symbol":"BTC-USD","trade_id":"t","maker_order_id":"","side":"buy","price":"1","size":"1"}`, ReasonBadField, "maker_order_id", ErrEmpty},
		{"side unknown", "", `{"type":"add","symbol":"BTC-USD","order_id":"o1","side":"long","price":"1","size":"1"}`, ReasonBadField, "side", book.ErrBadSide},
		{"side number", "", `{"type":"add","symbol":"BTC-USD","order_id":"o1","side":1,"price":"1","size":"1"}`, ReasonBadField, "side", ErrWrongType},
		{"price text", "", `{` + add + `,"price":"abc","size":"1"}`, ReasonBadField, "price", book.ErrNumSyntax},
		{"price empty", "", `{` + add + `,"price":"","size":"1"}`, ReasonBadField, "price", book.ErrNumSyntax},
		{"price spaces", "", `{` + add + `,"price":" 1","size":"1"}`, ReasonBadField, "price", book.ErrNumSyntax},
		{"price bool", "", `{` + add + `,"price":true,"size":"1"}`, ReasonBadField, "price", ErrWrongType},
		{"price object", "", `{` + add + `,"price":{},"size":"1"}`, ReasonBadField, "price", ErrWrongType},
		{"price precision", "", `{` + add + `,"price":"0.000000001","size":"1"}`, ReasonPrecision, "price", book.ErrNumPrecision},
		{"price precision bare", "", `{` + add + `,"price":1e-9,"size":"1"}`, ReasonPrecision, "price", book.ErrNumPrecision},
		{"price overflow", "", `{` + add + `,"price":"100000000000","size":"1"}`, ReasonOverflow, "price", book.ErrNumRange},
		{"size overflow bare", "", `{` + add + `,"price":"1","size":1e300}`, ReasonOverflow, "size", book.ErrNumRange},
		{"add no order_id", "", `{"type":"add","symbol":"BTC-USD","side":"buy","price":"1","size":"1"}`, ReasonMissingField, "order_id", ErrMissing},
		{"add no side", "", `{"type":"add","symbol":"BTC-USD","order_id":"o","price":"1","size":"1"}`, ReasonMissingField, "side", ErrMissing},
		{"add no price", "", `{` + add + `,"size":"1"}`, ReasonMissingField, "price", ErrMissing},
		{"add null size", "", `{` + add + `,"price":"1","size":null}`, ReasonMissingField, "size", ErrMissing},
		{"add zero price", "", `{` + add + `,"price":"0","size":"1"}`, ReasonNonPositive, "price", book.ErrNonPositive},
		{"add negative size", "", `{` + add + `,"price":"1","size":"-1"}`, ReasonNonPositive, "size", book.ErrNonPositive},
		{"modify no size", "", `{"type":"modify","symbol":"BTC-USD","order_id":"o"}`, ReasonMissingField, "size", ErrMissing},
		{"modify zero size", "", `{"type":"modify","symbol":"BTC-USD","order_id":"o","size":"0"}`, ReasonNonPositive, "size", book.ErrNonPositive},
		{"cancel no order_id", "", `{"type":"cancel","symbol":"BTC-USD"}`, ReasonMissingField, "order_id", ErrMissing},
		{"trade no trade_id", "", `{"type":"trade","symbol":"BTC-USD","side":"buy","price":"1","size":"1"}`, ReasonMissingField, "trade_id", ErrMissing},
		{"trade zero size", "", `{"type":"trade","symbol":"BTC-USD","trade_id":"t","side":"buy","price":"1","size":"0"}`, ReasonNonPositive, "size", book.ErrNonPositive},
		{"level no side", "", `{"type":"level","symbol":"BTC-USD","price":"1","size":"1"}`, ReasonMissingField, "side", ErrMissing},
		{"level negative size", "", `{"type":"level","symbol":"BTC-USD","side":"buy","price":"1","size":"-0.1"}`, ReasonNonPositive, "size", book.ErrNonPositive},
		{"level zero price", "", `{"type":"level","symbol":"BTC-USD","side":"buy","price":"0","size":"1"}`, ReasonNonPositive, "price", book.ErrNonPositive},
		{"snapshot no asks", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[]}`, ReasonMissingField, "asks", ErrMissing},
		{"snapshot bids object", "", `{"type":"snapshot","symbol":"BTC-USD","bids":{},"asks":[]}`, ReasonBadField, "bids", ErrWrongType},
		{"snapshot level not pair", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[["1"]],"asks":[]}`, ReasonBadField, "bids", ErrBadLevel},
		{"snapshot level triple", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[],"asks":[["1","2","3"]]}`, ReasonBadField, "asks", ErrBadLevel},
		{"snapshot level empty", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[[]],"asks":[]}`, ReasonBadField, "bids", ErrBadLevel},
		{"snapshot level number", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[1],"asks":[]}`, ReasonBadField, "bids", ErrBadLevel},
		{"snapshot level bool", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[["1",true]],"asks":[]}`, ReasonBadField, "bids", ErrBadLevel},
		{"snapshot level text", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[["1","x"]],"asks":[]}`, ReasonBadField, "bids", book.ErrNumSyntax},
		{"snapshot level precision", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[],"asks":[["1.000000001","1"]]}`, ReasonPrecision, "asks", book.ErrNumPrecision},
		{"snapshot zero size", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[["1","0"]],"asks":[]}`, ReasonNonPositive, "bids", book.ErrNonPositive},
		{"snapshot zero price", "", `{"type":"snapshot","symbol":"BTC-USD","bids":[],"asks":[["0","1"]]}`, ReasonNonPositive, "asks", book.ErrNonPositive},
		{"bad field beats missing field", "", `{"type":"add","symbol":"BTC-USD","price":"x"}`, ReasonBadField, "price", book.ErrNumSyntax},
		{"irrelevant bad field still bad", "", `{"type":"cancel","symbol":"BTC-USD","order_id":"o","bids":7}`, ReasonBadField, "bids", ErrWrongType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := []byte("BTC-USD")
			switch tt.key {
			case "":
			case "-":
				key = nil
			default:
				key = []byte(tt.key)
			}
			var ev book.Event
			err := Decode(key, []byte(tt.value), recTime, 7, &ev)
			var re *RecordError
			if !errors.As(err, &re) {
				t.Fatalf("Decode(%s) = %v, want a *RecordError", tt.value, err)
			}
			if re.Reason != tt.reason || re.Field != tt.field || !errors.Is(err, tt.err) {
				t.Errorf("Decode(%.80s) = {%v %q %v}, want {%v %q %v}", tt.value, re.Reason, re.Field, re.Err, tt.reason, tt.field, tt.err)
			}
			// The oracle agrees.
			_, oerr := oracleDecode(key, []byte(tt.value), recTime, 7)
			if oerr == nil || oerr.Reason != re.Reason || oerr.Field != re.Field || oerr.Err != re.Err {
				t.Errorf("oracle = %v, decoder = %v", oerr, re)
			}
		})
	}
}

func TestReasonLabels(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		s := r.String()
		if s == "invalid" || s == "" || seen[s] {
			t.Errorf("reason %d has label %q", r, s)
		}
		seen[s] = true
	}
	if Reason(0).String() != "invalid" || Reason(200).String() != "invalid" {
		t.Error("out-of-range reasons must say invalid")
	}
	if len(seen) != 14 {
		t.Errorf("got %d reasons, want 14", len(seen))
	}
}

func TestBookReason(t *testing.T) {
	tests := []struct {
		err  error
		want Reason
	}{
		{nil, 0},
		{book.ErrStale, 0},
		{fmt.Errorf("apply: %w", book.ErrUnknownOrder), ReasonUnknownOrder},
		{book.ErrDuplicateOrder, ReasonDuplicateOrder},
		{book.ErrNonPositive, ReasonNonPositive},
		{book.ErrModeMismatch, ReasonModeMismatch},
		{book.ErrOverflow, ReasonOverflow},
		{book.ErrOverfill, ReasonOverfill},
		{book.ErrSymbol, ReasonKeyMismatch},
		{book.ErrBadSide, ReasonBadField},
		{book.ErrBadEvent, ReasonBadField},
		{errors.New("other"), ReasonRejected},
	}
	for _, tt := range tests {
		if got := BookReason(tt.err); got != tt.want {
			t.Errorf("BookReason(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestDecoderReuse checks that one Decoder and one Event decode a run of
// mixed records with no state leaking from one record to the next.
func TestDecoderReuse(t *testing.T) {
	var d Decoder
	var ev book.Event
	records := []string{
		`{"type":"snapshot","symbol":"BTC-USD","bids":[["2","1"],["1","1"]],"asks":[["3","1"]]}`,
		`{"type":"add","symbol":"BTC-USD","order_id":"o1","side":"buy","price":"1","size":"1"}`,
		`not json`,
		`{"type":"snapshot","symbol":"BTC-USD","bids":[["5","1"]],"asks":[]}`,
		`{"type":"trade","symbol":"BTC-USD","trade_id":"t","side":"buy","price":"1","size":"1"}`,
	}
	for i, r := range records {
		err := d.Decode([]byte("BTC-USD"), []byte(r), recTime, int64(i), &ev)
		want, werr := oracleDecode([]byte("BTC-USD"), []byte(r), recTime, int64(i))
		if (err == nil) != (werr == nil) {
			t.Fatalf("record %d: err %v, oracle %v", i, err, werr)
		}
		if err == nil && !eventsEqual(&ev, &want) {
			t.Errorf("record %d: got %+v, want %+v", i, ev, want)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instruments allocations")
	}
	var d Decoder
	var ev book.Event
	key := []byte("BTC-USD")
	level := []byte(`{"type":"level","symbol":"BTC-USD","ts":1763900000000000,"side":"buy","price":"50000.10","size":"1.25"}`)
	add := []byte(`{"type":"add","symbol":"BTC-USD","ts":1763900000000000,"order_id":"o-123","side":"buy","price":"50000.10","size":"1.25"}`)
	if err := d.Decode(key, level, recTime, 1, &ev); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = d.Decode(key, level, recTime, 1, &ev) }); n != 0 {
		t.Errorf("level: %v allocs per record, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = d.Decode(key, add, recTime, 1, &ev) }); n != 1 {
		t.Errorf("add: %v allocs per record, want 1 (the order id)", n)
	}
}

func eventsEqual(a, b *book.Event) bool {
	x, y := *a, *b
	if len(x.Bids) == 0 && len(y.Bids) == 0 {
		x.Bids, y.Bids = nil, nil
	}
	if len(x.Asks) == 0 && len(y.Asks) == 0 {
		x.Asks, y.Asks = nil, nil
	}
	return reflect.DeepEqual(x, y)
}

// oracleDecode is the decoder's specification written with encoding/json:
// slow, obviously right, and the reference FuzzDecode compares against.
func oracleDecode(key, value []byte, recordTime time.Time, offset int64) (book.Event, *RecordError) {
	var ev book.Event
	fail := func(r Reason, field string, err error) (book.Event, *RecordError) {
		return ev, &RecordError{Reason: r, Field: field, Err: err}
	}
	if !json.Valid(value) {
		return fail(ReasonNotJSON, "", ErrSyntax)
	}
	var m map[string]json.RawMessage
	if strings.TrimLeft(string(value), " \t\r\n")[0] != '{' || json.Unmarshal(value, &m) != nil {
		return fail(ReasonNotJSON, "", ErrNotObject)
	}
	get := func(name string) json.RawMessage {
		raw := m[name]
		if string(raw) == "null" {
			return nil
		}
		return raw
	}
	str := func(raw json.RawMessage) (string, error) {
		var s string
		if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			return "", ErrWrongType
		}
		return s, nil
	}
	dec := func(raw json.RawMessage) (book.Num, error) {
		switch c := raw[0]; {
		case c == '"':
			s, _ := str(raw)
			return book.ParseNum(s)
		case c == '-' || (c >= '0' && c <= '9'):
			return book.ParseNum(string(raw))
		}
		return 0, ErrWrongType
	}

	raw := get("type")
	if raw == nil {
		return fail(ReasonMissingField, "type", ErrMissing)
	}
	t, err := str(raw)
	if err != nil {
		return fail(ReasonBadField, "type", err)
	}
	kind, ok := book.ParseKind(t)
	if !ok {
		return fail(ReasonUnknownType, "type", ErrUnknownType)
	}
	raw = get("symbol")
	if raw == nil {
		return fail(ReasonMissingField, "symbol", ErrMissing)
	}
	sym, err := str(raw)
	if err == nil && sym == "" {
		err = ErrEmpty
	}
	if err != nil {
		return fail(ReasonBadField, "symbol", err)
	}
	if sym != string(key) {
		return fail(ReasonKeyMismatch, "symbol", ErrKeyMismatch)
	}
	ev.Kind, ev.Symbol, ev.Seq, ev.TS = kind, sym, uint64(offset)+1, recordTime.UnixMicro()
	if raw = get("ts"); raw != nil {
		if c := raw[0]; c != '-' && (c < '0' || c > '9') {
			return fail(ReasonBadField, "ts", ErrWrongType)
		}
		ts, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return fail(ReasonBadField, "ts", ErrBadTS)
		}
		if ts <= 0 {
			return fail(ReasonNonPositive, "ts", book.ErrNonPositive)
		}
		ev.TS = ts
	}
	for _, name := range []string{"order_id", "trade_id", "maker_order_id"} {
		if raw = get(name); raw != nil {
			s, err := str(raw)
			if err == nil && s == "" {
				err = ErrEmpty
			}
			if err != nil {
				return fail(ReasonBadField, name, err)
			}
			switch name {
			case "order_id":
				ev.OrderID = s
			case "trade_id":
				ev.TradeID = s
			default:
				ev.MakerOrderID = s
			}
		}
	}
	if raw = get("side"); raw != nil {
		s, err := str(raw)
		if err != nil {
			return fail(ReasonBadField, "side", err)
		}
		if ev.Side, ok = book.ParseSide(s); !ok {
			return fail(ReasonBadField, "side", book.ErrBadSide)
		}
	}
	numFail := func(name string, err error) (book.Event, *RecordError) {
		re := numError(name, err).(*RecordError)
		return ev, re
	}
	for _, name := range []string{"price", "size"} {
		if raw = get(name); raw != nil {
			n, err := dec(raw)
			if err != nil {
				return numFail(name, err)
			}
			if name == "price" {
				ev.Price = n
			} else {
				ev.Size = n
			}
		}
	}
	for _, name := range []string{"bids", "asks"} {
		if raw = get(name); raw == nil {
			continue
		}
		if raw[0] != '[' {
			return fail(ReasonBadField, name, ErrWrongType)
		}
		var elems []json.RawMessage
		_ = json.Unmarshal(raw, &elems)
		levels := []book.Level{}
		for _, e := range elems {
			if e[0] != '[' {
				return fail(ReasonBadField, name, ErrBadLevel)
			}
			var pair []json.RawMessage
			_ = json.Unmarshal(e, &pair)
			var l book.Level
			for k := 0; k < len(pair) && k < 2; k++ {
				n, err := dec(pair[k])
				if errors.Is(err, ErrWrongType) {
					return fail(ReasonBadField, name, ErrBadLevel)
				}
				if err != nil {
					return numFail(name, err)
				}
				if k == 0 {
					l.Price = n
				} else {
					l.Size = n
				}
			}
			if len(pair) != 2 {
				return fail(ReasonBadField, name, ErrBadLevel)
			}
			levels = append(levels, l)
		}
		if name == "bids" {
			ev.Bids = levels
		} else {
			ev.Asks = levels
		}
	}
	for _, f := range required[kind] {
		if get(fieldNames[f]) == nil {
			return fail(ReasonMissingField, fieldNames[f], ErrMissing)
		}
	}
	if err := checkValues(&ev); err != nil {
		return ev, err.(*RecordError)
	}
	return ev, nil
}

// encodeEvent writes ev as a canonical protocol record, for the round-trip
// property: decode(encode(ev)) == ev.
func encodeEvent(ev *book.Event) []byte {
	m := map[string]any{"type": ev.Kind.String(), "symbol": ev.Symbol, "ts": ev.TS}
	if ev.OrderID != "" {
		m["order_id"] = ev.OrderID
	}
	if ev.TradeID != "" {
		m["trade_id"] = ev.TradeID
	}
	if ev.MakerOrderID != "" {
		m["maker_order_id"] = ev.MakerOrderID
	}
	if ev.Side != 0 {
		m["side"] = ev.Side.String()
	}
	switch ev.Kind {
	case book.KindAdd, book.KindTrade, book.KindLevel:
		m["price"] = ev.Price.String()
		m["size"] = ev.Size.String()
	case book.KindModify:
		m["size"] = ev.Size.String()
	case book.KindSnapshot:
		pairs := func(ls []book.Level) [][2]string {
			out := [][2]string{}
			for _, l := range ls {
				out = append(out, [2]string{l.Price.String(), l.Size.String()})
			}
			return out
		}
		m["bids"], m["asks"] = pairs(ev.Bids), pairs(ev.Asks)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzDecode checks the hand-written decoder against oracleDecode, built on
// encoding/json, and that every event it accepts survives a round trip.
// Seeds are in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, key, value []byte) {
		var d Decoder
		ev := book.Event{OrderID: "junk", Bids: []book.Level{{Price: 1}}}
		err := d.Decode(key, value, recTime, 41, &ev)
		want, werr := oracleDecode(key, value, recTime, 41)
		if err != nil {
			re, ok := err.(*RecordError)
			if !ok {
				t.Fatalf("error %T %v is not a *RecordError", err, err)
			}
			if werr == nil {
				t.Fatalf("decoder rejects (%v), oracle accepts %+v", err, want)
			}
			if re.Reason != werr.Reason || re.Field != werr.Field || re.Err != werr.Err {
				t.Fatalf("decoder says %v, oracle says %v", re, werr)
			}
			return
		}
		if werr != nil {
			t.Fatalf("decoder accepts %+v, oracle rejects: %v", ev, werr)
		}
		if !eventsEqual(&ev, &want) {
			t.Fatalf("decoder %+v\noracle  %+v", ev, want)
		}
		var again book.Event
		if err := d.Decode(key, encodeEvent(&ev), time.Time{}, 41, &again); err != nil {
			t.Fatalf("round trip of %+v: %v", ev, err)
		}
		if !eventsEqual(&ev, &again) {
			t.Fatalf("round trip: %+v became %+v", ev, again)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	records := []struct{ name, value string }{
		{"add", `{"type":"add","symbol":"BTC-USD","ts":1763900000000000,"order_id":"b-1234567","side":"buy","price":"50000.10","size":"0.12345678"}`},
		{"cancel", `{"type":"cancel","symbol":"BTC-USD","ts":1763900000000000,"order_id":"b-1234567"}`},
		{"trade", `{"type":"trade","symbol":"BTC-USD","ts":1763900000000000,"trade_id":"t-99","price":"50000.10","size":"0.1","side":"buy","maker_order_id":"b-1234567"}`},
		{"level", `{"type":"level","symbol":"SOL-USD","ts":1763900000000000,"side":"sell","price":"187.25","size":"42.5"}`},
		{"snapshot20", snapshotRecord("SOL-USD", 20)},
	}
	for _, r := range records {
		b.Run(r.name, func(b *testing.B) {
			var d Decoder
			var ev book.Event
			key := []byte(strings.SplitN(strings.SplitN(r.value, `"symbol":"`, 2)[1], `"`, 2)[0])
			value := []byte(r.value)
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			for b.Loop() {
				if err := d.Decode(key, value, recTime, 1, &ev); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
		})
	}
}

func snapshotRecord(symbol string, n int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"type":"snapshot","symbol":%q,"ts":1763900000000000,"bids":[`, symbol)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `["%d.%02d","%d.5"]`, 187-i/100, 99-i%100, i+1)
	}
	sb.WriteString(`],"asks":[`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `["%d.%02d","%d.25"]`, 188+i/100, i%100, i+1)
	}
	sb.WriteString(`]}`)
	return sb.String()
}
