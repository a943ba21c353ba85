// Command soak runs marketd under steady, realistic load for a chosen time
// and fails on growth. It builds marketd and the embedded Kafka broker's
// command (bench/cmd/broker), starts the broker as a process of its own
// (it keeps the whole log in memory, so it grows with the input by design:
// in marketd's process that would hide marketd's own memory), starts
// marketd on it with its market simulator, opens the load generator's clients
// with a realistic subscription mix, produces latency-stamped events at a
// steady rate beside the simulator, and samples every few seconds the
// server's RSS (/proc), goroutines, queued bytes and Kafka lag (/metrics)
// and the clients' latency (see bench.Soak). It writes the samples and
// the verdict to <out>/soak.csv and <out>/soak.json, draws <out>/soak.svg,
// and exits 1 when the soak failed: growth of RSS, goroutines, queued
// bytes or lag over the second half beyond the limits, or any sequence
// gap, error, or client disconnected by the server.
//
// Usage (from the repository root):
//
//	go run ./bench/cmd/soak                  # 10 minutes
//	go run ./bench/cmd/soak -duration 20s    # a quick check
//	go run ./bench/cmd/soak -replot docs/img/soak.json   # redraw the plot
//
// The plot is drawn with package bench/svg, as the benchmark suite's are.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/marketd/marketd/bench"
	"github.com/marketd/marketd/feed"
)

// Defaults of the flags: about 1,000 clients of a trading frontend and
// quant mix over 20 symbols, 500 latency-stamped records/s (30% on the
// hottest symbol) plus the simulator's 200/s with its bursts.
const (
	defaultClients = 1000
	defaultSymbols = 20
	defaultRate    = 500
	defaultSimRate = 200
	defaultHot     = 0.3
	// defaultMix: mostly tickers, then book deltas with trades, a few deep
	// books, and clients following every ticker and the simulator's books.
	defaultMix = "5x ticker:@1; 3x book:@1:10+trades:@1; 1x book:@1:50; 1x ticker:*+book:BTC-USD,SOL-USD:10"

	startTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
)

func main() {
	var (
		cfg             bench.SoakConfig
		out, bin        string
		simRate         int
		rssMiB, maxGors float64
		profiles        string
		replot          string
	)
	flag.DurationVar(&cfg.Duration, "duration", bench.DefaultSoakDuration, "how `long` to soak")
	flag.DurationVar(&cfg.Sample, "sample", 0, "time between samples (default 5s, less in a short soak: at least 20 samples)")
	flag.IntVar(&cfg.Clients, "clients", defaultClients, "WebSocket `clients`")
	flag.StringVar(&cfg.Mix, "mix", defaultMix, "subscription `mix` (see bench.ParseMix)")
	flag.IntVar(&cfg.Symbols, "symbols", defaultSymbols, "`number` of symbols the load generator produces (SYM00...)")
	flag.Float64Var(&cfg.Hot, "hot", defaultHot, "share of the records on SYM00")
	flag.IntVar(&cfg.Rate, "rate", defaultRate, "latency-stamped `records` per second from the load generator")
	flag.IntVar(&simRate, "sim-rate", defaultSimRate, "marketd's simulator `records` per second (0: no simulator)")
	flag.BoolVar(&cfg.Compress, "compress", false, "clients offer permessage-deflate")
	flag.Float64Var(&rssMiB, "rss-growth", bench.DefaultSoakLimits.RSS.Abs/(1<<20), "RSS growth allowed over the second half, `MiB` (or 5% of RSS if more)")
	flag.Float64Var(&maxGors, "goroutine-growth", bench.DefaultSoakLimits.Goroutines.Abs, "goroutine growth allowed over the second half (or 1% if more)")
	flag.StringVar(&out, "out", "docs/img", "`directory` for soak.csv, soak.json and soak.svg")
	flag.StringVar(&bin, "marketd", "", "marketd `binary` to run (default: build ./cmd/marketd)")
	flag.StringVar(&profiles, "profiles", "", "`directory` for marketd heap profiles at the middle and the end of the soak (default none)")
	flag.StringVar(&replot, "replot", "", "only redraw <out>/soak.svg from a soak.json `file`")
	flag.Parse()
	if replot != "" {
		if err := redraw(replot, out); err != nil {
			fmt.Fprintf(os.Stderr, "soak: %v\n", err)
			os.Exit(2)
		}
		return
	}
	cfg.Limits = bench.DefaultSoakLimits
	cfg.Limits.RSS.Abs = rssMiB * (1 << 20)
	cfg.Limits.Goroutines.Abs = maxGors

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, cfg, simRate, out, bin, profiles)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

// run runs the soak and writes its files; ok is the verdict.
func run(ctx context.Context, cfg bench.SoakConfig, simRate int, out, bin, profiles string) (ok bool, err error) {
	bench.RaiseFileLimit()
	tmp, err := os.MkdirTemp("", "marketd-soak-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	brokerBin := filepath.Join(tmp, "broker")
	if bin == "" {
		bin = filepath.Join(tmp, "marketd")
		if err := goBuild(ctx, bin, "./cmd/marketd"); err != nil {
			return false, err
		}
	}
	if err := goBuild(ctx, brokerBin, "./bench/cmd/broker"); err != nil {
		return false, err
	}
	var listen, broker, admin string
	for _, a := range []*string{&listen, &broker, &admin} {
		if *a, err = bench.FreeAddr(); err != nil {
			return false, err
		}
	}
	brk, err := bench.StartProcess(exec.Command(brokerBin, "-addr", broker), filepath.Join(tmp, "broker.log"))
	if err != nil {
		return false, err
	}
	defer brk.Stop(stopTimeout)
	if err := brk.WaitListening(startTimeout, broker); err != nil {
		return false, fmt.Errorf("broker: %w", err)
	}
	args := []string{"-listen", listen, "-brokers", broker, "-log-level", "warn"}
	if simRate > 0 {
		args = append(args, "-simulate=true", "-sim-rate", fmt.Sprint(simRate))
		cfg.Extra = append(append(cfg.Extra, feed.DefaultOrderSymbols...), feed.DefaultLevelSymbols...)
	}
	if profiles != "" {
		args = append(args, "-admin-listen", admin)
	}
	logPath := filepath.Join(tmp, "marketd.log")
	srv, err := bench.StartProcess(exec.Command(bin, args...), logPath)
	if err != nil {
		return false, err
	}
	defer srv.Stop(stopTimeout)
	httpBase := "http://" + listen
	if err := waitReady(ctx, srv, httpBase+"/readyz"); err != nil {
		return false, fmt.Errorf("marketd: %w (log: %s)", err, tail(logPath))
	}
	logf("marketd pid %d on %s, broker pid %d on %s: marketd %s", srv.Pid(), listen, brk.Pid(), broker, strings.Join(args, " "))

	cfg.URL = "ws://" + listen + "/v1/ws"
	cfg.Brokers = []string{broker}
	cfg.MetricsURL = httpBase + "/metrics"
	cfg.ServerPID = srv.Pid()
	cfg.BrokerPID = brk.Pid()
	cfg.Log = os.Stderr
	var profWG sync.WaitGroup
	profCtx, stopProf := context.WithCancel(ctx)
	defer func() {
		stopProf()
		profWG.Wait()
	}()
	if profiles != "" {
		if err := os.MkdirAll(profiles, 0o755); err != nil {
			return false, err
		}
		warmup := cfg.Warmup
		if warmup <= 0 {
			warmup = bench.DefaultWarmup
		}
		profWG.Go(func() {
			select {
			case <-time.After(warmup + cfg.Duration/2):
				saveHeap(profCtx, "http://"+admin, filepath.Join(profiles, "heap-mid.pb.gz"))
			case <-profCtx.Done():
			}
		})
	}
	res, err := bench.Soak(ctx, cfg)
	if profiles != "" && err == nil {
		saveHeap(ctx, "http://"+admin, filepath.Join(profiles, "heap-end.pb.gz"))
	}
	if err != nil {
		return false, fmt.Errorf("%w (marketd log: %s)", err, tail(logPath))
	}
	res.Command = "go run ./bench/cmd/soak " + strings.Join(os.Args[1:], " ")

	if err := os.MkdirAll(out, 0o755); err != nil {
		return false, err
	}
	if err := writeFiles(res, out); err != nil {
		return false, err
	}
	report(res)
	if !res.OK() {
		if t := tail(logPath); t != "" {
			logf("marketd log ends:\n%s", t)
		}
	}
	return res.OK(), nil
}

// redraw draws <out>/soak.svg from a saved result.
func redraw(path, out string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res bench.SoakResult
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return plot(&res, filepath.Join(out, "soak.svg"))
}

// goBuild builds a command of the module.
func goBuild(ctx context.Context, out, pkg string) error {
	logf("building %s", pkg)
	build := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	return nil
}

// saveHeap saves marketd's heap profile (its -admin-listen pprof), after a
// GC, to path; a failure is logged, not fatal.
func saveHeap(ctx context.Context, base, path string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/heap?gc=1", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			defer resp.Body.Close()
			var b []byte
			if b, err = io.ReadAll(resp.Body); err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET %s: %s", req.URL, resp.Status)
			}
			if err == nil {
				err = os.WriteFile(path, b, 0o644)
			}
		}
	}
	if err != nil {
		logf("heap profile: %v", err)
		return
	}
	logf("heap profile %s (go tool pprof -sample_index=inuse_space %s)", path, path)
}

// writeFiles writes soak.json, soak.csv and soak.svg under dir.
func writeFiles(res *bench.SoakResult, dir string) error {
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "soak.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "soak.csv"))
	if err != nil {
		return err
	}
	if err := res.WriteCSV(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return plot(res, filepath.Join(dir, "soak.svg"))
}

// report prints the verdict.
func report(res *bench.SoakResult) {
	fmt.Printf("soak: %d clients (%s), %d+sim records/s for %.0fs, %d samples; machine load %s\n",
		res.Clients, res.Mix, res.Rate, res.Duration, len(res.Samples), res.LoadAvg)
	for _, g := range res.Growth {
		fmt.Printf("  %v\n", g)
	}
	l := res.Latency
	fmt.Printf("  latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms over %d deliveries\n",
		ms(l.P50), ms(l.P99), ms(l.P999), ms(l.Max), res.Deliveries)
	fmt.Printf("  gaps %d, errors %d, unreadable %d, disconnects %d\n", res.Gaps, res.Errors, res.Unreadable, res.Disconnects)
	for _, w := range res.Warnings {
		fmt.Printf("  warning: %s\n", w)
	}
	if res.OK() {
		fmt.Println("soak: PASS")
		return
	}
	for _, f := range res.Failures {
		fmt.Printf("  FAIL: %s\n", f)
	}
	fmt.Println("soak: FAIL")
}

func ms(us int64) float64 { return float64(us) / 1000 }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
}

// waitReady polls the readiness endpoint until it answers 200 (books
// loaded, broker reachable) or the process exits.
func waitReady(ctx context.Context, p *bench.Process, url string) error {
	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("exited before ready: %v", p.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", startTimeout, err)
		}
	}
}

// tail returns the last lines of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
