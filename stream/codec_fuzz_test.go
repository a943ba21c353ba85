package stream

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/marketd/marketd/book"
)

// Fuzz targets of the encoders, the deflate negotiation and the frame
// guard (the client op and frame paths are fuzzed end to end in
// fuzz_test.go). Their seeds live in testdata/fuzz/<target>/ and run with
// every go test. Fuzz one with e.g.
//
//	go test ./stream -run '^$' -fuzz '^FuzzUpdate$' -fuzztime 1m

// FuzzAppendString checks the JSON string encoder against encoding/json:
// the same string comes back, invalid UTF-8 replaced the same way.
func FuzzAppendString(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		enc := appendString(nil, s)
		var got string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %q: %v", s, enc, err)
		}
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%q: got %q, encoding/json gives %q", s, got, want)
		}
	})
}

// FuzzUpdate encodes an update made of arbitrary changes and decodes it
// with encoding/json: the levels of the view come back in order, with the
// exact numbers.
func FuzzUpdate(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte, symbol string, seq, prev uint64, view uint8) {
		v := int(view) % len(book.Depths)
		var changes []book.Change
		for len(raw) >= 18 {
			changes = append(changes, book.Change{
				Side:  book.Side(raw[0]%2 + 1),
				Price: book.Num(binary.LittleEndian.Uint64(raw[1:9])),
				Size:  book.Num(binary.LittleEndian.Uint64(raw[9:17])),
				Views: book.ViewMask(raw[17]),
			})
			raw = raw[18:]
		}
		u := update{seq: seq, prevSeq: prev, ts: int64(seq), checksum: uint32(prev), changes: changes, conflated: view%2 == 1}
		enc := appendUpdate(nil, appendString(nil, symbol), &u, v)
		var m wireMsg
		if err := json.Unmarshal(enc, &m); err != nil {
			t.Fatalf("invalid JSON %q: %v", enc, err)
		}
		if m.Type != "update" || m.Seq != seq || *m.PrevSeq != prev || m.Conflated != u.conflated || *m.Checksum != u.checksum {
			t.Fatalf("fields of %q", enc)
		}
		var bids, asks [][]string
		for _, c := range changes {
			if !c.Views.Has(v) {
				continue
			}
			l := []string{c.Price.String(), c.Size.String()}
			if c.Side == book.Buy {
				bids = append(bids, l)
			} else {
				asks = append(asks, l)
			}
		}
		if len(bids) == 0 {
			bids = [][]string{}
		}
		if len(asks) == 0 {
			asks = [][]string{}
		}
		if !reflect.DeepEqual(m.Bids, bids) || !reflect.DeepEqual(m.Asks, asks) {
			t.Fatalf("levels of %q: want %v %v", enc, bids, asks)
		}
	})
}

// FuzzNegotiate checks the permessage-deflate negotiation on arbitrary
// offers: it never panics, accepts only when one offer is
// permessage-deflate, then with a window of 8 to 15 bits, and answers
// well-formed parameters (read back as an offer, they give the same window).
func FuzzNegotiate(f *testing.F) {
	f.Fuzz(func(t *testing.T, offer string, takeover bool) {
		h := http.Header{}
		h.Add("Sec-WebSocket-Extensions", offer)
		o, ok := negotiateDeflate(h)
		if !ok {
			return
		}
		if o.serverBits < minWindowBits || o.serverBits > maxWindowBits {
			t.Fatalf("%q: accepted with %d window bits", offer, o.serverBits)
		}
		if !bytes.Contains([]byte(offer), []byte(extPermessageDeflate)) {
			t.Fatalf("%q: accepted without permessage-deflate", offer)
		}
		if o.serverNoTakeover && !bytes.Contains([]byte(offer), []byte("server_no_context_takeover")) {
			t.Fatalf("%q: server_no_context_takeover read from nowhere", offer)
		}
		answer := o.answer(takeover)
		back, ok := negotiateDeflate(http.Header{"Sec-Websocket-Extensions": {answer}})
		if !ok || back.serverBits != o.serverBits || back.serverNoTakeover != !takeover {
			t.Fatalf("%q: answer %q reads back as %+v, %v", offer, answer, back, ok)
		}
	})
}

// FuzzFrameGuard feeds an arbitrary client byte stream to the frame guard
// whole and cut in pieces: the verdict and the state are the same however
// the reads split the stream.
func FuzzFrameGuard(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte, deflate bool, cut uint8) {
		whole := &frameGuard{deflate: deflate}
		okWhole := whole.scan(stream)
		pieces := &frameGuard{deflate: deflate}
		okPieces := true
		step := int(cut)%7 + 1
		for i := 0; i < len(stream) && okPieces; i += step {
			okPieces = pieces.scan(stream[i:min(i+step, len(stream))])
		}
		if okWhole != okPieces {
			t.Fatalf("verdict %v whole, %v in pieces of %d", okWhole, okPieces, step)
		}
		if okWhole && (whole.hn != pieces.hn || whole.remain != pieces.remain) {
			t.Fatalf("state differs: %+v and %+v", whole, pieces)
		}
	})
}
