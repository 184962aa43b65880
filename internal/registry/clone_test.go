package registry

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// copyConnection gives what the round trip through the connection's
// encoding gives (events.Marshal, json.Unmarshal: what the view held
// before), for connections with every field of the type filled at random
// (a field added to the type is filled too, and fails this until the copy
// handles it), and shares no slice or block with the original; when it
// declines (ok false), the caller takes the round trip.
func TestCopyConnectionIsTheRoundTrip(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	copied := 0
	const n = 20000
	for i := 0; i < n; i++ {
		var c events.Connection
		fillValue(t, rnd, reflect.ValueOf(&c).Elem(), i%4 == 0)
		var want events.Connection
		pt, err := events.Marshal(c)
		if err == nil {
			err = json.Unmarshal(pt, &want)
		}
		got, ok := copyConnection(c)
		if !ok {
			continue
		}
		copied++
		if err != nil {
			t.Fatalf("copyConnection copied %#v, whose round trip fails: %v", c, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("copyConnection(%#v)\n= %#v\nthe round trip gives %#v", c, got, want)
		}
		checkNoSharing(t, reflect.ValueOf(c), reflect.ValueOf(got), "connection")
	}
	// The odd values (invalid UTF-8, negative durations, bad keys) are
	// drawn rarely: most connections are copied.
	if copied < n/2 {
		t.Errorf("copyConnection copied %d of %d connections", copied, n)
	}
}

// cloneConnection, through copyConnection, is still a deep copy equal to
// the round trip (the request's connection, not normalized yet).
func TestCloneConnectionIsTheRoundTrip(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		var c events.Connection
		fillValue(t, rnd, reflect.ValueOf(&c).Elem(), i%4 == 0)
		var want events.Connection
		b, werr := json.Marshal(c)
		if werr == nil {
			werr = json.Unmarshal(b, &want)
		}
		got, err := cloneConnection(c)
		if (err == nil) != (werr == nil) {
			t.Fatalf("cloneConnection(%#v): %v, the round trip: %v", c, err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("cloneConnection(%#v)\n= %#v\nthe round trip gives %#v", c, got, want)
		}
	}
}

// odd strings: encoded with escapes, HTML characters, line separators, and
// (drawn only when odd is set) invalid UTF-8.
var sampleStrings = []string{"", "x", "builtin", "*", "bio", "c0000001", "é ü", "<a&b>", "line\u2028sep", "tab\tquote\"back\\", "\x00\x1f", "[redacted]"}

// fillValue sets v (and everything under it) at random; odd allows the
// values a round trip changes or refuses.
func fillValue(t *testing.T, rnd *rand.Rand, v reflect.Value, odd bool) {
	t.Helper()
	switch {
	case v.Type() == reflect.TypeOf(json.RawMessage(nil)):
		keys := []string{"", `{"type":"service_account","k":"v"}`, " { \"a\" : [1, 2] ,\n \"b\":\"<&>\" } ", `"str"`}
		if odd {
			keys = append(keys, "{", "  ", `{"a":1} x`)
		}
		if s := keys[rnd.IntN(len(keys))]; s != "" || rnd.IntN(2) == 0 {
			v.SetBytes([]byte(s))
		} else if rnd.IntN(2) == 0 {
			v.SetBytes([]byte{})
		}
		return
	case v.Type() == reflect.TypeOf(events.Duration(0)):
		d := rnd.Int64N(1 << 40)
		switch rnd.IntN(4) {
		case 0:
			d = 0
		case 1:
			d = int64(rnd.IntN(100)) * int64(1e9) * 60
		}
		if odd && rnd.IntN(8) == 0 {
			d = -d - 1
		}
		v.SetInt(d)
		return
	}
	switch v.Kind() {
	case reflect.String:
		s := sampleStrings[rnd.IntN(len(sampleStrings))]
		if odd && rnd.IntN(16) == 0 {
			s = "bad\xff\xfe"
		}
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(rnd.IntN(2) == 0)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(rnd.Int64N(20000) - 100)
	case reflect.Slice:
		switch rnd.IntN(4) {
		case 0: // nil
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, rnd.IntN(3)))
		default:
			n := 1 + rnd.IntN(3)
			s := reflect.MakeSlice(v.Type(), n, n)
			for i := 0; i < n; i++ {
				fillValue(t, rnd, s.Index(i), odd)
			}
			v.Set(s)
		}
	case reflect.Pointer:
		if rnd.IntN(3) == 0 {
			return
		}
		p := reflect.New(v.Type().Elem())
		fillValue(t, rnd, p.Elem(), odd)
		v.Set(p)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fillValue(t, rnd, v.Field(i), odd)
		}
	default:
		t.Fatalf("fillValue: a %s field (%s): teach this test and copyConnection about it", v.Kind(), v.Type())
	}
}

// checkNoSharing fails when got shares a slice's array or a block with orig.
func checkNoSharing(t *testing.T, orig, got reflect.Value, path string) {
	t.Helper()
	switch orig.Kind() {
	case reflect.Slice:
		if orig.Len() > 0 && got.Len() > 0 && orig.Pointer() == got.Pointer() {
			t.Fatalf("%s: the copy shares the original's array", path)
		}
		if orig.Type().Elem().Kind() != reflect.String && orig.Type().Elem().Kind() != reflect.Uint8 {
			for i := 0; i < min(orig.Len(), got.Len()); i++ {
				checkNoSharing(t, orig.Index(i), got.Index(i), path)
			}
		}
	case reflect.Pointer:
		if !orig.IsNil() && !got.IsNil() {
			if orig.Pointer() == got.Pointer() {
				t.Fatalf("%s: the copy shares the original's block", path)
			}
			checkNoSharing(t, orig.Elem(), got.Elem(), path)
		}
	case reflect.Struct:
		for i := 0; i < orig.NumField(); i++ {
			checkNoSharing(t, orig.Field(i), got.Field(i), path+"."+orig.Type().Field(i).Name)
		}
	}
}
