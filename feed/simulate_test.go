package feed

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/book"
)

// TestSimulate runs the simulator into a broker and ingests what it made:
// every record applies except the bad ones it meant, each rejected with the
// reason it was meant for, and the books look like markets.
func TestSimulate(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"sim"}, Partitions: 4})
	const n = 6000
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := Simulate(ctx, SimConfig{Brokers: []string{br.Addr()}, Topic: "sim", Rate: 100000, Seed: 42, BadEvery: 40, Limit: n, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	all := readAll(t, br.Addr(), "sim")
	if len(all) != n {
		t.Fatalf("simulator produced %d records, want %d", len(all), n)
	}
	wantBad := map[string]uint64{}
	kinds := map[string]bool{}
	for _, m := range all {
		if r, ok := header(m, SimBadHeader); ok {
			wantBad[r]++
		}
		var ev book.Event
		if Decode(m.Key, m.Value, m.Time, m.Offset, &ev) == nil {
			kinds[ev.Kind.String()] = true
		}
	}
	for _, k := range []string{"add", "modify", "cancel", "trade", "level", "snapshot"} {
		if !kinds[k] {
			t.Errorf("no %s record in the flow", k)
		}
	}
	if len(wantBad) < 8 {
		t.Errorf("only %d kinds of bad records: %v", len(wantBad), wantBad)
	}

	in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "sim"})
	waitRecords(t, in, n)
	s := in.Stats()
	for _, r := range Reasons() {
		if s.Bad[r.String()] != wantBad[r.String()] {
			t.Errorf("%s: %d rejected, %d meant", r, s.Bad[r.String()], wantBad[r.String()])
		}
	}
	checkBooks(t, in, model(t, all))
	for _, sym := range append(DefaultOrderSymbols, DefaultLevelSymbols...) {
		snap := snapshotOf(t, in, sym)
		if len(snap.Bids) < 3 || len(snap.Asks) < 3 {
			t.Errorf("%s: thin book: %d bids, %d asks", sym, len(snap.Bids), len(snap.Asks))
			continue
		}
		if snap.Bids[0].Price >= snap.Asks[0].Price {
			t.Errorf("%s: crossed book: bid %v >= ask %v", sym, snap.Bids[0].Price, snap.Asks[0].Price)
		}
	}

	// The DLQ holds exactly the meant bad records, with matching reasons.
	var nbad uint64
	for _, c := range wantBad {
		nbad += c
	}
	var dlq []kafka.Message
	waitFor(t, 10*time.Second, func() error {
		if dlq = readAll(t, br.Addr(), "sim"+DLQSuffix); uint64(len(dlq)) < nbad {
			return fmt.Errorf("DLQ has %d records, want %d", len(dlq), nbad)
		}
		return nil
	})
	checkDLQ(t, dlq, all)
	if uint64(len(dlq)) != nbad {
		t.Errorf("DLQ has %d records, want %d", len(dlq), nbad)
	}
	for _, d := range dlq {
		r, _ := header(d, HeaderReason)
		if meant, _ := header(d, SimBadHeader); meant != r {
			t.Errorf("DLQ record rejected as %s, meant as %q: %s", r, meant, d.Value)
		}
	}
}

// TestSimulateRate checks pacing: at 2000 records/s for half a second the
// simulator makes about that many (bursts and quiet spells allowed), and
// it stops when its context ends.
func TestSimulateRate(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"rate"}, Partitions: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := Simulate(ctx, SimConfig{Brokers: []string{br.Addr()}, Topic: "rate", Rate: 2000, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Simulate returned %v after start, its context ended at 500ms", d)
	}
	got := len(readAll(t, br.Addr(), "rate"))
	// 0.1x to 5x the rate, for 0.5 s.
	if got < 50 || got > 5500 {
		t.Errorf("produced %d records in 0.5s at 2000/s", got)
	}
}

func TestSimulateConfig(t *testing.T) {
	if err := Simulate(t.Context(), SimConfig{}); err == nil {
		t.Error("no brokers: no error")
	}
	if err := Simulate(t.Context(), SimConfig{Brokers: []string{"x:1"}, Rate: -1}); err == nil {
		t.Error("negative rate: no error")
	}
	// A broker that is not there: Simulate retries until its context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := Simulate(ctx, SimConfig{Brokers: []string{freeAddr(t)}, Rate: 1000, Logger: testLogger(t)})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Simulate with no broker = %v", err)
	}
}

// TestSimulatorDeterministic checks that a seed fixes the flow (but for ts).
func TestSimulatorDeterministic(t *testing.T) {
	a, b := newSimulator(SimConfig{Seed: 9}), newSimulator(SimConfig{Seed: 9})
	now := time.Now()
	for i := range 5000 {
		ma, mb := a.next(now), b.next(now)
		if string(ma.Key) != string(mb.Key) || string(ma.Value) != string(mb.Value) {
			t.Fatalf("record %d differs:\n%s\n%s", i, ma.Value, mb.Value)
		}
	}
}
