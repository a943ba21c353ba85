package stream

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// stats are the server's counters. The hot paths add to atomics; the
// Prometheus collectors read them at scrape time (CounterFunc/GaugeFunc),
// so counting costs the same with or without a registry.
type stats struct {
	connections   atomic.Int64
	subs          [numChannels]atomic.Int64
	publishes     atomic.Uint64
	encodes       atomic.Uint64
	compressions  atomic.Uint64
	conflations   atomic.Uint64
	slowConsumers atomic.Uint64
	closes        [numCloseReasons]atomic.Uint64
	deliveries    atomic.Uint64
	bytesRaw      atomic.Uint64
	bytesWire     atomic.Uint64
	writes        atomic.Uint64
	badMessages   [numErrorCodes]atomic.Uint64
	rejects       [numRejectReasons]atomic.Uint64

	latency prometheus.Histogram
}

func newStats() *stats {
	return &stats{latency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "marketd", Subsystem: "stream", Name: "publish_to_write_seconds",
		Help: "Time from Publish to the write of a message, observed once per write for its oldest message.",
		// 25µs .. ~1.6s
		Buckets: prometheus.ExponentialBuckets(25e-6, 2, 17),
	})}
}

func (s *stats) observeLatency(d time.Duration) { s.latency.Observe(d.Seconds()) }

// Stats is a snapshot of the server's counters (see the Prometheus metrics
// of the same names for their meaning).
type Stats struct {
	Connections   int64
	Subscriptions map[string]int64 // by channel
	Publishes     uint64           // updates received by Publish
	Encodes       uint64           // shared messages encoded
	Compressions  uint64           // shared messages compressed (per context)
	Conflations   uint64           // times a client passed the soft limit
	SlowConsumers uint64           // clients closed at the hard limit
	Closes        map[string]uint64
	Deliveries    uint64            // messages written to sockets
	BytesRaw      uint64            // their uncompressed frame bytes
	BytesWire     uint64            // bytes written
	Writes        uint64            // writev calls
	BadMessages   map[string]uint64 // errors sent, by code
	QueuedBytes   int64
	Rejections    map[string]uint64 // upgrade requests refused, by reason
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	st := s.stats
	out := Stats{
		Connections:   st.connections.Load(),
		Subscriptions: map[string]int64{},
		Publishes:     st.publishes.Load(),
		Encodes:       st.encodes.Load(),
		Compressions:  st.compressions.Load(),
		Conflations:   st.conflations.Load(),
		SlowConsumers: st.slowConsumers.Load(),
		Closes:        map[string]uint64{},
		Deliveries:    st.deliveries.Load(),
		BytesRaw:      st.bytesRaw.Load(),
		BytesWire:     st.bytesWire.Load(),
		Writes:        st.writes.Load(),
		BadMessages:   map[string]uint64{},
		QueuedBytes:   s.queuedBytes(),
		Rejections:    map[string]uint64{},
	}
	for r := rejectHandshake; r < numRejectReasons; r++ {
		out.Rejections[r.String()] = st.rejects[r].Load()
	}
	for ch := chanBook; ch < numChannels; ch++ {
		out.Subscriptions[ch.String()] = st.subs[ch].Load()
	}
	for r := CloseByClient; r < numCloseReasons; r++ {
		out.Closes[r.String()] = st.closes[r].Load()
	}
	for c := CodeBadRequest; c < numErrorCodes; c++ {
		out.BadMessages[c.String()] = st.badMessages[c].Load()
	}
	return out
}

// queuedBytes sums the queues of every connection.
func (s *Server) queuedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for c := range s.clients {
		c.mu.Lock()
		n += int64(c.queued)
		c.mu.Unlock()
	}
	return n
}

// register registers the server's collectors on r.
func (s *Server) register(r prometheus.Registerer) error {
	st := s.stats
	const ns, sub = "marketd", "stream"
	counter := func(name, help string, v *atomic.Uint64, labels prometheus.Labels) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections", Help: "Open WebSocket connections."},
			func() float64 { return float64(st.connections.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queued_bytes", Help: "Bytes queued on all connections, not yet written."},
			func() float64 { return float64(s.queuedBytes()) }),
		counter("publishes_total", "Book updates received by the hub.", &st.publishes, nil),
		counter("encodes_total", "Shared messages encoded (once per group, whatever the subscribers).", &st.encodes, nil),
		counter("compressions_total", "Shared messages compressed: once per message, and with context takeover once per distinct context, whatever the subscribers.", &st.compressions, nil),
		counter("conflations_total", "Times a client passed the soft queue limit and was conflated.", &st.conflations, nil),
		counter("slow_consumer_closes_total", "Clients closed with 4008 at the hard queue limit.", &st.slowConsumers, nil),
		counter("deliveries_total", "Messages written to clients.", &st.deliveries, nil),
		counter("bytes_raw_total", "Uncompressed frame bytes of the messages written.", &st.bytesRaw, nil),
		counter("bytes_wire_total", "Bytes written to client sockets.", &st.bytesWire, nil),
		counter("write_syscalls_total", "Socket writes (one writev each).", &st.writes, nil),
		st.latency,
	}
	for ch := chanBook; ch < numChannels; ch++ {
		v := &st.subs[ch]
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "subscriptions",
			Help: "Subscriptions by channel.", ConstLabels: prometheus.Labels{"channel": ch.String()}},
			func() float64 { return float64(v.Load()) }))
	}
	for r := CloseByClient; r < numCloseReasons; r++ {
		cs = append(cs, counter("closes_total", "Connections ended, by reason and close code sent.", &st.closes[r],
			prometheus.Labels{"reason": r.String(), "code": r.codeLabel()}))
	}
	for c := CodeBadRequest; c < numErrorCodes; c++ {
		cs = append(cs, counter("bad_messages_total", "Client messages answered with an error, by code.", &st.badMessages[c],
			prometheus.Labels{"code": c.String()}))
	}
	for r := rejectHandshake; r < numRejectReasons; r++ {
		cs = append(cs, counter("upgrade_rejections_total", "WebSocket upgrade requests refused with an HTTP error, by reason.", &st.rejects[r],
			prometheus.Labels{"reason": r.String()}))
	}
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("register stream metrics: %w", err)
		}
	}
	return nil
}
