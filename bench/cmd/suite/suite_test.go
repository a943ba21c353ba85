package main

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/marketd/marketd/bench"
)

func result(scenario, target string, deliv float64, p99 int64, cpu float64) *bench.Result {
	return &bench.Result{
		Scenario: scenario, Target: target, Clients: 1000, Window: 1, Deliveries: int64(deliv), DeliveriesPerSec: deliv,
		ProducedPerSec: 100, PayloadPerMsg: 160, WirePerMsg: 164,
		Latency: bench.Latency{Count: 10, P50: p99 / 2, P99: p99, P999: p99 + 1, Max: p99 + 2},
		Server:  &bench.ServerStats{CPU: cpu, CPUShare: cpu, RSSPerConn: 14 << 10, RSSConnected: 100 << 20, SyscWPerDeliv: 0.1, OthersShare: -1},
	}
}

// TestSummary renders a summary of known figures and checks the ratios
// of the table and that every plot is well-formed SVG.
func TestSummary(t *testing.T) {
	sum := &summary{
		Command: "go run ./bench/cmd/suite", Repeat: 1,
		Results: []*bench.Result{
			result("sat-1k", "marketd", 1_000_000, 5000, 0.5), // 2M per core
			result("sat-1k", "peer", 150_000, 900_000, 1.0),   // 150k per core
			result("lat-1k-100", "marketd", 90_000, 4000, 0.5),
			result("idle-10k", "marketd", 0, 0, 0.01),
		},
		Ceilings: []*bench.CeilingResult{{Conns: 1000, Size: 164, Batch: 1, MsgsPerSec: 250_000}, {Conns: 1000, Size: 164, Batch: ceilingBatch, MsgsPerSec: 4_000_000}},
	}
	plain := "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	z := result("z-lat-1k-100", targetMarketd, 90_000, 4000, 0.5)
	z.Compress, z.WirePerMsg, z.Extensions = true, 150, map[string]int{plain: 1000}
	zt := result("z-lat-1k-100", targetTakeover, 90_000, 4000, 0.45)
	zt.Compress, zt.WirePerMsg, zt.Extensions = true, 52, map[string]int{"permessage-deflate; client_no_context_takeover": 1000}
	zt.Frames, zt.Inflated = 1000, 900
	// Saturated load generator and a backlog: not a capacity.
	zs := result("z-sat-100", targetMarketd, 500_000, 90_000, 0.1)
	zs.Compress, zs.Extensions, zs.Rate, zs.WirePerSec = true, map[string]int{plain: 1000}, 600, 75e6
	zs.Loadgen.CPUShare, zs.Gauges = 0.97, map[string]float64{"marketd_ingest_lag_records": 483, "marketd_stream_queued_bytes": 40e6}
	zs.Warnings = []string{"the load generator used 97% of a core: it may be the bottleneck"}
	sum.Results = append(sum.Results, z, zt, zs)
	md := sum.markdown()
	for _, want := range []string{
		"| sat-1k | 1000 | 100 | 1000000 | 150000 | 2000000 | 150000 | 13.33× |",
		"| 1000 | 2000000 | 150000 | 250000 | 4000000 | 8.00× | 0.50× |",
		"| idle-10k | 1000 | 14.0 | – |",
		"| marketd | true | no | 160.0 | 150.0 | 94% |",
		"| marketd-takeover | true | yes | 160.0 | 52.0 | 32% |",
		"| z-lat-1k-100 | marketd-takeover | yes | 100 | 90000 | 200000 | 2.00 / 4.00 / 4.00 | 52.0 (32%) | 90% | 45% | 0% |",
		"| z-sat-100 | marketd | no | 100 | 500000 | 5000000 ⚠ |",
		"- z-sat-100 on marketd: per core (5000000) is not a capacity: the load generator used 97% of its core",
		"483 records not yet applied in Kafka",
		"40.0 MB in the client queues",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	for _, unwanted := range []string{"| z-lat-1k-100 | 1000 |", "97% of a core: it may be"} {
		if strings.Contains(md, unwanted) {
			t.Errorf("markdown holds %q:\n%s", unwanted, md)
		}
	}
	s := &suite{img: t.TempDir(), log: os.Stderr}
	if err := s.plots(sum); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(s.img, "*.svg"))
	if len(files) != 4 {
		t.Fatalf("%d plots, want 4", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(strings.NewReader(string(b)))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Errorf("%s: not well-formed: %v", f, err)
				break
			}
		}
	}
}

func TestTargetsOf(t *testing.T) {
	s := &suite{targets: []string{targetMarketd, targetTakeover, targetPeer}}
	if got := s.targetsOf(scenario{Compress: true, Takeover: true}); !slices.Equal(got, s.targets) {
		t.Errorf("takeover scenario: targets %v", got)
	}
	if got := s.targetsOf(scenario{}); !slices.Equal(got, []string{targetMarketd, targetPeer}) {
		t.Errorf("plain scenario: targets %v", got)
	}
}

func TestBetter(t *testing.T) {
	a := result("x", "m", 1000, 5000, 1)
	if !better(result("x", "m", 1000, 4000, 1), a) || better(result("x", "m", 1000, 6000, 1), a) {
		t.Error("equal deliveries: the lower p99 should win")
	}
	if !better(result("x", "m", 1100, 9000, 1), a) || better(result("x", "m", 900, 10, 1), a) {
		t.Error("deliveries more than 3% apart should decide")
	}
	quiet, busy := result("x", "m", 900, 9000, 1), result("x", "m", 1000, 10, 1)
	quiet.Server.OthersShare, busy.Server.OthersShare = 0.02, 0.30
	if !better(quiet, busy) || better(busy, quiet) {
		t.Error("the run with less of the server's CPU taken by others should win")
	}
}

func TestReplaceBlock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "doc.md")
	doc := "# t\n\n## mine\n\n" + markerBegin + "\nold\n" + markerEnd + "\n\n## theirs\nkeep\n"
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := replaceBlock(p, "new\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if want := "# t\n\n## mine\n\n" + markerBegin + "\nnew\n" + markerEnd + "\n\n## theirs\nkeep\n"; string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
}

func TestShellJoin(t *testing.T) {
	if got := shellJoin([]string{"-rev", "", "-only", "a,b", "-mix", "x y", "it's"}); got != `-rev '' -only a,b -mix 'x y' 'it'\''s'` {
		t.Errorf("shellJoin = %s", got)
	}
}
