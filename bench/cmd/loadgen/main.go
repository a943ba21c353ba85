// Command loadgen measures a marketd (or the comparison peer) under load:
// it opens N WebSocket clients with a subscription mix, produces market
// events into the target's Kafka topic at a fixed rate, and reports
// delivered messages per second, payload and wire bytes, end-to-end latency
// percentiles, sequence gaps and conflation notices, and — given the
// target's pid — its memory per connection, CPU seconds per million
// deliveries and write syscalls per delivery. See docs/benchmarks.md.
//
// Usage:
//
//	loadgen -url ws://127.0.0.1:8080/v1/ws -brokers 127.0.0.1:9092 \
//	    -clients 1000 -mix 'book:@1:10' -symbols 1 -rate 500 -duration 10s -pid $(pgrep -n marketd)
//
// Mixes (flag -mix; grammar in bench.ParseMix):
//
//	book:@1:10                            each client: one symbol's book, depth 10, raw
//	ticker:@1                             each client: one symbol's ticker
//	6x ticker:@1; 3x book:@1:10+trades:@1; 1x book:SYM00:50:100ms
//	idle                                  connect only (memory per connection)
//
// Symbols are SYM00, SYM01, ... (-symbols of them); -hot is the share of
// records for SYM00. The exit status is 1 when the run could not be set up,
// 0 otherwise (check the warnings). -json writes the result as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/marketd/marketd/bench"
)

func main() {
	var cfg bench.Config
	var brokers, scenario, target, out string
	var asJSON bool
	flag.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/v1/ws", "WebSocket `URL` of the target")
	flag.StringVar(&brokers, "brokers", "127.0.0.1:9092", "Kafka `brokers` the target reads, comma-separated")
	flag.StringVar(&cfg.Topic, "topic", "market.events", "input `topic` of the target")
	flag.IntVar(&cfg.Clients, "clients", 100, "`number` of WebSocket clients")
	flag.StringVar(&cfg.Mix, "mix", "book:@1:10", "subscription `mix` (see the package doc)")
	flag.IntVar(&cfg.Symbols, "symbols", 1, "`number` of symbols (SYM00...)")
	flag.Float64Var(&cfg.Hot, "hot", 0, "share of records for SYM00, 0..1")
	flag.IntVar(&cfg.Rate, "rate", 1000, "records produced per `second` (0: none, idle run)")
	flag.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "measurement `window`")
	flag.DurationVar(&cfg.Warmup, "warmup", bench.DefaultWarmup, "load before the window opens")
	flag.BoolVar(&cfg.Compress, "compress", false, "offer permessage-deflate as a browser does (the server chooses context takeover; see bench/inflate.go)")
	flag.IntVar(&cfg.ServerPID, "pid", 0, "`pid` of the target, for its /proc counters (0: none)")
	flag.IntVar(&cfg.ServerCPU, "server-cpu", -1, "`CPU` the target is pinned to, to measure what other processes took of it (-1: unknown)")
	flag.IntVar(&cfg.DialConcurrency, "dial-concurrency", bench.DefaultDialConcurrency, "connections opened at once")
	flag.DurationVar(&cfg.ReadyTimeout, "ready-timeout", bench.DefaultReadyTimeout, "bound on connecting and subscribing every client")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "event generator seed")
	flag.StringVar(&cfg.MetricsURL, "metrics", "", "target's Prometheus `URL`: record its ingest lag and queued bytes at the end of the window")
	flag.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a target or brokers that are not on loopback")
	flag.BoolVar(&asJSON, "json", false, "write the result as JSON instead of a table")
	flag.StringVar(&out, "o", "", "also write the JSON result to this `file`")
	flag.StringVar(&scenario, "scenario", "", "scenario name recorded in the result")
	flag.StringVar(&target, "target", "", "target name recorded in the result (marketd, peer)")
	cpuprofile := flag.String("cpuprofile", "", "write the load generator's own CPU profile to this `file`")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.Brokers = append(cfg.Brokers, b)
		}
	}
	cfg.Log = os.Stderr
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: cpu profile: %v\n", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
	res.Scenario, res.Target = scenario, target
	res.Command = "loadgen " + strings.Join(os.Args[1:], " ")
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: encode result: %v\n", err)
		os.Exit(1)
	}
	if out != "" {
		if err := os.WriteFile(out, append(js, '\n'), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
			os.Exit(1)
		}
	}
	if asJSON {
		fmt.Println(string(js))
		return
	}
	if err := res.WriteTable(os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}
