package logevent

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
	"unsafe"
)

// unescapeKey is the key whose raw string (quotes included) is raw and
// contents key, unescaped (rare in keys: scanValid calls it only for a key
// with an escape).
func unescapeKey(raw, key []byte) []byte {
	var k string
	if json.Unmarshal(raw, &k) == nil {
		return []byte(k)
	}
	return key
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
