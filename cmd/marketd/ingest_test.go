package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
)

// TestIngestEndToEnd is the ingest issue's acceptance check: with the
// simulator off, 20,000 records (1% bad) produced into the embedded broker
// over TCP give exact books on GET /v1/book/{symbol}?depth=0 and exactly the
// bad records in the dead-letter topic.
func TestIngestEndToEnd(t *testing.T) {
	const records = 20_000
	svc := startTestService(t, "-simulate=false")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	err := feed.Simulate(ctx, feed.SimConfig{
		Brokers: []string{svc.brokerAddr}, Topic: svc.cfg.Topic,
		Rate: 1e6, Seed: 7, BadEvery: 100, Limit: records,
	})
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	checkFor(t, 60*time.Second, func() error {
		if n := svc.ingester.Stats().Records; n != records {
			return fmt.Errorf("ingested %d of %d records", n, records)
		}
		return svc.ready()
	})

	// Rebuild the books from the topic, independently of the service, and
	// note which records the producer meant to be bad.
	input := readTopic(ctx, t, svc.brokerAddr, svc.cfg.Topic)
	if len(input) != records {
		t.Fatalf("topic holds %d records, want %d", len(input), records)
	}
	books := map[string]*book.Book{}
	var wantBad []string
	var ev book.Event
	for _, m := range input {
		where := fmt.Sprintf("%d/%d", m.Partition, m.Offset)
		meantBad := slices.ContainsFunc(m.Headers, func(h kafka.Header) bool { return h.Key == feed.SimBadHeader })
		if meantBad {
			wantBad = append(wantBad, where)
		}
		err := feed.Decode(m.Key, m.Value, m.Time, m.Offset, &ev)
		if err == nil {
			b := books[ev.Symbol]
			if b == nil {
				b = book.New(ev.Symbol)
			}
			if err = b.Apply(&ev); err == nil {
				books[ev.Symbol] = b
			}
		}
		if (err != nil) != meantBad {
			t.Errorf("record %s: meant bad %v, got error %v", where, meantBad, err)
		}
	}
	t.Logf("%d records, %d meant bad, %d books", len(input), len(wantBad), len(books))
	if n := len(wantBad); n < records/200 || n > records/50 {
		t.Errorf("%d bad records in %d, want about 1%%", n, records)
	}

	for sym, b := range books {
		var got struct {
			Symbol     string
			Seq        uint64
			Bids, Asks [][2]string
			Checksum   uint32
		}
		getJSON(t, svc.URL("/v1/book/"+sym+"?depth=0"), &got)
		want := b.Snapshot(0)
		if got.Seq != want.Seq || got.Checksum != want.Checksum || !levelsEqual(got.Bids, want.Bids) || !levelsEqual(got.Asks, want.Asks) {
			t.Errorf("%s: served seq %d checksum %d with %d bids %d asks; rebuilt seq %d checksum %d with %d bids %d asks",
				sym, got.Seq, got.Checksum, len(got.Bids), len(got.Asks), want.Seq, want.Checksum, len(want.Bids), len(want.Asks))
		}
	}
	var symbols []string
	getJSON(t, svc.URL("/v1/symbols"), &symbols)
	if len(symbols) != len(books) {
		t.Errorf("/v1/symbols = %v, rebuilt %d books", symbols, len(books))
	}

	// The dead-letter topic holds exactly the bad records, each with its reason.
	var gotBad []string
	checkFor(t, 30*time.Second, func() error {
		gotBad = gotBad[:0]
		for _, m := range readTopic(ctx, t, svc.brokerAddr, svc.cfg.DLQTopic) {
			h := map[string]string{}
			for _, kv := range m.Headers {
				h[kv.Key] = string(kv.Value)
			}
			if h[feed.HeaderReason] == "" || h[feed.HeaderError] == "" {
				return fmt.Errorf("dead letter without reason: %v", h)
			}
			gotBad = append(gotBad, h[feed.HeaderPartition]+"/"+h[feed.HeaderOffset])
		}
		if len(gotBad) != len(wantBad) {
			return fmt.Errorf("%d dead letters, want %d", len(gotBad), len(wantBad))
		}
		return nil
	})
	slices.Sort(gotBad)
	slices.Sort(wantBad)
	if !slices.Equal(gotBad, wantBad) {
		t.Errorf("dead letters %v\nwant %v", gotBad, wantBad)
	}
	if n := svc.ingester.Stats().BadTotal(); n != uint64(len(wantBad)) {
		t.Errorf("bad records counted %d, want %d", n, len(wantBad))
	}
}

func levelsEqual(got [][2]string, want []book.Level) bool {
	return slices.EqualFunc(got, want, func(g [2]string, w book.Level) bool {
		return g[0] == w.Price.String() && g[1] == w.Size.String()
	})
}

// readTopic reads every record of every partition of topic, in partition
// then offset order.
func readTopic(ctx context.Context, t *testing.T, addr, topic string) []kafka.Message {
	t.Helper()
	conn, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatalf("partitions of %s: %v", topic, err)
	}
	var out []kafka.Message
	for _, p := range parts {
		pc, err := kafka.DialLeader(ctx, "tcp", addr, topic, p.ID)
		if err != nil {
			t.Fatalf("dial leader of %s/%d: %v", topic, p.ID, err)
		}
		last, err := pc.ReadLastOffset()
		if err != nil {
			t.Fatalf("last offset of %s/%d: %v", topic, p.ID, err)
		}
		for next := int64(0); next < last; {
			if _, err := pc.Seek(next, kafka.SeekAbsolute); err != nil {
				t.Fatalf("seek %s/%d: %v", topic, p.ID, err)
			}
			pc.SetReadDeadline(time.Now().Add(10 * time.Second))
			batch := pc.ReadBatch(1, 4<<20)
			for {
				m, err := batch.ReadMessage()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						batch.Close()
						t.Fatalf("read %s/%d at %d: %v", topic, p.ID, next, err)
					}
					break
				}
				out = append(out, m)
				next = m.Offset + 1
			}
			batch.Close()
		}
		pc.Close()
	}
	return out
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}
