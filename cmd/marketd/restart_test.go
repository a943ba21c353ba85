package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
	"github.com/segmentio/kafka-go"
)

// TestTradeChainAcrossRestart stops an instance (which checkpoints its
// books as it stops) and starts another on the same topic, which restores
// the books from the checkpoints instead of replaying the records: the
// first trade it sends of each symbol carries, as prev_seq, the seq of the
// symbol's last trade before the restart, so a client that follows the
// trades stream across the restart sees no false gap.
func TestTradeChainAcrossRestart(t *testing.T) {
	br, err := feed.StartBroker(context.Background(), feed.BrokerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	brokers := br.Addr()

	a, stopA := startInstance(t, brokers)
	const n = 2000
	produceSim(t, brokers, feed.DefaultTopic, 41, n)
	waitIngested(t, a, n)
	lastTrade := map[string]uint64{}
	for _, s := range a.ingester.Symbols() {
		if err := a.ingester.Do(t.Context(), s, func(b *book.Book) { lastTrade[s] = b.LastTradeSeq() }); err != nil {
			t.Fatal(err)
		}
	}
	stopA()

	b, _ := startInstance(t, brokers)
	checkFor(t, 20*time.Second, b.ready)
	if st := b.ingester.Stats(); st.Restored == 0 || st.Records > 0 {
		t.Fatalf("the second instance restored %d books and applied %d records: want books from checkpoints only", st.Restored, st.Records)
	}
	ws := dialTestWS(t, b.URL("/v1/ws"))
	ws.send(`{"op":"subscribe","id":1,"channel":"trades","symbols":["*"]}`)
	ws.until("ack", 5*time.Second)
	// A replay of the trades from the start joins the live stream: the
	// restored book knows the last trade the replay read, so exactly.
	rep := dialTestWS(t, b.URL("/v1/ws"))
	rep.send(`{"op":"replay","id":2,"channel":"trades","symbols":["SOL-USD"],"from":1,"to":"live"}`)
	if n := rep.until("notice", 10*time.Second); !bytes.Contains(n[len(n)-1], []byte(`"joined":"exact"`)) {
		t.Errorf("replay of SOL-USD trades joined the live stream with %s", n[len(n)-1])
	}

	// One trade per level-based symbol (no maker order to find).
	var msgs []kafka.Message
	want := map[string]uint64{}
	for s, seq := range lastTrade {
		if s != "SOL-USD" && s != "DOGE-USD" {
			continue
		}
		if seq == 0 {
			t.Fatalf("%s: no trade in the first %d records", s, n)
		}
		want[s] = seq
		msgs = append(msgs, kafka.Message{Key: []byte(s), Value: fmt.Appendf(nil,
			`{"type":"trade","symbol":%q,"trade_id":"after-restart","price":"1","size":"1","side":"buy"}`, s)})
	}
	if len(want) != 2 {
		t.Fatalf("last trades %v: want SOL-USD's and DOGE-USD's", lastTrade)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers), Topic: feed.DefaultTopic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}}
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	for len(want) > 0 {
		var m struct {
			Type    string `json:"type"`
			Symbol  string `json:"symbol"`
			Seq     uint64 `json:"seq"`
			PrevSeq uint64 `json:"prev_seq"`
			TradeID string `json:"trade_id"`
		}
		line := ws.next(10 * time.Second)
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if m.Type != "trade" || m.TradeID != "after-restart" {
			continue
		}
		if m.PrevSeq != want[m.Symbol] {
			t.Errorf("%s: first trade after the restart has prev_seq %d, want %d (the last trade before it)", m.Symbol, m.PrevSeq, want[m.Symbol])
		}
		delete(want, m.Symbol)
	}
}
