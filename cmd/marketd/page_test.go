package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package installs the browser;
// test.sh installs it when it is missing.
const chromiumPath = "/usr/bin/chromium"

// pageTestBudget bounds the whole browser test, start to screenshot.
const pageTestBudget = 60 * time.Second

// TestLivePage runs the whole service (embedded broker, simulator, HTTP) and
// drives the live page in headless Chromium: the ladder fills, every book
// message verifies against the server's checksum, the ticker and the trades
// move, a corrupted book resyncs, a dropped connection resumes, another
// symbol can be chosen. The screenshot goes to the test's artifact directory
// (kept with `go test -artifacts -outputdir DIR`).
func TestLivePage(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (apt-get install chromium, or run ./test.sh): %v", chromiumPath, err)
		}
		t.Fatalf("CI needs %s for the live-page test: %v", chromiumPath, err)
	}
	deadline := time.Now().Add(pageTestBudget)

	svc := startTestService(t, "-sim-rate", "500")
	page := startBrowser(t, deadline)

	page.do("open the page", chromedp.EmulateViewport(1600, 1000), chromedp.Navigate(svc.URL("/")))

	// The ladder fills from the snapshot, and the checksum verifies.
	page.waitFor("a verified book", `marketd.checksumOK`)
	page.waitFor("the ladder to fill with a verified book",
		`marketd.checksumOK && marketd.bidLevels >= 10 && marketd.askLevels >= 10`)
	page.waitFor("10 bid and 10 ask rows in the DOM",
		`document.querySelectorAll('[data-testid=bid-level]').length >= 10 &&
		 document.querySelectorAll('[data-testid=ask-level]').length >= 10`)

	// Many updates later, every one of them verified.
	page.waitFor("200 verified book updates", `marketd.updates >= 200`)
	st := page.state()
	if st.Mismatches != 0 || st.Gaps != 0 || st.Resyncs != 0 || !st.ChecksumOK {
		t.Fatalf("after %d updates: %d checksum mismatches, %d gaps, %d resyncs, checksumOK=%v; want none and OK",
			st.Updates, st.Mismatches, st.Gaps, st.Resyncs, st.ChecksumOK)
	}
	if got := page.eval(`document.querySelector('[data-testid=checksum-status]').textContent`); got != `"Checksum OK"` {
		t.Errorf("checksum badge says %s, want \"Checksum OK\"", got)
	}
	if got := page.eval(`document.querySelector('[data-testid=conn-status]').dataset.state`); got != `"open"` {
		t.Errorf("connection badge state %s, want \"open\"", got)
	}

	// The ticker moves: the chosen symbol's ticker seq grows, and the strip
	// shows every symbol the server lists.
	page.waitFor("the ticker seq to grow", fmt.Sprintf(`marketd.tickerSeq > %d`, st.TickerSeq))
	page.waitFor("a priced ticker-strip item per symbol",
		`(async () => {
			const body = await (await fetch('v1/symbols')).json();
			const want = Array.isArray(body) ? body : body.symbols;
			const items = [...document.querySelectorAll('[data-testid=ticker-item]')];
			return want.length > 0 && want.every((s) => items.some((el) => el.dataset.symbol === s && /\d/.test(el.querySelector('.px').textContent)));
		})()`)

	// Trades appear on the tape.
	page.waitFor("5 trades on the tape", `document.querySelectorAll('[data-testid=trade-row]').length >= 5`)

	// The page's CRC-32 and decimal order agree with Go's on fixed inputs.
	page.checkChecksumCode()

	// A book that no longer matches the server's is dropped and resubscribed.
	st = page.state()
	page.eval(`marketd.debug.corrupt()`)
	page.waitFor("a resync after a corrupted book",
		fmt.Sprintf(`marketd.mismatches >= 1 && marketd.snapshots > %d && marketd.checksumOK && marketd.updates > %d`, st.Snapshots, st.Updates+10))

	// A dropped connection reconnects and resumes from the seq it held.
	st = page.state()
	page.eval(`marketd.resumed = {}; marketd.debug.drop()`)
	page.waitFor("a reconnect that resumes the book",
		fmt.Sprintf(`marketd.reconnects >= 1 && marketd.connected && marketd.checksumOK && marketd.updates > %d &&
		 ['exact', 'snapshot'].includes(marketd.resumed[marketd.symbol])`, st.Updates+10))
	if st := page.state(); st.Gaps != 0 {
		t.Errorf("%d prev_seq gaps after the resume, want 0", st.Gaps)
	}

	// Choosing another symbol in the strip subscribes its book.
	first := st.Symbol
	var other string
	if err := json.Unmarshal([]byte(page.eval(fmt.Sprintf(
		`[...document.querySelectorAll('[data-testid=ticker-item]')].map((el) => el.dataset.symbol).find((s) => s !== %q) || ''`, first))), &other); err != nil || other == "" {
		t.Fatalf("no second symbol in the ticker strip (%v)", err)
	}
	page.do("click "+other, chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-testid=ticker-item][data-symbol=%q]`, other))))
	page.waitFor("the book of "+other, fmt.Sprintf(`marketd.symbol === %q && marketd.checksumOK && marketd.lastSeq > 0 && marketd.bidLevels > 0`, other))
	page.do("click "+first, chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-testid=ticker-item][data-symbol=%q]`, first))))
	page.waitFor("the book of "+first+" again", fmt.Sprintf(`marketd.symbol === %q && marketd.checksumOK && marketd.lastSeq > 0`, first))

	page.screenshot()
	page.checkNoErrors()
	t.Logf("page state: %s", page.eval(`marketd`))
}

// browserPage is one headless Chromium tab and what the test collected from it.
type browserPage struct {
	t        *testing.T
	ctx      context.Context // the tab's chromedp context
	deadline time.Time

	mu      sync.Mutex
	console []chromedp.ConsoleMessage // exceptions and errors, in order
}

// startBrowser starts headless Chromium with a fresh profile and one tab; the
// browser and the console reader stop when the test ends.
func startBrowser(t *testing.T, deadline time.Time) *browserPage {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	p := &browserPage{t: t, ctx: ctx, deadline: deadline}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		wg.Wait()
	})
	// The first Run starts the browser; it must not carry a timeout, which
	// would stop the browser with it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	messages := chromedp.Console(ctx)
	wg.Go(func() {
		for m, err := range messages {
			if err != nil {
				return // the tab is gone
			}
			if m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleError {
				p.mu.Lock()
				p.console = append(p.console, m)
				p.mu.Unlock()
			}
		}
	})
	return p
}

// stepCtx bounds one step by the test's deadline.
func (p *browserPage) stepCtx() (context.Context, context.CancelFunc) {
	return context.WithDeadline(p.ctx, p.deadline)
}

func (p *browserPage) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := p.stepCtx()
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) and returns its
// value as JSON.
func (p *browserPage) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := p.stepCtx()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return string(v)
}

// waitFor polls a JavaScript predicate until it is truthy, failing the test
// with the page's state when the deadline comes first.
func (p *browserPage) waitFor(what, predicate string) {
	p.t.Helper()
	ctx, cancel := p.stepCtx()
	defer cancel()
	start := time.Now()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(0)))
	if err != nil {
		state := "unavailable"
		sctx, scancel := context.WithTimeout(p.ctx, 2*time.Second)
		if v, serr := chromedp.Run(sctx, chromedp.Evaluate[string](`JSON.stringify(window.marketd)`)); serr == nil {
			state = v
		}
		scancel()
		p.screenshot()
		p.t.Fatalf("waiting for %s: %v\npage state: %s\nconsole: %v", what, err, state, p.consoleErrors())
	}
	p.t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
}

// pageState is the part of window.marketd the test reads.
type pageState struct {
	Symbol      string   `json:"symbol"`
	Connected   bool     `json:"connected"`
	ChecksumOK  bool     `json:"checksumOK"`
	Updates     int      `json:"updates"`
	Snapshots   int      `json:"snapshots"`
	Mismatches  int      `json:"mismatches"`
	Gaps        int      `json:"gaps"`
	Resyncs     int      `json:"resyncs"`
	TickerSeq   uint64   `json:"tickerSeq"`
	LastSeq     uint64   `json:"lastSeq"`
	Reconnects  int      `json:"reconnects"`
	ScriptError []string `json:"errors"`
}

func (p *browserPage) state() pageState {
	p.t.Helper()
	var st pageState
	if err := json.Unmarshal([]byte(p.eval(`marketd`)), &st); err != nil {
		p.t.Fatalf("decode window.marketd: %v", err)
	}
	return st
}

// checkChecksumCode runs the page's own modules on inputs whose answers Go
// computes: CRC-32 strings, the checksum string of a book built from a
// snapshot and an update, and the exact ordering of decimal strings.
func (p *browserPage) checkChecksumCode() {
	p.t.Helper()
	inputs := []string{"", "50000.1:1.5:50000.2:0.7:49999:2", "0.00000001:123456789.12345678", "héllo:€"}
	var want []uint32
	for _, s := range inputs {
		want = append(want, crc32.ChecksumIEEE([]byte(s)))
	}
	in, err := json.Marshal(inputs)
	if err != nil {
		p.t.Fatal(err)
	}
	got := p.eval(fmt.Sprintf(`(async () => {
		const { crc32 } = await import(new URL('js/crc32.js', location.href).href);
		const { Book, cmpDec } = await import(new URL('js/book.js', location.href).href);
		const b = new Book('T', 25);
		b.snapshot({ seq: 1, bids: [['49999', '2'], ['50000', '1']], asks: [['50000.2', '0.7'], ['50001', '3']] });
		b.update({ seq: 2, bids: [['50000', '0'], ['50000.1', '1.5']], asks: [['50001', '0']] });
		const order = ['10', '9.99', '0.5', '0.05', '100', '0.55', '1'].sort(cmpDec);
		return { crc: %s.map(crc32), book: b.checksumString(), bookCRC: b.checksum(), order };
	})()`, in))
	var res struct {
		CRC     []uint32 `json:"crc"`
		Book    string   `json:"book"`
		BookCRC uint32   `json:"bookCRC"`
		Order   []string `json:"order"`
	}
	if err := json.Unmarshal([]byte(got), &res); err != nil {
		p.t.Fatalf("decode %s: %v", got, err)
	}
	if !slices.Equal(res.CRC, want) {
		p.t.Errorf("page crc32(%q) = %v, Go says %v", inputs, res.CRC, want)
	}
	// protocol.md's example: bids 50000.1×1.5, 49999×2, ask 50000.2×0.7.
	const wantBook = "50000.1:1.5:50000.2:0.7:49999:2"
	if res.Book != wantBook || res.BookCRC != crc32.ChecksumIEEE([]byte(wantBook)) {
		p.t.Errorf("page book checksum string %q (crc %d), want %q (crc %d)", res.Book, res.BookCRC, wantBook, crc32.ChecksumIEEE([]byte(wantBook)))
	}
	if want := []string{"0.05", "0.5", "0.55", "1", "9.99", "10", "100"}; !slices.Equal(res.Order, want) {
		p.t.Errorf("cmpDec order %v, want %v", res.Order, want)
	}
}

// screenshot writes the viewport as PNG to the test's artifact directory.
func (p *browserPage) screenshot() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(p.t.ArtifactDir(), "marketd-page.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("write screenshot: %v", err)
		return
	}
	p.t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

func (p *browserPage) consoleErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.console {
		out = append(out, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
	}
	return out
}

// checkNoErrors fails on script exceptions, console errors and CSP
// violations seen so far.
func (p *browserPage) checkNoErrors() {
	p.t.Helper()
	if errs := p.consoleErrors(); len(errs) > 0 {
		p.t.Errorf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
	if st := p.state(); len(st.ScriptError) > 0 {
		p.t.Errorf("page errors: %v", st.ScriptError)
	}
}
