package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/marketd/marketd/feed"
	"github.com/marketd/marketd/stream"
)

// Defaults of the command line (protocol.md §5 fixes the first five).
const (
	defaultListen       = ":8080"
	defaultEmbeddedAddr = "127.0.0.1:9092"
	defaultTopic        = "market.events"
	defaultPartitions   = 4
	defaultSimRate      = 200
	defaultShutdown     = 10 * time.Second
	defaultHandshake    = 10 * time.Second
	defaultConnBurst    = 10
	defaultRetentionMiB = 64
	envPrefix           = "MARKETD_"
)

// config is everything the command line and the environment set.
type config struct {
	Listen       string
	Brokers      []string
	EmbeddedAddr string
	Topic        string
	DLQTopic     string
	Partitions   []int // partitions this instance reads; nil = all
	NumParts     int   // partitions of the embedded broker's topics
	EmbeddedDir  string
	RetentionMiB int64 // per partition of the embedded broker's input and DLQ topics; 0 = all
	DLQ          bool  // copy bad records to DLQTopic

	CheckpointTopic    string
	CheckpointInterval time.Duration // 0 = no checkpoints
	CheckpointRecords  int           // 0 = by time only
	FullReplay         bool          // ignore the checkpoints at start

	Simulate    bool
	simulateSet bool
	SimRate     int
	SimSeed     int64

	AdminListen string // pprof; empty = off
	LogFormat   string // json or text
	LogLevel    string

	PingInterval    time.Duration
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	QueueSoft       int
	QueueHard       int
	RingSize        int
	MaxSubs         int
	MaxReplays      int
	ShutdownTimeout time.Duration

	Compression     bool // negotiate permessage-deflate when offered
	ContextTakeover bool // with server context takeover
	CompressMin     int  // smallest message compressed, bytes

	// Security; all off by default (docs/operations.md, Security).
	AuthToken        string   // one accepted token (-auth-token)
	AuthTokensFile   string   // a file of accepted tokens, one per line
	Tokens           []string // AuthToken and the file's tokens; never logged
	AllowedOrigins   []string // empty = any
	ConnRate         float64  // upgrades per second per client IP; 0 = off
	ConnBurst        int
	HandshakeTimeout time.Duration // http.Server.ReadHeaderTimeout and the upgrade's write
	TLSCert, TLSKey  string        // PEM files; both set = https and wss
}

// envName returns the environment variable that overrides a flag:
// MARKETD_ and the flag's name in upper case with '-' as '_'.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags from args, each overridable by its MARKETD_<NAME>
// environment variable (the command line wins over the environment).
func parseConfig(name string, args []string, getenv func(string) string, usageOut io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package prints the whole usage on any error; marketd says one
	// line instead, and prints the usage only when -h asks for it.
	fs.SetOutput(io.Discard)
	var brokers, partitions, origins string
	fs.StringVar(&c.Listen, "listen", defaultListen, "HTTP and WebSocket `address`")
	fs.StringVar(&brokers, "brokers", "", "Kafka bootstrap `brokers`, comma-separated; empty starts the embedded broker")
	fs.StringVar(&c.EmbeddedAddr, "embedded-addr", defaultEmbeddedAddr, "`address` the embedded Kafka broker listens on")
	fs.Int64Var(&c.RetentionMiB, "embedded-retention-mib", defaultRetentionMiB, "`MiB` of records the embedded broker keeps per partition of the input and dead-letter topics, the oldest dropped past it (0 = keep everything)")
	fs.StringVar(&c.EmbeddedDir, "embedded-dir", "", "`directory` where the embedded broker keeps its log across restarts (empty = memory only)")
	fs.StringVar(&c.Topic, "topic", defaultTopic, "input `topic`")
	fs.StringVar(&c.DLQTopic, "dlq-topic", "", "dead-letter `topic` for bad records (default <topic>.dlq)")
	fs.BoolVar(&c.DLQ, "dlq", true, "copy bad records to the dead-letter topic (set false on all but one instance reading the same partitions)")
	fs.StringVar(&c.CheckpointTopic, "checkpoint-topic", "", "compacted `topic` of book checkpoints (default <topic>.checkpoints)")
	fs.DurationVar(&c.CheckpointInterval, "checkpoint-interval", feed.DefaultCheckpointInterval, "checkpoint the books at least this `often` (0 = write no checkpoints)")
	fs.IntVar(&c.CheckpointRecords, "checkpoint-records", feed.DefaultCheckpointRecords, "also checkpoint a partition after this many `records` (0 = by time only)")
	fs.BoolVar(&c.FullReplay, "full-replay", false, "rebuild the books from the start of the topic at start, ignoring the checkpoints")
	fs.StringVar(&partitions, "partitions", "", "comma-separated `list` of partitions this instance reads (default all)")
	fs.IntVar(&c.NumParts, "embedded-partitions", defaultPartitions, "`number` of partitions of the embedded broker's topics")
	fs.BoolFunc("simulate", "run the market simulator (default true with the embedded broker, else false)", func(s string) error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		c.Simulate, c.simulateSet = v, true
		return nil
	})
	fs.IntVar(&c.SimRate, "sim-rate", defaultSimRate, "simulator `records` per second")
	fs.Int64Var(&c.SimSeed, "sim-seed", 0, "simulator random `seed` (0 = from the clock)")
	fs.StringVar(&c.AdminListen, "admin-listen", "", "`address` for /debug/pprof (empty = off)")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log `format`: json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.DurationVar(&c.PingInterval, "ping-interval", 20*time.Second, "WebSocket ping `interval`")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", 60*time.Second, "close a WebSocket from which nothing arrived for this `long`")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "close a WebSocket whose socket accepts nothing for this `long`")
	fs.IntVar(&c.QueueSoft, "queue-soft", 256<<10, "per-client queued `bytes` past which book and ticker streams are conflated")
	fs.IntVar(&c.QueueHard, "queue-hard", 4<<20, "per-client queued `bytes` past which the client is closed with 4008")
	fs.IntVar(&c.RingSize, "ring-size", 1024, "recent `messages` kept per stream for resume")
	fs.IntVar(&c.MaxSubs, "max-subscriptions", 1024, "symbol-channel subscriptions per connection")
	fs.BoolVar(&c.Compression, "ws-compression", true, "negotiate permessage-deflate with WebSocket clients that offer it")
	fs.BoolVar(&c.ContextTakeover, "ws-context-takeover", false, "permessage-deflate with server context takeover: each message compressed against what the client got just before (book deltas about 3x smaller)")
	fs.IntVar(&c.CompressMin, "ws-compress-min", stream.DefaultCompressThreshold, "smallest message, in `bytes`, compressed on a permessage-deflate connection")
	fs.IntVar(&c.MaxReplays, "max-replays", 4, "WebSocket replays reading history at once, per server")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", defaultShutdown, "how `long` a graceful shutdown may take")
	fs.StringVar(&c.AuthToken, "auth-token", "", "`token` a client must present to open /v1/ws (Authorization: Bearer or ?token=); prefer "+envName("auth-token")+" to keep it out of ps")
	fs.StringVar(&c.AuthTokensFile, "auth-tokens-file", "", "`file` of accepted /v1/ws tokens, one per line (# comments)")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated `origins` (https://host[:port]) whose pages may open /v1/ws (empty = any)")
	fs.Float64Var(&c.ConnRate, "conn-rate", 0, "WebSocket upgrades per `second` per client IP (0 = no limit)")
	fs.IntVar(&c.ConnBurst, "conn-burst", defaultConnBurst, "WebSocket upgrades per client IP at once, with -conn-rate")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", defaultHandshake, "how `long` a client may take to send its request headers")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate `file`; with -tls-key serves https and wss")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	usage := func() {
		w := usageOut
		fmt.Fprintf(w, "Usage: %s [flags]\n       %s health [-url URL]\n       %s replay [flags]   (see %s replay -h)\n\n", name, name, name, name)
		fmt.Fprintf(w, "marketd streams market data from Kafka to WebSocket clients. With no flags it\n")
		fmt.Fprintf(w, "starts an embedded Kafka broker, the market simulator and the live page on %s.\n", defaultListen)
		fmt.Fprintf(w, "Every flag can also be set by the environment variable %s<NAME>\n", envPrefix)
		fmt.Fprintf(w, "(e.g. -embedded-addr as %s); the command line wins.\n\nFlags:\n", envName("embedded-addr"))
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fs.Usage = func() {}

	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("invalid value %q for %s: %v", v, envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.Brokers = splitList(brokers)
	c.AllowedOrigins = splitList(origins)
	if !c.simulateSet {
		c.Simulate = len(c.Brokers) == 0
	}
	for _, p := range splitList(partitions) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid partition %q in -partitions", p)
		}
		c.Partitions = append(c.Partitions, n)
	}
	return c, c.validate()
}

// validate checks values and combinations the flag package cannot.
func (c *config) validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("invalid -listen %q: %v", c.Listen, err)
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			return fmt.Errorf("invalid -admin-listen %q: %v", c.AdminListen, err)
		}
	}
	if len(c.Brokers) == 0 {
		if _, _, err := net.SplitHostPort(c.EmbeddedAddr); err != nil {
			return fmt.Errorf("invalid -embedded-addr %q: %v", c.EmbeddedAddr, err)
		}
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("invalid broker %q in -brokers: %v", b, err)
		}
	}
	switch {
	case c.Topic == "":
		return errors.New("-topic must not be empty")
	case c.NumParts < 1:
		return errors.New("-embedded-partitions must be at least 1")
	case c.RetentionMiB < 0 || c.RetentionMiB > 1<<30:
		return fmt.Errorf("-embedded-retention-mib %d: want 0 (keep everything) to %d", c.RetentionMiB, 1<<30)
	case len(c.Brokers) == 0 && c.RetentionMiB > 0 && c.CheckpointInterval == 0:
		return errors.New("-checkpoint-interval 0 with the embedded broker needs -embedded-retention-mib 0: without checkpoints, books rebuilt from the topic would miss the records retention dropped")
	case c.SimRate < 1:
		return errors.New("-sim-rate must be at least 1")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("invalid -log-format %q: want json or text", c.LogFormat)
	case c.PingInterval <= 0 || c.ReadTimeout <= 0 || c.WriteTimeout <= 0 || c.ShutdownTimeout <= 0:
		return errors.New("-ping-interval, -read-timeout, -write-timeout and -shutdown-timeout must be positive")
	case c.ReadTimeout <= c.PingInterval:
		return errors.New("-read-timeout must be longer than -ping-interval")
	case c.CompressMin < 1:
		return fmt.Errorf("-ws-compress-min %d: must be at least 1", c.CompressMin)
	case c.QueueSoft <= 0 || c.QueueHard <= c.QueueSoft:
		return errors.New("-queue-hard must be larger than -queue-soft, both positive")
	case c.RingSize < 1 || c.MaxSubs < 1 || c.MaxReplays < 1:
		return errors.New("-ring-size, -max-subscriptions and -max-replays must be at least 1")
	case c.CheckpointInterval < 0 || c.CheckpointRecords < 0:
		return errors.New("-checkpoint-interval and -checkpoint-records must not be negative")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if err := c.validateSecurity(); err != nil {
		return err
	}
	if c.DLQTopic == "" {
		c.DLQTopic = c.Topic + ".dlq"
	}
	if c.CheckpointTopic == "" {
		c.CheckpointTopic = c.Topic + ".checkpoints"
	}
	return nil
}

// validateSecurity checks the security flags and reads the tokens. No
// error quotes a token.
func (c *config) validateSecurity() error {
	switch {
	case c.ConnRate < 0 || c.ConnBurst < 1:
		return errors.New("-conn-rate must not be negative and -conn-burst must be at least 1")
	case c.HandshakeTimeout <= 0:
		return errors.New("-handshake-timeout must be positive")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("-tls-cert and -tls-key go together")
	}
	for _, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("invalid origin %q in -allowed-origins: want http(s)://host[:port]", o)
		}
	}
	c.Tokens = nil
	if c.AuthToken != "" {
		if strings.ContainsAny(c.AuthToken, " \t\r\n") {
			return errors.New("-auth-token must not hold white space")
		}
		c.Tokens = append(c.Tokens, c.AuthToken)
	}
	if c.AuthTokensFile != "" {
		toks, err := readTokens(c.AuthTokensFile)
		if err != nil {
			return err
		}
		c.Tokens = append(c.Tokens, toks...)
	}
	return nil
}

// readTokens reads a tokens file: one token per line; blank lines and
// lines starting with # are skipped. A file without a token is an error,
// since it would silently leave /v1/ws open.
func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read -auth-tokens-file: %w", err)
	}
	defer f.Close()
	var toks []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if strings.ContainsAny(t, " \t") {
			return nil, fmt.Errorf("read -auth-tokens-file %s: line %d holds white space", path, n)
		}
		toks = append(toks, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read -auth-tokens-file %s: %w", path, err)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("read -auth-tokens-file %s: no token in it", path)
	}
	return toks, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// getenvOS is os.Getenv; tests pass their own.
var getenvOS = os.Getenv
