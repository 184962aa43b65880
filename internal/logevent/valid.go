package logevent

import (
	"encoding/binary"
	"math/bits"
)

// validJSON reports whether data is one JSON value (with white space around
// it), exactly as json.Valid does (a differential test and fuzz hold it to
// that), in one pass without the scanner's per-byte state function calls:
// it is on the path of every exported event. Like json.Valid it does not
// check UTF-8 (Parse repairs it first) and refuses nesting deeper than
// 10,000.
func validJSON(data []byte) bool { return scanValid(data, nil) }

// scanValid is validJSON reading, in the same pass, the top-level keys of
// an object into f (when not nil) the way encoding/json matches them
// (case-insensitively, the last occurrence wins), without decoding the
// values it does not need. What it put in f means nothing when it returns
// false. (A second pass over a valid event to find its keys cost as much as
// checking it.)
func scanValid(data []byte, f *fields) bool {
	v := validator{b: data}
	var i int
	var ok bool
	if i = skipSpace(data, 0); i < len(data) && data[i] == '{' {
		i, ok = v.object(i, f)
	} else {
		i, ok = v.value(i)
	}
	return ok && skipSpace(data, i) == len(data)
}

// maxNesting is encoding/json's limit of nested objects and arrays.
const maxNesting = 10000

type validator struct {
	b     []byte
	depth int
	esc   bool // a string had an escape since object last cleared it (before a key)
}

// value checks the value at b[i] and returns the index past it.
func (v *validator) value(i int) (int, bool) {
	b := v.b
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		return v.str(i)
	case c == '{':
		return v.object(i, nil)
	case c == '[':
		return v.array(i)
	case c == 't':
		return v.literal(i, "true")
	case c == 'f':
		return v.literal(i, "false")
	case c == 'n':
		return v.literal(i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return v.number(i)
	}
	return i, false
}

func (v *validator) literal(i int, lit string) (int, bool) {
	if len(v.b)-i < len(lit) || string(v.b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// str checks the string at b[i] == '"'.
func (v *validator) str(i int) (int, bool) {
	b := v.b
	for j := i + 1; j < len(b); j++ {
		j = skipPlain(b, j)
		if j >= len(b) {
			break
		}
		c := b[j]
		switch {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return j, false
		case c == '\\':
			v.esc = true
			j++
			if j >= len(b) {
				return j, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-j <= 4 {
					return j, false
				}
				for k := j + 1; k <= j+4; k++ {
					if !isHex(b[k]) {
						return k, false
					}
				}
				j += 4
			default:
				return j, false
			}
		}
	}
	return len(b), false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (v *validator) number(i int) (int, bool) {
	b := v.b
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// object checks the object at b[i] == '{', reading its keys into f when not
// nil (the top level's: a parameter, not a field of v, so that f does not
// escape through the recursion).
func (v *validator) object(i int, f *fields) (int, bool) {
	if v.depth++; v.depth > maxNesting {
		return i, false
	}
	defer func() { v.depth-- }()
	b := v.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, false
		}
		k := i
		v.esc = false
		var ok bool
		if i, ok = v.str(i); !ok {
			return i, false
		}
		key, esc := b[k+1:i-1], v.esc
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return i, false
		}
		start := skipSpace(b, i+1)
		if i, ok = v.value(start); !ok {
			return i, false
		}
		if f != nil {
			if esc {
				key = unescapeKey(b[k:k+len(key)+2], key)
			}
			f.set(key, b[start:i])
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// array checks the array at b[i] == '['.
func (v *validator) array(i int) (int, bool) {
	if v.depth++; v.depth > maxNesting {
		return i, false
	}
	defer func() { v.depth-- }()
	b := v.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = v.value(i); !ok {
			return i, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// skipPlain returns the index of the first byte at or after j that ends a
// run of plain string bytes (not a quote, a backslash or a control
// character), eight bytes at a time: most of an event is string contents.
func skipPlain(b []byte, j int) int {
	for ; j+8 <= len(b); j += 8 {
		if m := special8(binary.LittleEndian.Uint64(b[j:])); m != 0 {
			return j + bits.TrailingZeros64(m)/8
		}
	}
	for ; j < len(b); j++ {
		if c := b[j]; c < 0x20 || c == '"' || c == '\\' {
			return j
		}
	}
	return j
}

// Bytes of eight, for special8.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special8 has the high bit set of the first of the eight bytes of x (the
// lowest: little-endian) that is a quote, a backslash or below 0x20 (Bit
// Twiddling Hacks' haszero and hasless; the bits above the first may be
// wrong, the first is exact). 0: none of the eight is.
func special8(x uint64) uint64 {
	q, bs := x^(ones*'"'), x^(ones*'\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (x-ones*0x20)&^x) & highs
}
