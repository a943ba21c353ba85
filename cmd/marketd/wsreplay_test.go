package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/marketd/marketd/feed"
)

// channelOf returns the "channel" of a message, "" when it has none.
func channelOf(t *testing.T, line []byte) string {
	t.Helper()
	var m struct {
		Channel string `json:"channel"`
	}
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("message %s: %v", line, err)
	}
	return m.Channel
}

// TestWSReplayRange: the replay op streams, per channel, the very bytes
// "marketd replay -format jsonl" prints for the same range (both marked
// "replay":true); the book stream chains and its checksums verify; each
// replay ends with a replay_end notice; three run at once under the cap.
func TestWSReplayRange(t *testing.T) {
	svc := startTestService(t, "-simulate=false")
	topic := svc.cfg.Topic
	produceSim(t, svc.brokerAddr, topic, 41, 2000)
	waitIngested(t, svc, 2000)
	time.Sleep(5 * time.Millisecond) // records are stamped in milliseconds
	from := time.Now()
	produceSim(t, svc.brokerAddr, topic, 42, 2000)
	waitIngested(t, svc, 4000)
	to := time.Now()
	time.Sleep(5 * time.Millisecond)
	produceSim(t, svc.brokerAddr, topic, 43, 500) // after the range
	waitIngested(t, svc, 4500)

	ws := dialTestWS(t, svc.URL("/v1/ws"))
	for i, ch := range []string{"book", "trades", "ticker"} {
		depth := ""
		if ch == "book" {
			depth = `,"depth":10`
		}
		ws.send(fmt.Sprintf(`{"op":"replay","id":%d,"channel":"%s","symbols":["BTC-USD"]%s,"from":%d,"to":"%s"}`,
			i+1, ch, depth, from.UnixMicro(), to.UTC().Format(time.RFC3339Nano)))
	}
	got := map[string][]string{}
	ends := 0
	deadline := time.Now().Add(30 * time.Second)
	for ends < 3 {
		m := ws.next(time.Until(deadline))
		switch {
		case bytes.HasPrefix(m, []byte(`{"type":"notice","code":"replay_end"`)):
			ends++
		case bytes.HasPrefix(m, []byte(`{"type":"ack"`)):
		case bytes.HasPrefix(m, []byte(`{"type":"error"`)), bytes.HasPrefix(m, []byte(`{"type":"notice"`)):
			t.Fatalf("got %s", m)
		default:
			ch := channelOf(t, m)
			got[ch] = append(got[ch], string(m))
		}
	}

	out, err := marketdReplay(t, "-brokers", svc.brokerAddr, "-topic", topic, "-format", "jsonl", "-symbol", "BTC-USD", "-depth", "10",
		"-from", fmt.Sprint(from.UnixMicro()), "-to", to.UTC().Format(time.RFC3339Nano))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for line := range strings.SplitSeq(strings.TrimSuffix(string(out), "\n"), "\n") {
		ch := channelOf(t, []byte(line))
		want[ch] = append(want[ch], line)
	}
	for _, ch := range []string{"book", "trades", "ticker"} {
		g, w := got[ch], want[ch]
		if len(w) < 20 {
			t.Errorf("%s: marketd replay printed only %d messages", ch, len(w))
		}
		for i := range max(len(g), len(w)) {
			var gi, wi string
			if i < len(g) {
				gi = g[i]
			}
			if i < len(w) {
				wi = w[i]
			}
			if gi != wi {
				t.Fatalf("%s message %d of %d: the replay op sent\n%s\nmarketd replay printed (of %d)\n%s", ch, i, len(g), gi, len(w), wi)
			}
		}
	}
	cb := newWireBook()
	for _, line := range got["book"] {
		var m wireMsg
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if err := cb.apply(m); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("book %d, trades %d, ticker %d messages equal to marketd replay's; %d book updates chained", len(got["book"]), len(got["trades"]), len(got["ticker"]), cb.updates)
}

// TestWSReplayToLive: a replay to "live" while the simulator produces
// joins the live stream of the book with no gap: every update's prev_seq
// is the seq before it and every checksum verifies, from the replayed
// snapshot through the switch (a replay_live notice, joined exact) to the
// live updates, which are not marked. The trades stream chains the same way.
func TestWSReplayToLive(t *testing.T) {
	svc := startTestService(t, "-simulate=false")
	topic := svc.cfg.Topic
	produceSim(t, svc.brokerAddr, topic, 51, 3000)
	waitIngested(t, svc, 3000)
	from := time.Now().Add(-time.Hour) // the whole topic

	// The market moves on while the replay runs and joins.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = feed.Simulate(ctx, feed.SimConfig{Brokers: []string{svc.brokerAddr}, Topic: topic, Rate: 2000, Seed: 52, BadEvery: -1, Logger: discardLogger()})
	})
	defer func() { cancel(); wg.Wait() }()

	ws := dialTestWS(t, svc.URL("/v1/ws"))
	ws.send(fmt.Sprintf(`{"op":"replay","id":1,"channel":"book","symbols":["BTC-USD"],"depth":10,"from":%d,"to":"live"}`, from.UnixMicro()))
	ws.send(fmt.Sprintf(`{"op":"replay","id":2,"channel":"trades","symbols":["BTC-USD"],"from":%d,"to":"live"}`, from.UnixMicro()))
	cb := newWireBook()
	live := map[int]bool{}
	var tradeSeq uint64
	trades, liveBook, liveTrades := 0, 0, 0
	handle := func(raw []byte) {
		t.Helper()
		var m wireMsg
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("message %s: %v", raw, err)
		}
		marked := bytes.HasSuffix(raw, []byte(`,"replay":true}`))
		ch := channelOf(t, raw)
		switch m.Type {
		case "error":
			t.Fatalf("got %s", raw)
		case "notice":
			if m.Code != "replay_live" || !bytes.Contains(raw, []byte(`"joined":"exact"`)) {
				t.Fatalf("notice %s", raw)
			}
			live[m.ID] = true
		case "snapshot", "update":
			if marked == live[1] {
				t.Fatalf("replay marker %v with the book live %v: %s", marked, live[1], raw)
			}
			if err := cb.apply(m); err != nil {
				t.Fatal(err)
			}
			if live[1] {
				liveBook++
			}
		case "trade":
			if marked == live[2] {
				t.Fatalf("replay marker %v with the trades live %v: %s", marked, live[2], raw)
			}
			if trades > 0 && (m.PrevSeq == nil || *m.PrevSeq != tradeSeq) {
				t.Fatalf("trade prev_seq %v after %d: a gap (%s)", m.PrevSeq, tradeSeq, raw)
			}
			tradeSeq = m.Seq
			trades++
			if live[2] {
				liveTrades++
			}
		case "ack":
		default:
			t.Fatalf("unexpected %s message on %s: %s", m.Type, ch, raw)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !live[1] || !live[2] || liveBook < 20 || liveTrades < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: live %v, %d live book messages, %d live trades", live, liveBook, liveTrades)
		}
		handle(ws.next(time.Until(deadline)))
	}
	cancel()
	wg.Wait()
	// Once ingest is idle, the client's book is the server's.
	ping := 3
	checkFor(t, 10*time.Second, func() error {
		ws.send(fmt.Sprintf(`{"op":"ping","id":%d}`, ping))
		ping++
		for _, raw := range ws.until("pong", 10*time.Second) {
			if !bytes.HasPrefix(raw, []byte(`{"type":"pong"`)) {
				handle(raw)
			}
		}
		var snap wireMsg
		if err := json.Unmarshal(getBody(t, svc.URL("/v1/book/BTC-USD?depth=10")), &snap); err != nil {
			t.Fatal(err)
		}
		if snap.Checksum != cb.checksum() {
			return fmt.Errorf("the server's book is at seq %d checksum %d, the client's at %d checksum %d", snap.Seq, snap.Checksum, cb.seq, cb.checksum())
		}
		return nil
	})
	t.Logf("%d book updates (%d live), %d trades (%d live), no gap", cb.updates, liveBook, trades, liveTrades)
}

// TestWSReplayCapAndSlowClient: replays per server are capped
// (too_many_replays); a replaying client that does not read holds up only
// its own replay: a live client gets every update at once, and the slow
// one is not closed; its disconnect frees the slot.
func TestWSReplayCapAndSlowClient(t *testing.T) {
	svc := startTestService(t, "-simulate=false")
	topic := svc.cfg.Topic
	// Some megabytes of book updates at full depth per replay: more than
	// the sockets' buffers hold.
	produceSim(t, svc.brokerAddr, topic, 61, 20000)
	waitIngested(t, svc, 20000)
	from := time.Now().Add(-time.Hour).UnixMicro()

	// Four replays of every book at full depth on connections that never
	// read: their queues fill and the replays wait.
	var slow []*websocket.Conn
	for i := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, strings.Replace(svc.URL("/v1/ws"), "http", "ws", 1), nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
		req := fmt.Sprintf(`{"op":"replay","id":%d,"channel":"book","symbols":%s,"depth":0,"from":%d}`, i, mustJSON(t, svc.ingester.Symbols()), from)
		if err := c.Write(context.Background(), websocket.MessageText, []byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, c := range slow {
			c.CloseNow()
		}
	}()
	checkFor(t, 10*time.Second, func() error {
		if n := svc.server.Stats().Connections; n < 4 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})

	ws := dialTestWS(t, svc.URL("/v1/ws"))
	ws.send(`{"op":"subscribe","id":1,"channel":"book","symbols":["ETH-USD"],"depth":10}`)
	cb := newWireBook()
	apply := func(raws [][]byte) {
		for _, raw := range raws {
			var m wireMsg
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			if err := cb.apply(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(ws.until("ack", 5*time.Second))

	// The fifth replay is refused while the four wait on their clients.
	checkFor(t, 10*time.Second, func() error {
		ws.send(fmt.Sprintf(`{"op":"replay","id":9,"channel":"trades","symbols":["ETH-USD"],"from":%d}`, from))
		msgs := ws.until("error", 5*time.Second)
		apply(msgs[:len(msgs)-1])
		if !bytes.Contains(msgs[len(msgs)-1], []byte(`"code":"too_many_replays"`)) {
			return fmt.Errorf("got %s", msgs[len(msgs)-1])
		}
		return nil
	})

	start := time.Now()
	produceSim(t, svc.brokerAddr, topic, 62, 2000)
	waitIngested(t, svc, 22000)
	ws.send(`{"op":"ping","id":2}`)
	msgs := ws.until("pong", 10*time.Second)
	apply(msgs[:len(msgs)-1])
	took := time.Since(start)
	if cb.updates < 50 || took > 10*time.Second {
		t.Errorf("the live client got %d updates in %v", cb.updates, took)
	}
	if n := svc.server.Stats().Connections; n != 5 {
		t.Errorf("%d connections: the slow replaying clients must not be cut", n)
	}

	// A slow client leaves: its replay ends and frees a slot.
	slow[0].CloseNow()
	slow = slow[1:]
	checkFor(t, 10*time.Second, func() error {
		// A range of no record: the replay ends as soon as it starts.
		ws.send(fmt.Sprintf(`{"op":"replay","id":10,"channel":"trades","symbols":["ETH-USD"],"from":%d}`, time.Now().UnixMicro()))
		for {
			m := ws.next(10 * time.Second)
			switch {
			case bytes.Contains(m, []byte(`"code":"too_many_replays"`)):
				return fmt.Errorf("no slot yet")
			case bytes.HasPrefix(m, []byte(`{"type":"notice","code":"replay_end"`)):
				return nil
			}
		}
	})
	t.Logf("the live client got %d updates in %v while 4 replays waited on their clients", cb.updates, took)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
