package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Defaults of BrokerConfig and Config.
const (
	// DefaultBrokerAddr is where the embedded broker listens by default.
	DefaultBrokerAddr = "127.0.0.1:9092"
	// DefaultTopic is the input topic.
	DefaultTopic = "market.events"
	// DefaultPartitions is the partition count of the embedded broker's topics.
	DefaultPartitions = 4
	// DLQSuffix makes the dead-letter topic's name from the input topic's.
	DLQSuffix = ".dlq"
	// CheckpointSuffix makes the checkpoint topic's name from the input topic's.
	CheckpointSuffix = ".checkpoints"

	// brokerStartTimeout bounds StartBroker's topic creation when ctx has no deadline.
	brokerStartTimeout = 10 * time.Second
	// brokerCompactInterval is how often the embedded broker compacts the
	// checkpoint topics (kfake's log.cleaner.backoff.ms).
	brokerCompactInterval = time.Minute
	// Bounds of the segment size of topics with retention.
	minSegmentBytes = 1 << 20
	maxSegmentBytes = 100 << 20
)

// BrokerConfig configures StartBroker. The zero value is the default run:
// one broker on 127.0.0.1:9092 holding market.events, market.events.dlq and
// market.events.checkpoints with 4 partitions each, in memory.
type BrokerConfig struct {
	// Addr is the TCP address to listen on; default DefaultBrokerAddr. Port 0
	// picks a free port (see Broker.Addr). The broker advertises this
	// address to clients, so it should be one they can dial.
	Addr string
	// Topics are the input topics; default {DefaultTopic}. For each, the
	// broker also creates <topic>.dlq and <topic>.checkpoints.
	Topics []string
	// Partitions is the partition count of every topic; default DefaultPartitions.
	Partitions int
	// DataDir, when set, keeps the log on disk there and reloads it on the
	// next start, so that a restarted broker serves the same records at the
	// same offsets. Empty keeps everything in memory, lost on Close.
	DataDir string
	// Retention, when positive, is how many bytes of records the broker
	// keeps per partition of the input and dead-letter topics (Kafka's
	// retention.bytes): past it the oldest batches are dropped, checked
	// every minute, by whole segments of an eighth of it (at least 1 MiB).
	// 0 keeps everything, which in memory grows without bound. The
	// checkpoint topics are compacted instead.
	Retention int64
	// Logger receives the broker's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// Broker is an embedded, in-process Kafka-protocol broker (kfake) that
// clients reach over TCP exactly as they would a real cluster.
type Broker struct {
	cluster   *kfake.Cluster
	addr      string
	stopWatch func() bool
	closeOnce sync.Once
}

// StartBroker starts the embedded broker and creates its topics. ctx bounds
// the start; the broker runs until Close is called or ctx is done.
func StartBroker(ctx context.Context, cfg BrokerConfig) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultBrokerAddr
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{DefaultTopic}
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Partitions < 0 {
		return nil, fmt.Errorf("start broker: partitions %d < 0", cfg.Partitions)
	}
	if cfg.Retention < 0 {
		return nil, fmt.Errorf("start broker: retention %d < 0", cfg.Retention)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ClusterID("marketd"),
		kfake.BrokerConfigs(map[string]string{
			"log.cleaner.backoff.ms": strconv.FormatInt(brokerCompactInterval.Milliseconds(), 10),
		}),
		// kfake listens on 127.0.0.1:<port>; listen on the configured
		// address instead (and fail at once when it is taken).
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, cfg.Addr)
		}),
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(kfakeLogger{cfg.Logger}))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start broker on %s: %w", cfg.Addr, err)
	}
	b := &Broker{cluster: cluster, addr: cluster.ListenAddrs()[0]}

	// Create the topics over TCP, as any client would: this also checks
	// that the listener answers. A reloaded DataDir already has them. The
	// checkpoint topic is compacted (the latest checkpoint of each book is
	// what matters) and takes records as large as a book.
	var topics []kafka.TopicConfig
	var retained []kafka.AlterConfigRequestResource // the input and dead-letter topics
	for _, t := range cfg.Topics {
		for _, name := range []string{t, t + DLQSuffix} {
			topics = append(topics, kafka.TopicConfig{Topic: name, NumPartitions: cfg.Partitions, ReplicationFactor: 1})
			retained = append(retained, kafka.AlterConfigRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: name, Configs: retentionConfigs(cfg.Retention)})
		}
		topics = append(topics, kafka.TopicConfig{Topic: t + CheckpointSuffix, NumPartitions: cfg.Partitions, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{
				{ConfigName: "cleanup.policy", ConfigValue: "compact"},
				{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(checkpointBatchBytes)},
			}})
	}
	cctx, cancel := context.WithTimeout(ctx, brokerStartTimeout)
	defer cancel()
	// A transport of its own: kafka-go's default one pools connections by
	// address, which would hand a restarted broker a dead connection.
	tr := &kafka.Transport{DialTimeout: brokerStartTimeout}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: brokerStartTimeout, Transport: tr}
	resp, err := client.CreateTopics(cctx, &kafka.CreateTopicsRequest{Topics: topics})
	if err == nil {
		for name, terr := range resp.Errors {
			if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
				err = fmt.Errorf("topic %s: %w", name, terr)
				break
			}
		}
	}
	if err != nil {
		cluster.Close()
		return nil, fmt.Errorf("start broker: create topics: %w", err)
	}
	// Retention is set on every start, so that it also reaches (or leaves)
	// the topics of a reloaded DataDir.
	aresp, err := client.AlterConfigs(cctx, &kafka.AlterConfigsRequest{Resources: retained})
	if err == nil {
		for res, rerr := range aresp.Errors {
			if rerr != nil {
				err = fmt.Errorf("topic %s: %w", res.Name, rerr)
				break
			}
		}
	}
	if err != nil {
		cluster.Close()
		return nil, fmt.Errorf("start broker: set retention: %w", err)
	}
	b.stopWatch = context.AfterFunc(ctx, b.shutdown)
	return b, nil
}

// retentionConfigs returns the configuration of a topic that keeps
// retention bytes per partition (none: keep everything). The broker frees
// whole segments only (in memory or on disk), so segments are an eighth of
// the retention: the bound is then exceeded by an eighth at most.
func retentionConfigs(retention int64) []kafka.AlterConfigRequestConfig {
	if retention <= 0 {
		return []kafka.AlterConfigRequestConfig{}
	}
	segment := min(max(retention/8, minSegmentBytes), maxSegmentBytes)
	return []kafka.AlterConfigRequestConfig{
		{Name: "retention.bytes", Value: strconv.FormatInt(retention, 10)},
		{Name: "segment.bytes", Value: strconv.FormatInt(segment, 10)},
	}
}

// Addr returns the address the broker listens on, e.g. "127.0.0.1:9092".
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker and closes every client connection. With a
// DataDir it first saves the log. Close is idempotent.
func (b *Broker) Close() {
	b.stopWatch()
	b.shutdown()
}

func (b *Broker) shutdown() { b.closeOnce.Do(b.cluster.Close) }

// kfakeLogger forwards kfake's warnings and errors to slog; its info and
// debug levels log every request.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	var lv slog.Level
	switch level {
	case kfake.LogLevelError:
		lv = slog.LevelError
	case kfake.LogLevelWarn:
		lv = slog.LevelWarn
	default:
		return
	}
	k.l.Log(context.Background(), lv, fmt.Sprintf(msg, args...), "component", "broker")
}
