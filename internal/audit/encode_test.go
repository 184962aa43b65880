package audit

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
)

// odd are strings encoding/json escapes one way or another.
var odd = []string{
	"", "plain", `quo"te`, `back\slash`, "ctl\x00\x01\x1f", "\b\f\n\r\t", "<html>&", "é ü 日本",
	"bad\xffutf8\xc3", "\u2028\u2029", "\x7f", strings.Repeat("x", 300),
}

// fill sets every field of v (a struct, through a pointer) from rng: a field
// added to events.AuditEvent is filled too, so appendEvent must write it for
// the test to pass.
func fill(t *testing.T, rng *rand.Rand, v reflect.Value) {
	t.Helper()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(odd[rng.IntN(len(odd))])
		case reflect.Bool:
			f.SetBool(rng.IntN(2) == 0)
		case reflect.Int:
			f.SetInt([]int64{0, 1, 2, 999, 1 << 40}[rng.IntN(5)])
		case reflect.Float64:
			f.SetFloat([]float64{0, 1, 0.001, 1234.567, 1e-7, 3e21, 12.5}[rng.IntN(7)])
		case reflect.Slice:
			if n := rng.IntN(3); n > 0 {
				s := reflect.MakeSlice(f.Type(), n, n)
				for j := 0; j < n; j++ {
					s.Index(j).SetString(odd[rng.IntN(len(odd))])
				}
				f.Set(s)
			} else if rng.IntN(2) == 0 {
				f.Set(reflect.MakeSlice(f.Type(), 0, 0))
			}
		case reflect.Struct, reflect.Pointer:
			if f.Type() == reflect.TypeFor[time.Time]() {
				f.Set(reflect.ValueOf(randTime(rng)))
				continue
			}
			if f.Kind() == reflect.Pointer {
				if rng.IntN(3) == 0 {
					continue // nil
				}
				f.Set(reflect.New(f.Type().Elem()))
				if f.Type().Elem() == reflect.TypeFor[time.Time]() {
					f.Elem().Set(reflect.ValueOf(randTime(rng)))
					continue
				}
				fill(t, rng, f.Elem())
				continue
			}
			fill(t, rng, f)
		default:
			t.Fatalf("field %s of %s: kind %s not covered by this test (nor by appendEvent?)", v.Type().Field(i).Name, v.Type(), f.Kind())
		}
	}
}

func randTime(rng *rand.Rand) time.Time {
	t := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9))
	if rng.IntN(2) == 0 {
		return t.UTC().Truncate(time.Duration(rng.IntN(3)) * time.Second)
	}
	return t.In(time.FixedZone("x", 3600*rng.IntN(12)))
}

// appendEvent writes exactly what events.Marshal (encoding/json) writes, for
// events with every field set or empty, and odd strings.
func TestAppendEventIsMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(ev *events.AuditEvent) {
		t.Helper()
		want, err := events.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEvent(nil, ev); !bytes.Equal(got, want) {
			t.Fatalf("appendEvent\n got %s\nwant %s", got, want)
		}
	}
	check(&events.AuditEvent{})
	check(event(events.OpResolve))
	check(&events.AuditEvent{Requester: &events.Requester{}})
	for i := 0; i < 5000; i++ {
		var ev events.AuditEvent
		fill(t, rng, reflect.ValueOf(&ev).Elem())
		check(&ev)
	}
	// Every field set at once.
	full := events.AuditEvent{}
	for {
		fill(t, rng, reflect.ValueOf(&full).Elem())
		if full.Requester != nil && full.Expires != nil && full.Cached && full.Stale && full.Sealed && len(full.Scopes) > 0 &&
			full.Verb != "" && full.ReplyKey != "" && full.Requester.Account != "" && full.Count != 0 && full.Until != nil {
			break
		}
	}
	check(&full)
}

func BenchmarkAppendEvent(b *testing.B) {
	ev := event(events.OpResolve)
	ev.Secret, ev.Version, ev.Cached, ev.Fingerprint = "biodb01", "v1", true, strings.Repeat("ab", 32)
	ev.Instance, ev.RequestID = "Vq3kSx2bQ0pJ7eTqFh9YrM", "6KvHx0qWm3c8ZpN2aRb1sT"
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendEvent(buf[:0], ev)
		}
	})
	b.Run("marshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = events.Marshal(ev)
		}
	})
}
