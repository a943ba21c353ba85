package bench

import (
	"errors"
	"strconv"
)

// wireMsg is what the load generator reads of a server message: the
// top-level fields that identify a stream and place it in time. Byte slices
// alias the frame they were scanned from.
type wireMsg struct {
	Type, Channel, Symbol, Code []byte
	Seq, PrevSeq, TS            int64
	HasSeq, HasPrev, HasTS      bool
	Conflated                   bool
}

var errBadMessage = errors.New("not a JSON object")

// scanMessage reads the top-level fields of one JSON object in a single
// pass, skipping nested arrays and objects (the book levels) without
// decoding them. It is the load generator's hot path: it must cost far
// less than the server's encoding of the same message.
func scanMessage(b []byte, m *wireMsg) error {
	*m = wireMsg{}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errBadMessage
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return errBadMessage
		}
		if b[i] == '}' {
			return nil
		}
		if b[i] == ',' {
			i++
			continue
		}
		if b[i] != '"' {
			return errBadMessage
		}
		ks, ke, ok := scanString(b, i)
		if !ok {
			return errBadMessage
		}
		key := b[ks:ke]
		i = skipSpace(b, ke+1)
		if i >= len(b) || b[i] != ':' {
			return errBadMessage
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return errBadMessage
		}
		vs := i
		switch b[i] {
		case '"':
			s, e, ok := scanString(b, i)
			if !ok {
				return errBadMessage
			}
			switch string(key) {
			case "type":
				m.Type = b[s:e]
			case "channel":
				m.Channel = b[s:e]
			case "symbol":
				m.Symbol = b[s:e]
			case "code":
				m.Code = b[s:e]
			}
			i = e + 1
			continue
		case '[', '{':
			e, ok := skipNested(b, i)
			if !ok {
				return errBadMessage
			}
			i = e
			continue
		}
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ' ' && b[i] != '\n' {
			i++
		}
		val := b[vs:i]
		switch string(key) {
		case "seq", "prev_seq", "ts":
			n, ok := parseInt(val)
			if !ok {
				return errBadMessage
			}
			switch string(key) {
			case "seq":
				m.Seq, m.HasSeq = n, true
			case "prev_seq":
				m.PrevSeq, m.HasPrev = n, true
			default:
				m.TS, m.HasTS = n, true
			}
		case "conflated":
			m.Conflated = string(val) == "true"
		}
	}
}

// parseInt parses a decimal int64 without the generality (and the cost) of
// strconv: an optional '-' and 1 to 18 digits, which covers every seq and
// Unix-microsecond ts; longer numbers go to strconv.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	d := b
	if neg {
		d = b[1:]
	}
	if len(d) == 0 || len(d) > 18 {
		n, err := strconv.ParseInt(string(b), 10, 64)
		return n, err == nil
	}
	var n int64
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the bounds of the contents of the string starting at
// b[i] == '"': b[s:e] is the raw text and b[e] the closing quote.
func scanString(b []byte, i int) (s, e int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return i + 1, j, true
		}
	}
	return 0, 0, false
}

// skipNested returns the index just past the array or object opening at b[i].
func skipNested(b []byte, i int) (int, bool) {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case '"':
			_, e, ok := scanString(b, i)
			if !ok {
				return 0, false
			}
			i = e
		}
	}
	return 0, false
}
