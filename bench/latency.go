package bench

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram buckets: values below histSub are exact; above, each power of
// two is split into histSub buckets, so a recorded value is known within
// 1/histSub (1.6%). Values are microseconds; the top bucket holds anything
// from about 2^40 µs (12 days) up.
const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histExps    = 35
	histBuckets = histSub * (histExps + 2)
)

// Histogram counts latencies in microseconds in log-linear buckets. Record
// is safe for concurrent use and does not allocate; read it with Snapshot
// once the writers are done (or accept a slightly torn view while they run).
type Histogram struct {
	counts [histBuckets]atomic.Int64
}

func histIndex(v int64) int {
	if v < histSub {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	// v>>exp keeps the top histSubBits+1 bits: a value in [histSub, 2*histSub).
	exp := bits.Len64(uint64(v)) - histSubBits - 1
	if exp > histExps {
		return histBuckets - 1
	}
	return exp*histSub + int(v>>exp)
}

// histValue returns the midpoint of bucket i.
func histValue(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	exp := i/histSub - 1
	m := int64(i%histSub + histSub)
	lo := m << exp
	return lo + (int64(1)<<exp)/2
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) { h.RecordMicros(d.Microseconds()) }

// RecordMicros adds one latency given in microseconds; a negative one
// (clocks of producer and consumer are the same here, so only rounding)
// counts as 0.
func (h *Histogram) RecordMicros(us int64) { h.counts[histIndex(us)].Add(1) }

// Snapshot returns a copy of the counts that the caller owns.
func (h *Histogram) Snapshot() *HistSnapshot {
	s := &HistSnapshot{}
	for i := range h.counts {
		s.counts[i] = h.counts[i].Load()
		s.total += s.counts[i]
	}
	return s
}

// HistSnapshot is a frozen Histogram.
type HistSnapshot struct {
	counts [histBuckets]int64
	total  int64
}

// Merge adds the counts of o to s.
func (s *HistSnapshot) Merge(o *HistSnapshot) {
	for i, c := range o.counts {
		s.counts[i] += c
	}
	s.total += o.total
}

// Count returns the number of recorded values.
func (s *HistSnapshot) Count() int64 { return s.total }

// Quantile returns the value in microseconds below which a fraction q of
// the recorded values lie (q in [0,1]), or 0 for an empty histogram.
func (s *HistSnapshot) Quantile(q float64) int64 {
	if s.total == 0 {
		return 0
	}
	rank := int64(q*float64(s.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > s.total {
		rank = s.total
	}
	var seen int64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			return histValue(i)
		}
	}
	return histValue(histBuckets - 1)
}

// Max returns the value of the highest non-empty bucket (its midpoint, as
// Quantile's), in microseconds.
func (s *HistSnapshot) Max() int64 {
	for i := histBuckets - 1; i >= 0; i-- {
		if s.counts[i] > 0 {
			return histValue(i)
		}
	}
	return 0
}
