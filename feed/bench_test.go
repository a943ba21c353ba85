package feed

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

// BenchmarkIngest measures records ingested per second end to end: the
// simulator's flow (order- and level-based symbols) is produced into 4
// partitions of the embedded broker first, then each iteration starts an
// Ingester and times its catch-up from the broker, over TCP, into books.
func BenchmarkIngest(b *testing.B) {
	const n = 200_000
	for _, codec := range []compress.Compression{compress.None, compress.Zstd} {
		b.Run(codec.String(), func(b *testing.B) {
			br := startBroker(b, BrokerConfig{Topics: []string{"bench"}, Partitions: 4})
			sim := newSimulator(SimConfig{Seed: 1, BadEvery: -1})
			msgs := make([]kafka.Message, n)
			var bytes int64
			now := time.Now()
			for i := range msgs {
				msgs[i] = sim.next(now)
				bytes += int64(len(msgs[i].Value))
			}
			produce(b, br.Addr(), "bench", codec, false, msgs...)
			msgs = nil
			b.SetBytes(bytes)
			b.ReportAllocs()
			for b.Loop() {
				in, stop := runIngester(b, Config{Brokers: []string{br.Addr()}, Topic: "bench", DisableDLQ: true})
				deadline := time.Now().Add(time.Minute)
				for in.Stats().Records < n {
					if time.Now().After(deadline) {
						b.Fatalf("ingested %d of %d records in a minute", in.Stats().Records, n)
					}
					time.Sleep(5 * time.Millisecond)
				}
				stop()
				if s := in.Stats(); s.BadTotal() != 0 || s.Records != n {
					b.Fatalf("records %d, bad %v", s.Records, s.Bad)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
