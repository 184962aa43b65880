package awsfake

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// decodeLogsRequest decodes a CloudWatch Logs request body into req exactly
// as json.Unmarshal does. The body the SDK sends for PutLogEvents (up to
// 1 MiB of log events) is read by a single-pass reader that accepts only
// strict JSON of the request's shape: exact key names, each at most once,
// strings with the short escapes (\" \\ \/ \b \f \n \r \t) and valid UTF-8,
// integer timestamps. Anything else (another key or letter case, null, a
// \u escape, a malformed body) is left to json.Unmarshal, so the answer
// (the decoded request or a SerializationException) is the same; the fast
// reader only spends less of the CPU the test's own process shares with the
// code under test. The decoded messages are substrings of one string over
// buf's arena (see decodeBuf); the rest of buf is scratch reused by the
// next decode with buf.
func decodeLogsRequest(body []byte, req *putLogsRequest, buf *decodeBuf) error {
	if fastPutLogs(body, req, buf) {
		return nil
	}
	*req = putLogsRequest{}
	return json.Unmarshal(body, req)
}

// decodeBuf is the memory of fastPutLogs, kept between decodes (a 1 MiB
// body's events in new memory each time were most of the fake's CPU: the
// page faults of touching it). arena holds the unescaped messages, which
// the decoded strings point into: a decode with reuseArena set writes over
// the previous decode's messages, so it is set only where nothing keeps
// them (Logs.SetKeepEvents(false)); otherwise each decode gets an arena of
// its own.
type decodeBuf struct {
	// body is the call's body (readBody), arena and the rest fastPutLogs's.
	body       []byte
	reuseArena bool
	arena      []byte
	evs        []fastEvent
	ts         []int64
	strs       []string
	events     []inputLogEvent
}

// grown is s with length n (never nil), reusing its array when it is large
// enough.
func grown[T any](s []T, n int) []T {
	if s != nil && cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// jsonReader is the state of fastPutLogs.
type jsonReader struct {
	b     []byte
	i     int
	arena []byte // the events' unescaped messages, one after the other
}

type fastEvent struct {
	ts            int64
	off, end      int // the message in arena
	hasTS, hasMsg bool
}

// fastPutLogs decodes body into req, or returns false (req then holds
// garbage) when body is anything but the strict shape described above.
func fastPutLogs(body []byte, req *putLogsRequest, buf *decodeBuf) bool {
	if !buf.reuseArena || cap(buf.arena) < len(body) {
		buf.arena = make([]byte, 0, len(body))
	}
	r := &jsonReader{b: body, arena: buf.arena[:0]}
	var evs []fastEvent
	var seenGroup, seenStream, seenEvents bool
	if !r.next('{') {
		return false
	}
	if !r.peek('}') {
		for {
			key, ok := r.key()
			if !ok {
				return false
			}
			switch string(key) {
			case "logGroupName":
				if seenGroup {
					return false
				}
				seenGroup = true
				if req.LogGroupName, ok = r.str(); !ok {
					return false
				}
			case "logStreamName":
				if seenStream {
					return false
				}
				seenStream = true
				if req.LogStreamName, ok = r.str(); !ok {
					return false
				}
			case "logEvents":
				if seenEvents {
					return false
				}
				seenEvents = true
				if evs, ok = r.events(buf.evs[:0]); !ok {
					return false
				}
				buf.evs = evs[:0]
			default:
				return false
			}
			if r.next(',') {
				continue
			}
			if r.next('}') {
				break
			}
			return false
		}
	} else {
		r.i++
	}
	r.space()
	if r.i != len(r.b) {
		return false
	}
	if seenEvents {
		// One string: the events' messages are its substrings. The arena
		// is not written again while they are in use (decodeBuf).
		msgs := unsafe.String(unsafe.SliceData(r.arena), len(r.arena))
		ts := grown(buf.ts, len(evs))
		strs := grown(buf.strs, len(evs))
		req.LogEvents = grown(buf.events, len(evs))
		buf.ts, buf.strs, buf.events = ts, strs, req.LogEvents
		for i, e := range evs {
			req.LogEvents[i] = inputLogEvent{}
			if e.hasTS {
				ts[i] = e.ts
				req.LogEvents[i].Timestamp = &ts[i]
			}
			if e.hasMsg {
				strs[i] = msgs[e.off:e.end]
				req.LogEvents[i].Message = &strs[i]
			}
		}
	}
	return true
}

func (r *jsonReader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// next consumes c (after white space) if it is next.
func (r *jsonReader) next(c byte) bool {
	if r.peek(c) {
		r.i++
		return true
	}
	return false
}

// peek skips white space and reports whether c is next.
func (r *jsonReader) peek(c byte) bool {
	r.space()
	return r.i < len(r.b) && r.b[r.i] == c
}

// key reads a plain ASCII object key and its colon.
func (r *jsonReader) key() ([]byte, bool) {
	if !r.next('"') {
		return nil, false
	}
	start := r.i
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			k := r.b[start:r.i]
			r.i++
			if !r.next(':') {
				return nil, false
			}
			return k, true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return nil, false
		}
		r.i++
	}
	return nil, false
}

// unescape appends the contents of the string starting at r.b[r.i] == '"'
// to arena.
func (r *jsonReader) unescape() bool {
	if !r.next('"') {
		return false
	}
	start := len(r.arena)
	ascii := true
	for r.i < len(r.b) {
		// The run of plain bytes up to the next quote, backslash or control byte.
		j := r.i
		for j < len(r.b) {
			c := r.b[j]
			if c == '"' || c == '\\' || c < 0x20 {
				break
			}
			if c >= utf8.RuneSelf {
				ascii = false
			}
			j++
		}
		r.arena = append(r.arena, r.b[r.i:j]...)
		r.i = j
		if j == len(r.b) {
			return false
		}
		switch c := r.b[j]; {
		case c == '"':
			r.i++
			return ascii || utf8.Valid(r.arena[start:])
		case c < 0x20:
			return false
		}
		// A backslash.
		if j+1 >= len(r.b) {
			return false
		}
		var e byte
		switch r.b[j+1] {
		case '"', '\\', '/':
			e = r.b[j+1]
		case 'b':
			e = '\b'
		case 'f':
			e = '\f'
		case 'n':
			e = '\n'
		case 'r':
			e = '\r'
		case 't':
			e = '\t'
		default:
			return false // \u (or invalid): json.Unmarshal decides
		}
		r.arena = append(r.arena, e)
		r.i = j + 2
	}
	return false
}

// str reads a string value as a Go string.
func (r *jsonReader) str() (string, bool) {
	start := len(r.arena)
	if !r.unescape() {
		return "", false
	}
	s := string(r.arena[start:])
	r.arena = r.arena[:start]
	return s, true
}

// events reads the logEvents array, appending to evs.
func (r *jsonReader) events(evs []fastEvent) ([]fastEvent, bool) {
	if !r.next('[') {
		return nil, false
	}
	if r.next(']') {
		return evs, true
	}
	for {
		var e fastEvent
		if !r.next('{') {
			return nil, false
		}
		if !r.next('}') {
			for {
				key, ok := r.key()
				if !ok {
					return nil, false
				}
				switch string(key) {
				case "timestamp":
					if e.hasTS {
						return nil, false
					}
					e.hasTS = true
					if e.ts, ok = r.integer(); !ok {
						return nil, false
					}
				case "message":
					if e.hasMsg {
						return nil, false
					}
					e.hasMsg = true
					e.off = len(r.arena)
					if !r.unescape() {
						return nil, false
					}
					e.end = len(r.arena)
				default:
					return nil, false
				}
				if r.next(',') {
					continue
				}
				if r.next('}') {
					break
				}
				return nil, false
			}
		}
		evs = append(evs, e)
		if r.next(',') {
			continue
		}
		if r.next(']') {
			return evs, true
		}
		return nil, false
	}
}

// integer reads -?(0|[1-9][0-9]*) that fits an int64.
func (r *jsonReader) integer() (int64, bool) {
	r.space()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	if r.i == digits || (r.b[digits] == '0' && r.i-digits > 1) {
		return 0, false
	}
	if r.i < len(r.b) {
		switch r.b[r.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
		default:
			return 0, false // a fraction or an exponent
		}
	}
	n, err := strconv.ParseInt(string(r.b[start:r.i]), 10, 64)
	return n, err == nil
}
