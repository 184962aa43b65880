package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MaxRequestSize is the largest request body a worker accepts.
const MaxRequestSize = 64 << 10

// Decode reads a request body strictly into v: at most MaxRequestSize bytes,
// one JSON object, no unknown fields, no name given twice or in another case,
// nothing after it. An empty body reads as {}. Errors are bad_request or
// too_large.
func Decode(data []byte, v any) error {
	if len(data) > MaxRequestSize {
		return Errorf(CodeTooLarge, "request body is %d bytes, over the %d-byte limit", len(data), MaxRequestSize)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	if data[0] != '{' {
		return Errorf(CodeBadRequest, "request body must be a JSON object")
	}
	// Unmarshal checks the syntax (one value, nothing after it) and the
	// types; checkStrict the names, which Unmarshal matches loosely.
	if err := json.Unmarshal(data, v); err != nil {
		var ve *valueError
		if errors.As(err, &ve) {
			if path := findValue(data, ve.raw); path != "" {
				return Errorf(CodeBadRequest, "invalid request body: %s: %s", path, ve.msg)
			}
		}
		if msg, ok := timeProblem(data, reflect.TypeOf(v), err); ok {
			return Errorf(CodeBadRequest, "invalid request body: %s", msg)
		}
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se) && strings.HasSuffix(se.Error(), "after top-level value"):
			return Errorf(CodeBadRequest, "invalid request body: data after the JSON object")
		case errors.As(err, &se) && se.Error() == "unexpected end of JSON input":
			return Errorf(CodeBadRequest, "invalid request body: truncated JSON")
		}
		return Errorf(CodeBadRequest, "invalid request body: %s", jsonProblem(err))
	}
	return checkStrict(data, reflect.TypeOf(v))
}

// timeProblem describes a time field that time.Time refused (a string that is
// not RFC 3339, or not a string), naming the field, instead of the time
// package's own text ("parsing time ... as \"2006-01-02T15:04:05Z07:00\"",
// "Time.UnmarshalJSON: input is not a JSON string").
func timeProblem(data []byte, t reflect.Type, err error) (string, bool) {
	var pe *time.ParseError
	if !errors.As(err, &pe) && !strings.Contains(err.Error(), "Time.UnmarshalJSON") {
		return "", false
	}
	field := "a time field"
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var obj map[string]json.RawMessage
	if t != nil && t.Kind() == reflect.Struct && json.Unmarshal(data, &obj) == nil {
		names := make([]string, 0, len(obj))
		for k := range obj {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			ft, ok := fieldsOf(t)[k]
			if !ok {
				continue
			}
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft != timeType {
				continue
			}
			var ts time.Time
			if json.Unmarshal(obj[k], &ts) != nil {
				field = k
				break
			}
		}
	}
	return field + `: want an RFC 3339 time such as "2026-12-02T05:00:00Z"`, true
}

var timeType = reflect.TypeFor[time.Time]()

// jsonProblem describes a decoding error without echoing large parts of the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		f := te.Field
		if f == "" {
			f = "body"
		}
		return f + ": expected " + te.Type.String() + ", got JSON " + te.Value
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return truncate(msg, 200)
}

// findValue returns the dotted path (cache.ttl, items[2].ttl) of the first
// value in the JSON document data equal to raw, or "".
func findValue(data, raw []byte) string {
	want := bytes.TrimSpace(raw)
	var walk func(path string, v json.RawMessage) string
	walk = func(path string, v json.RawMessage) string {
		v = bytes.TrimSpace(v)
		if bytes.Equal(v, want) {
			return path
		}
		var obj map[string]json.RawMessage
		if len(v) > 0 && v[0] == '{' && json.Unmarshal(v, &obj) == nil {
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if path != "" {
					p = path + "." + k
				}
				if got := walk(p, obj[k]); got != "" {
					return got
				}
			}
		}
		var arr []json.RawMessage
		if len(v) > 0 && v[0] == '[' && json.Unmarshal(v, &arr) == nil {
			for i, el := range arr {
				if got := walk(path+"["+strconv.Itoa(i)+"]", el); got != "" {
					return got
				}
			}
		}
		return ""
	}
	return walk("", data)
}
