// Command peer runs the comparison server of the benchmarks: the
// straightforward fan-out a user would write with the same libraries as
// marketd (one goroutine and one unbounded queue per client, encoding/json
// per client, gws per-connection compression). See bench.Peer.
//
// Usage:
//
//	taskset -c 0 env GOMAXPROCS=1 peer -listen 127.0.0.1:8081 -embedded-addr 127.0.0.1:19093
//
// With no -brokers it starts an embedded Kafka broker in-process, as
// marketd does by default, so that both carry the same broker cost.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/marketd/marketd/bench"
)

func main() {
	var cfg bench.PeerConfig
	var listen, brokers string
	flag.StringVar(&listen, "listen", "127.0.0.1:8081", "WebSocket `address` (/v1/ws)")
	flag.StringVar(&brokers, "brokers", "", "Kafka `brokers`, comma-separated; empty starts an embedded broker")
	flag.StringVar(&cfg.EmbeddedAddr, "embedded-addr", "127.0.0.1:9092", "`address` of the embedded broker")
	flag.IntVar(&cfg.Partitions, "embedded-partitions", 4, "partitions of the embedded broker's topic")
	flag.StringVar(&cfg.Topic, "topic", "market.events", "input `topic`")
	flag.BoolVar(&cfg.Compression, "compression", true, "negotiate permessage-deflate when offered")
	flag.Parse()
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.Brokers = append(cfg.Brokers, b)
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "peer: listen on %s: %v\n", listen, err)
		os.Exit(1)
	}
	p, err := bench.NewPeer(ctx, cfg, ln)
	if err != nil {
		fmt.Fprintf(os.Stderr, "peer: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("peer: WebSocket ws://%s/v1/ws, brokers %s\n", ln.Addr(), strings.Join(p.Brokers(), ","))
	<-ctx.Done()
	p.Close()
}
