package main

import (
	"context"
	"log/slog"

	"github.com/marketd/marketd/feed"
	"github.com/marketd/marketd/stream"
)

// replaySource serves the WebSocket "replay" op with feed's replay reader:
// each replay has its own Kafka connections and its own books, rebuilt with
// the live path's code (from checkpoints when there are some).
type replaySource struct {
	brokers         []string
	topic           string
	checkpointTopic string
	log             *slog.Logger
}

var _ stream.ReplaySource = (*replaySource)(nil)

// Replay reads req's range with feed.Replay, or with req.Live
// feed.ReplayLive, which reads on past the range with the same books and
// code until h has joined the live stream.
func (s *replaySource) Replay(ctx context.Context, req stream.ReplayRequest, h stream.ReplayHandler) error {
	cfg := feed.ReplayConfig{
		Brokers:         s.brokers,
		Topic:           s.topic,
		CheckpointTopic: s.checkpointTopic,
		From:            req.From,
		To:              req.To,
		Symbols:         req.Symbols,
		Logger:          s.log,
	}
	a := replayAdapter{h}
	var err error
	if req.Live {
		_, err = feed.ReplayLive(ctx, cfg, a)
	} else {
		_, err = feed.Replay(ctx, cfg, a)
	}
	return err
}

// replayAdapter hands a feed replay to a stream replay handler: Update
// and CaughtUp are the same, the books at the start take stream's type.
type replayAdapter struct{ stream.ReplayHandler }

var _ feed.LiveHandler = replayAdapter{}

func (a replayAdapter) Begin(books []feed.ReplayBook) error {
	start := make([]stream.ReplayStart, len(books))
	for i, b := range books {
		start[i] = stream.ReplayStart{Book: b.Book, LastTrade: b.LastTrade}
	}
	return a.ReplayHandler.Begin(start)
}

func (replayAdapter) End([]feed.ReplayBook) error { return nil }
