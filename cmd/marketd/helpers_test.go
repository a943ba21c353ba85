package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// startTestService starts marketd in-process on loopback ports (HTTP and the
// embedded broker on free ports) with the given extra flags, and stops it
// when the test ends. Its logs go to the test output at error level.
func startTestService(t *testing.T, extra ...string) *service {
	t.Helper()
	args := append([]string{"-listen", "127.0.0.1:0", "-embedded-addr", "127.0.0.1:0"}, extra...)
	cfg, err := parseConfig("marketd", args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	svc, err := startService(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("start service: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := svc.Wait(ctx); err != nil {
			t.Errorf("service: %v", err)
		}
	})
	return svc
}

// checkFor polls check every few milliseconds until it returns nil or the
// timeout passes, then fails the test with check's last error.
func checkFor(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
