package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *config)
	}{
		{"defaults", nil, nil, func(t *testing.T, c *config) {
			if c.Listen != ":8080" || c.EmbeddedAddr != "127.0.0.1:9092" || c.Topic != "market.events" ||
				c.DLQTopic != "market.events.dlq" || !c.Simulate || len(c.Brokers) != 0 ||
				c.PingInterval != 20*time.Second || c.ReadTimeout != 60*time.Second || c.WriteTimeout != 10*time.Second ||
				!c.Compression || c.ContextTakeover || c.CompressMin != 64 || c.RetentionMiB != 64 {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{"brokers turn the simulator off", []string{"-brokers", "k1:9092, k2:9092"}, nil, func(t *testing.T, c *config) {
			if c.Simulate || !slices.Equal(c.Brokers, []string{"k1:9092", "k2:9092"}) {
				t.Errorf("got simulate=%v brokers=%q", c.Simulate, c.Brokers)
			}
		}},
		{"simulate can be forced on with brokers", []string{"-brokers", "k1:9092", "-simulate"}, nil, func(t *testing.T, c *config) {
			if !c.Simulate {
				t.Error("simulate off")
			}
		}},
		{"simulate=false with the embedded broker", []string{"-simulate=false"}, nil, func(t *testing.T, c *config) {
			if c.Simulate {
				t.Error("simulate on")
			}
		}},
		{"env overrides defaults", nil, map[string]string{"MARKETD_LISTEN": "127.0.0.1:9999", "MARKETD_EMBEDDED_ADDR": "127.0.0.1:19092", "MARKETD_SIMULATE": "false", "MARKETD_TOPIC": "t"},
			func(t *testing.T, c *config) {
				if c.Listen != "127.0.0.1:9999" || c.EmbeddedAddr != "127.0.0.1:19092" || c.Simulate || c.Topic != "t" || c.DLQTopic != "t.dlq" {
					t.Errorf("env not applied: %+v", c)
				}
			}},
		{"command line wins over env", []string{"-listen", ":7000"}, map[string]string{"MARKETD_LISTEN": ":9999"}, func(t *testing.T, c *config) {
			if c.Listen != ":7000" {
				t.Errorf("listen = %q", c.Listen)
			}
		}},
		{"compression", []string{"-ws-context-takeover", "-ws-compress-min", "200"}, map[string]string{"MARKETD_WS_COMPRESSION": "false"}, func(t *testing.T, c *config) {
			if c.Compression || !c.ContextTakeover || c.CompressMin != 200 {
				t.Errorf("compression=%v takeover=%v min=%d", c.Compression, c.ContextTakeover, c.CompressMin)
			}
		}},
		{"partitions", []string{"-partitions", "0,2"}, nil, func(t *testing.T, c *config) {
			if !slices.Equal(c.Partitions, []int{0, 2}) {
				t.Errorf("partitions = %v", c.Partitions)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig("marketd", tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"-nope"}, nil, "flag provided but not defined"},
		{"bad duration", []string{"-ping-interval", "soon"}, nil, "invalid value"},
		{"bad listen", []string{"-listen", "8080"}, nil, "invalid -listen"},
		{"bad broker", []string{"-brokers", "kafka"}, nil, "invalid broker"},
		{"bad partitions", []string{"-partitions", "1,x"}, nil, "invalid partition"},
		{"bad log format", []string{"-log-format", "xml"}, nil, "invalid -log-format"},
		{"bad log level", []string{"-log-level", "loud"}, nil, "invalid -log-level"},
		{"timeouts", []string{"-read-timeout", "1s", "-ping-interval", "2s"}, nil, "-read-timeout must be longer"},
		{"queue limits", []string{"-queue-soft", "100", "-queue-hard", "50"}, nil, "-queue-hard must be larger"},
		{"compress min", []string{"-ws-compress-min", "0"}, nil, "-ws-compress-min 0"},
		{"retention", []string{"-embedded-retention-mib", "-1"}, nil, "-embedded-retention-mib -1"},
		{"retention without checkpoints", []string{"-checkpoint-interval", "0"}, nil, "needs -embedded-retention-mib 0"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
		{"bad env", nil, map[string]string{"MARKETD_SIMULATE": "maybe"}, "MARKETD_SIMULATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig("marketd", tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestHelpListsEveryFlagAndItsEnv(t *testing.T) {
	var out strings.Builder
	_, err := parseConfig("marketd", []string{"-h"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, name := range []string{"-listen", "-brokers", "-embedded-addr", "-topic", "-simulate", "MARKETD_"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("usage does not mention %s:\n%s", name, out.String())
		}
	}
	// The flag package reports a flag value that cannot print its zero
	// value at the end of the usage instead of failing.
	if strings.Contains(out.String(), "panic") {
		t.Errorf("usage:\n%s", out.String())
	}
}

func TestReplayHelpShowsNoSentinels(t *testing.T) {
	var out strings.Builder
	if _, err := parseReplay([]string{"-h"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(out.String(), "-to-offset") || strings.Contains(out.String(), "(default -1)") || strings.Contains(out.String(), "panic") {
		t.Errorf("usage:\n%s", out.String())
	}
}
