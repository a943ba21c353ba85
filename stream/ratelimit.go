package stream

// rateLimiter limits the messages of one connection: a token bucket of
// rate tokens per second holding at most burst; a message without a token
// is rejected (an error rate_limited). A second bucket, of abuseFactor ×
// burst "strikes" refilled at the same rate, counts the rejections: a
// client that keeps on sending while rejected empties it and is closed
// (1008). Owned by the connection's reader.
type rateLimiter struct {
	rate, burst, maxStrikes float64
	tokens, strikes         float64
	last                    int64 // monoNow of the last take
}

// abuseFactor is how many bursts of rejected messages close a connection.
const abuseFactor = 3

type limitResult uint8

const (
	limitOK       limitResult = iota // the message is served
	limitRejected                    // answered with rate_limited
	limitAbuse                       // the connection is closed with 1008
)

func newRateLimiter(rate float64, burst int, now int64) rateLimiter {
	b := float64(burst)
	return rateLimiter{rate: rate, burst: b, maxStrikes: abuseFactor * b, tokens: b, strikes: abuseFactor * b, last: now}
}

// take spends a token for one message received at now.
func (l *rateLimiter) take(now int64) limitResult {
	refill := float64(now-l.last) / 1e9 * l.rate
	l.last = now
	l.tokens = min(l.burst, l.tokens+refill)
	l.strikes = min(l.maxStrikes, l.strikes+refill)
	if l.tokens >= 1 {
		l.tokens--
		return limitOK
	}
	l.strikes--
	if l.strikes < 0 {
		return limitAbuse
	}
	return limitRejected
}
