package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// startTestService starts marketd in-process on loopback ports (HTTP and the
// embedded broker on free ports) with the given extra flags, and stops it
// when the test ends. Its logs go to the test output at error level.
func startTestService(t *testing.T, extra ...string) *service {
	t.Helper()
	svc, _ := runService(t, append([]string{"-listen", "127.0.0.1:0", "-embedded-addr", "127.0.0.1:0"}, extra...))
	return svc
}

// runService starts a marketd with the command line args and returns it
// with a function that stops it gracefully (also called when the test
// ends).
func runService(t *testing.T, args []string) (*service, func()) {
	t.Helper()
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
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := svc.Wait(ctx); err != nil {
				t.Errorf("service: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return svc, stop
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
