package book

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// propertyEvents is the number of random events TestProperty drives through
// books and reference models; the race detector makes each one far slower.
func propertyEvents() int {
	if raceEnabled {
		return 20_000
	}
	return 120_000
}

const tick Num = Unit / 100 // 0.01

// gen makes a random but plausible event flow for several symbols of both
// modes, concentrated near the top of the book so that the boundaries of
// the small depth views are crossed constantly, with a share of events of
// every kind that must be rejected.
type gen struct {
	rng *rand.Rand
	seq uint64
	ts  int64
	ids int
}

// sym is the generator's state for one symbol.
type sym struct {
	name   string
	orders bool // order-based
	mid    Num
	deep   int      // typical number of levels per side
	live   []string // ids of resting orders, in no order
	c      *checker
}

func (g *gen) nextTS() int64 {
	switch x := g.rng.IntN(1000); {
	case x < 700: // busy: within seconds
		g.ts += g.rng.Int64N(5_000_000)
	case x < 960: // quiet: a minute or three
		g.ts += 60_000_000 + g.rng.Int64N(120_000_000)
	case x < 995: // an event time older than the newest (out of order)
		return g.ts - g.rng.Int64N(600_000_000)
	default: // a long gap: most of the 24h window expires
		g.ts += 20*3600_000_000 + g.rng.Int64N(5*3600_000_000)
	}
	return g.ts
}

// price returns a price at a distance from the mid concentrated near it.
func (g *gen) price(s *sym, side Side) Num {
	var off int
	switch x := g.rng.IntN(100); {
	case x < 55:
		off = g.rng.IntN(12)
	case x < 85:
		off = 12 + g.rng.IntN(50)
	default:
		off = g.rng.IntN(s.deep)
	}
	p := s.mid + Num(off+1)*tick
	if side == Buy {
		p = s.mid - Num(off)*tick
	}
	return max(p, tick)
}

func (g *gen) size() Num {
	if g.rng.IntN(10) == 0 {
		return Num(1 + g.rng.IntN(3)) // tiny: a few units of 1e-8
	}
	return Num(1+g.rng.IntN(5000)) * (Unit / 1000)
}

func (g *gen) side() Side { return Side(1 + g.rng.IntN(2)) }

func (g *gen) pickOrder(s *sym) (string, int) {
	if len(s.live) == 0 {
		return "", -1
	}
	i := g.rng.IntN(len(s.live))
	return s.live[i], i
}

// event fills ev with the next event for s, valid or not.
func (g *gen) event(s *sym, ev *Event) {
	*ev = Event{Symbol: s.name, TS: g.nextTS()}
	g.seq++
	ev.Seq = g.seq
	if g.rng.IntN(200) == 0 { // walk the mid
		s.mid = max(s.mid+Num(g.rng.IntN(21)-10)*tick, 100*tick)
	}
	x := g.rng.IntN(1000)
	switch {
	case x < 30:
		g.invalid(s, ev)
	case x < 80:
		ev.Kind, ev.TradeID, ev.Side, ev.Price, ev.Size = KindTrade, fmt.Sprintf("t%d", ev.Seq), g.side(), s.mid, g.size()
	case s.orders:
		g.orderEvent(s, ev, x)
	default:
		g.levelEvent(s, ev, x)
	}
}

func (g *gen) orderEvent(s *sym, ev *Event, x int) {
	id, _ := g.pickOrder(s)
	switch {
	case x < 160 && id != "": // a trade filling a maker order
		c := s.c.ref.orders[id]
		ev.Kind, ev.TradeID, ev.MakerOrderID, ev.Side, ev.Price = KindTrade, fmt.Sprintf("t%d", ev.Seq), id, g.side(), c.price
		switch y := g.rng.IntN(10); {
		case y < 4:
			ev.Size = c.size // fills it: removed
		case y < 9 && c.size > 1:
			ev.Size = 1 + Num(g.rng.Int64N(int64(c.size-1)))
		default:
			ev.Size = c.size + 1 // overfill: rejected
		}
	case x < 300 && id != "":
		ev.Kind, ev.OrderID = KindCancel, id
	case x < 400 && id != "":
		ev.Kind, ev.OrderID, ev.Size = KindModify, id, g.size()
	case len(s.live) > 3*s.deep && id != "":
		ev.Kind, ev.OrderID = KindCancel, id
	default:
		g.ids++
		ev.Kind, ev.OrderID, ev.Side = KindAdd, fmt.Sprintf("o%d", g.ids), g.side()
		ev.Price, ev.Size = g.price(s, ev.Side), g.size()
	}
}

func (g *gen) levelEvent(s *sym, ev *Event, x int) {
	switch {
	case x < 84: // a snapshot of up to 1.3 deep contiguous-ish levels per side
		ev.Kind = KindSnapshot
		for _, side := range []Side{Buy, Sell} {
			n := g.rng.IntN(s.deep * 13 / 10)
			if g.rng.IntN(8) == 0 {
				n = 0
			}
			out := make([]Level, 0, n)
			off := Num(g.rng.IntN(3))
			for range n {
				p := s.mid + (off+1)*tick
				if side == Buy {
					p = s.mid - off*tick
				}
				if p > 0 {
					out = append(out, Level{p, g.size()})
				}
				off += 1 + Num(g.rng.IntN(4)/3)
			}
			g.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
			if side == Buy {
				ev.Bids = out
			} else {
				ev.Asks = out
			}
		}
	default:
		ev.Kind, ev.Side = KindLevel, g.side()
		ev.Price = g.price(s, ev.Side)
		ev.Size = g.size()
		remove := 25 // percent: removals balance inserts near the target depth
		if s.c.b.Depth(ev.Side) > s.deep {
			remove = 55
		}
		if g.rng.IntN(100) < remove {
			ev.Size = 0
		}
	}
}

// invalid makes an event that the book must reject, most of the time.
func (g *gen) invalid(s *sym, ev *Event) {
	id, _ := g.pickOrder(s)
	switch g.rng.IntN(14) {
	case 0:
		ev.Kind, ev.Side, ev.Price, ev.Size, ev.OrderID = KindAdd, Side(3), s.mid, Unit, "bad"
	case 1:
		ev.Kind, ev.Side, ev.Price, ev.Size, ev.OrderID = KindLevel, Buy, 0, Unit, ""
	case 2:
		ev.Kind, ev.Side, ev.Price, ev.Size, ev.OrderID = KindAdd, Sell, s.mid, -Unit, "neg"
	case 3:
		ev.Kind, ev.OrderID = KindCancel, "nobody"
	case 4:
		ev.Kind, ev.OrderID, ev.Size = KindModify, id, 0
	case 5:
		ev.Kind, ev.OrderID, ev.Side, ev.Price, ev.Size = KindAdd, id, Buy, s.mid, Unit // duplicate when id != ""
	case 6:
		ev.Kind, ev.Side, ev.Price, ev.Size = KindLevel, Sell, s.mid, Unit // mode mismatch on order books
	case 7:
		ev.Kind = Kind(0)
	case 8:
		ev.Seq = s.c.ref.seq // stale
		ev.Kind, ev.TradeID, ev.Side, ev.Price, ev.Size = KindTrade, "stale", Buy, s.mid, Unit
	case 9:
		ev.Symbol = "OTHER"
		ev.Kind, ev.TradeID, ev.Side, ev.Price, ev.Size = KindTrade, "x", Buy, s.mid, Unit
	case 10:
		ev.Kind, ev.TradeID, ev.Side, ev.Price, ev.Size, ev.MakerOrderID = KindTrade, "m", Sell, s.mid, Unit, "nobody"
	case 11: // sizes near the limit: overflow on an existing level or order
		ev.Kind, ev.Side, ev.Price, ev.Size = KindAdd, Buy, s.mid, MaxNum-Unit
		ev.OrderID = fmt.Sprintf("big%d", ev.Seq)
		if !s.orders {
			ev.Kind = KindLevel
		}
	case 12:
		ev.Kind, ev.Bids = KindSnapshot, []Level{{s.mid, Unit}, {s.mid, 2 * Unit}} // duplicate price
	case 13:
		ev.Kind, ev.Asks = KindSnapshot, []Level{{s.mid, 0}}
	}
}

// track keeps the generator's list of live order ids in step with the
// reference after an event.
func (s *sym) track(ev *Event) {
	if !s.orders {
		return
	}
	switch ev.Kind {
	case KindAdd:
		if _, ok := s.c.ref.orders[ev.OrderID]; ok && (len(s.live) == 0 || s.live[len(s.live)-1] != ev.OrderID) {
			s.live = append(s.live, ev.OrderID)
		}
	case KindCancel, KindTrade:
		id := ev.OrderID
		if ev.Kind == KindTrade {
			id = ev.MakerOrderID
		}
		if _, ok := s.c.ref.orders[id]; ok || id == "" {
			return
		}
		for i, l := range s.live {
			if l == id {
				s.live[i] = s.live[len(s.live)-1]
				s.live = s.live[:len(s.live)-1]
				break
			}
		}
	}
}

// TestProperty drives books of both modes and their reference models side
// by side over many random events and checks, after every event, the error,
// the full state, every depth view rebuilt from Changes alone, the checksums,
// the ticker and LastUpdate. Every few thousand events each book is
// checkpointed, restored, and the run continues on the restored copy.
func TestProperty(t *testing.T) {
	g := &gen{rng: rand.New(rand.NewPCG(1, 2)), ts: 1_763_900_000_000_000}
	syms := []*sym{
		{name: "BTC-USD", orders: true, mid: 50_000 * Unit, deep: 80},
		{name: "ETH-USD", orders: true, mid: 3_000 * Unit, deep: 200},
		{name: "SOL-USD", mid: 150 * Unit, deep: 80},
		{name: "DOGE-USD", mid: 20 * Unit, deep: 1100}, // crosses 500 and 1000
	}
	weights := []int{35, 20, 35, 10}
	for _, s := range syms {
		s.c = newChecker(s.name)
	}
	n := propertyEvents()
	var ev Event
	for i := range n {
		x, k := g.rng.IntN(100), 0
		for x >= weights[k] {
			x -= weights[k]
			k++
		}
		s := syms[k]
		g.event(s, &ev)
		if err := s.c.step(&ev); err != nil {
			t.Fatalf("event %d, %s: %v", i, s.name, err)
		}
		s.track(&ev)
		if i%5000 == 4999 {
			for _, s := range syms {
				if err := s.c.roundTrip(); err != nil {
					t.Fatalf("event %d, %s: %v", i, s.name, err)
				}
			}
		}
	}
	var crossings [finiteViews]int
	for _, s := range syms {
		t.Logf("%s: %d applied, %d rejected; %d/%d levels, %d orders; view boundary crossings %v", s.name, s.c.applied, s.c.rejected,
			s.c.b.Depth(Buy), s.c.b.Depth(Sell), s.c.b.Orders(), s.c.crossings)
		if s.c.rejected == 0 || s.c.applied < n/20 {
			t.Errorf("%s: %d applied, %d rejected: the flow does not exercise the book", s.name, s.c.applied, s.c.rejected)
		}
		for v, k := range s.c.crossings {
			crossings[v] += k
		}
	}
	for v, k := range crossings {
		if k < 20 {
			t.Errorf("the boundary of the depth-%d view was crossed only %d times", Depths[v], k)
		}
	}
}
