package events

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
)

// checkStrict enforces what encoding/json lets through: a name repeated in
// one object, a name unknown to the struct it is decoded into, and a field
// name that matches a Go field only case-insensitively. data has already
// been decoded into a value of type t by json.Unmarshal, so it is one valid
// JSON value: the walk reads its bytes directly (no tokenizer, nothing
// allocated unless a name carries an escape or an error is built).
func checkStrict(data []byte, t reflect.Type) error {
	w := strictWalk{data: data}
	w.value(t)
	return w.err
}

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	fieldNames      sync.Map // reflect.Type → map[string]reflect.Type
)

// fieldsOf maps the JSON names of a struct's fields to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldNames.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if et := f.Type; f.Anonymous && name == "" {
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for k, v := range fieldsOf(et) {
					if _, ok := m[k]; !ok {
						m[k] = v
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	fieldNames.Store(t, m)
	return m
}

// opaque types decode themselves (Duration, json.RawMessage): the walk
// checks only their duplicate names.
var opaqueTypes sync.Map // reflect.Type → bool

func opaque(t reflect.Type) bool {
	if v, ok := opaqueTypes.Load(t); ok {
		return v.(bool)
	}
	o := t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType)
	opaqueTypes.Store(t, o)
	return o
}

// strictWalk walks one valid JSON value in data from pos. path holds the
// names leading to the value being walked, joined only for an error.
type strictWalk struct {
	data []byte
	pos  int
	path [][]byte
	err  error
}

func (w *strictWalk) skipSpace() {
	for w.pos < len(w.data) {
		switch w.data[w.pos] {
		case ' ', '\t', '\n', '\r':
			w.pos++
		default:
			return
		}
	}
}

// fail records a bad_request naming the current path, plus key when not "".
func (w *strictWalk) fail(key []byte, format string) {
	field := string(bytes.Join(append(w.path[:len(w.path):len(w.path)], key), []byte(".")))
	field = strings.ReplaceAll(field, ".[]", "[]")
	w.err = Errorf(CodeBadRequest, format, truncate(field, 100))
}

var arrayPath = []byte("[]")

// value walks one value, checking objects against t (nil: any value).
func (w *strictWalk) value(t reflect.Type) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && opaque(t) {
		t = nil
	}
	w.skipSpace()
	if w.pos >= len(w.data) {
		w.err = Errorf(CodeBadRequest, "invalid request body: truncated JSON")
		return
	}
	switch w.data[w.pos] {
	case '{':
		w.object(t)
	case '[':
		w.pos++
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		w.path = append(w.path, arrayPath)
		for w.err == nil {
			w.skipSpace()
			if w.pos < len(w.data) && w.data[w.pos] == ']' {
				w.pos++
				break
			}
			w.value(elem)
			w.skipSpace()
			if w.pos < len(w.data) && w.data[w.pos] == ',' {
				w.pos++
			}
		}
		w.path = w.path[:len(w.path)-1]
	case '"':
		w.str()
	default:
		// A number or a literal: up to the next delimiter.
		for w.pos < len(w.data) {
			switch w.data[w.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			w.pos++
		}
	}
}

// str skips a string at pos, returning it quoted and whether it holds an
// escape.
func (w *strictWalk) str() (quoted []byte, escaped bool) {
	start := w.pos
	w.pos++ // the opening quote
	for w.pos < len(w.data) {
		switch w.data[w.pos] {
		case '\\':
			escaped = true
			w.pos += 2
			continue
		case '"':
			w.pos++
			return w.data[start:w.pos], escaped
		}
		w.pos++
	}
	w.err = Errorf(CodeBadRequest, "invalid request body: truncated JSON")
	return nil, false
}

// smallObject is how many names an object holds before its duplicate check
// uses a map rather than a scan of the names before.
const smallObject = 16

func (w *strictWalk) object(t reflect.Type) {
	w.pos++ // {
	var fields map[string]reflect.Type
	var elem reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		fields = fieldsOf(t)
	} else if t != nil && t.Kind() == reflect.Map {
		elem = t.Elem()
	}
	var small [smallObject][]byte
	names := small[:0]
	var seen map[string]bool
	for w.err == nil {
		w.skipSpace()
		if w.pos >= len(w.data) {
			w.err = Errorf(CodeBadRequest, "invalid request body: truncated JSON")
			return
		}
		if w.data[w.pos] == '}' {
			w.pos++
			return
		}
		if w.data[w.pos] == ',' {
			w.pos++
			continue
		}
		quoted, escaped := w.str()
		if w.err != nil {
			return
		}
		key := quoted[1 : len(quoted)-1]
		if escaped {
			var s string
			if json.Unmarshal(quoted, &s) != nil {
				w.err = Errorf(CodeBadRequest, "invalid request body: malformed name")
				return
			}
			key = []byte(s)
		}
		dup := false
		if seen == nil {
			for _, n := range names {
				if bytes.Equal(n, key) {
					dup = true
					break
				}
			}
			if !dup {
				if len(names) < smallObject {
					names = append(names, key)
				} else {
					seen = make(map[string]bool, 2*smallObject)
					for _, n := range names {
						seen[string(n)] = true
					}
					seen[string(key)] = true
				}
			}
		} else {
			dup = seen[string(key)]
			seen[string(key)] = true
		}
		if dup {
			w.fail(key, "invalid request body: %s: given twice")
			return
		}
		vt := elem
		if fields != nil {
			ft, ok := fields[string(key)]
			if !ok {
				w.fail(key, "invalid request body: unknown field %q (names are case-sensitive)")
				return
			}
			vt = ft
		}
		w.skipSpace()
		w.pos++ // :
		w.path = append(w.path, key)
		w.value(vt)
		w.path = w.path[:len(w.path)-1]
	}
}
