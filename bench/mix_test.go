package bench

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMix(t *testing.T) {
	universe := []string{"A", "B", "C"}
	m, err := ParseMix("2x book:@1:10:raw + trades:@2; ticker:*:100ms; 1x idle; book:X,Y")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]Sub{
		{{Channel: "book", Symbols: []string{"A"}, Depth: 10, Interval: "raw"}, {Channel: "trades", Symbols: []string{"A", "B"}}},
		{{Channel: "book", Symbols: []string{"B"}, Depth: 10, Interval: "raw"}, {Channel: "trades", Symbols: []string{"B", "C"}}},
		{{Channel: "ticker", Symbols: []string{"*"}, Interval: "100ms"}},
		{},
		{{Channel: "book", Symbols: []string{"X", "Y"}}},
		{{Channel: "book", Symbols: []string{"C"}, Depth: 10, Interval: "raw"}, {Channel: "trades", Symbols: []string{"C", "A"}}},
	}
	for i, w := range want {
		if got := m.ForClient(i, universe); !reflect.DeepEqual(got, w) {
			t.Errorf("client %d: got %+v, want %+v", i, got, w)
		}
	}
	if got := m.Symbols(); !reflect.DeepEqual(got, []string{"X", "Y"}) {
		t.Errorf("Symbols() = %q", got)
	}
	for _, bad := range []string{"", "book", "candles:A", "book:*", "ticker:A:10", "book:A:fast", "0x book:A", "book:@0", "book:A,,B"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q): no error", bad)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:80", "localhost:9092", "[::1]:1", "127.9.9.9"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"10.0.0.1:80", "example.com:9092", "[2001:db8::1]:1", "0.0.0.0:80"} {
		if err := checkLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	_, err := Run(t.Context(), Config{URL: "ws://192.0.2.1:8080/v1/ws", Brokers: []string{"127.0.0.1:9092"}})
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("Run to a remote host: %v", err)
	}
	soak := SoakConfig{Config: Config{URL: "ws://127.0.0.1:8080/v1/ws", Brokers: []string{"192.0.2.1:9092"}, ServerPID: 1, MetricsURL: "http://127.0.0.1:8080/metrics"}}
	if _, err := Soak(t.Context(), soak); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("Soak with a remote broker: %v", err)
	}
}
