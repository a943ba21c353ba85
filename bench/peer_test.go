package bench

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestPeerProtocol checks the peer's side of the protocol subset over a
// real socket with an independent client library (coder/websocket).
func TestPeerProtocol(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokers := startBroker(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPeer(ctx, PeerConfig{Brokers: brokers, Logger: discard}, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	prod, err := NewProducer(ctx, ProducerConfig{Brokers: brokers, Symbols: []string{"SYM00"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.Seed(ctx); err != nil {
		t.Fatal(err)
	}

	c, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	send := func(s string) {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	type msg struct {
		Type, Code, Op, Channel, Symbol string
		ID                              int64
		Seq                             int64
		PrevSeq                         int64 `json:"prev_seq"`
		Bids, Asks                      [][2]string
	}
	read := func() msg {
		t.Helper()
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m msg
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		return m
	}

	// The seed may not be applied yet: retry until the symbol is known.
	for {
		send(`{"op":"subscribe","id":1,"channel":"book","symbols":["SYM00"],"depth":10}`)
		if m := read(); m.Type == "ack" {
			break
		} else if m.Type != "error" || m.Code != "unknown_symbol" {
			t.Fatalf("got %+v, want an ack or unknown_symbol", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	snap := read()
	if snap.Type != "snapshot" || snap.Symbol != "SYM00" || len(snap.Bids) != 10 || len(snap.Asks) != 10 || snap.Seq <= 0 {
		t.Fatalf("snapshot: %+v", snap)
	}
	for _, tt := range []struct{ op, typ, code string }{
		{`{"op":"ping","id":2}`, "pong", ""},
		{`{"op":"subscribe","id":3,"channel":"book","symbols":["NOPE"]}`, "error", "unknown_symbol"},
		{`{"op":"subscribe","id":4,"channel":"candles","symbols":["SYM00"]}`, "error", "unknown_channel"},
		{`{"op":"subscribe","id":5,"channel":"book","symbols":["SYM00"],"depth":7}`, "error", "bad_request"},
		{`{"op":"dance","id":6}`, "error", "unknown_op"},
		{`not json`, "error", "bad_request"},
		{`{"op":"subscribe","id":7,"channel":"trades","symbols":["*"]}`, "ack", ""},
	} {
		send(tt.op)
		if m := read(); m.Type != tt.typ || m.Code != tt.code {
			t.Errorf("%s: got %+v, want %s %s", tt.op, m, tt.typ, tt.code)
		}
	}

	// Updates follow the snapshot with an unbroken prev_seq chain.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = prod.Run(runCtx, 500) }()
	last, updates := snap.Seq, 0
	for updates < 50 {
		m := read()
		switch m.Type {
		case "update":
			if m.PrevSeq != last || m.Seq <= m.PrevSeq {
				t.Fatalf("update seq %d prev_seq %d after seq %d", m.Seq, m.PrevSeq, last)
			}
			last = m.Seq
			updates++
		case "trade":
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
}
