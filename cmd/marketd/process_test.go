package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

var (
	buildOnce sync.Once
	binDir    string // removed by TestMain
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// marketdBinary builds the marketd command once per test binary, so the
// tests below can run it as a real process.
func marketdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "marketd-bin"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "marketd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build marketd: %v", buildErr)
	}
	return binPath
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestProcessFailsFast: a bad flag or a taken port ends the process at once
// with one line on stderr and exit status 1.
func TestProcessFailsFast(t *testing.T) {
	bin := marketdBinary(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"-nope"}, nil, "flag provided but not defined: -nope"},
		{"bad value", []string{"-ping-interval", "often"}, nil, "invalid value"},
		{"bad env", nil, []string{"MARKETD_QUEUE_SOFT=lots"}, "MARKETD_QUEUE_SOFT"},
		{"http port taken", []string{"-listen", taken.Addr().String(), "-embedded-addr", "127.0.0.1:0"}, nil, "address already in use"},
		{"broker port taken", []string{"-listen", "127.0.0.1:0", "-embedded-addr", taken.Addr().String()}, nil, "address already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			cmd.Env = append(cmd.Environ(), tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "marketd: ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr = %q, want one line containing %q", stderr.String(), tt.want)
			}
		})
	}
}

// startProcess runs the marketd binary listening on httpAddr with the
// other flags given, waits until /readyz answers 200, and kills it at the
// end of the test if it is still running. exited receives its Wait result.
func startProcess(t *testing.T, bin, httpAddr string, args ...string) (cmd *exec.Cmd, stderr *bytes.Buffer, exited <-chan error) {
	t.Helper()
	cmd = exec.Command(bin, append([]string{"-listen", httpAddr}, args...)...)
	stderr = new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	checkFor(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	return cmd, stderr, done
}

// TestProcessGracefulShutdown: on SIGTERM a running marketd closes its
// WebSocket clients with 1001 and exits 0.
func TestProcessGracefulShutdown(t *testing.T) {
	bin := marketdBinary(t)
	addr := freeAddr(t)
	cmd, stderr, exited := startProcess(t, bin, addr, "-embedded-addr", "127.0.0.1:0", "-log-format", "text")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","id":1,"channel":"ticker","symbols":["*"]}`)); err != nil {
		t.Fatal(err)
	}
	for acked := false; !acked; {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for the ack: %v", err)
		}
		acked = bytes.Contains(msg, []byte(`"type":"ack"`))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := ws.Read(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Fatalf("connection ended with %v (status %d), want close 1001", err, got)
		}
		break
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20 s after SIGTERM; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "marketd stopped") {
		t.Errorf("no shutdown log line:\n%s", stderr.String())
	}
}
