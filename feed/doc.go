// Package feed reads market events from Kafka into order books.
//
// An Ingester reads the input topic with github.com/segmentio/kafka-go,
// decodes and validates each record (protocol.md §1, see Decode), applies it
// to the book of its symbol and publishes what changed to a book.Sink. Bad
// records are skipped, counted by Reason, logged at most once a second per
// reason, and copied to the dead-letter topic. It checkpoints the books to a
// compacted topic and, on start, restores them and reads only the records
// since. Replay reads a range of the topic by time or offset with the same
// decode and apply code. The package also provides the embedded
// Kafka-protocol broker (StartBroker) and the market simulator (Simulate) of
// the default run.
//
// # Ownership and concurrency
//
// Run starts, for each assigned partition, two goroutines:
//
//   - the fetcher owns the partition's kafka.Conn: it fetches in offset order
//     and hands the records, in chunks of at most 4096, to the apply loop over a
//     channel that holds two chunks (so the next fetch overlaps the apply);
//   - the apply loop owns the partition's books, its Decoder and its Event:
//     it decodes, validates and applies each record in offset order, calls
//     Sink.Publish with the update, and between records runs the functions
//     given to Do. Nothing else ever touches a book: readers get copies
//     through Do (design.md decision 2).
//
// A third goroutine produces dead letters, and a fourth writes checkpoints.
// Run stops all of them when its context ends and waits for them before it
// returns; the checkpoint writer last, given DialTimeout to write the round
// each apply loop takes as it stops. The Ingester's mutex guards only the
// partition list and the symbol → partition registry (read by Do and
// Symbols, written once per new symbol); counters are atomics, so Stats and
// Ready may be called from any goroutine at any time.
//
// # Checkpoints
//
// A partition's apply loop checkpoints its books every CheckpointInterval,
// after every CheckpointRecords records, when it first catches up, and as it
// stops (each time only if it applied something since the last round). A
// round is taken on the apply loop, so it is consistent: each book as
// MarshalBinary writes it (an unchanged book's bytes are reused), with the
// input offset the round reflects and the seq of the symbol's last trade.
// The apply loop hands the round to the checkpoint writer and goes on; a
// round due while the partition's previous one is still being written waits
// for the writer, never the other way round. The writer produces, to
// CheckpointTopic partition p (mod its count), one record per book, keyed by
// symbol, then a manifest listing the partition's books: the manifest says
// the round is complete. The topic must be compacted (cleanup.policy=compact)
// so that it keeps the latest record of each key; the embedded broker makes
// it so. Records carry a version and a CRC-32C.
//
// At start, before its partitions are read (and while Ready says so), Run
// reads the checkpoints of its partitions. A partition whose manifest and
// listed books are all present, readable and not past the partition's end
// restores those books and is read from the lowest offset among them: each
// restored book skips the records below its own offset (counted in
// Stats.Stale, not as bad), so only the tail is applied. Anything else (no
// checkpoint, a corrupt record, a book missing, a topic recreated) is
// logged and the partition is read in full. Several instances may write to
// the same checkpoint topic: for the same offsets they write the same
// bytes, and any mix of their rounds restores correctly.
//
// # Offsets and sequence numbers
//
// A record's seq is its offset + 1 (protocol.md §2), so two instances, or one
// after a restart, give the same seq to the same state. Each partition is read
// from its earliest retained offset, or from where its checkpoints let it
// resume. When a connection fails, the fetcher
// reconnects with backoff and resumes at the first offset it has not handed
// over: nothing is lost and nothing is applied twice (book.ErrStale is a
// second guard; such records are counted in Stats.Stale). A record that is
// rejected leaves its book, and the book's seq, unchanged.
//
// A symbol belongs to the partition that first applied one of its records.
// Records of that symbol in another partition (a producer that did not key by
// symbol) are rejected with ReasonWrongPartition, since their order relative
// to the symbol's other records is unknown.
//
// # Dead letters
//
// A bad record is produced to the DLQ topic with its original key, value and
// headers, plus the headers reason (the Reason label), error, partition and
// offset. Dead letters of input partition p go to DLQ partition p (modulo the
// DLQ's partition count), in offset order; at start the DLQ writer reads the
// end of each DLQ partition to learn what a previous run wrote, so replaying
// the topic does not dead-letter a record twice. Two instances reading the
// same topic would both write dead letters: set Config.DisableDLQ on all but
// one. Dead letters wait in a bounded buffer; if the DLQ cannot be written
// for long enough to fill it, further ones are dropped and counted
// (Stats.DLQDropped) rather than stall ingest.
//
// # Replay
//
// Replay reads a range of the topic (by record time, with list-offsets by
// time, or by offset in one partition). It uses partitions as the Ingester
// does — the same fetcher, bounded by the range's end, and the same
// decodeApply — but no apply loops: one merge loop owns every book, applies
// the records before the range silently (from checkpoints taken before the
// range when they exist), then hands each update of the range to a
// ReplayHandler, all partitions merged by record time, then partition.
// ReplayLive then reads on with new fetchers, from the end of the range,
// applying the records as they come, until its LiveHandler says it has
// caught up with the live stream.
//
// # The embedded broker
//
// StartBroker runs github.com/twmb/franz-go/pkg/kfake in the process: one
// broker speaking the Kafka protocol over TCP, reached by kafka-go (or any
// client) exactly like a real cluster. It creates the input, DLQ and
// checkpoint topics. Tested against it with kafka-go v0.4.51: produce and
// fetch with every codec, partition readers, list offsets by time
// (Conn.ReadOffset, Reader.SetOffsetAt), consumer groups with commit and
// resume; and librdkafka's kcat producing with every codec. What it does not
// do, unlike a Kafka cluster:
//
//   - keep data across restarts unless BrokerConfig.DataDir is set (and then
//     in kfake's own format, not a Kafka log directory);
//   - replicate: there is one broker, so acks=all means acks=1 and the data
//     lives and dies with this process;
//   - throttle or enforce quotas, authenticate (no TLS or SASL is set up),
//     or spread load: its request handling runs on one goroutine;
//   - tiered storage, rack-aware fetching, log-truncation detection.
//
// Outside producers reach it on its address, e.g. with kcat:
//
//	echo 'BTC-USD|{"type":"add","symbol":"BTC-USD","order_id":"o1","side":"buy","price":"50000.10","size":"0.5"}' |
//	    kcat -P -b 127.0.0.1:9092 -t market.events -K '|'
//	kcat -C -b 127.0.0.1:9092 -t market.events.dlq -e -f '%k %h %s\n'
//
// kafka-go's Reader refuses SetOffset and SetOffsetAt when GroupID is set:
// reading from an offset or a time needs partition readers or a Conn, which
// is what the Ingester uses.
//
// # The simulator
//
// Simulate produces a live-looking market: order-based symbols (BTC-USD,
// ETH-USD) with adds, modifies and cancels around a random-walking mid and
// trades that fill resting orders at the touch; level-based symbols (SOL-USD,
// DOGE-USD) with a snapshot, level updates, trades without a maker and a
// resync snapshot now and then; bursts and quiet spells; and one bad record
// in BadEvery, of every kind, marked with the header SimBadHeader.
package feed
