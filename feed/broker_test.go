package feed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

func TestBrokerTopics(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"a", "b"}, Partitions: 3})
	conn, err := kafka.Dial("tcp", br.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions()
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, p := range parts {
		count[p.Topic]++
	}
	for _, topic := range []string{"a", "a.dlq", "a.checkpoints", "b", "b.dlq", "b.checkpoints"} {
		if count[topic] != 3 {
			t.Errorf("topic %s has %d partitions, want 3", topic, count[topic])
		}
	}
}

func TestBrokerAddrTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if b, err := StartBroker(t.Context(), BrokerConfig{Addr: l.Addr().String()}); err == nil {
		b.Close()
		t.Fatal("StartBroker on a taken port succeeded")
	}
}

func TestBrokerClosesWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	b, err := StartBroker(ctx, BrokerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cancel()
	waitFor(t, 5*time.Second, func() error {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		return errors.New("broker still accepts connections")
	})
	b.Close() // idempotent
}

// TestBrokerDataDir checks that a broker restarted on its DataDir serves
// the same records at the same offsets.
func TestBrokerDataDir(t *testing.T) {
	dir := t.TempDir()
	b1, err := StartBroker(t.Context(), BrokerConfig{Addr: "127.0.0.1:0", Topics: []string{"keep"}, Partitions: 2, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	produce(t, b1.Addr(), "keep", compress.None, true, orderFlow("BTC-USD", 1)...)
	before := readAll(t, b1.Addr(), "keep")
	b1.Close()

	b2 := startBroker(t, BrokerConfig{Topics: []string{"keep"}, Partitions: 2, DataDir: dir})
	after := readAll(t, b2.Addr(), "keep")
	if len(after) != len(before) || len(after) != 7 {
		t.Fatalf("after restart %d records, before %d", len(after), len(before))
	}
	for i := range after {
		if after[i].Offset != before[i].Offset || string(after[i].Value) != string(before[i].Value) {
			t.Errorf("record %d changed: %d %s -> %d %s", i, before[i].Offset, before[i].Value, after[i].Offset, after[i].Value)
		}
	}
}

// TestBrokerKafkaGo checks the kafka-go calls marketd relies on against the
// embedded broker: produce, fetch, list offsets by time, and consumer
// groups with commit and resume.
func TestBrokerKafkaGo(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"kgo"}, Partitions: 1})
	addr := br.Addr()
	t0 := time.UnixMilli(1_763_900_000_000)
	var msgs []kafka.Message
	for i := range 10 {
		msgs = append(msgs, kafka.Message{Key: []byte("k"), Value: []byte(fmt.Sprint(i)), Time: t0.Add(time.Duration(i) * time.Second)})
	}
	produce(t, addr, "kgo", compress.None, true, msgs...)

	t.Run("list offsets by time", func(t *testing.T) {
		conn, err := kafka.DialLeader(t.Context(), "tcp", addr, "kgo", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, k := range []int{0, 3, 9} {
			off, err := conn.ReadOffset(t0.Add(time.Duration(k) * time.Second))
			if err != nil || off != int64(k) {
				t.Errorf("ReadOffset(t%d) = %d, %v; want %d", k, off, err, k)
			}
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: "kgo", Partition: 0, MaxWait: 50 * time.Millisecond})
		defer r.Close()
		if err := r.SetOffsetAt(t.Context(), t0.Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		m, err := r.ReadMessage(ctx)
		if err != nil || string(m.Value) != "5" {
			t.Errorf("after SetOffsetAt(t5): %q, %v", m.Value, err)
		}
	})

	t.Run("consumer group commit and resume", func(t *testing.T) {
		newReader := func() *kafka.Reader {
			return kafka.NewReader(kafka.ReaderConfig{
				Brokers: []string{addr}, Topic: "kgo", GroupID: "g1",
				MaxWait: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
				SessionTimeout: 6 * time.Second, RebalanceTimeout: time.Second,
			})
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		r := newReader()
		if err := r.SetOffset(3); err == nil {
			t.Error("SetOffset with a GroupID succeeded; kafka-go should refuse it")
		}
		for i := range 4 {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Value) != fmt.Sprint(i) {
				t.Fatalf("message %d is %q", i, m.Value)
			}
			if err := r.CommitMessages(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		r = newReader()
		defer r.Close()
		m, err := r.FetchMessage(ctx)
		if err != nil || string(m.Value) != "4" {
			t.Errorf("resumed at %q, %v; want 4", m.Value, err)
		}
	})
}

func TestIngestBrokerUnreachableAtStart(t *testing.T) {
	addr := freeAddr(t)
	in, _ := runIngester(t, Config{Brokers: []string{addr}, Topic: "late", MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	// Not ready while nothing answers, saying why, and Run keeps trying.
	waitFor(t, 5*time.Second, func() error {
		if err := in.Ready(); err == nil || !strings.Contains(err.Error(), "connection refused") {
			return fmt.Errorf("Ready() = %v, want it to say the broker refuses connections", err)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	if err := in.Ready(); err == nil {
		t.Fatal("ready with no broker")
	}
	br := startBroker(t, BrokerConfig{Addr: addr, Topics: []string{"late"}, Partitions: 2})
	msgs := append(orderFlow("BTC-USD", 0), levelFlow("SOL-USD", 1)...)
	produce(t, br.Addr(), "late", compress.None, true, msgs...)
	waitRecords(t, in, uint64(len(msgs)))
	checkBooks(t, in, model(t, readAll(t, br.Addr(), "late")))
}

// TestIngestBrokerRestart stops the broker while the ingester is reading,
// then starts it again on the same data and produces more: every record is
// applied exactly once.
func TestIngestBrokerRestart(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	bcfg := BrokerConfig{Addr: addr, Topics: []string{"restart"}, Partitions: 2, DataDir: dir}
	b1, err := StartBroker(t.Context(), bcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b1.Close()
	sim := newSimulator(SimConfig{Seed: 7, BadEvery: -1})
	gen := func(n int) []kafka.Message {
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			msgs[i] = sim.next(time.Now())
		}
		return msgs
	}
	const n1, n2 = 20000, 2000
	produce(t, addr, "restart", compress.None, false, gen(n1)...)

	sink := newUpdateLog()
	sink.pace = 20 // about 1 s for n1 records: the broker stops mid-stream
	// Small fetches, so that the broker goes away between many of them.
	in, _ := runIngester(t, Config{Brokers: []string{addr}, Topic: "restart", Sink: sink,
		FetchMaxBytes: 16 << 10, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	waitFor(t, 20*time.Second, func() error {
		if r := in.Stats().Records; r < 2000 {
			return fmt.Errorf("%d records read", r)
		}
		return nil
	})
	if err := in.Ready(); err == nil || !strings.Contains(err.Error(), "catching up") {
		t.Errorf("Ready() = %v during catch-up, want it to say so", err)
	}
	b1.Close()
	if r := in.Stats().Records; r >= n1 {
		t.Fatalf("the ingester read all %d records before the broker stopped", r)
	}
	waitFor(t, 10*time.Second, func() error {
		if err := in.Ready(); err == nil {
			return errors.New("ready while the broker is down")
		}
		return nil
	})
	b2 := startBroker(t, bcfg)
	produce(t, addr, "restart", compress.None, false, gen(n2)...)
	waitRecords(t, in, n1+n2)

	all := readAll(t, b2.Addr(), "restart")
	if len(all) != n1+n2 {
		t.Fatalf("topic has %d records, want %d", len(all), n1+n2)
	}
	checkBooks(t, in, model(t, all))
	s := in.Stats()
	if s.Stale != 0 || s.BadTotal() != 0 || s.Reconnects == 0 {
		t.Errorf("stale %d, bad %d, reconnects %d; want 0, 0, > 0", s.Stale, s.BadTotal(), s.Reconnects)
	}
	sink.check(t, n1+n2)
}

// TestIngestTopicCreatedLater starts the ingester before its topic exists:
// it is not ready, says why, and starts reading once the topic appears.
func TestIngestTopicCreatedLater(t *testing.T) {
	br := startBroker(t, BrokerConfig{Topics: []string{"other"}, Partitions: 1})
	in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "later", MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	waitFor(t, 5*time.Second, func() error {
		if err := in.Ready(); err == nil || !strings.Contains(err.Error(), "later") {
			return fmt.Errorf("Ready() = %v, want an error naming the topic", err)
		}
		return nil
	})
	createTopic(t, br.Addr(), "later", 2)
	produce(t, br.Addr(), "later", compress.None, true, orderFlow("BTC-USD", 1)...)
	waitRecords(t, in, 7)
	checkBooks(t, in, model(t, readAll(t, br.Addr(), "later")))
}

// TestKcatProduces has an outside client, kcat (librdkafka), produce into
// the embedded broker with each codec; the ingester reads it all. It is
// skipped where kcat is not installed (Debian package kcat).
func TestKcatProduces(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed")
	}
	br := startBroker(t, BrokerConfig{Topics: []string{"kcat"}, Partitions: 4})
	var lines []string
	for _, m := range append(orderFlow("BTC-USD", 0), levelFlow("SOL-USD", 0)...) {
		lines = append(lines, string(m.Key)+"|"+string(m.Value))
	}
	lines = append(lines, `ETH-USD|{"type":"cancel","symbol":"ETH-USD","order_id":"none"}`)
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		cmd := exec.CommandContext(t.Context(), kcat, "-P", "-b", br.Addr(), "-t", "kcat", "-K", "|", "-z", codec)
		cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kcat -z %s: %v\n%s", codec, err, out)
		}
	}
	in, _ := runIngester(t, Config{Brokers: []string{br.Addr()}, Topic: "kcat"})
	n := uint64(5 * len(lines))
	waitRecords(t, in, n)
	s := in.Stats()
	// Each round after the first repeats adds (duplicates) and cancels of
	// gone orders, so only the first round applies in full; what matters
	// is that every record was read and judged.
	if s.Records != n || s.Bad[ReasonUnknownOrder.String()] == 0 {
		t.Errorf("stats: %+v", s)
	}
	checkBooks(t, in, model(t, readAll(t, br.Addr(), "kcat")))
}

// TestBrokerRetention fills a partition of the input topic well past
// BrokerConfig.Retention: once the broker applies retention (every minute;
// here at once) the oldest records are gone and about Retention bytes are
// left.
func TestBrokerRetention(t *testing.T) {
	const retention = 64 << 10
	br := startBroker(t, BrokerConfig{Topics: []string{"r"}, Partitions: 1, Retention: retention})
	value := []byte(strings.Repeat("x", 1000))
	var msgs []kafka.Message
	for range 50 {
		msgs = append(msgs, kafka.Message{Key: []byte("k"), Value: value})
	}
	for range 10 { // 10 batches of 50 KB
		produce(t, br.Addr(), "r", compress.None, true, msgs...)
	}
	br.cluster.ApplyRetention()
	conn, err := kafka.DialLeader(t.Context(), "tcp", br.Addr(), "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	first, last, err := conn.ReadOffsets()
	if err != nil {
		t.Fatal(err)
	}
	if last != 500 || first == 0 {
		t.Fatalf("offsets %d to %d after retention, want the oldest dropped of 500", first, last)
	}
	if kept := (last - first) * int64(len(value)); kept > 2*retention || kept < retention/2 {
		t.Errorf("%d records (%d bytes of values) kept, want about %d bytes", last-first, kept, retention)
	}
}

// TestBrokerRetentionReloaded restarts a broker on its DataDir with another
// retention: the reloaded topics take the new one (and lose it with 0).
func TestBrokerRetentionReloaded(t *testing.T) {
	dir := t.TempDir()
	retention := func(addr string) map[string]string {
		t.Helper()
		client := &kafka.Client{Addr: kafka.TCP(addr), Transport: &kafka.Transport{}}
		resp, err := client.DescribeConfigs(t.Context(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
			{ResourceType: kafka.ResourceTypeTopic, ResourceName: "keep", ConfigNames: []string{"retention.bytes"}},
			{ResourceType: kafka.ResourceTypeTopic, ResourceName: "keep" + DLQSuffix, ConfigNames: []string{"retention.bytes"}},
			{ResourceType: kafka.ResourceTypeTopic, ResourceName: "keep" + CheckpointSuffix, ConfigNames: []string{"cleanup.policy"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range resp.Resources {
			for _, e := range r.ConfigEntries {
				got[r.ResourceName+" "+e.ConfigName] = e.ConfigValue
			}
		}
		return got
	}
	want := func(addr, bytes string) {
		t.Helper()
		got := retention(addr)
		for _, k := range []string{"keep retention.bytes", "keep.dlq retention.bytes"} {
			if got[k] != bytes {
				t.Errorf("%s = %q, want %q (all: %v)", k, got[k], bytes, got)
			}
		}
		if got["keep.checkpoints cleanup.policy"] != "compact" {
			t.Errorf("checkpoint topic: %v", got)
		}
	}
	for _, tc := range []struct {
		retention int64
		want      string
	}{{1 << 20, "1048576"}, {8 << 20, "8388608"}, {0, "-1"}} {
		b, err := StartBroker(t.Context(), BrokerConfig{Addr: "127.0.0.1:0", Topics: []string{"keep"}, Partitions: 1, DataDir: dir, Retention: tc.retention})
		if err != nil {
			t.Fatal(err)
		}
		want(b.Addr(), tc.want)
		b.Close()
	}
}
