package stream

import (
	"net/http"
	"strings"
)

// permessage-deflate negotiation (RFC 7692). gws negotiates from the
// request's Sec-WebSocket-Extensions header, but it reads the header as
// one offer (a list of alternatives is misread), ignores a client's
// server_max_window_bits, and answers parameters the client did not
// offer in some configurations. So the server negotiates first, here, and
// hands gws either nothing (no compression) or exactly one canonical offer
// that gws answers correctly:
//
//	permessage-deflate; server_no_context_takeover; client_no_context_takeover
//
// The answer then always carries server_no_context_takeover (frames are
// compressed once, without a per-connection dictionary, and shared by every
// connection) and client_no_context_takeover (client messages are
// decompressed without one), which RFC 7692 §7.1.1 lets a server answer
// whatever the offer. A client's server_max_window_bits=N below 15 is
// accepted and echoed (by an upgrader configured for N); such a client
// then gets compressed only messages of at most 2^N bytes, whose
// back-references can never reach further than its window.

const (
	extPermessageDeflate = "permessage-deflate"
	// canonicalOffer is the offer handed to gws for an accepted negotiation.
	canonicalOffer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	// maxWindowBits is the DEFLATE window of a connection that sets no bound.
	maxWindowBits = 15
	minWindowBits = 8
)

// negotiateDeflate picks the first acceptable permessage-deflate offer of
// the request's Sec-WebSocket-Extensions header lines. It returns whether
// one was accepted and the server window bits that offer allows (15 when
// it sets no bound).
func negotiateDeflate(h http.Header) (ok bool, serverBits int) {
	values := h.Values("Sec-WebSocket-Extensions")
	for _, v := range values {
		for _, offer := range splitQuoted(v, ',') {
			params := splitQuoted(offer, ';')
			if len(params) == 0 || strings.TrimSpace(params[0]) != extPermessageDeflate {
				continue
			}
			if bits, ok := acceptOffer(params[1:]); ok {
				return true, bits
			}
		}
	}
	return false, 0
}

// acceptOffer validates the parameters of one permessage-deflate offer
// (RFC 7692 §7): an unknown parameter, a repeated one or an invalid value
// makes the server decline the offer.
func acceptOffer(params []string) (serverBits int, ok bool) {
	serverBits = maxWindowBits
	seen := make(map[string]bool, len(params))
	for _, p := range params {
		name, value, hasValue := strings.Cut(p, "=")
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			return 0, false
		}
		seen[name] = true
		if hasValue {
			var okValue bool
			if value, okValue = unquote(strings.TrimSpace(value)); !okValue {
				return 0, false
			}
		}
		switch name {
		case "server_no_context_takeover", "client_no_context_takeover":
			if hasValue {
				return 0, false
			}
		case "server_max_window_bits":
			bits, ok := windowBits(value)
			if !hasValue || !ok {
				return 0, false
			}
			serverBits = bits
		case "client_max_window_bits":
			// The client's own window: any value is fine, since client
			// messages are decompressed with the full window. Not echoed.
			if _, ok := windowBits(value); hasValue && !ok {
				return 0, false
			}
		default:
			return 0, false
		}
	}
	return serverBits, true
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
