// Command broker runs marketd's embedded Kafka-protocol broker
// (feed.StartBroker, kfake) as a process of its own, so that the benchmark
// suite can keep the broker's CPU off the core of the server under test:
//
//	taskset -c 1 broker -addr 127.0.0.1:19092 &
//	taskset -c 0 env GOMAXPROCS=1 marketd -brokers 127.0.0.1:19092 -listen 127.0.0.1:18080
//
// It holds the topic, its .dlq and .checkpoints topics in memory until it
// is stopped (SIGINT or SIGTERM).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/marketd/marketd/feed"
)

func main() {
	var cfg feed.BrokerConfig
	var topic string
	flag.StringVar(&cfg.Addr, "addr", feed.DefaultBrokerAddr, "`address` to listen on")
	flag.StringVar(&topic, "topic", feed.DefaultTopic, "input `topic` to create")
	flag.IntVar(&cfg.Partitions, "partitions", feed.DefaultPartitions, "partitions per topic")
	flag.Parse()
	cfg.Topics = []string{topic}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := feed.StartBroker(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "broker: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("broker: Kafka on %s, topic %q\n", b.Addr(), topic)
	<-ctx.Done()
	b.Close()
}
