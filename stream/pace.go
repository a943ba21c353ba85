package stream

import (
	"context"
	"time"
)

// Pacer spaces a replay's updates out by their event time (ts, Unix
// microseconds): the first update is due at once, each later one
// (ts - the first's ts) / Speed after it, so 1 plays in real time and 2
// twice as fast. Speed 0, and the zero Pacer, pace nothing. A Pacer
// belongs to one goroutine.
type Pacer struct {
	Speed float64

	started bool
	start   time.Time
	ts0     int64
}

// Wait waits until the update of event time ts is due, or returns ctx's
// error when ctx ends first. Before it waits it calls flush, when not nil,
// so that what is buffered reaches its reader on time, and returns
// flush's error.
func (p *Pacer) Wait(ctx context.Context, ts int64, flush func() error) error {
	if p.Speed == 0 {
		return nil
	}
	if !p.started {
		p.started, p.start, p.ts0 = true, time.Now(), ts
		return nil
	}
	wait := time.Until(p.start.Add(time.Duration(float64(ts-p.ts0) * float64(time.Microsecond) / p.Speed)))
	if wait <= 0 {
		return nil
	}
	if flush != nil {
		if err := flush(); err != nil {
			return err
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
