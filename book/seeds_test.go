package book

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// seedNums are the seeds of FuzzNumParse: wire forms, edges of the range and
// of the precision, and malformed text.
var seedNums = []string{
	"50000.10", "-0.5", "1e-3", "2.50E+2", "0", "-0", "0.00000001", "0.000000001",
	"92233720368.54775807", "92233720368.54775808", "-92233720368.54775808",
	".5", "5.", "+1", "", ".", "e5", "1e", "1.2.3", "0000012.3400", "1E10", "1e-8", "100e-10",
	"12345678901234567890", "0.1000000000000000000001", "1_000", " 1", "0x10", "NaN",
}

// seedCheckpoints returns checkpoints of books of every kind.
func seedCheckpoints(t *testing.T) [][]byte {
	var out [][]byte
	add := func(b *Book) {
		data, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	add(New("EMPTY"))
	add(build(t, orderBook))
	add(build(t, append(levelBook, tradeEv("t1", "", Buy, "100", "0.5"), levelEv(Sell, "102", "4"))))
	b := build(t, append(orderBook, tradeEv("t1", "b1", Sell, "100", "0.5"), addEv("b9", Buy, "100", "1")))
	add(b)
	// A longer random flow with trades spread over a day.
	g := &gen{rng: rand.New(rand.NewPCG(7, 7)), ts: 1_763_900_000_000_000}
	for _, s := range []*sym{{name: "L3", orders: true, mid: 100 * Unit, deep: 40}, {name: "L2", mid: 100 * Unit, deep: 40}} {
		s.c = newChecker(s.name)
		var ev Event
		for range 400 {
			g.event(s, &ev)
			if err := s.c.step(&ev); err != nil {
				t.Fatal(err)
			}
			s.track(&ev)
		}
		add(s.c.b)
	}
	return out
}

// TestSeedCorpora checks that every fuzz target has its seed corpus in
// testdata/fuzz (the seeds run as ordinary tests), and rewrites the corpora
// with -update-seeds.
func TestSeedCorpora(t *testing.T) {
	corpora := map[string][]string{}
	for _, s := range seedNums {
		corpora["FuzzNumParse"] = append(corpora["FuzzNumParse"], fmt.Sprintf("string(%q)", s))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{0, 6, 60, 300, 1200} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		corpora["FuzzApply"] = append(corpora["FuzzApply"], fmt.Sprintf("[]byte(%q)", data))
	}
	for _, data := range seedCheckpoints(t) {
		corpora["FuzzMarshalBinary"] = append(corpora["FuzzMarshalBinary"], fmt.Sprintf("[]byte(%q)", data))
		corpora["FuzzMarshalBinary"] = append(corpora["FuzzMarshalBinary"], fmt.Sprintf("[]byte(%q)", data[:len(data)/2]))
	}
	for name, seeds := range corpora {
		dir := filepath.Join("testdata", "fuzz", name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, s := range seeds {
				body := "go test fuzz v1\n" + s + "\n"
				sum := sha256.Sum256([]byte(body))
				file := filepath.Join(dir, fmt.Sprintf("seed-%x", sum[:8]))
				if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		files, err := os.ReadDir(dir)
		if err != nil || len(files) < len(seeds) {
			t.Errorf("%s: %d seed files, want at least %d (go test ./book -run TestSeedCorpora -update-seeds): %v", dir, len(files), len(seeds), err)
		}
	}
}
