// Package bench measures marketd end to end and against the alternatives a
// user could run instead. Every performance claim of the project comes from
// here, as a ratio measured side by side in one run.
//
// The package holds three instruments and the pieces they share:
//
//   - The load generator (Run, Config, Result): it opens N WebSocket
//     clients with a configurable subscription mix (see ParseMix), produces
//     market events into the target's Kafka topic at a fixed rate with the
//     send time in each event's ts, and reports deliveries per second,
//     payload and wire bytes, end-to-end latency percentiles, sequence gaps,
//     conflation notices, and the target process's memory, CPU and write
//     syscalls read from /proc. Its own CPU is reported too, so that a run
//     in which the load side was the bottleneck is visible as such. With
//     permessage-deflate its clients inflate beneath gws (inflateConn):
//     one DEFLATE stream per connection with server context takeover,
//     shared inflations of identical self-contained frames without.
//   - The comparison peer (Peer): the straightforward server a user would
//     write — one goroutine and one unbounded channel per client, JSON
//     encoded and compressed per client — speaking the subset of the
//     marketd protocol that the load generator uses.
//   - The ceiling (CeilingServer, MeasureCeiling): raw loopback TCP writes
//     of fixed-size messages from one core, the physical limit every
//     fan-out figure is compared with.
//
// Commands under bench/cmd wrap each instrument; bench/cmd/suite runs the
// scenarios of docs/benchmarks.md and draws the plots.
//
// Concurrency: Run owns every goroutine it starts (one read loop per client,
// the producer, the sampler) and returns only after all of them stopped.
// A Peer owns its ingest goroutine and one writer goroutine per client;
// Close stops them and waits. Nothing outside bench imports bench.
package bench
