// Command ceiling measures the physical limit of fan-out on this machine:
// raw loopback TCP writes of fixed-size messages from one core. Run the
// server side pinned to the server's core and the client on the other:
//
//	taskset -c 0 env GOMAXPROCS=1 ceiling -serve -listen 127.0.0.1:8090 &
//	taskset -c 1 ceiling -addr 127.0.0.1:8090 -conns 1000 -size 150 -batch 1 -pid $!
//
// -batch is the number of messages per write call: 1 is a server that
// writes each message on its own (the syscall ceiling), more is the limit
// of a server that coalesces. See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/marketd/marketd/bench"
)

func main() {
	var cfg bench.CeilingConfig
	var serve, asJSON bool
	var listen string
	flag.BoolVar(&serve, "serve", false, "run the server side")
	flag.StringVar(&listen, "listen", "127.0.0.1:8090", "server `address`")
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8090", "server `address` to measure")
	flag.IntVar(&cfg.Conns, "conns", 100, "`number` of connections")
	flag.IntVar(&cfg.Size, "size", 128, "message size in `bytes`")
	flag.IntVar(&cfg.Batch, "batch", 1, "messages per write call")
	flag.DurationVar(&cfg.Duration, "duration", 5e9, "measurement `window`")
	flag.IntVar(&cfg.ServerPID, "pid", 0, "`pid` of the server side, for its CPU and write syscalls")
	flag.BoolVar(&asJSON, "json", false, "write the result as JSON")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if serve {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ceiling: listen on %s: %v\n", listen, err)
			os.Exit(1)
		}
		s := bench.ServeCeiling(ln)
		fmt.Printf("ceiling: serving on %s\n", ln.Addr())
		<-ctx.Done()
		s.Close()
		return
	}
	r, err := bench.MeasureCeiling(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ceiling: %v\n", err)
		os.Exit(1)
	}
	if asJSON {
		js, _ := json.Marshal(r)
		fmt.Println(string(js))
		return
	}
	_ = r.WriteTable(os.Stdout)
}
