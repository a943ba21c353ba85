package book

import (
	"errors"
	"math"
	"strconv"

	"github.com/shopspring/decimal"
)

// Num is an exact fixed-point decimal with Scale fractional digits, held as
// an int64 count of 10^-Scale units. Prices and sizes live in the book as
// Num so that the hot path never allocates; decimal.Decimal is for the edges.
type Num int64

// Scale is the number of fractional digits a Num holds.
const Scale = 8

// Unit is the Num of value 1.
const Unit Num = 100_000_000

// MaxNum is the largest value a Num holds.
const MaxNum Num = math.MaxInt64

// Errors of ParseNum and NumFromDecimal.
var (
	// ErrNumSyntax: the text is not a decimal number.
	ErrNumSyntax = errors.New("not a decimal number")
	// ErrNumPrecision: the value has more than Scale significant fractional digits.
	ErrNumPrecision = errors.New("more than 8 fractional digits")
	// ErrNumRange: the value does not fit in a Num.
	ErrNumRange = errors.New("number out of range")
)

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// ParseNum parses a decimal such as "50000.10", "-0.5", "1e-3" or "2.50E+2"
// exactly. Text with more than Scale significant fractional digits, or a value
// outside the range of Num, is an error: nothing is rounded.
func ParseNum(s string) (Num, error) { return parseNum(s) }

// ParseNumBytes is ParseNum for a byte slice; it does not allocate.
func ParseNumBytes(b []byte) (Num, error) { return parseNum(b) }

func parseNum[T string | []byte](s T) (Num, error) {
	i, n := 0, len(s)
	neg := false
	if i < n && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	var mant uint64 // significant digits, trailing zeros folded into exp
	exp := 0        // value = mant * 10^exp
	digits, zeros := 0, 0
	sawDot, sawDigit := false, false
	push := func(d byte) bool {
		if d == 0 {
			zeros++ // defer trailing zeros: they may be the last digits
			return true
		}
		for ; zeros > 0; zeros-- {
			if mant > math.MaxUint64/10 {
				return false
			}
			mant *= 10
		}
		if mant > (math.MaxUint64-uint64(d))/10 {
			return false
		}
		mant = mant*10 + uint64(d)
		return true
	}
	for ; i < n; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			sawDigit = true
			digits++
			if !push(c - '0') {
				return 0, ErrNumRange
			}
			if sawDot {
				exp--
			}
		case c == '.' && !sawDot:
			sawDot = true
		default:
			goto tail
		}
	}
tail:
	if !sawDigit {
		return 0, ErrNumSyntax
	}
	exp += zeros // the trailing zeros never multiplied into mant
	if i < n {
		if s[i] != 'e' && s[i] != 'E' {
			return 0, ErrNumSyntax
		}
		i++
		eneg := false
		if i < n && (s[i] == '-' || s[i] == '+') {
			eneg = s[i] == '-'
			i++
		}
		if i == n {
			return 0, ErrNumSyntax
		}
		e := 0
		for ; i < n; i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, ErrNumSyntax
			}
			if e < 10000 {
				e = e*10 + int(c-'0')
			}
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if mant == 0 {
		return 0, nil
	}
	// Scale to units of 10^-Scale: multiply by 10^(exp+Scale).
	shift := exp + Scale
	if shift < 0 {
		return 0, ErrNumPrecision
	}
	if shift >= len(pow10) {
		return 0, ErrNumRange
	}
	p := pow10[shift]
	// The range of Num is -2^63 .. 2^63-1: a negative value may reach 2^63.
	const lim = uint64(math.MaxInt64) + 1
	if mant > lim/p {
		return 0, ErrNumRange
	}
	u := mant * p
	if u == lim && !neg {
		return 0, ErrNumRange
	}
	if neg {
		u = -u
	}
	return Num(u), nil
}

// NumFromDecimal converts d exactly, or returns ErrNumPrecision or ErrNumRange.
func NumFromDecimal(d decimal.Decimal) (Num, error) {
	scaled := d.Shift(Scale)
	if !scaled.IsInteger() {
		return 0, ErrNumPrecision
	}
	bi := scaled.BigInt()
	if !bi.IsInt64() {
		return 0, ErrNumRange
	}
	return Num(bi.Int64()), nil
}

// Decimal returns n as a decimal.Decimal.
func (n Num) Decimal() decimal.Decimal { return decimal.New(int64(n), -Scale) }

// String returns the canonical text of n: no exponent, no trailing
// fractional zeros, no trailing dot ("50000.1", "0.00000001", "12", "0").
// It is exactly the text sent on the wire and used in checksums.
func (n Num) String() string { return string(n.Append(nil)) }

// Append appends the canonical text of n (see String) to dst.
func (n Num) Append(dst []byte) []byte {
	u := uint64(n)
	if n < 0 {
		dst = append(dst, '-')
		u = -u
	}
	whole, frac := u/uint64(Unit), u%uint64(Unit)
	dst = strconv.AppendUint(dst, whole, 10)
	if frac == 0 {
		return dst
	}
	var buf [Scale]byte
	for i := Scale - 1; i >= 0; i-- {
		buf[i] = byte('0' + frac%10)
		frac /= 10
	}
	end := Scale
	for buf[end-1] == '0' {
		end--
	}
	dst = append(dst, '.')
	return append(dst, buf[:end]...)
}

// Add returns n+m and false when the sum leaves the range of Num.
func (n Num) Add(m Num) (Num, bool) {
	s := n + m
	if (m > 0 && s < n) || (m < 0 && s > n) {
		return 0, false
	}
	return s, true
}
