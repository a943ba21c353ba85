package stream

import (
	"net/http"
	"strconv"
	"strings"
)

// permessage-deflate negotiation (RFC 7692). gws negotiates from the
// request's Sec-WebSocket-Extensions header, but it reads the header as
// one offer (a list of alternatives is misread), ignores a client's
// server_max_window_bits, and answers parameters the client did not
// offer in some configurations. So the server negotiates here and writes
// the answer itself (frameGuard.Write puts it in gws's 101 response); gws
// is handed either nothing (no compression) or one canonical offer,
//
//	permessage-deflate; server_no_context_takeover; client_no_context_takeover
//
// which only sets how gws decompresses the client's messages: each on its
// own, as the answer always says client_no_context_takeover (RFC 7692
// §7.1.1.1 lets a server say so whatever the offer; a window per
// connection for the client's few small messages would cost more memory
// than it saves bytes).
//
// The answer carries server_no_context_takeover unless the server is
// configured for context takeover (Config.ContextTakeover) and the client
// did not ask for it (takeover.go). A client's server_max_window_bits=N
// below 15 is accepted and echoed; such a client then gets compressed
// only messages (with their context) of at most 2^N bytes, whose
// back-references can never reach further than its window. Nothing the
// client did not offer is answered but those two no_context_takeover
// parameters.

const (
	extPermessageDeflate = "permessage-deflate"
	// canonicalOffer is the offer handed to gws for an accepted negotiation.
	canonicalOffer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	// maxWindowBits is the DEFLATE window of a connection that sets no bound.
	maxWindowBits = 15
	minWindowBits = 8
)

// deflateOffer is the permessage-deflate offer a server accepted.
type deflateOffer struct {
	serverBits       int  // the server window the client allows (15 when unbounded)
	serverNoTakeover bool // the client asked for server_no_context_takeover
}

// answer returns the Sec-WebSocket-Extensions answer to o: with server
// context takeover when takeover is true.
func (o deflateOffer) answer(takeover bool) string {
	a := extPermessageDeflate
	if !takeover {
		a += "; server_no_context_takeover"
	}
	a += "; client_no_context_takeover"
	if o.serverBits < maxWindowBits {
		a += "; server_max_window_bits=" + strconv.Itoa(o.serverBits)
	}
	return a
}

// limit returns the largest payload (with its context) that a connection
// with o's window may be sent compressed.
func (o deflateOffer) limit() int {
	if o.serverBits < maxWindowBits {
		return 1 << o.serverBits
	}
	return int(^uint(0) >> 1)
}

// negotiateDeflate picks the first acceptable permessage-deflate offer of
// the request's Sec-WebSocket-Extensions header lines.
func negotiateDeflate(h http.Header) (deflateOffer, bool) {
	values := h.Values("Sec-WebSocket-Extensions")
	for _, v := range values {
		for _, offer := range splitQuoted(v, ',') {
			params := splitQuoted(offer, ';')
			if len(params) == 0 || strings.TrimSpace(params[0]) != extPermessageDeflate {
				continue
			}
			if o, ok := acceptOffer(params[1:]); ok {
				return o, true
			}
		}
	}
	return deflateOffer{}, false
}

// acceptOffer validates the parameters of one permessage-deflate offer
// (RFC 7692 §7): an unknown parameter, a repeated one or an invalid value
// makes the server decline the offer.
func acceptOffer(params []string) (o deflateOffer, ok bool) {
	o.serverBits = maxWindowBits
	seen := make(map[string]bool, len(params))
	for _, p := range params {
		name, value, hasValue := strings.Cut(p, "=")
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			return o, false
		}
		seen[name] = true
		if hasValue {
			var okValue bool
			if value, okValue = unquote(strings.TrimSpace(value)); !okValue {
				return o, false
			}
		}
		switch name {
		case "server_no_context_takeover", "client_no_context_takeover":
			if hasValue {
				return o, false
			}
			o.serverNoTakeover = o.serverNoTakeover || name == "server_no_context_takeover"
		case "server_max_window_bits":
			bits, ok := windowBits(value)
			if !hasValue || !ok {
				return o, false
			}
			o.serverBits = bits
		case "client_max_window_bits":
			// The client's own window: any value is fine, since client
			// messages are decompressed with the full window. Not echoed.
			if _, ok := windowBits(value); hasValue && !ok {
				return o, false
			}
		default:
			return o, false
		}
	}
	return o, true
}

// windowBits parses a window-bits value: a decimal integer from 8 to 15
// without leading zeros.
func windowBits(s string) (int, bool) {
	switch {
	case len(s) == 1 && s[0] >= '8' && s[0] <= '9':
		return int(s[0] - '0'), true
	case len(s) == 2 && s[0] == '1' && s[1] >= '0' && s[1] <= '5':
		return 10 + int(s[1]-'0'), true
	}
	return 0, false
}

// splitQuoted splits s at every sep outside a quoted string, dropping empty
// (all-space) parts.
func splitQuoted(s string, sep byte) []string {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			if p := strings.TrimSpace(s[start:i]); p != "" {
				parts = append(parts, p)
			}
			start = i + 1
		}
	}
	if p := strings.TrimSpace(s[start:]); p != "" {
		parts = append(parts, p)
	}
	return parts
}

// unquote returns the value of a token or of a quoted-string.
func unquote(s string) (string, bool) {
	if len(s) == 0 || s[0] != '"' {
		return s, true
	}
	if len(s) < 2 || s[len(s)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if c == '\\' {
			i++
			if i == len(s)-1 {
				return "", false
			}
			c = s[i]
		}
		b.WriteByte(c)
	}
	return b.String(), true
}
