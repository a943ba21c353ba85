package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// Sub is one subscription a load client makes.
type Sub struct {
	// Channel is "book", "ticker" or "trades".
	Channel string
	// Symbols lists the symbols, or holds "*".
	Symbols []string
	// Depth is the book depth; 0 leaves the server's default.
	Depth int
	// Interval is "raw", "100ms" or "1s"; empty leaves the server's default.
	Interval string
}

// subSpec is a Sub whose symbols may still be a per-client pattern.
type subSpec struct {
	Sub
	// spread > 0 means "spread symbols per client": client i subscribes to
	// spread consecutive symbols of the universe starting at i.
	spread int
}

// Mix is a parsed subscription mix: groups of clients with weights, each
// group making the same subscriptions (up to per-client symbol spreading).
type Mix struct {
	groups []mixGroup
	total  int
	text   string
}

type mixGroup struct {
	weight int
	subs   []subSpec // empty: idle clients
}

// ParseMix parses a subscription mix. Grammar:
//
//	mix    = group { ";" group }
//	group  = [ weight "x" ] ( "idle" | sub { "+" sub } )
//	sub    = channel ":" symbols { ":" ( depth | interval ) }
//	symbols = "*" | "@" k | name { "," name }
//
// A group of weight w takes w of every total-weight consecutive clients.
// "@k" gives the n-th client of the group the k symbols of the universe
// starting at index n (round robin), so clients spread evenly over the
// symbols. depth is a
// number, interval one of raw, 100ms, 1s. "idle" clients subscribe to
// nothing (for memory per connection). Examples:
//
//	book:@1:10                          every client: the book of one symbol, depth 10
//	ticker:@1                           every client: the ticker of one symbol
//	6x ticker:@1; 3x book:@1:10+trades:@1; 1x book:SYM00:50:100ms
func ParseMix(s string) (*Mix, error) {
	m := &Mix{text: s}
	for _, gs := range strings.Split(s, ";") {
		gs = strings.TrimSpace(gs)
		if gs == "" {
			continue
		}
		g := mixGroup{weight: 1}
		if w, rest, ok := strings.Cut(gs, "x "); ok && isDigits(w) {
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 || n > 1_000_000 {
				return nil, fmt.Errorf("mix group %q: bad weight", gs)
			}
			g.weight, gs = n, strings.TrimSpace(rest)
		}
		if gs != "idle" {
			for _, ss := range strings.Split(gs, "+") {
				sub, err := parseSub(strings.TrimSpace(ss))
				if err != nil {
					return nil, fmt.Errorf("mix group %q: %w", gs, err)
				}
				g.subs = append(g.subs, sub)
			}
		}
		m.groups = append(m.groups, g)
		m.total += g.weight
	}
	if len(m.groups) == 0 {
		return nil, fmt.Errorf("empty mix")
	}
	return m, nil
}

func parseSub(s string) (subSpec, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 {
		return subSpec{}, fmt.Errorf("subscription %q: want channel:symbols", s)
	}
	sp := subSpec{Sub: Sub{Channel: parts[0]}}
	switch sp.Channel {
	case "book", "ticker", "trades":
	default:
		return subSpec{}, fmt.Errorf("subscription %q: unknown channel %q", s, sp.Channel)
	}
	switch sym := parts[1]; {
	case sym == "*":
		if sp.Channel == "book" {
			return subSpec{}, fmt.Errorf("subscription %q: \"*\" is for ticker and trades", s)
		}
		sp.Symbols = []string{"*"}
	case strings.HasPrefix(sym, "@"):
		k, err := strconv.Atoi(sym[1:])
		if err != nil || k < 1 {
			return subSpec{}, fmt.Errorf("subscription %q: bad spread %q", s, sym)
		}
		sp.spread = k
	default:
		for _, name := range strings.Split(sym, ",") {
			if name == "" {
				return subSpec{}, fmt.Errorf("subscription %q: empty symbol", s)
			}
			sp.Symbols = append(sp.Symbols, name)
		}
	}
	for _, p := range parts[2:] {
		switch {
		case isDigits(p):
			d, err := strconv.Atoi(p)
			if err != nil || sp.Channel != "book" {
				return subSpec{}, fmt.Errorf("subscription %q: depth %q is for book", s, p)
			}
			sp.Depth = d
		case p == "raw" || p == "100ms" || p == "1s":
			sp.Interval = p
		default:
			return subSpec{}, fmt.Errorf("subscription %q: %q is neither a depth nor an interval", s, p)
		}
	}
	return sp, nil
}

func isDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// String returns the text the mix was parsed from.
func (m *Mix) String() string { return m.text }

// ForClient returns the subscriptions of client i over the symbol universe.
func (m *Mix) ForClient(i int, universe []string) []Sub {
	r := i % m.total
	var g mixGroup
	for _, g = range m.groups {
		if r < g.weight {
			break
		}
		r -= g.weight
	}
	// k numbers the clients of group g: 0, 1, 2... so that each group
	// spreads over the whole universe whatever its weight.
	k := i/m.total*g.weight + r
	subs := make([]Sub, 0, len(g.subs))
	for _, sp := range g.subs {
		sub := sp.Sub
		if sp.spread > 0 {
			sub.Symbols = make([]string, 0, sp.spread)
			for j := range min(sp.spread, len(universe)) {
				sub.Symbols = append(sub.Symbols, universe[(k+j)%len(universe)])
			}
		}
		subs = append(subs, sub)
	}
	return subs
}

// Symbols returns the explicit symbol names the mix mentions.
func (m *Mix) Symbols() []string {
	var out []string
	for _, g := range m.groups {
		for _, sp := range g.subs {
			if sp.spread == 0 && (len(sp.Symbols) != 1 || sp.Symbols[0] != "*") {
				out = append(out, sp.Symbols...)
			}
		}
	}
	return out
}
