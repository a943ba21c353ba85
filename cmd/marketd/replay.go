package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
	"github.com/marketd/marketd/stream"
)

// Defaults of "marketd replay".
const (
	defaultReplayBrokers = "127.0.0.1:9092" // the embedded broker of a running marketd
	defaultReplayDepth   = stream.DefaultDepth
)

// replayConfig is what the command line of "marketd replay" sets.
type replayConfig struct {
	feed   feed.ReplayConfig
	format string // "book" or "jsonl"
	depth  int
	speed  float64
	level  slog.Level
}

// parseReplay reads the flags of "marketd replay". -brokers and -topic may
// also be set as MARKETD_BROKERS and MARKETD_TOPIC, as for the server.
func parseReplay(args []string, getenv func(string) string, usageOut io.Writer) (*replayConfig, error) {
	c := &replayConfig{}
	fs := flag.NewFlagSet("marketd replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		brokers, from, to, format, level string
		partition, fromOff, toOff        int64
		symbols                          []string
	)
	fs.StringVar(&brokers, "brokers", defaultReplayBrokers, "Kafka bootstrap `brokers`, comma-separated")
	fs.StringVar(&c.feed.Topic, "topic", defaultTopic, "input `topic`")
	fs.StringVar(&c.feed.CheckpointTopic, "checkpoint-topic", "", "checkpoint `topic` (default <topic>.checkpoints)")
	fs.StringVar(&from, "from", "", "start of the range: RFC 3339 `time` or Unix microseconds (default: the start of the topic)")
	fs.StringVar(&to, "to", "", "end of the range, inclusive: RFC 3339 `time` or Unix microseconds (default: the end of the topic now)")
	fs.Int64Var(&partition, "partition", 0, "read only this `partition` (required with -from-offset and -to-offset)")
	fs.Int64Var(&fromOff, "from-offset", 0, "first `offset` of the range, in -partition (default: the start of the partition)")
	fs.Int64Var(&toOff, "to-offset", 0, "last `offset` of the range, inclusive, in -partition (default: the end now)")
	fs.Func("symbol", "`symbol` to output; repeat it or give a comma-separated list (default: every symbol)", func(s string) error {
		for _, sym := range splitList(s) {
			if !slices.Contains(symbols, sym) {
				symbols = append(symbols, sym)
			}
		}
		return nil
	})
	fs.IntVar(&c.depth, "depth", defaultReplayDepth, "book `depth`: 1, 10, 25, 50, 100, 500, 1000 or 0 (the full book)")
	fs.StringVar(&format, "format", "book", "output `format`: book (each book at the end of the range, as GET /v1/book) or jsonl (the range as protocol messages)")
	fs.Float64Var(&c.speed, "speed", 0, "jsonl pace: 0 as fast as possible, 1 real time by event time, or any `factor`")
	fs.BoolVar(&c.feed.FullReplay, "full-replay", false, "rebuild the books from the start of the topic, not from checkpoints")
	fs.StringVar(&level, "log-level", "warn", "`level` of the log lines on stderr: debug, info, warn or error")
	for _, name := range []string{"brokers", "topic"} {
		if v := getenv(envName(name)); v != "" {
			if err := fs.Set(name, v); err != nil {
				return nil, fmt.Errorf("invalid value %q for %s: %v", v, envName(name), err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(usageOut, "Usage: marketd replay [flags]\n\n")
			fmt.Fprintf(usageOut, "Rebuilds the books from the topic exactly as marketd does and prints them as they\n")
			fmt.Fprintf(usageOut, "are at the end of a range (-format book), or the range as the WebSocket messages\n")
			fmt.Fprintf(usageOut, "a client would have received, one JSON per line (-format jsonl).\n\nFlags:\n")
			fs.SetOutput(usageOut)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	c.feed.Brokers = splitList(brokers)
	if len(c.feed.Brokers) == 0 {
		return nil, errors.New("-brokers must not be empty")
	}
	if c.feed.Topic == "" {
		return nil, errors.New("-topic must not be empty")
	}
	c.feed.Symbols = symbols
	var err error
	if c.feed.From, err = parseReplayTime("-from", from); err != nil {
		return nil, err
	}
	if c.feed.To, err = parseReplayTime("-to", to); err != nil {
		return nil, err
	}
	byOffset := set["from-offset"] || set["to-offset"]
	switch {
	case byOffset && (set["from"] || set["to"]):
		return nil, errors.New("-from/-to and -from-offset/-to-offset exclude each other")
	case set["partition"] && partition < 0 || partition > math.MaxInt32:
		return nil, fmt.Errorf("invalid -partition %d", partition)
	case byOffset && !set["partition"]:
		return nil, errors.New("-from-offset and -to-offset need -partition")
	case set["from-offset"] && fromOff < 0, set["to-offset"] && toOff < 0:
		return nil, errors.New("-from-offset and -to-offset must not be negative")
	case set["from-offset"] && set["to-offset"] && toOff < fromOff:
		return nil, fmt.Errorf("-to-offset %d is before -from-offset %d", toOff, fromOff)
	case !c.feed.From.IsZero() && !c.feed.To.IsZero() && c.feed.To.Before(c.feed.From):
		return nil, fmt.Errorf("-to %s is before -from %s", to, from)
	}
	if byOffset {
		if !set["to-offset"] {
			toOff = -1 // the end now
		}
		c.feed.Offsets = &feed.OffsetRange{Partition: int(partition), From: fromOff, To: toOff}
	} else if set["partition"] {
		c.feed.Partitions = []int{int(partition)}
	}
	if _, ok := book.ViewIndex(c.depth); !ok {
		return nil, fmt.Errorf("invalid -depth %d: want 1, 10, 25, 50, 100, 500, 1000 or 0", c.depth)
	}
	switch c.format = format; {
	case format != "book" && format != "jsonl":
		return nil, fmt.Errorf("invalid -format %q: want book or jsonl", format)
	case c.speed < 0 || math.IsNaN(c.speed) || math.IsInf(c.speed, 0):
		return nil, fmt.Errorf("invalid -speed %v: want 0 (as fast as possible) or a positive factor", c.speed)
	case c.speed > 0 && format != "jsonl":
		return nil, errors.New("-speed applies to -format jsonl only")
	}
	if c.level, err = parseLevel(level); err != nil {
		return nil, err
	}
	return c, nil
}

// parseReplayTime parses a time given as RFC 3339 or as Unix microseconds;
// "" is the zero time (an open end).
func parseReplayTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if us, err := strconv.ParseInt(s, 10, 64); err == nil {
		if us <= 0 {
			return time.Time{}, fmt.Errorf("invalid %s %q: Unix microseconds must be positive", name, s)
		}
		return time.UnixMicro(us), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid %s %q: want RFC 3339 (2026-11-24T10:00:00Z) or Unix microseconds", name, s)
	}
	return t, nil
}

// runReplay is "marketd replay": it replays a range of the topic (see
// feed.Replay) and writes the books at its end, or its messages, to stdout.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cfg, err := parseReplay(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("replay: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.level}))
	cfg.feed.Logger = log.With("component", "replay")
	w := bufio.NewWriterSize(stdout, 64<<10)
	var h feed.ReplayHandler
	if cfg.format == "book" {
		h = &bookOutput{w: w, depth: cfg.depth, want: cfg.feed.Symbols}
	} else {
		h = &jsonlOutput{ctx: ctx, w: w, depth: cfg.depth, pacer: stream.Pacer{Speed: cfg.speed}, encs: map[string]*stream.MessageEncoder{}, want: cfg.feed.Symbols, log: log}
	}
	st, err := feed.Replay(ctx, cfg.feed, h)
	if ferr := w.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write the output: %w", ferr)
	}
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	for _, r := range st.Ranges {
		log.Info("replayed", "partition", r.Partition, "read_from", r.Start, "from", r.From, "to", r.End)
	}
	log.Info("replay done", "records", st.Records, "updates", st.Updates, "restored_books", st.Restored, "bad", st.BadTotal())
	return nil
}

// bookOutput writes each book at the end of the range, one JSON object per
// line in the shape of GET /v1/book/{symbol}.
type bookOutput struct {
	w     *bufio.Writer
	depth int
	want  []string // the symbols asked for; nil: all
	buf   []byte
}

func (o *bookOutput) Begin([]feed.ReplayBook) error { return nil }
func (o *bookOutput) Update(*book.Update) error     { return nil }

func (o *bookOutput) End(books []feed.ReplayBook) error {
	for _, s := range o.want {
		if !slices.ContainsFunc(books, func(b feed.ReplayBook) bool { return b.Book.Symbol() == s }) {
			return fmt.Errorf("symbol %q has no book at the end of the range", s)
		}
	}
	for _, b := range books {
		snap := b.Book.Snapshot(o.depth)
		o.buf = stream.AppendBook(o.buf[:0], &snap)
		if _, err := o.w.Write(o.buf); err != nil {
			return fmt.Errorf("write the output: %w", err)
		}
	}
	return nil
}

// jsonlOutput writes the range as the messages a WebSocket client of the
// live server subscribed to every symbol's book (at depth), trades and
// ticker would get, one per line, each marked "replay":true: for each
// symbol a snapshot and its ticker at the start of the range (or, for a
// symbol born in the range, an empty snapshot at seq 0 before its first
// update), then per record its book update, trade and ticker.
type jsonlOutput struct {
	ctx   context.Context
	w     *bufio.Writer
	depth int
	pacer stream.Pacer // -speed
	encs  map[string]*stream.MessageEncoder
	want  []string
	log   *slog.Logger
	buf   []byte
}

func (o *jsonlOutput) encoder(symbol string) (*stream.MessageEncoder, error) {
	e, err := stream.NewMessageEncoder(symbol, o.depth)
	if err != nil {
		return nil, err
	}
	e.Replay = true
	o.encs[symbol] = e
	return e, nil
}

func (o *jsonlOutput) Begin(books []feed.ReplayBook) error {
	for _, rb := range books {
		e, err := o.encoder(rb.Book.Symbol())
		if err != nil {
			return err
		}
		e.SetTradeSeq(rb.LastTrade)
		o.buf = append(e.AppendSnapshot(o.buf[:0], rb.Book), '\n')
		t := rb.Book.Ticker()
		o.buf = append(e.AppendTicker(o.buf, &t), '\n')
		if err := o.write(); err != nil {
			return err
		}
	}
	return nil
}

func (o *jsonlOutput) Update(u *book.Update) error {
	o.buf = o.buf[:0]
	e := o.encs[u.Symbol]
	if e == nil {
		var err error
		if e, err = o.encoder(u.Symbol); err != nil {
			return err
		}
		o.buf = append(e.AppendSnapshot(o.buf, book.New(u.Symbol)), '\n')
	}
	// Flushed before a wait, so that a reader sees each line on time.
	if err := o.pacer.Wait(o.ctx, u.TS, o.flush); err != nil {
		return err
	}
	// Each appends nothing when u makes no message of its stream.
	if b := e.AppendUpdate(o.buf, u); len(b) > len(o.buf) {
		o.buf = append(b, '\n')
	}
	if b := e.AppendTrade(o.buf, u); len(b) > len(o.buf) {
		o.buf = append(b, '\n')
	}
	if u.Ticker != nil {
		o.buf = append(e.AppendTicker(o.buf, u.Ticker), '\n')
	}
	return o.write()
}

func (o *jsonlOutput) End([]feed.ReplayBook) error {
	for _, s := range o.want {
		if o.encs[s] == nil {
			o.log.Warn("replay: no book of the symbol in the range", "symbol", s)
		}
	}
	return nil
}

func (o *jsonlOutput) write() error {
	if _, err := o.w.Write(o.buf); err != nil {
		return fmt.Errorf("write the output: %w", err)
	}
	return nil
}

func (o *jsonlOutput) flush() error {
	if err := o.w.Flush(); err != nil {
		return fmt.Errorf("write the output: %w", err)
	}
	return nil
}
