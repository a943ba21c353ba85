package stream

import (
	"fmt"
	"testing"
	"time"
)

// TestHostileFrames sends hand-built frames that RFC 6455 forbids, each on
// its own connection, and checks the close code; a healthy client on the
// same server is served throughout.
func TestHostileFrames(t *testing.T) {
	ts := startServer(t, Config{}, symLevels)
	healthy := dial(t, ts.url, clientKinds[0])
	const deflate = "Sec-WebSocket-Extensions: permessage-deflate"
	cases := []struct {
		name   string
		header []string
		send   func(r *rawConn)
		code   int
		reason string // close reason label counted
	}{
		{"oversized message", nil, func(r *rawConn) {
			r.writeFrame(0x81, make([]byte, 70_000), true, -1)
		}, 1009, "too_big"},
		{"oversized fragmented message", nil, func(r *rawConn) {
			r.writeFrame(0x01, make([]byte, 30_000), true, -1)
			for range 3 {
				r.writeFrame(0x00, make([]byte, 30_000), true, -1)
			}
		}, 1009, "too_big"},
		{"unmasked frame", nil, func(r *rawConn) {
			r.writeFrame(0x81, []byte(`{"op":"ping"}`), false, -1)
		}, 1002, "protocol_error"},
		{"reserved data opcode", nil, func(r *rawConn) {
			r.writeFrame(0x83, []byte("x"), true, -1)
		}, 1002, "protocol_error"},
		{"reserved control opcode", nil, func(r *rawConn) {
			r.writeFrame(0x8B, nil, true, -1)
		}, 1002, "protocol_error"},
		{"RSV1 without deflate", nil, func(r *rawConn) {
			r.writeFrame(0xC1, []byte("x"), true, -1)
		}, 1002, "protocol_error"},
		{"RSV2 without deflate", nil, func(r *rawConn) {
			r.writeFrame(0xA1, []byte("x"), true, -1)
		}, 1002, "protocol_error"},
		{"RSV2 with deflate", []string{deflate}, func(r *rawConn) {
			r.writeFrame(0xA1, []byte("x"), true, -1)
		}, 1002, "protocol_error"},
		{"RSV3 with deflate", []string{deflate}, func(r *rawConn) {
			r.writeFrame(0x91, []byte("x"), true, -1)
		}, 1002, "protocol_error"},
		{"RSV1 on a ping with deflate", []string{deflate}, func(r *rawConn) {
			r.writeFrame(0xC9, nil, true, -1)
		}, 1002, "protocol_error"},
		{"RSV1 on a continuation with deflate", []string{deflate}, func(r *rawConn) {
			r.writeFrame(0x01, []byte(`{"op":`), true, -1)
			r.writeFrame(0xC0, []byte(`"ping"}`), true, -1)
		}, 1002, "protocol_error"},
		{"64-bit length with the top bit", nil, func(r *rawConn) {
			r.writeRawHeader(0x81, 1<<63|5)
		}, 1002, "protocol_error"},
		{"64-bit length with the top bit, deflate", []string{deflate}, func(r *rawConn) {
			r.writeRawHeader(0x81, 1<<63)
		}, 1002, "protocol_error"},
		{"control frame over 125 bytes", nil, func(r *rawConn) {
			r.writeFrame(0x89, make([]byte, 126), true, -1)
		}, 1002, "protocol_error"},
		{"fragmented control frame", nil, func(r *rawConn) {
			r.writeFrame(0x09, nil, true, -1)
		}, 1002, "protocol_error"},
		{"continuation without a message", nil, func(r *rawConn) {
			r.writeFrame(0x80, []byte("x"), true, -1)
		}, 1002, "protocol_error"},
		{"new message inside a fragmented one", nil, func(r *rawConn) {
			r.writeFrame(0x01, []byte("x"), true, -1)
			r.writeFrame(0x81, []byte("y"), true, -1)
		}, 1002, "protocol_error"},
		{"invalid UTF-8", nil, func(r *rawConn) {
			r.writeFrame(0x81, []byte{'"', 0xff, 0xfe, '"'}, true, -1)
		}, 1007, "invalid_utf8"},
		{"invalid UTF-8 across fragments", nil, func(r *rawConn) {
			r.writeFrame(0x01, []byte{'"', 0xe2, 0x82}, true, -1)
			r.writeFrame(0x80, []byte{'"'}, true, -1)
		}, 1007, "invalid_utf8"},
		{"invalid UTF-8 in a close reason", nil, func(r *rawConn) {
			r.writeFrame(0x88, []byte{0x03, 0xe8, 'b', 0xff, 'e'}, true, -1)
		}, 1007, "invalid_utf8"},
		{"close payload of one byte", nil, func(r *rawConn) {
			r.writeFrame(0x88, []byte{0x03}, true, -1)
		}, 1002, "protocol_error"},
		{"64-bit length 2^63-1", nil, func(r *rawConn) {
			r.writeRawHeader(0x81, 1<<63-1)
		}, 1009, "too_big"},
		{"64-bit length 2^63-1, deflate", []string{deflate}, func(r *rawConn) {
			r.writeRawHeader(0xC1, 1<<63-1)
		}, 1009, "too_big"},
		{"binary message over the limit", nil, func(r *rawConn) {
			r.writeRawHeader(0x82, 1<<40)
		}, 1009, "too_big"},
		{"compressed continuation without deflate", nil, func(r *rawConn) {
			r.writeFrame(0x41, []byte("x"), true, -1)
		}, 1002, "protocol_error"},
	}
	// Close codes a client must not send (RFC 6455 §7.4.1 and §7.4.2):
	// 0-999 are unused, 1004-1006 and 1015 reserved, 1016-2999 for future
	// extensions of the standard; 3000-4999 are for applications and 5000
	// up do not exist.
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535} {
		cases = append(cases, struct {
			name   string
			header []string
			send   func(r *rawConn)
			code   int
			reason string
		}{fmt.Sprintf("close code %d", code), nil, func(r *rawConn) {
			r.writeFrame(0x88, []byte{byte(code >> 8), byte(code)}, true, -1)
		}, 1002, "protocol_error"})
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.Stats().Closes[tc.reason]
			r := rawDial(t, ts, 0, tc.header...)
			tc.send(r)
			r.expectClose(tc.code)
			r.nc.Close()
			waitFor(t, 5*time.Second, "the close to be counted", func() bool { return ts.Stats().Closes[tc.reason] > before })
			if extra := healthy.drainUntilPong(i); len(extra) > 0 {
				t.Errorf("healthy client got %v", extra)
			}
		})
	}

	// Valid close codes end the connection as the client's doing, answered
	// with a close frame.
	for _, code := range []int{1000, 1001, 1003, 1007, 1008, 1011, 3000, 4999} {
		t.Run(fmt.Sprintf("valid close code %d", code), func(t *testing.T) {
			before := ts.Stats().Closes["client"]
			r := rawDial(t, ts, 0)
			r.writeFrame(0x88, []byte{byte(code >> 8), byte(code), 'b', 'y', 'e'}, true, -1)
			if got, err := r.readMessages(5*time.Second, func(wireMsg) bool { return true }); err != nil || got == 0 {
				t.Fatalf("close %d, %v; want a close frame", got, err)
			}
			r.nc.Close()
			waitFor(t, 5*time.Second, "the close to be counted", func() bool { return ts.Stats().Closes["client"] > before })
		})
	}

	t.Run("valid fragmented and control frames", func(t *testing.T) {
		r := rawDial(t, ts, 0)
		r.writeFrame(0x01, []byte(`{"op":"pi`), true, -1)
		r.writeFrame(0x89, []byte("hi"), true, -1) // a ping between fragments
		r.writeFrame(0x80, []byte(`ng","id":5}`), true, -1)
		f, err := r.readFrame(5 * time.Second)
		if err != nil || f.op != opPong || string(f.payload) != "hi" {
			t.Fatalf("got %+v %v, want the pong of the ping", f, err)
		}
		f, err = r.readFrame(5 * time.Second)
		if err != nil || f.op != opText || string(f.payload[:21]) != `{"type":"pong","id":5` {
			t.Fatalf("got %q %v, want the pong op", f.payload, err)
		}
	})
	healthy.checkErrs()
}

// TestRateLimit floods a connection: the messages past the burst get
// rate_limited errors, and a client that keeps on is closed with 1008.
func TestRateLimit(t *testing.T) {
	ts := startServer(t, Config{RateLimit: 10, RateBurst: 20}, symLevels)
	r := rawDial(t, ts, 0)
	for i := range 200 {
		r.sendText(fmt.Sprintf(`{"op":"ping","id":%d}`, i))
	}
	pongs, limited := 0, 0
	code, err := r.readMessages(5*time.Second, func(m wireMsg) bool {
		switch {
		case m.Type == "pong":
			pongs++
		case m.Type == "error" && m.Code == "rate_limited":
			limited++
		default:
			t.Errorf("unexpected %s", m.raw)
		}
		return true
	})
	if err != nil || code != 1008 {
		t.Fatalf("close %d, %v; want 1008", code, err)
	}
	// The burst is served, then 3 bursts are rejected, then the close.
	if pongs < 20 || pongs > 25 || limited < 55 || limited > 65 {
		t.Errorf("%d pongs and %d rate_limited errors, want about 20 and 60", pongs, limited)
	}
	waitFor(t, 5*time.Second, "the close to be counted", func() bool { return ts.Stats().Closes["rate_limit"] == 1 })

	// A client within the limit is never limited.
	c := dial(t, ts.url, clientKinds[2])
	for i := range 30 {
		c.do(fmt.Sprintf(`{"op":"ping","id":%d}`, i))
		if m := c.expect("pong"); string(m.ID) != fmt.Sprint(i) {
			t.Fatalf("got %s", m.raw)
		}
		if i >= 15 {
			time.Sleep(110 * time.Millisecond) // under 10/s once the burst is spent
		}
	}
}
