package stream

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Fuzz targets of the client-facing input paths. Run them with ./fuzz.sh
// (every target of the project, N minutes each) or one at a time:
//
//	go test ./stream -run '^$' -fuzz '^FuzzClientOp$' -fuzztime 10m
//
// The seeds in testdata/fuzz/<Name>/ run as normal tests.

// fuzzRateLimit lifts the rate limit of the fuzzed servers: a fuzz worker
// sends thousands of messages a second on one connection.
const (
	fuzzRateLimit = 1e9
	fuzzRateBurst = 1 << 30
)

// fuzzReadTimeout bounds every wait for the server in a fuzz iteration.
const fuzzReadTimeout = 5 * time.Second

// fuzzSentinel is the id of the ping that ends each FuzzClientOp iteration:
// no mutation of the seeds comes near it, so its pong is never a reply.
const fuzzSentinel = `"fuzz-sentinel-5f0c2e8d9a41b7c3"`

// FuzzClientOp fuzzes the client op decoder: any message gets exactly one
// decision — an ack, a pong or an error with the right code — and never a
// panic. Each input is checked twice: directly (parseRequest, the
// encoders of the reply, and a round trip: a request that parses,
// re-encoded with encoding/json, parses to the same request) and on a
// real server, where the input is sent as a text message on a connection
// kept across iterations, followed by a sentinel ping: between the two,
// the server must answer with snapshots (of a snapshot or book subscribe
// op) and exactly one reply carrying the input's id.
func FuzzClientOp(f *testing.F) {
	ts := startServer(f, Config{RateLimit: fuzzRateLimit, RateBurst: fuzzRateBurst}, symLevels, symOrders)
	conn := rawDial(f, ts, 0)

	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseRequest(data)
		if req == nil {
			t.Fatalf("parseRequest(%q) returned a nil request (err %v)", data, err)
		}
		if req.ID != nil && !validID(req.ID) {
			t.Fatalf("parseRequest(%q) kept the invalid id %q", data, req.ID)
		}
		want := wantDecision(req, err)
		if err == nil {
			checkRoundTrip(t, req)
		}
		// The replies are built from the request's text: they must be JSON
		// whatever the input.
		for _, reply := range [][]byte{
			appendError(nil, req.ID, CodeUnknownOp, fmt.Sprintf("unknown op %q", req.Op)),
			appendError(nil, req.ID, CodeBadRequest, fmt.Sprint(err)),
			appendPong(nil, req.ID, 1),
			appendAck(nil, req.ID, &ackInfo{op: "unsubscribe", channel: chanTicker, symbols: req.Symbols, symbol: req.Symbol}),
		} {
			if !json.Valid(reply) {
				t.Fatalf("input %q: reply %q is not JSON", data, reply)
			}
		}

		// Messages the frame layer refuses (FuzzFrameReader's subject) close
		// the connection; the decoder is what this target drives.
		if !utf8.Valid(data) || len(data) > DefaultMaxMessageSize {
			return
		}
		conn.t = t
		conn.sendText(string(data))
		conn.sendText(`{"op":"ping","id":` + fuzzSentinel + `}`)
		var replies []wireMsg
		code, rerr := conn.readMessages(fuzzReadTimeout, func(m wireMsg) bool {
			if m.Type == "pong" && string(m.ID) == fuzzSentinel && len(replies) > 0 {
				return false
			}
			switch m.Type {
			case "snapshot", "notice":
			case "ack", "error", "pong":
				replies = append(replies, m)
			default:
				t.Errorf("input %q: unexpected %s message %s", data, m.Type, m.raw)
			}
			return true
		})
		if rerr != nil || code != 0 {
			t.Fatalf("input %q: connection ended (close code %d, err %v); replies %v", data, code, rerr, replies)
		}
		if len(replies) != 1 {
			t.Fatalf("input %q: %d replies, want 1: %v", data, len(replies), replies)
		}
		got := replies[0]
		if !bytes.Equal(got.ID, req.ID) {
			t.Errorf("input %q: reply id %s, want %s (%s)", data, got.ID, req.ID, got.raw)
		}
		if !want.matches(got) {
			t.Errorf("input %q: got %s, want %s", data, got.raw, want)
		}
	})
}

// decision is the reply an op must get, as far as the op alone decides it:
// a subscribe, unsubscribe or snapshot op may be acked or refused with any
// code, depending on the server's state.
type decision struct {
	typ  string // "ack", "pong", "error", or "" for an ack or an error
	op   string // the op an ack acknowledges
	code string // the error code, "" for any
}

func (d decision) String() string {
	return fmt.Sprintf("%+v", struct{ Type, Op, Code string }{d.typ, d.op, d.code})
}

func (d decision) matches(m wireMsg) bool {
	switch {
	case d.typ == "" && m.Type == "ack":
		return m.Op == d.op
	case d.typ == "" && m.Type == "error":
		return m.Code != "" && m.Code != CodeUnknownOp.String()
	case m.Type != d.typ:
		return false
	case m.Type == "error":
		return m.Code == d.code
	}
	return true
}

// wantDecision returns the reply a parsed request must get (see
// client.handle).
func wantDecision(req *request, parseErr error) decision {
	switch {
	case parseErr != nil:
		return decision{typ: "error", code: CodeBadRequest.String()}
	case req.Op == "ping":
		return decision{typ: "pong"}
	case req.Op == "":
		return decision{typ: "error", code: CodeBadRequest.String()}
	case req.Op == "subscribe", req.Op == "unsubscribe", req.Op == "snapshot":
		return decision{op: req.Op}
	}
	return decision{typ: "error", code: CodeUnknownOp.String()}
}

// checkRoundTrip re-encodes a parsed request and parses it again.
func checkRoundTrip(t *testing.T, req *request) {
	t.Helper()
	// The id is echoed as it is: re-encode it without HTML escapes, which
	// would change its bytes.
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(req); err != nil {
		t.Fatalf("re-encode %+v: %v", req, err)
	}
	enc := buf.Bytes()
	again, err := parseRequest(enc)
	if err != nil {
		t.Fatalf("re-encoded request %s does not parse: %v", enc, err)
	}
	if !reflect.DeepEqual(req, again) {
		t.Fatalf("round trip changed the request:\n%+v\n%s\n%+v", req, enc, again)
	}
}

// FuzzFrameReader fuzzes the server's frame reading path: each input is
// written, as it is, after a real handshake (with permessage-deflate
// negotiated when deflate is set) on a new loopback connection, whose
// write side is then shut. The server must answer with valid frames only
// — text messages of JSON, pongs, and at most one close frame with a code
// a server may send — and close the connection, never panic; a healthy
// client on the same server is answered after every input, and the
// connection is no longer counted afterwards.
func FuzzFrameReader(f *testing.F) {
	ts := startServer(f, Config{RateLimit: fuzzRateLimit, RateBurst: fuzzRateBurst}, symLevels, symOrders)
	healthy := rawDial(f, ts, 0)
	ping := 0

	f.Fuzz(func(t *testing.T, deflate bool, data []byte) {
		var header []string
		if deflate {
			header = append(header, "Sec-WebSocket-Extensions: permessage-deflate")
		}
		r := rawDial(t, ts, 0, header...)
		if _, err := r.nc.Write(data); err != nil {
			t.Logf("write: %v", err) // the server may have closed already
		}
		_ = r.nc.CloseWrite()
		if err := checkServerFrames(r); err != nil {
			t.Fatalf("deflate %v, input %q: %v", deflate, data, err)
		}
		r.nc.Close()

		ping++
		healthy.t = t
		healthy.sendText(fmt.Sprintf(`{"op":"ping","id":%d}`, ping))
		code, err := healthy.readMessages(fuzzReadTimeout, func(m wireMsg) bool {
			if m.Type == "pong" && string(m.ID) == fmt.Sprint(ping) {
				return false
			}
			t.Errorf("healthy client got %s", m.raw)
			return true
		})
		if err != nil || code != 0 {
			t.Fatalf("healthy client: close code %d, err %v", code, err)
		}
		// The connection must end: polled finely, as it ends within
		// microseconds of the server reading the client's EOF.
		for deadline := time.Now().Add(fuzzReadTimeout); ts.Stats().Connections != 1; {
			if time.Now().After(deadline) {
				t.Fatalf("deflate %v, input %q: the connection is still counted after %v", deflate, data, fuzzReadTimeout)
			}
			time.Sleep(50 * time.Microsecond)
		}
	})
}

// checkServerFrames reads what the server sends until it closes the
// connection and checks every frame.
func checkServerFrames(r *rawConn) error {
	closed := false
	var seen []string // the frames so far, for the error
	for {
		f, err := r.readFrame(fuzzReadTimeout)
		if err == nil {
			seen = append(seen, fmt.Sprintf("%#x %q", f.b0, f.payload))
		}
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), isReset(err):
			return nil
		case err != nil:
			return fmt.Errorf("server did not close the connection: %w", err)
		case closed:
			// RFC 6455 §5.5.1; seed 8eb0af176c616952 caught gws's own
			// close frame racing the connection's writer.
			return fmt.Errorf("frame after the close frame: %q", seen)
		case f.b0&0x30 != 0:
			return fmt.Errorf("RSV2/RSV3 set in server frame %#x", f.b0)
		case f.b0&bitFIN == 0:
			return fmt.Errorf("fragmented server frame %#x", f.b0)
		}
		switch f.op {
		case opClose:
			closed = true
			if err := checkClosePayload(f.payload); err != nil {
				return err
			}
		case opPong:
			if len(f.payload) > 125 {
				return fmt.Errorf("pong of %d bytes", len(f.payload))
			}
		case opText:
			p := f.payload
			if f.b0&bitRSV1 != 0 {
				if p, err = inflate(p); err != nil {
					return fmt.Errorf("inflate: %w", err)
				}
			}
			for _, line := range strings.Split(string(p), "\n") {
				if !json.Valid([]byte(line)) {
					return fmt.Errorf("server message %q is not JSON", line)
				}
			}
		default:
			return fmt.Errorf("unexpected server opcode %#x", f.op)
		}
	}
}

// checkClosePayload checks a server close frame: empty, or a code a
// server may send (RFC 6455 §7.4) and a UTF-8 reason.
func checkClosePayload(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if len(p) == 1 || len(p) > 125 {
		return fmt.Errorf("close payload of %d bytes", len(p))
	}
	code := binary.BigEndian.Uint16(p)
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011, code >= 3000 && code <= 4999:
	default:
		return fmt.Errorf("close code %d", code)
	}
	if !utf8.Valid(p[2:]) {
		return fmt.Errorf("close reason %q is not UTF-8", p[2:])
	}
	return nil
}

// isReset reports whether err is the connection reset by the server,
// which a close with unread input becomes.
func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset by peer")
}
