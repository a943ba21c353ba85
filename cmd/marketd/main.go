// Command marketd streams market data: it reads market events from Kafka,
// keeps exact order books, and fans every change out to WebSocket clients.
//
// With no flags it runs the whole service on one machine: an embedded
// Kafka-protocol broker, the market simulator producing into it, and the
// HTTP/WebSocket server with the live page on :8080. See docs/operations.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, getenvOS, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "marketd: %v\n", err)
		os.Exit(1)
	}
}

// run is main without the process: it returns when ctx is done (after a
// graceful shutdown) or on a fatal error. started, when not nil, receives
// the running service once it is listening (tests use it).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, started chan<- *service) error {
	if len(args) > 0 && args[0] == "health" {
		return runHealth(ctx, args[1:], stderr)
	}
	if len(args) > 0 && args[0] == "replay" {
		return runReplay(ctx, args[1:], stdout, stderr, getenv)
	}
	cfg, err := parseConfig("marketd", args, getenv, stderr)
	if err != nil {
		return err
	}
	logger, err := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	svc, err := startService(ctx, cfg, logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "marketd: live page on %s  (WebSocket %s, metrics %s)\n",
		svc.URL("/"), strings.Replace(svc.URL("/v1/ws"), "http", "ws", 1), svc.URL("/metrics"))
	if svc.broker != nil {
		fmt.Fprintf(stdout, "marketd: embedded Kafka broker on %s, topic %q", svc.brokerAddr, cfg.Topic)
		if cfg.Simulate {
			fmt.Fprintf(stdout, ", simulator at %d records/s", cfg.SimRate)
		}
		fmt.Fprintln(stdout)
	}
	if started != nil {
		started <- svc
	}
	return svc.Wait(ctx)
}

// runHealth is "marketd health": it exits 0 when the URL (by default the
// local /readyz) answers 200, for container health checks on images that
// have no shell or curl.
func runHealth(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("marketd health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/readyz", "`URL` that must answer 200")
	timeout := fs.Duration("timeout", 3*time.Second, "how `long` to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("health: %s answered %s: %s", *url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// newLogger returns the process logger: JSON lines by default, text on request.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("invalid -log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
