package logevent

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
	"unsafe"
)

// scanObject reads the top-level keys of data, a JSON object already checked
// with json.Valid, into f. It matches keys like encoding/json does
// (case-insensitively, the last occurrence wins) without decoding the values
// it does not need, which keeps the per-event cost of parsing low.
func scanObject(data []byte, f *fields) {
	i := skipSpace(data, 1)
	for i < len(data) && data[i] != '}' {
		kEnd := skipString(data, i)
		key := data[i+1 : kEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			if json.Unmarshal(data[i:kEnd], &k) == nil {
				key = []byte(k)
			}
		}
		i = skipSpace(data, kEnd) + 1 // the ':'
		i = skipSpace(data, i)
		vEnd := skipValue(data, i)
		f.set(key, data[i:vEnd])
		i = skipSpace(data, vEnd)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
}

// keyNames lists the keys read, for keys that are not plain ASCII (Unicode
// folding lets "ſ" match "s", as in encoding/json).
var keyNames = []string{"ts", "lvl", "msg", "time", "level", "message", "severity", "timestamp", "@timestamp"}

func (f *fields) set(key, value []byte) {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			for _, n := range keyNames {
				if bytes.EqualFold(key, []byte(n)) {
					f.set([]byte(n), value)
					return
				}
			}
			return
		}
	}
	switch len(key) {
	case 2:
		if bytes.EqualFold(key, []byte("ts")) {
			f.TS = value
		}
	case 3:
		switch {
		case bytes.EqualFold(key, []byte("lvl")):
			f.Lvl = value
		case bytes.EqualFold(key, []byte("msg")):
			f.Msg = value
		}
	case 4:
		if bytes.EqualFold(key, []byte("time")) {
			f.Time = value
		}
	case 5:
		if bytes.EqualFold(key, []byte("level")) {
			f.Level = value
		}
	case 7:
		if bytes.EqualFold(key, []byte("message")) {
			f.Message = value
		}
	case 8:
		if bytes.EqualFold(key, []byte("severity")) {
			f.Severity = value
		}
	case 9:
		if bytes.EqualFold(key, []byte("timestamp")) {
			f.Timestamp = value
		}
	case 10:
		if bytes.EqualFold(key, []byte("@timestamp")) {
			f.AtTime = value
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at data[i] == '"'.
func skipString(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(data)
}

// skipValue returns the index just past the value starting at data[i].
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return i
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = skipString(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	}
	j := i
	for j < len(data) && data[j] != ',' && data[j] != '}' && data[j] != ']' && data[j] != ' ' && data[j] != '\t' && data[j] != '\n' && data[j] != '\r' {
		j++
	}
	return j
}

// unquoteView is unquote without a copy when raw has no escapes: the string
// shares raw's bytes, which must not change while it is in use (the
// parsed event shares its data's bytes anyway).
func unquoteView(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		b := raw[1 : len(raw)-1]
		return unsafe.String(unsafe.SliceData(b), len(b)), true
	}
	return unquote(raw)
}

// unquote returns the contents of a JSON string value.
func unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}
