package book

import (
	"testing"
)

// num parses a decimal for tests; it fails the test on bad text.
func num(t testing.TB, s string) Num {
	t.Helper()
	n, err := ParseNum(s)
	if err != nil {
		t.Fatalf("ParseNum(%q): %v", s, err)
	}
	return n
}

// levels parses alternating price, size strings.
func levels(t testing.TB, ps ...string) []Level {
	t.Helper()
	var out []Level
	for i := 0; i+1 < len(ps); i += 2 {
		out = append(out, Level{num(t, ps[i]), num(t, ps[i+1])})
	}
	return out
}

// TestChecksumGolden checks the checksum string and its CRC-32 against values
// computed independently (Python's zlib.crc32 of the string written by hand
// from protocol.md §3).
func TestChecksumGolden(t *testing.T) {
	var bids12 []string
	for i := range 12 {
		bids12 = append(bids12, (Num(100-i) * Unit).String(), (Num(i+1) * Unit).String())
	}
	tests := []struct {
		name       string
		bids, asks []Level
		str        string
		sum        uint32
	}{
		{
			name: "protocol example",
			bids: levels(t, "50000.10", "1.5", "49999", "2.0"),
			asks: levels(t, "50000.20", "0.70"),
			str:  "50000.1:1.5:50000.2:0.7:49999:2",
			sum:  3793498248,
		},
		{name: "empty book", str: "", sum: 0},
		{
			name: "one side, smallest size",
			bids: levels(t, "100", "0.00000001"),
			str:  "100:0.00000001",
			sum:  3457854787,
		},
		{
			name: "extremes of Num",
			asks: levels(t, "0.00000001", "92233720368.54775807"),
			str:  "0.00000001:92233720368.54775807",
			sum:  903891739,
		},
		{
			name: "12 bids and 2 asks: only 10 bids count",
			bids: levels(t, bids12...),
			asks: levels(t, "101", "0.5", "102.25", "3"),
			str:  "100:1:101:0.5:99:2:102.25:3:98:3:97:4:96:5:95:6:94:7:93:8:92:9:91:10",
			sum:  1309813278,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendChecksumString(nil, tt.bids, tt.asks)); got != tt.str {
				t.Errorf("checksum string %q, want %q", got, tt.str)
			}
			if got := string(AppendChecksumString([]byte("prefix:"), tt.bids, tt.asks)); got != "prefix:"+tt.str {
				t.Errorf("appended checksum string %q, want %q", got, "prefix:"+tt.str)
			}
			if got := Checksum(tt.bids, tt.asks); got != tt.sum {
				t.Errorf("Checksum = %d, want %d", got, tt.sum)
			}
			// The same levels in a book give the same checksums.
			b := New("X")
			ev := Event{Symbol: "X", Seq: 1, Kind: KindSnapshot, Bids: tt.bids, Asks: tt.asks}
			if err := b.Apply(&ev); err != nil {
				t.Fatal(err)
			}
			if got := b.Checksum(0); got != tt.sum {
				t.Errorf("Book.Checksum(0) = %d, want %d", got, tt.sum)
			}
			if got, want := b.Checksum(1), Checksum(tt.bids[:min(1, len(tt.bids))], tt.asks[:min(1, len(tt.asks))]); got != want {
				t.Errorf("Book.Checksum(1) = %d, want %d", got, want)
			}
		})
	}
}

func TestChecksumDepthOne(t *testing.T) {
	b := New("X")
	ev := Event{Symbol: "X", Seq: 1, Kind: KindSnapshot,
		Bids: levels(t, "50000.1", "1.5", "49999", "2"), Asks: levels(t, "50000.2", "0.7")}
	if err := b.Apply(&ev); err != nil {
		t.Fatal(err)
	}
	const want1 = 1821299606 // crc32("50000.1:1.5:50000.2:0.7")
	if got := b.Checksum(1); got != want1 {
		t.Errorf("Checksum(1) = %d, want %d", got, want1)
	}
	if u := b.LastUpdate(); u.Checksum1 != want1 || u.Checksum10 != 3793498248 {
		t.Errorf("update checksums %d/%d, want %d/%d", u.Checksum1, u.Checksum10, want1, 3793498248)
	}
	if s := b.Snapshot(1); s.Checksum != want1 || len(s.Bids) != 1 || len(s.Asks) != 1 {
		t.Errorf("Snapshot(1) = %+v", s)
	}
}
