package main

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/marketd/marketd/feed"
)

// feedCollector exports the ingester's Stats as Prometheus metrics: the
// core package keeps plain counters, the edge turns them into metrics.
type feedCollector struct {
	in *feed.Ingester

	records, bytes, bad, stale, dlq, dlqDropped, reconnects *prometheus.Desc
	restored, ckptWrites, ckptErrors, ckptDeferred          *prometheus.Desc
	books, offset, start, ckptOffset, hwm, lag, connected   *prometheus.Desc
}

var _ prometheus.Collector = (*feedCollector)(nil)

func newFeedCollector(in *feed.Ingester) *feedCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("marketd_ingest_"+name, help, labels, nil)
	}
	return &feedCollector{
		in:           in,
		records:      d("records_total", "Input records read, good or bad."),
		bytes:        d("bytes_total", "Bytes of input record values read."),
		bad:          d("bad_records_total", "Input records rejected, by reason.", "reason"),
		stale:        d("stale_records_total", "Input records skipped because their book had applied them already."),
		dlq:          d("dlq_records_total", "Rejected records written to the dead-letter topic."),
		dlqDropped:   d("dlq_dropped_total", "Rejected records not written to the dead-letter topic because its buffer was full."),
		reconnects:   d("reconnects_total", "Connections to a partition leader lost and made again."),
		restored:     d("books_restored_total", "Books restored from checkpoints at start."),
		ckptWrites:   d("checkpoint_records_total", "Checkpoint records written (books and manifests)."),
		ckptErrors:   d("checkpoint_errors_total", "Checkpoint rounds that failed to be written."),
		ckptDeferred: d("checkpoint_deferred_total", "Checkpoint rounds put off until the partition's previous one was written."),
		start:        d("start_offset", "Offset reading started at (earliest retained, or the checkpoint's), by partition.", "partition"),
		ckptOffset:   d("checkpoint_offset", "Input offset of the partition's last checkpoint written, by partition.", "partition"),
		books:        d("books", "Order books held, by partition.", "partition"),
		offset:       d("offset", "Next input offset to apply, by partition.", "partition"),
		hwm:          d("high_watermark", "Latest high watermark seen, by partition.", "partition"),
		lag:          d("lag_records", "Records between the high watermark and the next offset to apply, by partition.", "partition"),
		connected:    d("connected", "1 while the partition's leader answers, by partition.", "partition"),
	}
}

func (c *feedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.bytes, c.bad, c.stale, c.dlq, c.dlqDropped,
		c.reconnects, c.restored, c.ckptWrites, c.ckptErrors, c.ckptDeferred,
		c.books, c.offset, c.start, c.ckptOffset, c.hwm, c.lag, c.connected} {
		ch <- d
	}
}

func (c *feedCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.in.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.records, s.Records)
	counter(c.bytes, s.Bytes)
	for reason, n := range s.Bad {
		counter(c.bad, n, reason)
	}
	counter(c.stale, s.Stale)
	counter(c.dlq, s.DLQWrites)
	counter(c.dlqDropped, s.DLQDropped)
	counter(c.reconnects, s.Reconnects)
	counter(c.restored, s.Restored)
	counter(c.ckptWrites, s.CheckpointWrites)
	counter(c.ckptErrors, s.CheckpointErrors)
	counter(c.ckptDeferred, s.CheckpointDeferred)
	for _, p := range s.Partitions {
		part := strconv.Itoa(p.Partition)
		gauge(c.books, float64(p.Books), part)
		gauge(c.offset, float64(p.Offset), part)
		gauge(c.start, float64(p.Start), part)
		gauge(c.ckptOffset, float64(p.Checkpoint), part)
		gauge(c.hwm, float64(p.HighWatermark), part)
		gauge(c.lag, float64(p.Lag), part)
		connected := 0.0
		if p.Connected {
			connected = 1
		}
		gauge(c.connected, connected, part)
	}
}
