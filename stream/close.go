package stream

import (
	"errors"
	"io"
	"net"
	"strconv"

	"github.com/lxzan/gws"
)

// CloseReason says why a connection ended. Each reason maps, in one table,
// to the WebSocket close code the server sends (if any), the reason text of
// the close frame and the label of the close metric.
type CloseReason uint8

// Close reasons.
const (
	// CloseByClient: the client sent a close frame or closed the socket.
	CloseByClient CloseReason = iota + 1
	// CloseShutdown: the server is shutting down (1001).
	CloseShutdown
	// CloseSlowConsumer: the client's queue passed the hard limit (4008).
	CloseSlowConsumer
	// CloseWriteTimeout: the socket accepted nothing for WriteTimeout; no
	// close frame can be written.
	CloseWriteTimeout
	// CloseReadTimeout: nothing arrived from the client for ReadTimeout (1001).
	CloseReadTimeout
	// CloseRateLimit: the client kept on sending past the rate limit (1008).
	CloseRateLimit
	// CloseTooBig: a client message passed MaxMessageSize (1009).
	CloseTooBig
	// CloseProtocolError: an invalid frame (1002).
	CloseProtocolError
	// CloseInvalidUTF8: a text message that is not UTF-8 (1007).
	CloseInvalidUTF8
	// CloseNetError: reading or writing the socket failed.
	CloseNetError
	numCloseReasons = iota + 1
)

// WebSocket close codes the server sends.
const (
	codeNone          = 0
	codeGoingAway     = 1001
	codeProtocolError = 1002
	codeInvalidData   = 1007
	codePolicy        = 1008
	codeTooBig        = 1009
	codeSlowConsumer  = 4008
)

var closeReasons = [...]struct {
	label string // metric label and String
	code  uint16 // close code sent, 0: none
	text  string // reason text of the close frame
}{
	CloseByClient:      {"client", codeNone, ""},
	CloseShutdown:      {"shutdown", codeGoingAway, "server shutting down"},
	CloseSlowConsumer:  {"slow_consumer", codeSlowConsumer, "slow consumer"},
	CloseWriteTimeout:  {"write_timeout", codeNone, ""},
	CloseReadTimeout:   {"read_timeout", codeGoingAway, "read timeout"},
	CloseRateLimit:     {"rate_limit", codePolicy, "rate limit exceeded"},
	CloseTooBig:        {"too_big", codeTooBig, "message too big"},
	CloseProtocolError: {"protocol_error", codeProtocolError, "protocol error"},
	CloseInvalidUTF8:   {"invalid_utf8", codeInvalidData, "invalid UTF-8"},
	CloseNetError:      {"net_error", codeNone, ""},
}

// String returns the metric label of r, e.g. "slow_consumer".
func (r CloseReason) String() string {
	if r > 0 && int(r) < len(closeReasons) {
		return closeReasons[r].label
	}
	return "invalid"
}

// Code returns the close code the server sends for r, 0 for none.
func (r CloseReason) Code() uint16 {
	if r > 0 && int(r) < len(closeReasons) {
		return closeReasons[r].code
	}
	return 0
}

// codeLabel returns the close code of r as a metric label.
func (r CloseReason) codeLabel() string {
	if c := r.Code(); c != 0 {
		return strconv.Itoa(int(c))
	}
	return "none"
}

// frame returns the close frame of r, nil when r sends none.
func (r CloseReason) frame() []byte {
	if c := r.Code(); c != 0 {
		return closeFrame(c, closeReasons[r].text)
	}
	return nil
}

// errorCodeReason returns the reason of a close code with which gws ends
// a connection on the client's error, 0 for another code.
func errorCodeReason(code uint16) CloseReason {
	switch code {
	case codeProtocolError:
		return CloseProtocolError
	case codeInvalidData:
		return CloseInvalidUTF8
	case codeTooBig:
		return CloseTooBig
	}
	return 0
}

// statusCoder is what gws's internal close status type implements.
type statusCoder interface{ Uint16() uint16 }

// reasonOf classifies the error with which gws ended a connection that the
// server did not close itself.
func reasonOf(err error) CloseReason {
	var ce *gws.CloseError
	var sc statusCoder
	switch {
	case err == nil, errors.As(err, &ce), errors.Is(err, io.EOF):
		return CloseByClient
	case errors.Is(err, errFrameGuard):
		return CloseProtocolError
	case errors.Is(err, gws.ErrTextEncoding):
		return CloseInvalidUTF8
	case errors.As(err, &sc):
		if r := errorCodeReason(sc.Uint16()); r != 0 {
			return r
		}
	case errors.Is(err, net.ErrClosed):
		return CloseNetError
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return CloseNetError
	}
	// gws reports some protocol violations (an unexpected opcode) as plain
	// errors after it has sent 1002.
	return CloseProtocolError
}
