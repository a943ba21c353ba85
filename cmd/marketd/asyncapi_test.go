package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
	"github.com/marketd/marketd/stream"
)

// asyncAPIPath is the AsyncAPI document of the WebSocket API and the Kafka
// input, from this package's directory.
var asyncAPIPath = filepath.Join("..", "..", "docs", "asyncapi.json")

// asyncAPIResource is the URL the document is compiled under.
const asyncAPIResource = "https://marketd.invalid/asyncapi.json"

// asyncAPI is the parsed document and its schemas.
type asyncAPI struct {
	t   *testing.T
	doc map[string]any // numbers as json.Number, as the validator wants them

	// loose compiles the schemas as published: objects allow fields they do
	// not list, so that v1 can grow. strict compiles them with
	// "additionalProperties": false added to every object schema, so that a
	// field the server sends but the document does not describe fails.
	loose, strict *jsonschema.Compiler
}

// loadAsyncAPI reads and parses docs/asyncapi.json.
func loadAsyncAPI(t *testing.T) *asyncAPI {
	t.Helper()
	raw, err := os.ReadFile(asyncAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	decode := func() map[string]any {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("parse %s: %v", asyncAPIPath, err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s is not a JSON object", asyncAPIPath)
		}
		return m
	}
	a := &asyncAPI{t: t, doc: decode()}
	strictDoc := decode()
	closeObjects(strictDoc)
	for _, c := range []struct {
		comp **jsonschema.Compiler
		doc  map[string]any
	}{{&a.loose, a.doc}, {&a.strict, strictDoc}} {
		comp := jsonschema.NewCompiler()
		comp.DefaultDraft(jsonschema.Draft7) // AsyncAPI's schema format extends draft 7
		if err := comp.AddResource(asyncAPIResource, c.doc); err != nil {
			t.Fatalf("add %s: %v", asyncAPIPath, err)
		}
		*c.comp = comp
	}
	return a
}

// closeObjects adds "additionalProperties": false to every object schema
// that lists its properties and says nothing of others.
func closeObjects(v any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["properties"].(map[string]any); ok && v["type"] == "object" {
			if _, set := v["additionalProperties"]; !set {
				v["additionalProperties"] = false
			}
		}
		for _, e := range v {
			closeObjects(e)
		}
	case []any:
		for _, e := range v {
			closeObjects(e)
		}
	}
}

// schema compiles the schema at a JSON pointer of the document ("#/...").
func (a *asyncAPI) schema(ptr string, strict bool) *jsonschema.Schema {
	a.t.Helper()
	c := a.loose
	if strict {
		c = a.strict
	}
	s, err := c.Compile(asyncAPIResource + ptr)
	if err != nil {
		a.t.Fatalf("compile %s: %v", ptr, err)
	}
	return s
}

// lookup returns the value at a JSON pointer of the document ("#/a/b").
func (a *asyncAPI) lookup(ptr string) (any, bool) {
	if !strings.HasPrefix(ptr, "#/") {
		return nil, false
	}
	var v any = a.doc
	for _, tok := range strings.Split(ptr[2:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch cur := v.(type) {
		case map[string]any:
			next, ok := cur[tok]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			var i int
			if _, err := fmt.Sscan(tok, &i); err != nil || i < 0 || i >= len(cur) {
				return nil, false
			}
			v = cur[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// object returns the object at ptr, failing the test when there is none.
func (a *asyncAPI) object(ptr string) map[string]any {
	a.t.Helper()
	v, ok := a.lookup(ptr)
	m, isObj := v.(map[string]any)
	if !ok || !isObj {
		a.t.Fatalf("%s: no object there", ptr)
	}
	return m
}

// deref follows $ref until a value without one.
func (a *asyncAPI) deref(v any) any {
	for range 10 {
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		r, ok := m["$ref"].(string)
		if !ok {
			return v
		}
		if v, ok = a.lookup(r); !ok {
			return nil
		}
	}
	return nil
}

// unionSchema is a oneOf schema of the document (ClientMessage,
// ServerMessage, MarketEvent) with its members by the const of their key
// field, so that a failure can be explained by the member it was meant for.
type unionSchema struct {
	union   *jsonschema.Schema
	key     string // "op" or "type"
	members map[string]*jsonschema.Schema
}

// unionOf compiles the union schema at #/components/schemas/name.
func (a *asyncAPI) unionOf(name, key string, strict bool) *unionSchema {
	a.t.Helper()
	ptr := "#/components/schemas/" + name
	u := &unionSchema{union: a.schema(ptr, strict), key: key, members: map[string]*jsonschema.Schema{}}
	list, _ := a.object(ptr)["oneOf"].([]any)
	for _, m := range list {
		r := refOf(m)
		s, _ := a.deref(m).(map[string]any)
		props, _ := s["properties"].(map[string]any)
		k, _ := a.deref(props[key]).(map[string]any)
		c, ok := k["const"].(string)
		if !ok {
			a.t.Fatalf("%s: member %s has no const %s", ptr, r, key)
		}
		u.members[c] = a.schema(r, strict)
	}
	return u
}

// validate validates one JSON text against the union; on failure the error
// is the one of the member its key names, when there is one.
func (u *unionSchema) validate(text []byte) error {
	err := validate(u.union, text)
	if err == nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(text, &m) != nil {
		return err
	}
	k, _ := m[u.key].(string)
	member, ok := u.members[k]
	if !ok {
		return fmt.Errorf("%s %q is not in the document", u.key, k)
	}
	if merr := validate(member, text); merr != nil {
		return merr
	}
	return err
}

// messageKind names a message by what its payload schema fixes: "op:NAME"
// for a client request, "type:NAME" for a server message or input event, ""
// when it fixes neither.
func (a *asyncAPI) messageKind(msg map[string]any) string {
	payload, _ := a.deref(msg["payload"]).(map[string]any)
	props, _ := payload["properties"].(map[string]any)
	for _, key := range []string{"op", "type"} {
		p, _ := a.deref(props[key]).(map[string]any)
		if c, ok := p["const"].(string); ok {
			return key + ":" + c
		}
	}
	return ""
}

// validate decodes one JSON text and validates it against s.
func validate(s *jsonschema.Schema, text []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(text))
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return s.Validate(v)
}

// TestAsyncAPIDocument checks the document's structure: AsyncAPI 3.0.0, the
// three channels with every message the protocol has, operations whose
// channel and messages resolve within the document, payload schemas that
// compile and accept their own examples, enumerations that equal the
// server's, and decimal patterns that agree with the server's parser.
func TestAsyncAPIDocument(t *testing.T) {
	a := loadAsyncAPI(t)
	if v := a.doc["asyncapi"]; v != "3.0.0" {
		t.Errorf("asyncapi = %v, want 3.0.0", v)
	}
	info := a.object("#/info")
	for _, k := range []string{"title", "version", "description"} {
		if s, _ := info[k].(string); s == "" {
			t.Errorf("info.%s is missing", k)
		}
	}

	// Every $ref resolves inside the document.
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				if _, found := a.lookup(r); !found {
					t.Errorf("%s: $ref %q does not resolve", path, r)
				}
			}
			for k, e := range v {
				walk(path+"/"+k, e)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s/%d", path, i), e)
			}
		}
	}
	walk("#", a.doc)

	// The channels and the messages each must carry.
	want := map[string]struct {
		address string
		kinds   []string
	}{
		"ws": {"/v1/ws", []string{"op:subscribe", "op:unsubscribe", "op:snapshot", "op:replay", "op:ping",
			"type:ack", "type:error", "type:snapshot", "type:update", "type:trade", "type:ticker", "type:pong", "type:notice"}},
		"marketEvents": {"market.events", []string{"type:add", "type:modify", "type:cancel", "type:trade", "type:level", "type:snapshot"}},
		"deadLetters":  {"market.events.dlq", []string{""}},
	}
	channels := a.object("#/channels")
	if len(channels) != len(want) {
		t.Errorf("%d channels, want %d", len(channels), len(want))
	}
	kindOf := map[string]string{} // "#/channels/C/messages/M" → kind
	for name, w := range want {
		ch := a.object("#/channels/" + name)
		if ch["address"] != w.address {
			t.Errorf("channel %s: address %v, want %s", name, ch["address"], w.address)
		}
		var kinds []string
		for mname, m := range a.object("#/channels/" + name + "/messages") {
			msg, _ := a.deref(m).(map[string]any)
			if msg == nil {
				t.Errorf("channel %s: message %s does not resolve", name, mname)
				continue
			}
			k := a.messageKind(msg)
			kinds = append(kinds, k)
			kindOf["#/channels/"+name+"/messages/"+mname] = k
		}
		slices.Sort(kinds)
		wk := slices.Sorted(slices.Values(w.kinds))
		if !slices.Equal(kinds, wk) {
			t.Errorf("channel %s carries %q, want %q", name, kinds, wk)
		}
	}

	// Operations: a channel and messages of that channel; on the WebSocket,
	// marketd receives requests and sends everything else.
	used := map[string]bool{}
	for name, v := range a.object("#/operations") {
		op, _ := v.(map[string]any)
		action, _ := op["action"].(string)
		if action != "send" && action != "receive" {
			t.Errorf("operation %s: action %q", name, action)
		}
		chRef := refOf(op["channel"])
		if _, ok := a.lookup(chRef); !ok || !strings.HasPrefix(chRef, "#/channels/") {
			t.Errorf("operation %s: channel %q is not a channel of the document", name, chRef)
			continue
		}
		check := func(list any, what string, wantPrefix string) {
			refs, _ := list.([]any)
			if len(refs) == 0 {
				t.Errorf("operation %s: no %s", name, what)
			}
			for _, r := range refs {
				mref := refOf(r)
				kind, ok := kindOf[mref]
				if !ok || !strings.HasPrefix(mref, chRef+"/messages/") {
					t.Errorf("operation %s: %s %q is not a message of %s", name, what, mref, chRef)
					continue
				}
				used[mref] = true
				if chRef == "#/channels/ws" && !strings.HasPrefix(kind, wantPrefix) {
					t.Errorf("operation %s (%s): %s %s is a %q message", name, action, what, mref, kind)
				}
			}
		}
		prefix := "type:"
		if action == "receive" {
			prefix = "op:"
		}
		check(op["messages"], "messages", prefix)
		if reply, ok := op["reply"].(map[string]any); ok {
			if refOf(reply["channel"]) != chRef {
				t.Errorf("operation %s: reply on %q, want %s", name, refOf(reply["channel"]), chRef)
			}
			check(reply["messages"], "reply messages", "type:")
		}
	}
	for mref := range kindOf {
		if !used[mref] {
			t.Errorf("message %s is in no operation", mref)
		}
	}

	// Every message's payload compiles and accepts each of its examples,
	// and so does the union of its channel.
	unions := map[string]string{"op:": "ClientMessage", "type:": "ServerMessage"}
	for name, v := range a.object("#/components/messages") {
		msg, _ := v.(map[string]any)
		ptr := "#/components/messages/" + name
		payload := a.schema(ptr+"/payload", true)
		var headers *jsonschema.Schema
		if _, ok := msg["headers"]; ok {
			headers = a.schema(ptr+"/headers", false)
		}
		var union *jsonschema.Schema
		kind := a.messageKind(msg)
		for _, ch := range []string{"ws", "marketEvents"} {
			if _, ok := a.lookup("#/channels/" + ch + "/messages/" + name); !ok {
				continue
			}
			u := "MarketEvent"
			if ch == "ws" {
				u = unions[kind[:strings.Index(kind, ":")+1]]
			}
			union = a.schema("#/components/schemas/"+u, true)
		}
		examples, _ := msg["examples"].([]any)
		if len(examples) == 0 {
			t.Errorf("message %s has no example", name)
		}
		for i, e := range examples {
			ex, _ := e.(map[string]any)
			if err := payload.Validate(ex["payload"]); err != nil {
				t.Errorf("message %s example %d: %v", name, i, err)
			}
			if union != nil {
				if err := union.Validate(ex["payload"]); err != nil {
					t.Errorf("message %s example %d against its channel's union: %v", name, i, err)
				}
			}
			if headers != nil {
				if err := headers.Validate(ex["headers"]); err != nil {
					t.Errorf("message %s example %d headers: %v", name, i, err)
				}
			}
		}
	}

	// Enumerations equal the server's own lists.
	var codes []string
	for c := stream.ErrorCode(1); c.String() != "invalid"; c++ {
		codes = append(codes, c.String())
	}
	checkEnum(t, a, "#/components/schemas/ErrorCode", codes)
	var reasons []string
	for _, r := range feed.Reasons() {
		reasons = append(reasons, r.String())
	}
	checkEnum(t, a, "#/components/schemas/DeadLetterReason", reasons)
	var depths []string
	for _, d := range book.Depths {
		depths = append(depths, fmt.Sprint(d))
	}
	checkEnum(t, a, "#/components/schemas/Depth", depths)

	checkBookExamples(t, a)
}

// refOf returns the $ref of a reference object.
func refOf(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["$ref"].(string)
	return s
}

// checkEnum compares the enum of the schema at ptr with want, in any order.
func checkEnum(t *testing.T, a *asyncAPI, ptr string, want []string) {
	t.Helper()
	s := a.object(ptr)
	list, _ := s["enum"].([]any)
	var got []string
	for _, v := range list {
		got = append(got, fmt.Sprint(v))
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s enum %q, the server has %q", ptr, got, want)
	}
}

// checkBookExamples applies the document's book update example to its
// snapshot example and checks both checksums, as a client would.
func checkBookExamples(t *testing.T, a *asyncAPI) {
	t.Helper()
	type levels = [][2]string
	var msgs [2]struct {
		Seq      uint64 `json:"seq"`
		PrevSeq  uint64 `json:"prev_seq"`
		Bids     levels `json:"bids"`
		Asks     levels `json:"asks"`
		Checksum uint32 `json:"checksum"`
	}
	for i, name := range []string{"snapshot", "update"} {
		v, _ := a.lookup("#/components/messages/" + name + "/examples/0/payload")
		b, err := json.Marshal(v)
		if err == nil {
			err = json.Unmarshal(b, &msgs[i])
		}
		if err != nil {
			t.Fatalf("%s example: %v", name, err)
		}
	}
	wb := &wireBook{bids: map[string]string{}, asks: map[string]string{}}
	for i, m := range msgs {
		setLevels(wb.bids, m.Bids)
		setLevels(wb.asks, m.Asks)
		if got := wb.checksum(); got != m.Checksum {
			t.Errorf("example %d: the book's checksum is %d, the example says %d", i, got, m.Checksum)
		}
	}
	if msgs[1].PrevSeq != msgs[0].Seq {
		t.Errorf("update example prev_seq %d, snapshot example seq %d: they should chain", msgs[1].PrevSeq, msgs[0].Seq)
	}
}

// TestAsyncAPIDecimals checks the decimal schemas against book.ParseNum,
// the server's parser: an input decimal validates when marketd accepts it
// with the right sign, and an output decimal when it is canonical.
func TestAsyncAPIDecimals(t *testing.T) {
	a := loadAsyncAPI(t)
	pos := a.schema("#/components/schemas/InputPositiveDecimal", true)
	nonNeg := a.schema("#/components/schemas/InputNonNegativeDecimal", true)
	canon := a.schema("#/components/schemas/Decimal", true)
	canonPos := a.schema("#/components/schemas/PositiveDecimal", true)
	texts := []string{
		"0", "1", "12", "50000.1", "50000.10", "0.5", ".5", "5.", "+5", "-5", "-0", "0.0", "00", "007",
		"0.00000001", "0.000000010", "0.000000001", "1.123456789", "12345678.12345678", "1.000000000",
		"92233720368.54775807", "abc", "", "1.2.3", "12,5", " 1", "1e3", "1.5E-2", "0e5", "1e", "--1",
		"0.10", "10", "100.25", "0.05", "9999999999",
	}
	for _, s := range texts {
		n, err := book.ParseNum(s)
		ok := err == nil
		exp := strings.ContainsAny(s, "eE")
		// The patterns do not count the precision of exponent forms.
		if exp && errors.Is(err, book.ErrNumPrecision) {
			continue
		}
		inst, _ := json.Marshal(s)
		cases := []struct {
			name   string
			schema *jsonschema.Schema
			want   bool
		}{
			{"InputPositiveDecimal", pos, ok && n > 0},
			{"InputNonNegativeDecimal", nonNeg, ok && n >= 0},
			{"Decimal", canon, ok && n >= 0 && n.String() == s},
			{"PositiveDecimal", canonPos, ok && n > 0 && n.String() == s},
		}
		for _, c := range cases {
			if got := validate(c.schema, inst) == nil; got != c.want {
				t.Errorf("%s accepts %q: %v; marketd (ParseNum %v, err %v) says %v", c.name, s, got, n, err, c.want)
			}
		}
	}
	// Bare JSON numbers are input decimals too.
	for _, c := range []struct {
		text     string
		pos, non bool
	}{{"12", true, true}, {"0.5", true, true}, {"0", false, true}, {"-1", false, false},
		{"0.000000001", false, false}, {"0.00000001", true, true}, {"92233720368.54775808", false, false}} {
		if got := validate(pos, []byte(c.text)) == nil; got != c.pos {
			t.Errorf("InputPositiveDecimal accepts the number %s: %v, want %v", c.text, got, c.pos)
		}
		if got := validate(nonNeg, []byte(c.text)) == nil; got != c.non {
			t.Errorf("InputNonNegativeDecimal accepts the number %s: %v, want %v", c.text, got, c.non)
		}
	}
}

// wsRequest is one request the live test sends, what the schema says of it,
// and the reply the server must give.
type wsRequest struct {
	text      string
	valid     bool   // ClientMessage accepts it
	id        string // the id as JSON text; "" when the reply has none
	replyType string // ack, pong or error
	code      string // error code
}

// TestAsyncAPIAgainstServer runs marketd and validates against the
// document what it really sends: every reply to good and bad requests
// (every error code), book snapshots and updates (raw and merged), trades,
// tickers, pongs and the slow-client notice, all against the strict
// schemas; and the records on Kafka: the simulator's good records and
// docs/protocol.md's examples must validate, and its deliberately bad ones
// must not where a schema can tell.
func TestAsyncAPIAgainstServer(t *testing.T) {
	a := loadAsyncAPI(t)
	serverMsg := a.unionOf("ServerMessage", "type", true)
	clientMsg := a.unionOf("ClientMessage", "op", true)
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	svc := startTestService(t, "-sim-rate", "1000", "-queue-soft", "16384", "-queue-hard", "67108864")
	wsURL := "ws" + strings.TrimPrefix(svc.URL("/v1/ws"), "http")

	// Wait for every simulated symbol, so that subscriptions find them.
	checkFor(t, 10*time.Second, func() error {
		var syms []string
		getJSON(t, svc.URL("/v1/symbols"), &syms)
		if len(syms) < 4 {
			return fmt.Errorf("symbols %v, want 4", syms)
		}
		return nil
	})

	var mu sync.Mutex
	seen := map[string]int{} // message type, and some variants, → count
	check := func(conn string, text []byte) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(text, &m); err != nil {
			t.Errorf("%s: server sent %q: %v", conn, text, err)
			return nil
		}
		if err := serverMsg.validate(text); err != nil {
			t.Errorf("%s: server message does not match the document: %s\n%v", conn, text, err)
		}
		typ, _ := m["type"].(string)
		mu.Lock()
		seen[typ]++
		switch {
		case typ == "snapshot" && m["id"] != nil:
			seen["snapshot with id"]++
		case typ == "update" && m["conflated"] == true:
			seen["conflated update"]++
		case typ == "ack" && m["resumed"] != nil:
			seen["ack with resumed"]++
		}
		mu.Unlock()
		return m
	}

	// The slow client's book, from records that must match the document.
	big, bigChange := bigBookEvents()
	event := a.unionOf("MarketEvent", "type", true)
	for _, v := range [][]byte{big, bigChange} {
		if err := event.validate(v); err != nil {
			t.Fatalf("the test's own record does not match the document: %.200s\n%v", v, err)
		}
	}
	produce(ctx, t, svc, bigBookSymbol, big)
	checkFor(t, 10*time.Second, func() error {
		resp, err := http.Get(svc.URL("/v1/book/" + bigBookSymbol + "?depth=0"))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var b struct{ Bids [][2]string }
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || len(b.Bids) != bigBookLevels {
			return fmt.Errorf("%s: %s, %d bids (%v), want %d", bigBookSymbol, resp.Status, len(b.Bids), err, bigBookLevels)
		}
		return nil
	})

	// The slow client goes first, alone: it watches marketd's queued bytes,
	// which only its queue may grow.
	slowClient(ctx, t, wsURL, svc.URL("/metrics"), func() {
		produce(ctx, t, svc, bigBookSymbol, bigChange)
		// Applied means published: the book answers HTTP on the
		// goroutine that applies and publishes its changes.
		poll(ctx, t, "the change of "+bigBookSymbol, func() error {
			resp, err := http.Get(svc.URL("/v1/book/" + bigBookSymbol + "?depth=1"))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var b struct{ Bids [][2]string }
			if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || len(b.Bids) == 0 || b.Bids[0][1] != "7" {
				return fmt.Errorf("%s: best bid %v (%v), want size 7", bigBookSymbol, b.Bids, err)
			}
			return nil
		})
	}, check)

	var wg sync.WaitGroup
	defer func() { // on a Fatal too: the client reports through t
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { rateLimitedClient(ctx, t, wsURL, check) })

	many := make([]string, 1025)
	for i := range many {
		many[i] = fmt.Sprintf("S%d", i)
	}
	manyJSON, _ := json.Marshal(many)
	reqs := []wsRequest{
		{`{"op":"subscribe","id":1,"channel":"book","symbols":["BTC-USD"],"depth":10}`, true, "1", "ack", ""},
		{`{"op":"subscribe","id":2,"channel":"book","symbols":["ETH-USD"],"depth":1,"interval":"100ms"}`, true, "2", "ack", ""},
		{`{"op":"subscribe","id":3,"channel":"ticker","symbols":["*"]}`, true, "3", "ack", ""},
		{`{"op":"subscribe","id":4,"channel":"trades","symbols":["*"]}`, true, "4", "ack", ""},
		{`{"op":"snapshot","id":"snap-5","symbol":"SOL-USD","depth":25}`, true, `"snap-5"`, "ack", ""},
		{`{"op":"ping","id":6}`, true, "6", "pong", ""},
		{`{"op":"subscribe","id":7,"channel":"book","symbols":["DOGE-USD"],"resume":{"DOGE-USD":1}}`, true, "7", "ack", ""},
		{`{"op":"unsubscribe","id":8,"channel":"book","symbols":["SOL-USD"]}`, true, "8", "ack", ""},
		{`{"op":"ping"}`, true, "", "pong", ""},
		{`not json`, false, "", "error", "bad_request"},
		{`{"op":"fly","id":10}`, false, "10", "error", "unknown_op"},
		{`{"op":"subscribe","id":11,"channel":"candles","symbols":["BTC-USD"]}`, false, "11", "error", "unknown_channel"},
		{`{"op":"subscribe","id":12,"channel":"book","symbols":["NOPE-USD"]}`, true, "12", "error", "unknown_symbol"},
		{`{"op":"subscribe","id":13,"channel":"book","symbols":["*"]}`, false, "13", "error", "bad_request"},
		{`{"op":"subscribe","id":14,"channel":"book","symbols":["BTC-USD"],"depth":7}`, false, "14", "error", "bad_request"},
		{`{"op":"subscribe","id":15,"channel":"trades"}`, false, "15", "error", "bad_request"},
		{`{"op":"subscribe","id":16,"channel":"ticker","symbols":` + string(manyJSON) + `}`, true, "16", "error", "too_many_subscriptions"},
		{`{"op":"snapshot","id":17}`, false, "17", "error", "bad_request"},
		{`{"op":"ping","id":{"x":1}}`, false, "", "error", "bad_request"},
		{`{"op":"subscribe","id":18,"channel":"book","symbols":["BTC-USD"],"interval":"5m"}`, false, "18", "error", "bad_request"},
	}
	for _, r := range reqs {
		if got := clientMsg.validate([]byte(r.text)) == nil; got != r.valid {
			t.Errorf("ClientMessage accepts %.80s: %v, want %v", r.text, got, r.valid)
		}
	}

	conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(16 << 20)
	for _, r := range reqs {
		if err := conn.Write(ctx, websocket.MessageText, []byte(r.text)); err != nil {
			t.Fatalf("send %.80s: %v", r.text, err)
		}
	}
	// Replies by id; those without an id in order of arrival, by type.
	replies := map[string]map[string]any{}
	var anonymous []string
	wantAnon := []string{}
	for _, r := range reqs {
		if r.id == "" {
			wantAnon = append(wantAnon, r.replyType+":"+r.code)
		}
	}
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(replies) == len(reqs)-len(wantAnon) && len(anonymous) == len(wantAnon) &&
			seen["update"] > 20 && seen["conflated update"] > 0 && seen["trade"] > 0 && seen["ticker"] > 0
	}
	for !done() {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (replies %d of %d, seen %v)", err, len(replies), len(reqs), seen)
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			m := check("main", line)
			typ, _ := m["type"].(string)
			if typ != "ack" && typ != "error" && typ != "pong" {
				continue
			}
			if id, ok := m["id"]; ok {
				b, _ := json.Marshal(id)
				replies[string(b)] = m
			} else {
				code, _ := m["code"].(string)
				anonymous = append(anonymous, typ+":"+code)
			}
		}
	}
	for _, r := range reqs {
		if r.id == "" {
			continue
		}
		m := replies[r.id]
		if typ, _ := m["type"].(string); typ != r.replyType || (r.code != "" && m["code"] != r.code) {
			t.Errorf("reply to %.80s: %v, want %s %s", r.text, m, r.replyType, r.code)
		}
	}
	slices.Sort(anonymous)
	slices.Sort(wantAnon)
	if !slices.Equal(anonymous, wantAnon) {
		t.Errorf("replies without id %q, want %q", anonymous, wantAnon)
	}
	_ = conn.Close(websocket.StatusNormalClosure, "")
	wg.Wait()

	mu.Lock()
	for _, k := range []string{"ack", "error", "snapshot", "update", "trade", "ticker", "pong", "notice",
		"snapshot with id", "conflated update", "ack with resumed"} {
		if seen[k] == 0 {
			t.Errorf("no %s message seen; seen %v", k, seen)
		}
	}
	t.Logf("validated server messages in %v: %v", time.Since(start).Round(time.Millisecond), seen)
	mu.Unlock()

	start = time.Now()
	checkKafkaAgainstAsyncAPI(ctx, t, a, svc)
	t.Logf("checked Kafka records in %v", time.Since(start).Round(time.Millisecond))

	// "marketd replay -format jsonl" prints a range as the messages a
	// client would have received, marked as replayed.
	var out, errOut bytes.Buffer
	err = runReplay(ctx, []string{"-brokers", svc.brokerAddr, "-topic", svc.cfg.Topic, "-format", "jsonl",
		"-partition", "0", "-from-offset", "0", "-to-offset", fmt.Sprint(replayRecords - 1), "-log-level", "error"},
		&out, &errOut, func(string) string { return "" })
	if err != nil {
		t.Fatalf("marketd replay: %v\n%s", err, errOut.Bytes())
	}
	lines := 0
	for line := range bytes.Lines(out.Bytes()) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		if m := check("replay", line); m["replay"] != true {
			t.Errorf("replayed message without \"replay\":true: %s", line)
		}
		lines++
	}
	if lines == 0 {
		t.Errorf("marketd replay printed nothing; stderr: %s", errOut.Bytes())
	}
	t.Logf("validated %d messages of marketd replay -format jsonl", lines)
}

// The slow client's book: bigBookSymbol, level-based, put on the input
// topic by the test with bigBookLevels levels a side (a whole-book snapshot
// of it is some 170 KB). The client subscribes to its whole book
// slowClientSubscribes times (within the rate limit's burst): some 6.8 MB,
// more than the kernel's socket buffers take (at most 4 MiB of send buffer
// here, and a receive buffer that does not grow while nothing is read). It
// reads nothing until marketd holds slowClientQueued bytes for it, past the
// -queue-soft of the test's service.
const (
	bigBookSymbol        = "BIG-USD"
	bigBookLevels        = 5000
	slowClientSubscribes = 40
	slowClientQueued     = 64 << 10
)

// bigBookEvents returns the records that make and then change the slow
// client's book: a level-based snapshot, and one level change.
func bigBookEvents() (snapshot, change []byte) {
	var b strings.Builder
	b.WriteString(`{"type":"snapshot","symbol":"` + bigBookSymbol + `","bids":[`)
	for i := range bigBookLevels {
		if i > 0 {
			b.WriteByte(',')
		}
		cents := 50000 - (i + 1)
		fmt.Fprintf(&b, `["%d.%02d","1.5"]`, cents/100, cents%100)
	}
	b.WriteString(`],"asks":[`)
	for i := range bigBookLevels {
		if i > 0 {
			b.WriteByte(',')
		}
		cents := 50000 + (i + 1)
		fmt.Fprintf(&b, `["%d.%02d","2"]`, cents/100, cents%100)
	}
	b.WriteString(`]}`)
	return []byte(b.String()), []byte(`{"type":"level","symbol":"` + bigBookSymbol + `","side":"buy","price":"499.99","size":"7"}`)
}

// poll calls check every few milliseconds until it returns nil, or fails
// the test (from any goroutine) with check's last error when ctx ends.
func poll(ctx context.Context, t *testing.T, what string, check func() error) {
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Errorf("waiting for %s: %v", what, err)
			return
		}
	}
}

// produce writes records keyed by key to the topic of the test's service.
func produce(ctx context.Context, t *testing.T, svc *service, key string, values ...[]byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(svc.brokerAddr), Topic: svc.cfg.Topic, Balancer: &kafka.Hash{},
		BatchTimeout: 10 * time.Millisecond, BatchBytes: 4 << 20, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte(key), Value: v}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Errorf("produce to %s: %v", svc.cfg.Topic, err)
	}
}

// metricValue reads one unlabelled metric from a Prometheus text endpoint.
func metricValue(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				return 0, fmt.Errorf("metric %s: %q: %w", name, v, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("GET %s: no metric %s", url, name)
}

// slowClient makes marketd conflate a client deterministically: it
// subscribes to the whole big book many times over without reading, until
// marketd has handled every subscription and its queue for the client is
// past the soft limit whatever the kernel absorbed; then it changes the book (change is called), which marketd
// must merge and announce with a notice. It reads until the notice,
// validating the notice and the first message of each other kind but
// snapshots.
func slowClient(ctx context.Context, t *testing.T, wsURL, metricsURL string, change func(), check func(string, []byte) map[string]any) {
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Errorf("slow client: dial: %v", err)
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(16 << 20)
	for i := range slowClientSubscribes {
		req := fmt.Sprintf(`{"op":"subscribe","id":%d,"channel":"book","symbols":[%q],"depth":0}`, i+1, bigBookSymbol)
		if err := conn.Write(ctx, websocket.MessageText, []byte(req)); err != nil {
			t.Errorf("slow client: send: %v", err)
			return
		}
	}
	// marketd handles a connection's ops in order: once it has answered
	// this one with an error, which it counts, every subscription above is
	// in place. A change before that could land in a later subscription's
	// snapshot instead of in an update, and there would be nothing to
	// conflate.
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"op":"fly","id":"last"}`)); err != nil {
		t.Errorf("slow client: send: %v", err)
		return
	}
	// No other client of the test lets a queue grow or sends a bad op yet.
	const answered = `marketd_stream_bad_messages_total{code="unknown_op"}`
	for queued, errs := 0.0, 0.0; queued < slowClientQueued || errs < 1; {
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Errorf("slow client: marketd never queued %d bytes for it and answered its last op (last %v bytes, %v answered)", slowClientQueued, queued, errs)
			return
		}
		var err error
		if queued, err = metricValue(ctx, metricsURL, "marketd_stream_queued_bytes"); err == nil {
			errs, err = metricValue(ctx, metricsURL, answered)
		}
		if err != nil {
			t.Errorf("slow client: %v", err)
			return
		}
	}
	change()
	read := 0
	checked := map[string]bool{}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Errorf("slow client: no notice in %d bytes (kinds %v) before: %v", read, slices.Sorted(maps.Keys(checked)), err)
			return
		}
		read += len(data)
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			// Its snapshots are big (slow to validate under the race
			// detector) and of a kind the main connection validates.
			kind, _, _ := bytes.Cut(line, []byte(","))
			if string(kind) == `{"type":"snapshot"` || checked[string(kind)] && string(kind) != `{"type":"notice"` {
				continue
			}
			checked[string(kind)] = true
			if m := check("slow", line); m["type"] == "notice" {
				t.Logf("slow client: notice after %d bytes", read)
				_ = conn.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	}
}

// rateLimitedClient sends pings faster than the rate limit allows and reads
// until a rate_limited error, validating everything.
func rateLimitedClient(ctx context.Context, t *testing.T, wsURL string, check func(string, []byte) map[string]any) {
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Errorf("rate-limited client: dial: %v", err)
		return
	}
	defer conn.CloseNow()
	for i := range stream.DefaultRateBurst + 20 {
		if err := conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"op":"ping","id":%d}`, i)); err != nil {
			t.Errorf("rate-limited client: send: %v", err)
			return
		}
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Errorf("rate-limited client: no rate_limited error before: %v", err)
			return
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			if m := check("rate-limited", line); m["code"] == "rate_limited" {
				_ = conn.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	}
}

// schemaDetectable are the simulator's bad-record reasons that a schema can
// see; the others (key_mismatch, mode_mismatch, unknown_order,
// duplicate_order, overfill) depend on the key or the book.
var schemaDetectable = map[string]bool{
	"not_json": true, "unknown_type": true, "missing_field": true,
	"bad_field": true, "non_positive": true, "precision": true,
}

// replayRecords is how many records of partition 0 the replay check reads.
const replayRecords = 300

// Bounds on the simulator's good records validated: every bad one is.
const (
	minGoodRecords = 500
	maxGoodRecords = 2000
)

// checkKafkaAgainstAsyncAPI validates the records on the input topic, the
// dead letters, and the Kafka examples of docs/protocol.md.
func checkKafkaAgainstAsyncAPI(ctx context.Context, t *testing.T, a *asyncAPI, svc *service) {
	t.Helper()
	event := a.unionOf("MarketEvent", "type", true)
	good, bad := 0, 0
	// The simulator may not have produced enough yet when the WebSocket
	// part ran fast: wait for it (bad records are about 1 in 500).
	checkFor(t, 30*time.Second, func() error {
		if n := svc.ingester.Stats().Records; n < minGoodRecords+minGoodRecords/10 {
			return fmt.Errorf("%d records ingested, want at least %d to validate", n, minGoodRecords+minGoodRecords/10)
		}
		return nil
	})
	records := readTopic(ctx, t, svc.brokerAddr, svc.cfg.Topic)
	for _, m := range records {
		reason := ""
		for _, h := range m.Headers {
			if h.Key == feed.SimBadHeader {
				reason = string(h.Value)
			}
		}
		if reason == "" && good >= maxGoodRecords {
			continue // enough: validating is slow under the race detector
		}
		err := event.validate(m.Value)
		switch {
		case reason == "" && err != nil:
			t.Errorf("record at %d/%d does not match the document: %s\n%v", m.Partition, m.Offset, m.Value, err)
		case reason == "":
			good++
		case schemaDetectable[reason] && err == nil:
			t.Errorf("bad record (%s) at %d/%d matches the document: %s", reason, m.Partition, m.Offset, m.Value)
		case !schemaDetectable[reason] && err != nil:
			t.Errorf("record at %d/%d, bad only for %s, does not match the document: %s\n%v", m.Partition, m.Offset, reason, m.Value, err)
		default:
			bad++
		}
	}
	if good < minGoodRecords {
		t.Errorf("only %d good records validated", good)
	}

	headers := a.schema("#/components/messages/deadLetter/headers", false)
	dead := 0
	for _, m := range readTopic(ctx, t, svc.brokerAddr, svc.cfg.Topic+".dlq") {
		h := map[string]any{}
		for _, kv := range m.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if err := headers.Validate(h); err != nil {
			t.Errorf("dead letter at %d: headers %v do not match the document: %v", m.Offset, h, err)
		}
		dead++
	}
	t.Logf("validated %d of %d input records, %d of them bad (rejected by the schema or the book), and %d dead letters", good+bad, len(records), bad, dead)

	// docs/protocol.md: the input examples must validate strictly; the
	// output examples as published (loose), since clients ignore unknown
	// fields; a field the document lacks is logged.
	examples := protocolExamples(t)
	client := a.unionOf("ClientMessage", "op", true)
	serverStrict := a.unionOf("ServerMessage", "type", true)
	serverLoose := a.unionOf("ServerMessage", "type", false)
	for _, ex := range examples {
		var err error
		switch {
		case ex.section == 1:
			err = event.validate([]byte(ex.text))
		case strings.HasPrefix(ex.text, `{"op"`):
			err = client.validate([]byte(ex.text))
		default:
			err = serverLoose.validate([]byte(ex.text))
			if serr := serverStrict.validate([]byte(ex.text)); err == nil && serr != nil {
				t.Logf("docs/protocol.md example has a field the AsyncAPI document lacks: %s\n%v", ex.text, serr)
			}
		}
		if err != nil {
			t.Errorf("docs/protocol.md §%d example does not match the document: %s\n%v", ex.section, ex.text, err)
		}
	}
	if n := len(examples); n < 20 {
		t.Errorf("only %d JSON examples found in docs/protocol.md", n)
	}
}

// protocolExample is one JSON line of a ```json block of docs/protocol.md.
type protocolExample struct {
	section int // the "## N." section it is in
	text    string
}

var sectionRE = regexp.MustCompile(`^## (\d+)\.`)

func protocolExamples(t *testing.T) []protocolExample {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []protocolExample
	section, inJSON := 0, false
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimRight(line, "\n")
		switch {
		case sectionRE.MatchString(line):
			fmt.Sscan(sectionRE.FindStringSubmatch(line)[1], &section)
		case line == "```json":
			inJSON = true
		case strings.HasPrefix(line, "```"):
			inJSON = false
		case inJSON && strings.HasPrefix(line, "{"):
			out = append(out, protocolExample{section, line})
		}
	}
	return out
}
