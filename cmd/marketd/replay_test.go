package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/segmentio/kafka-go"

	"github.com/marketd/marketd/feed"
)

// testWS is a WebSocket client of a test service: a goroutine reads every
// frame and splits it into messages (protocol.md §3: one per line).
type testWS struct {
	t    *testing.T
	c    *websocket.Conn
	msgs chan []byte // closed when the connection ends
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error // why the connection ended
}

func dialTestWS(t *testing.T, url string) *testWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(64 << 20)
	w := &testWS{t: t, c: c, msgs: make(chan []byte, 1<<16)}
	w.wg.Go(func() {
		defer close(w.msgs)
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				return
			}
			for line := range bytes.SplitSeq(data, []byte("\n")) {
				w.msgs <- line
			}
		}
	})
	t.Cleanup(func() {
		c.Close(websocket.StatusNormalClosure, "")
		w.wg.Wait()
	})
	return w
}

func (w *testWS) send(msg string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		w.t.Fatalf("send %s: %v", msg, err)
	}
}

// next returns the next message, failing the test after timeout; nil once
// the connection has ended.
func (w *testWS) next(timeout time.Duration) []byte {
	w.t.Helper()
	select {
	case m := <-w.msgs:
		return m
	case <-time.After(timeout):
		w.t.Fatalf("no message in %v", timeout)
		return nil
	}
}

// until returns the messages up to the first of the given type, included,
// and fails the test if there is none in timeout.
func (w *testWS) until(typ string, timeout time.Duration) [][]byte {
	w.t.Helper()
	var out [][]byte
	deadline := time.Now().Add(timeout)
	for {
		m := w.next(time.Until(deadline))
		if m == nil {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.t.Fatalf("connection ended before a %q message: %v", typ, w.err)
		}
		out = append(out, m)
		if bytes.Contains(m, []byte(`"type":"`+typ+`"`)) {
			return out
		}
	}
}

// produce runs the simulator for n records into the service's topic.
func produceSim(t *testing.T, brokers, topic string, seed int64, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := feed.Simulate(ctx, feed.SimConfig{Brokers: []string{brokers}, Topic: topic, Rate: 1e6, Seed: seed, BadEvery: 50, Limit: n, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// waitIngested waits until svc has applied n records and is ready.
func waitIngested(t *testing.T, svc *service, n uint64) {
	t.Helper()
	checkFor(t, 20*time.Second, func() error {
		if got := svc.ingester.Stats().Records; got < n {
			return fmt.Errorf("ingested %d of %d records", got, n)
		}
		return svc.ready()
	})
}

// marketdReplay runs "marketd replay" with args and returns its stdout.
func marketdReplay(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, append([]string{"replay"}, args...), &out, &errOut, func(string) string { return "" }, nil)
	if err != nil {
		return nil, fmt.Errorf("%w (stderr: %s)", err, errOut.String())
	}
	return out.Bytes(), nil
}

func getBody(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", url, resp.Status, err, body)
	}
	return body
}

// TestReplayCommand: "marketd replay -format jsonl" over the records a live
// client saw gives the very bytes that client got (plus "replay":true),
// twice the same; "-format book" prints what GET /v1/book answers.
func TestReplayCommand(t *testing.T) {
	svc := startTestService(t, "-simulate=false")
	topic := svc.cfg.Topic
	produceSim(t, svc.brokerAddr, topic, 21, 3000)
	waitIngested(t, svc, 3000)

	// A client subscribes to BTC-USD's book at depth 10, its trades and
	// its ticker, then the market moves on.
	ws := dialTestWS(t, svc.URL("/v1/ws"))
	ws.send(`{"op":"subscribe","id":1,"channel":"book","symbols":["BTC-USD"],"depth":10}`)
	live := ws.until("ack", 5*time.Second)
	ws.send(`{"op":"subscribe","id":2,"channel":"ticker","symbols":["BTC-USD"]}`)
	live = append(live, ws.until("ack", 5*time.Second)...)
	ws.send(`{"op":"subscribe","id":3,"channel":"trades","symbols":["BTC-USD"]}`)
	live = append(live, ws.until("ack", 5*time.Second)...)
	produceSim(t, svc.brokerAddr, topic, 22, 3000)
	waitIngested(t, svc, 6000)
	ws.send(`{"op":"ping","id":4}`) // answered after everything published so far
	live = append(live, ws.until("pong", 10*time.Second)...)
	var want []string
	for _, m := range live {
		if !bytes.Contains(m, []byte(`"type":"ack"`)) && !bytes.Contains(m, []byte(`"type":"pong"`)) {
			want = append(want, string(m))
		}
	}
	if len(want) < 100 || !strings.HasPrefix(want[0], `{"type":"snapshot"`) {
		t.Fatalf("the live client got %d messages, starting with %.80s", len(want), want[0])
	}

	// The snapshot's seq is the offset of the first record after it, in
	// BTC-USD's partition.
	var snapSeq int64
	if _, err := fmt.Sscanf(want[0][strings.Index(want[0], `"seq":`):], `"seq":%d`, &snapSeq); err != nil {
		t.Fatal(err)
	}
	part := symbolPartition(svc, "BTC-USD")
	args := []string{"-brokers", svc.brokerAddr, "-topic", topic, "-format", "jsonl", "-symbol", "BTC-USD", "-depth", "10",
		"-partition", strconv.Itoa(part), "-from-offset", strconv.FormatInt(snapSeq, 10)}
	out, err := marketdReplay(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if !strings.HasSuffix(g, `,"replay":true}`) || strings.TrimSuffix(g, `,"replay":true}`)+"}" != w {
			t.Fatalf("replayed message %d of %d is\n%s\nthe live client got (of %d)\n%s", i, len(got), g, len(want), w)
		}
	}
	t.Logf("%d live messages replayed byte for byte", len(want))
	if again, err := marketdReplay(t, args...); err != nil || !bytes.Equal(again, out) {
		t.Errorf("a second replay differs (%v)", err)
	}

	// The books at the end, as GET /v1/book answers.
	out, err = marketdReplay(t, "-brokers", svc.brokerAddr, "-format", "book", "-depth", "0")
	if err != nil {
		t.Fatal(err)
	}
	var books []string
	for _, s := range svc.ingester.Symbols() {
		books = append(books, string(getBody(t, svc.URL("/v1/book/"+s+"?depth=0"))))
	}
	if string(out) != strings.Join(books, "") {
		t.Errorf("replay -format book printed\n%s\nGET /v1/book answers\n%s", out, strings.Join(books, ""))
	}
}

// symbolPartition returns the partition the simulator (kafka-go's Hash
// balancer, by key) puts symbol's records in.
func symbolPartition(svc *service, symbol string) int {
	var parts []int
	for _, p := range svc.ingester.Stats().Partitions {
		parts = append(parts, p.Partition)
	}
	return (&kafka.Hash{}).Balance(kafka.Message{Key: []byte(symbol)}, parts...)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestReplayRangesAndSpeed replays by time (RFC 3339 and Unix µs), paced
// by event time, against a broker started by the test.
func TestReplayRangesAndSpeed(t *testing.T) {
	br, err := feed.StartBroker(context.Background(), feed.BrokerConfig{Addr: "127.0.0.1:0", Topics: []string{"paced"}, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	t0 := time.UnixMilli(1_763_900_000_000)
	var msgs []kafka.Message
	for i := range 5 {
		ts := t0.Add(time.Duration(i) * 250 * time.Millisecond)
		msgs = append(msgs, kafka.Message{Key: []byte("X-USD"), Time: ts, Value: fmt.Appendf(nil,
			`{"type":"level","symbol":"X-USD","side":"buy","price":"%d","size":"1","ts":%d}`, 10+i, ts.UnixMicro())})
	}
	// RequireAll: kafka-go's default (no acks) returns before the broker has the records.
	w := &kafka.Writer{Addr: kafka.TCP(br.Addr()), Topic: "paced", BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}}
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	// Records 1 to 3 (the range is inclusive), paced at twice real time:
	// their 500 ms of event time take 250 ms.
	start := time.Now()
	out, err := marketdReplay(t, "-brokers", br.Addr(), "-topic", "paced", "-format", "jsonl", "-depth", "1", "-speed", "2",
		"-from", t0.Add(250*time.Millisecond).Format(time.RFC3339Nano), "-to", strconv.FormatInt(t0.Add(750*time.Millisecond).UnixMicro(), 10))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 240*time.Millisecond {
		t.Errorf("paced replay took %v, want at least 250ms", took)
	}
	var types []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if !strings.Contains(line, `"seq":`) || !strings.Contains(line, `","channel"`) {
			t.Fatalf("unexpected replay line %q in:\n%s", line, out)
		}
		var seq int
		fmt.Sscanf(line[strings.Index(line, `"seq":`):], `"seq":%d`, &seq)
		types = append(types, fmt.Sprintf("%s %d", line[9:strings.Index(line, `","channel"`)], seq))
	}
	want := []string{"snapshot 1", "ticker 1", "update 2", "ticker 2", "update 3", "ticker 3", "update 4", "ticker 4"}
	if strings.Join(types, ", ") != strings.Join(want, ", ") {
		t.Errorf("replayed %v, want %v", types, want)
	}

	// The book of a symbol that has none at the end of the range.
	if _, err := marketdReplay(t, "-brokers", br.Addr(), "-topic", "paced", "-symbol", "Y-USD"); err == nil || !strings.Contains(err.Error(), `"Y-USD" has no book`) {
		t.Errorf("err = %v, want one saying Y-USD has no book", err)
	}
	// A range that does not exist.
	if _, err := marketdReplay(t, "-brokers", br.Addr(), "-topic", "paced", "-partition", "0", "-from-offset", "9"); err == nil || !strings.Contains(err.Error(), "past the end of partition 0") {
		t.Errorf("err = %v, want one saying the offset is past the end", err)
	}
}

func TestReplayFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-from", "yesterday"}, `invalid -from "yesterday"`},
		{[]string{"-to", "-5"}, `invalid -to "-5"`},
		{[]string{"-from", "2026-11-24T10:00:00Z", "-to", "2026-11-24T09:00:00Z"}, "-to 2026-11-24T09:00:00Z is before -from"},
		{[]string{"-from", "1", "-from-offset", "3", "-partition", "0"}, "exclude each other"},
		{[]string{"-from-offset", "3"}, "need -partition"},
		{[]string{"-partition", "0", "-from-offset", "5", "-to-offset", "4"}, "-to-offset 4 is before -from-offset 5"},
		{[]string{"-partition", "0", "-to-offset", "-2"}, "must not be negative"},
		{[]string{"-partition", "-3"}, "invalid -partition -3"},
		{[]string{"-depth", "7"}, "invalid -depth 7"},
		{[]string{"-format", "csv"}, `invalid -format "csv"`},
		{[]string{"-format", "jsonl", "-speed", "-1"}, "invalid -speed -1"},
		{[]string{"-speed", "2"}, "-speed applies to -format jsonl only"},
		{[]string{"-brokers", ""}, "-brokers must not be empty"},
		{[]string{"-log-level", "loud"}, "invalid -log-level"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
	}
	for _, c := range cases {
		_, err := marketdReplay(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "replay: ") || strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("replay %v: err = %v, want one line saying %q", c.args, err, c.want)
		}
	}
	// -brokers and -topic come from the environment too, as for the server.
	env := map[string]string{"MARKETD_BROKERS": "a:1,b:2", "MARKETD_TOPIC": "t"}
	cfg, err := parseReplay(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil || strings.Join(cfg.feed.Brokers, ",") != "a:1,b:2" || cfg.feed.Topic != "t" || cfg.format != "book" || cfg.depth != 50 {
		t.Errorf("parsed %+v, %v", cfg, err)
	}
	if _, err := marketdReplay(t, "-h"); err == nil || !strings.Contains(err.Error(), "help requested") {
		t.Errorf("-h: %v", err)
	}
}
