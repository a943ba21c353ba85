package bench

import (
	"encoding/json"
	"strconv"
	"testing"
)

func TestScanMessage(t *testing.T) {
	tests := []struct {
		in   string
		want wireMsg
	}{
		{`{"type":"update","channel":"book","symbol":"BTC-USD","seq":1234570,"prev_seq":1234567,"ts":1763900000001000,"bids":[["50000.10","0"]],"asks":[["50000.30","2"]],"checksum":1189341132}`,
			wireMsg{Type: []byte("update"), Channel: []byte("book"), Symbol: []byte("BTC-USD"), Seq: 1234570, PrevSeq: 1234567, TS: 1763900000001000, HasSeq: true, HasPrev: true, HasTS: true}},
		{`{ "bids" : [["1","2"],["3","4"]], "type" : "update", "conflated" : true, "seq" : 5, "symbol":"a\"b" }`,
			wireMsg{Type: []byte("update"), Symbol: []byte(`a\"b`), Seq: 5, HasSeq: true, Conflated: true}},
		{`{"type":"notice","code":"conflated","symbol":"X","message":"slow {[\""}`,
			wireMsg{Type: []byte("notice"), Code: []byte("conflated"), Symbol: []byte("X")}},
		{`{"type":"ack","id":1,"op":"subscribe","channel":"book","symbols":["BTC-USD"],"resumed":{"A":"exact"}}`,
			wireMsg{Type: []byte("ack"), Channel: []byte("book")}},
	}
	for _, tt := range tests {
		var m wireMsg
		if err := scanMessage([]byte(tt.in), &m); err != nil {
			t.Errorf("scan %s: %v", tt.in, err)
			continue
		}
		if string(m.Type) != string(tt.want.Type) || string(m.Channel) != string(tt.want.Channel) ||
			string(m.Symbol) != string(tt.want.Symbol) || string(m.Code) != string(tt.want.Code) ||
			m.Seq != tt.want.Seq || m.PrevSeq != tt.want.PrevSeq || m.TS != tt.want.TS ||
			m.HasSeq != tt.want.HasSeq || m.HasPrev != tt.want.HasPrev || m.HasTS != tt.want.HasTS || m.Conflated != tt.want.Conflated {
			t.Errorf("scan %s:\n got %+v\nwant %+v", tt.in, m, tt.want)
		}
	}
	for _, bad := range []string{``, `[]`, `{"type":"x"`, `{"seq":x}`, `{"a":[1,2}`, `{"a":"unterminated}`} {
		var m wireMsg
		if err := scanMessage([]byte(bad), &m); err == nil {
			t.Errorf("scan %q: no error", bad)
		}
	}
}

func TestParseInt(t *testing.T) {
	for _, s := range []string{"0", "7", "-7", "1763900000001000", "999999999999999999", "9223372036854775807", "-9223372036854775808"} {
		want, _ := strconv.ParseInt(s, 10, 64)
		if got, ok := parseInt([]byte(s)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "-", "1x", "+1", "1.5", "9223372036854775808", "--1"} {
		if _, ok := parseInt([]byte(s)); ok {
			t.Errorf("parseInt(%q) accepted", s)
		}
	}
}

// FuzzScanMessage checks that the scanner never panics and agrees with
// encoding/json on the fields it extracts from any valid object.
func FuzzScanMessage(f *testing.F) {
	f.Add(`{"type":"update","channel":"book","symbol":"BTC-USD","seq":3,"prev_seq":1,"ts":17,"bids":[["1","0"]],"asks":[]}`)
	f.Add(`{"type":"ticker","symbol":"S\u00e9","seq":9,"ts":1}`)
	f.Fuzz(func(t *testing.T, s string) {
		var m wireMsg
		err := scanMessage([]byte(s), &m)
		// A map, not a struct: encoding/json matches struct fields without
		// regard to case, the protocol (and the scanner) by exact key.
		var ref map[string]json.RawMessage
		if json.Unmarshal([]byte(s), &ref) != nil || err != nil {
			return
		}
		for key, got := range map[string]struct {
			has bool
			v   int64
		}{"seq": {m.HasSeq, m.Seq}, "prev_seq": {m.HasPrev, m.PrevSeq}} {
			raw, ok := ref[key]
			if !ok {
				continue
			}
			want, perr := strconv.ParseInt(string(raw), 10, 64)
			if perr != nil {
				continue // not an integer: the scanner may refuse or skip it
			}
			if !got.has || got.v != want {
				t.Errorf("%s: scan %v/%d, json %d", key, got.has, got.v, want)
			}
		}
	})
}

// BenchmarkScanMessage measures the load generator's per-message parse of a
// typical book delta (what it pays for every delivery besides the read).
func BenchmarkScanMessage(b *testing.B) {
	msg := []byte(`{"type":"update","channel":"book","symbol":"SYM00","seq":123457,"prev_seq":123456,"ts":1763900000001000,"bids":[["10000.01","12.3456"]],"asks":[["10000.05","0"],["10000.09","3.5"]],"checksum":1189341132}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	var m wireMsg
	for b.Loop() {
		if err := scanMessage(msg, &m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientHandle measures a client's whole per-message work after
// the read: scan, seq chain, counters and latency histogram.
func BenchmarkClientHandle(b *testing.B) {
	c := newCounters()
	c.measuring.Store(true)
	lc := newLoadClient(c, 0)
	lines := make([][]byte, 1024) // a chain of seqs; it breaks once per lap
	for i := range lines {
		lines[i] = []byte(`{"type":"update","channel":"book","symbol":"SYM00","seq":` + strconv.Itoa(i+2) + `,"prev_seq":` + strconv.Itoa(i+1) + `,"ts":1763900000001000,"bids":[["10000.01","12.3456"]],"asks":[],"checksum":1}`)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		lc.handle(lines[i%len(lines)], 1763900000002000, true)
		i++
	}
}
