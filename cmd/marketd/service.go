package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/marketd/marketd/book"
	"github.com/marketd/marketd/feed"
	"github.com/marketd/marketd/stream"
)

// service is one running marketd: the optional embedded broker and
// simulator, the ingester that owns the books, and the HTTP/WebSocket
// server. startService builds and starts it; Wait stops it.
type service struct {
	cfg        *config
	log        *slog.Logger
	broker     *feed.Broker // nil with -brokers
	brokerAddr string
	ingester   *feed.Ingester
	server     *stream.Server
	http       *http.Server
	ln         net.Listener // plain TCP; TLS is layered in serve
	admin      *http.Server

	cancel context.CancelFunc // stops the ingester and the simulator
	wg     sync.WaitGroup     // the goroutines started here
	failed chan error         // the first component that died, size 1
}

// startService starts every part of the service, or returns the first error
// (a taken port, a bad address) with nothing left running.
func startService(ctx context.Context, cfg *config, logger *slog.Logger) (_ *service, err error) {
	s := &service{cfg: cfg, log: logger, failed: make(chan error, 1)}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	// Listen first, so that a taken port (or a bad certificate) fails at once.
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load -tls-cert and -tls-key: %w", err)
		}
		// HTTP/1.1 only: a WebSocket upgrade hijacks the connection,
		// which HTTP/2 cannot.
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	}
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	cleanup = append(cleanup, func() { s.ln.Close() })

	brokers := cfg.Brokers
	if len(brokers) == 0 {
		// The broker outlives ctx: Wait closes it after the clients and ingest.
		s.broker, err = feed.StartBroker(context.WithoutCancel(ctx), feed.BrokerConfig{
			Addr:       cfg.EmbeddedAddr,
			Topics:     []string{cfg.Topic},
			Partitions: cfg.NumParts,
			DataDir:    cfg.EmbeddedDir,
			Retention:  cfg.RetentionMiB << 20,
			Logger:     logger.With("component", "broker"),
		})
		if err != nil {
			return nil, fmt.Errorf("start embedded broker on %s: %w", cfg.EmbeddedAddr, err)
		}
		cleanup = append(cleanup, s.broker.Close)
		brokers = []string{s.broker.Addr()}
	}
	s.brokerAddr = brokers[0]

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The ingester publishes into the server's hub, and the server asks the
	// ingester for books: hub is set before the ingester runs.
	var hub book.Sink
	// marketd says 0 for "off"; feed says negative (its 0 is the default).
	ckptInterval, ckptRecords := cfg.CheckpointInterval, cfg.CheckpointRecords
	if ckptInterval == 0 {
		ckptInterval = -1
	}
	if ckptRecords == 0 {
		ckptRecords = -1
	}
	s.ingester, err = feed.New(feed.Config{
		Brokers:            brokers,
		Topic:              cfg.Topic,
		DLQTopic:           cfg.DLQTopic,
		DisableDLQ:         !cfg.DLQ,
		Partitions:         cfg.Partitions,
		Sink:               book.SinkFunc(func(u *book.Update) { hub.Publish(u) }),
		Logger:             logger.With("component", "feed"),
		CheckpointTopic:    cfg.CheckpointTopic,
		CheckpointInterval: ckptInterval,
		CheckpointRecords:  ckptRecords,
		FullReplay:         cfg.FullReplay,
	})
	if err != nil {
		return nil, fmt.Errorf("configure ingest: %w", err)
	}
	reg.MustRegister(newFeedCollector(s.ingester))

	s.server, err = stream.NewServer(stream.Config{
		Books:            s.ingester,
		Ready:            s.ready,
		Metrics:          promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Registerer:       reg,
		Page:             stream.PageHandler(),
		Logger:           logger.With("component", "stream"),
		PingInterval:     cfg.PingInterval,
		ReadTimeout:      cfg.ReadTimeout,
		WriteTimeout:     cfg.WriteTimeout,
		HandshakeTimeout: cfg.HandshakeTimeout,
		Tokens:           cfg.Tokens,
		AllowedOrigins:   cfg.AllowedOrigins,
		ConnRate:         cfg.ConnRate,
		ConnBurst:        cfg.ConnBurst,
		QueueSoftLimit:   cfg.QueueSoft,
		QueueHardLimit:   cfg.QueueHard,
		RingSize:         cfg.RingSize,
		MaxSubscriptions: cfg.MaxSubs,
		MaxReplays:       cfg.MaxReplays,

		DisableCompression: !cfg.Compression,
		ContextTakeover:    cfg.ContextTakeover,
		CompressThreshold:  cfg.CompressMin,
		Replay: &replaySource{
			brokers:         brokers,
			topic:           cfg.Topic,
			checkpointTopic: cfg.CheckpointTopic,
			log:             logger.With("component", "ws-replay"),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("configure server: %w", err)
	}
	hub = s.server.Hub()

	if cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.AdminListen, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.wg.Go(func() { s.serve(s.admin, aln, "admin") })
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Go(func() {
		if err := s.ingester.Run(runCtx); err != nil && runCtx.Err() == nil {
			s.fail(fmt.Errorf("ingest: %w", err))
		}
	})
	if cfg.Simulate {
		s.wg.Go(func() {
			err := feed.Simulate(runCtx, feed.SimConfig{
				Brokers: brokers,
				Topic:   cfg.Topic,
				Rate:    float64(cfg.SimRate),
				Seed:    cfg.SimSeed,
				Logger:  logger.With("component", "simulator"),
			})
			if err != nil && runCtx.Err() == nil {
				s.fail(fmt.Errorf("simulator: %w", err))
			}
		})
	}

	s.http = &http.Server{
		Handler:           s.server.Handler(),
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		TLSConfig:         tlsConfig,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	s.wg.Go(func() { s.serve(s.http, s.ln, "http") })
	logger.Info("marketd started", "listen", s.ln.Addr().String(), "brokers", brokers,
		"embedded", s.broker != nil, "topic", cfg.Topic, "simulate", cfg.Simulate)
	return s, nil
}

func (s *service) serve(srv *http.Server, ln net.Listener, name string) {
	if srv.TLSConfig != nil {
		// The certificate is in TLSConfig; an empty TLSNextProto map keeps
		// ServeTLS from adding h2.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("%s server: %w", name, err))
		}
		return
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.fail(fmt.Errorf("%s server: %w", name, err))
	}
}

// fail records the first fatal error of a component; Wait returns it.
func (s *service) fail(err error) {
	select {
	case s.failed <- err:
	default:
	}
}

// ready reports whether the books are rebuilt and Kafka answers.
func (s *service) ready() error { return s.ingester.Ready() }

// URL returns the http (or, with -tls-cert, https) URL of path on the service's listener.
func (s *service) URL(path string) string {
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "localhost"
	}
	scheme := "http://"
	if s.cfg.TLSCert != "" { // https and wss
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, fmt.Sprint(addr.Port)) + path
}

// Wait blocks until ctx is done or a component fails, then shuts the service
// down gracefully: WebSocket clients get what is queued and a 1001 close,
// then ingest, the simulator and the embedded broker stop. It returns the
// component's error, if one failed.
func (s *service) Wait(ctx context.Context) error {
	var cause error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "reason", context.Cause(ctx))
	case cause = <-s.failed:
		s.log.Error("shutting down", "err", cause)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(shutCtx); err != nil {
		s.log.Warn("http shutdown", "err", err)
	}
	if err := s.server.Shutdown(shutCtx); err != nil {
		s.log.Warn("websocket shutdown", "err", err)
	}
	if s.admin != nil {
		s.admin.Close()
	}
	s.cancel()
	s.wg.Wait()
	if s.broker != nil {
		s.broker.Close()
	}
	s.log.Info("marketd stopped")
	return cause
}
