package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The example clients of docs/examples run against an in-process marketd.
const (
	// exampleUpdates is how many verified updates each run must reach.
	exampleUpdates = 150
	// A faults run corrupts its book after faultCorruptAt verified updates,
	// has its connection cut after faultCutAt, and must reach
	// faultUpdates: far more, because a client is behind the network by
	// what it has received and not yet handled (hundreds of updates on a
	// loaded machine), and must run out of that backlog and reconnect.
	faultCorruptAt = 30
	faultCutAt     = 60
	faultUpdates   = 4 * exampleUpdates
	// exampleSimRate is the simulator's records per second: BTC-USD's
	// depth-10 book then changes about 150 times a second.
	exampleSimRate = "1000"
	// examplesBudget bounds the whole test, build and every run included.
	examplesBudget = 50 * time.Second
	// exampleWaitDelay is how long a killed example may keep its pipes open.
	exampleWaitDelay = 2 * time.Second
	// pythonPath is Debian's Python, with python3-websockets (test.sh
	// installs it when missing).
	pythonPath = "/usr/bin/python3"
)

// examplesDir is docs/examples, from this package's directory.
var examplesDir = filepath.Join("..", "..", "docs", "examples")

// TestExamples runs each example client of docs/examples (Go, Python, and the
// JavaScript one in node and in headless Chromium) against a running marketd
// and checks from its summary line that it verified at least exampleUpdates
// book updates against the server's checksums. Each command-line example
// runs twice: once on a clean connection, which must see no checksum
// mismatch, gap or resync; and once through a proxy that cuts the connection
// early, with the example told to corrupt its own book once before that: it
// must detect exactly that one mismatch, resync, reconnect, resume, and
// still verify every update after.
func TestExamples(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), examplesBudget)
	defer cancel()
	svc := startTestService(t, "-sim-rate", exampleSimRate)
	wsURL := "ws" + strings.TrimPrefix(svc.URL("/v1/ws"), "http")

	runtimes := exampleRuntimes(t)
	t.Run("group", func(t *testing.T) {
		for _, rt := range runtimes {
			for _, faults := range []bool{false, true} {
				name := rt.name + "/clean"
				if faults {
					name = rt.name + "/faults"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					runCLIExample(t, ctx, rt.argv(t, ctx), rt.dash, wsURL, faults)
				})
			}
		}
		t.Run("js-browser/clean", func(t *testing.T) {
			t.Parallel()
			runBrowserExample(t, ctx, wsURL)
		})
	})
}

// exampleRuntime is how to start one command-line example. argv returns its
// command without the options, or skips the test when the runtime is
// missing; dash prefixes each option ("-url" for Go's flag package, "--url"
// for Python's argparse and node's parseArgs).
type exampleRuntime struct {
	name string
	dash string
	argv func(t *testing.T, ctx context.Context) []string
}

// exampleRuntimes lists the command-line examples. The Go example is built
// once, by the first run that needs it.
func exampleRuntimes(t *testing.T) []exampleRuntime {
	var goBuild = sync.OnceValues(func() (string, error) {
		bin := filepath.Join(t.TempDir(), "bookclient")
		cmd := exec.Command("go", "build", "-o", bin, "./docs/examples/go")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build ./docs/examples/go: %v\n%s", err, out)
		}
		return bin, nil
	})
	return []exampleRuntime{
		{"go", "-", func(t *testing.T, _ context.Context) []string {
			start := time.Now()
			bin, err := goBuild()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("built the Go example (waited %v)", time.Since(start).Round(time.Millisecond))
			return []string{bin}
		}},
		{"python", "--", func(t *testing.T, ctx context.Context) []string {
			if out, err := exec.CommandContext(ctx, pythonPath, "-c", "import websockets").CombinedOutput(); err != nil {
				skipOrFail(t, fmt.Sprintf("%s with websockets (apt-get install python3-websockets): %v %s", pythonPath, err, out))
			}
			return []string{pythonPath, filepath.Join(examplesDir, "python", "client.py")}
		}},
		{"js-node", "--", func(t *testing.T, ctx context.Context) []string {
			node, err := exec.LookPath("node")
			if err != nil {
				skipOrFail(t, fmt.Sprintf("node (apt-get install nodejs): %v", err))
			}
			argv := []string{node}
			// node 22 has WebSocket; node 20 needs the flag.
			out, err := exec.CommandContext(ctx, node, "-p", "typeof WebSocket").Output()
			if err != nil {
				t.Fatalf("node -p: %v", err)
			}
			if strings.TrimSpace(string(out)) != "function" {
				argv = append(argv, "--experimental-websocket")
			}
			return append(argv, filepath.Join(examplesDir, "js", "cli.js"))
		}},
	}
}

// skipOrFail skips a test whose runtime is missing, except in CI.
func skipOrFail(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "" {
		t.Skipf("missing %s", what)
	}
	t.Fatalf("CI needs %s", what)
}

// exampleSummary is the example's last line:
// "summary verified=N snapshots=N mismatches=N ...".
type exampleSummary map[string]int

var summaryRE = regexp.MustCompile(`^summary( [a-z_]+=\d+)+$`)

func parseSummary(line string) (exampleSummary, bool) {
	if !summaryRE.MatchString(line) {
		return nil, false
	}
	s := exampleSummary{}
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, false
		}
		s[k] = n
	}
	return s, true
}

// verifiedRE finds the running count on a top-of-book line.
var verifiedRE = regexp.MustCompile(`\| verified=(\d+)$`)

// runCLIExample runs one command-line example to the end and checks its
// summary. With faults, the example corrupts its own book after
// faultCorruptAt verified updates, and reaches the server through a proxy
// that cuts the connection once the example has verified faultCutAt.
func runCLIExample(t *testing.T, ctx context.Context, argv []string, dash, wsURL string, faults bool) {
	target := wsURL
	var proxy *cutProxy
	if faults {
		u, err := url.Parse(wsURL)
		if err != nil {
			t.Fatal(err)
		}
		proxy = startCutProxy(t, u.Host)
		u.Host = proxy.Addr()
		target = u.String()
	}
	updates := exampleUpdates
	if faults {
		updates = faultUpdates
	}
	args := append(argv[1:len(argv):len(argv)], dash+"url", target, dash+"symbol", "BTC-USD",
		dash+"depth", "10", dash+"updates", strconv.Itoa(updates))
	if faults {
		args = append(args, dash+"corrupt-after", strconv.Itoa(faultCorruptAt))
	}
	cmd := exec.CommandContext(ctx, argv[0], args...)
	cmd.WaitDelay = exampleWaitDelay
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}

	var summary exampleSummary
	var tail []string // the last lines, for failure messages
	cut := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if tail = append(tail, line); len(tail) > 10 {
			tail = tail[1:]
		}
		if s, ok := parseSummary(line); ok {
			summary = s
		}
		if m := verifiedRE.FindStringSubmatch(line); m != nil && faults && !cut {
			if n, _ := strconv.Atoi(m[1]); n >= faultCutAt {
				cut = true
				t.Logf("cutting the connection after %d verified updates, %v in", n, time.Since(start).Round(time.Millisecond))
				proxy.cut()
			}
		}
	}
	werr := cmd.Wait()
	elapsed := time.Since(start)
	report := func() string {
		return fmt.Sprintf("%v\nlast lines of stdout:\n%s\nstderr:\n%s", cmd.Args, strings.Join(tail, "\n"), stderr.String())
	}
	if werr != nil {
		t.Fatalf("example: %v (after %v)\n%s", werr, elapsed.Round(time.Millisecond), report())
	}
	if summary == nil {
		t.Fatalf("no summary line\n%s", report())
	}
	t.Logf("%v in %v: %v", argv[len(argv)-1], elapsed.Round(time.Millisecond), summary)
	checkSummary(t, summary, faults, report)
	if faults && !cut {
		t.Errorf("the connection was never cut\n%s", report())
	}
}

// checkSummary checks an example's counts: every update verified; on a
// clean connection nothing went wrong; with faults, the one corruption was
// caught and the cut connection resumed.
func checkSummary(t *testing.T, s exampleSummary, faults bool, report func() string) {
	t.Helper()
	updates := exampleUpdates
	if faults {
		updates = faultUpdates
	}
	want := map[string]func(int) bool{
		"verified":  func(n int) bool { return n >= updates },
		"snapshots": func(n int) bool { return n >= 1 },
		"gaps":      func(n int) bool { return n == 0 },
	}
	if faults {
		want["mismatches"] = func(n int) bool { return n == 1 }
		want["resyncs"] = func(n int) bool { return n == 1 }
		want["reconnects"] = func(n int) bool { return n >= 1 }
		want["resumed"] = func(n int) bool { return n >= 1 }
		s["resumed"] = s["resumed_exact"] + s["resumed_snapshot"]
	} else {
		want["mismatches"] = func(n int) bool { return n == 0 }
		want["resyncs"] = func(n int) bool { return n == 0 }
		want["reconnects"] = func(n int) bool { return n == 0 }
	}
	for k, ok := range want {
		if n, found := s[k]; !found || !ok(n) {
			t.Errorf("summary %s=%d (present %v): not as expected for faults=%v\n%s", k, n, found, faults, report())
		}
	}
}

// runBrowserExample opens docs/examples/js/index.html in headless Chromium,
// served from a local file server, pointed at marketd's WebSocket, and waits
// until its client has verified exampleUpdates updates.
func runBrowserExample(t *testing.T, ctx context.Context, wsURL string) {
	if _, err := os.Stat(chromiumPath); err != nil {
		skipOrFail(t, fmt.Sprintf("%s (apt-get install chromium): %v", chromiumPath, err))
	}
	files := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(examplesDir, "js"))))
	t.Cleanup(files.Close)
	deadline, _ := ctx.Deadline()
	page := startBrowser(t, deadline)
	q := url.Values{"url": {wsURL}, "symbol": {"BTC-USD"}, "depth": {"10"}, "updates": {strconv.Itoa(exampleUpdates)}}
	start := time.Now()
	page.do("open index.html", chromedp.Navigate(files.URL+"/index.html?"+q.Encode()))
	page.waitFor("the browser example to stop", `window.example && window.example.done`)
	var st struct {
		Stats exampleSummary `json:"stats"`
		Done  struct {
			Error *string `json:"error"`
		} `json:"done"`
		Status string `json:"status"`
	}
	raw := page.eval(`({stats: example.stats, done: example.done, status: document.getElementById('status').textContent})`)
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	report := func() string { return "page: " + raw }
	if st.Done.Error != nil {
		t.Fatalf("browser example failed: %s\n%s", *st.Done.Error, report())
	}
	t.Logf("index.html in %v: %v; status %q", time.Since(start).Round(time.Millisecond), st.Stats, st.Status)
	checkSummary(t, st.Stats, false, report)
	if rows := page.eval(`document.querySelectorAll('#ladder tr').length`); rows != "10" {
		t.Errorf("ladder has %s rows, want 10", rows)
	}
	if errs := page.consoleErrors(); len(errs) > 0 {
		t.Errorf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// cutProxy forwards TCP connections to a target and can cut them all: the
// client sees its connection drop as on a network failure.
type cutProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]struct{} // both ends of every live connection
	wg    sync.WaitGroup        // the accept loop and the copiers
}

// startCutProxy listens on a loopback port; it stops, closing everything,
// when the test ends.
func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed at cleanup
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			p.t.Logf("proxy dial %s: %v", p.target, err)
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			// One direction ended: end the other too, like a dropped link.
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Go(func() { pipe(up, c) })
		p.wg.Go(func() { pipe(c, up) })
	}
}

// cut closes every live connection at once.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.t.Logf("proxy close: %v", err)
		}
	}
	p.t.Logf("proxy: cut %d connection ends", len(p.conns))
}
