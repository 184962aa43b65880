package logevent

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var recv = time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC)

func TestParse(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 30, 15, 123456789, time.UTC)
	tests := []struct {
		name     string
		in       string
		json     bool
		time     time.Time
		level    string
		text     string
		empty    bool
		repaired bool
		msg      string
	}{
		{name: "zerolog", in: `{"level":"info","time":"2026-11-23T10:30:15.123456789Z","message":"hello"}`, json: true, time: at, level: "info", text: "hello"},
		{name: "slog", in: `{"time":"2026-11-23T12:30:15.123456789+02:00","level":"WARN","msg":"disk"}`, json: true, time: at, level: "warn", text: "disk"},
		{name: "slog between levels", in: `{"level":"INFO+2","msg":"x"}`, json: true, time: recv, level: "info", text: "x"},
		{name: "logrus warning", in: `{"level":"warning","msg":"x","time":"2026-11-23T10:30:15.123456789Z"}`, json: true, time: at, level: "warn", text: "x"},
		{name: "bunyan numeric", in: `{"level":50,"time":"2026-11-23T10:30:15.123456789Z","msg":"boom"}`, json: true, time: at, level: "error", text: "boom"},
		{name: "pino numeric epoch ms", in: `{"level":30,"time":1795429815123,"msg":"m"}`, json: true, time: time.UnixMilli(1795429815123), level: "info", text: "m"},
		{name: "epoch seconds", in: `{"ts":1795429815}`, json: true, time: time.Unix(1795429815, 0)},
		{name: "epoch seconds float", in: `{"ts":1795429815.5}`, json: true, time: time.Unix(1795429815, 5e8)},
		{name: "epoch ns", in: `{"timestamp":1795429815123456789}`, json: true, time: time.Unix(0, 1795429815123456789)},
		{name: "epoch us", in: `{"timestamp":1795429815123456}`, json: true, time: time.UnixMicro(1795429815123456)},
		{name: "epoch ms string", in: `{"@timestamp":"1795429815123"}`, json: true, time: time.UnixMilli(1795429815123)},
		{name: "at timestamp rfc3339", in: `{"@timestamp":"2026-11-23T10:30:15.123456789Z","severity":"ERROR"}`, json: true, time: at, level: "error"},
		{name: "space separator", in: `{"time":"2026-11-23 10:30:15.123456789Z"}`, json: true, time: at},
		{name: "numeric string level", in: `{"lvl":"40"}`, json: true, time: recv, level: "warn"},
		{name: "gcp severity critical", in: `{"severity":"CRITICAL"}`, json: true, time: recv, level: "fatal"},
		{name: "unknown level", in: `{"level":"chatty","msg":"x"}`, json: true, time: recv, text: "x"},
		{name: "bad time falls back", in: `{"time":"yesterday","level":"debug"}`, json: true, time: recv, level: "debug"},
		{name: "negative epoch falls back", in: `{"time":-5}`, json: true, time: recv},
		{name: "null time", in: `{"time":null,"ts":1795429815}`, json: true, time: time.Unix(1795429815, 0)},
		{name: "non-string msg", in: `{"msg":{"a":1}}`, json: true, time: recv},
		{name: "text line", in: "plain text line\n", time: recv, msg: "plain text line"},
		{name: "json array is text", in: `[1,2,3]`, time: recv, msg: `[1,2,3]`},
		{name: "broken json is text", in: `{"level":"info"`, time: recv, msg: `{"level":"info"`},
		{name: "empty", in: "", time: recv, empty: true},
		{name: "blank", in: " \n\t", time: recv, empty: true},
		{name: "invalid utf8 text", in: "bad \xff\xfe byte", time: recv, repaired: true, msg: "bad \uFFFD byte"},
		{name: "invalid utf8 json", in: "{\"msg\":\"a\xffb\",\"level\":\"info\"}", json: true, time: recv, level: "info", repaired: true, text: "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := Parse([]byte(tt.in), recv)
			if ev.JSON != tt.json || ev.Empty != tt.empty || ev.Repaired != tt.repaired {
				t.Fatalf("json/empty/repaired = %v/%v/%v, want %v/%v/%v", ev.JSON, ev.Empty, ev.Repaired, tt.json, tt.empty, tt.repaired)
			}
			if !ev.Time.Equal(tt.time) {
				t.Errorf("time = %v, want %v", ev.Time, tt.time)
			}
			if ev.TimeFromMessage == ev.Time.Equal(recv) {
				t.Errorf("TimeFromMessage = %v for time %v", ev.TimeFromMessage, ev.Time)
			}
			if ev.Level != tt.level {
				t.Errorf("level = %q, want %q", ev.Level, tt.level)
			}
			if ev.Text != tt.text {
				t.Errorf("text = %q, want %q", ev.Text, tt.text)
			}
			if tt.msg != "" && string(ev.Message) != tt.msg {
				t.Errorf("message = %q, want %q", ev.Message, tt.msg)
			}
			if tt.json && !strings.HasPrefix(string(ev.Message), "{") {
				t.Errorf("json event not forwarded whole: %q", ev.Message)
			}
			if !utf8.Valid(ev.Message) {
				t.Errorf("message is not valid UTF-8")
			}
		})
	}
}

func TestBelow(t *testing.T) {
	tests := []struct {
		level, min string
		below      bool
	}{
		{"debug", "info", true}, {"info", "info", false}, {"error", "warn", false},
		{"trace", "debug", true}, {"", "fatal", false}, {"fatal", "", false}, {"warn", "error", true},
	}
	for _, tt := range tests {
		if got := Below(tt.level, tt.min); got != tt.below {
			t.Errorf("Below(%q,%q) = %v, want %v", tt.level, tt.min, got, tt.below)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in  string
		max int
	}{
		{strings.Repeat("a", 100), 50},
		{strings.Repeat("é", 100), 51}, // 2-byte runes: the cut must not split one
		{strings.Repeat("€", 100), 40},
		{"short", 50},
		{strings.Repeat("x", 30), 5}, // smaller than the marker
	}
	for _, tt := range tests {
		out := Truncate([]byte(tt.in), tt.max)
		if len(tt.in) <= tt.max {
			if string(out) != tt.in {
				t.Errorf("within limit changed: %q", out)
			}
			continue
		}
		if !utf8.Valid(out) {
			t.Errorf("Truncate(%d) produced invalid UTF-8", tt.max)
		}
		if !strings.HasSuffix(string(out), TruncateMarker) {
			t.Errorf("no marker: %q", out)
		}
		if len(out) > tt.max && tt.max >= len(TruncateMarker) {
			t.Errorf("len %d > max %d", len(out), tt.max)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"level":"info","time":"2026-11-23T10:30:15Z","msg":"x"}`, `{"ts":1795429815.5}`,
		`{"level":30,"time":1795429815123}`, "text", "", "\xff", `{"time":"1e400"}`, `{"time":9e30}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev := Parse(data, recv)
		if !utf8.Valid(ev.Message) {
			t.Fatalf("invalid UTF-8 out")
		}
		if ev.Level != "" && Rank(ev.Level) < 0 {
			t.Fatalf("unknown level %q", ev.Level)
		}
		if ev.Empty && len(strings.TrimSpace(string(ev.Message))) != 0 {
			t.Fatalf("empty with content")
		}
		if ev.Time.IsZero() {
			t.Fatalf("zero time")
		}
		tr := Truncate(ev.Message, 64)
		if !utf8.Valid(tr) {
			t.Fatalf("truncate broke UTF-8")
		}
	})
}

// reference is what encoding/json makes of the keys scanValid reads.
type reference struct {
	Time      json.RawMessage `json:"time"`
	Timestamp json.RawMessage `json:"timestamp"`
	TS        json.RawMessage `json:"ts"`
	AtTime    json.RawMessage `json:"@timestamp"`
	Level     json.RawMessage `json:"level"`
	Severity  json.RawMessage `json:"severity"`
	Lvl       json.RawMessage `json:"lvl"`
	Msg       json.RawMessage `json:"msg"`
	Message   json.RawMessage `json:"message"`
}

// FuzzScanMatchesEncodingJSON: the hand-written scanner (scanValid) reads the same raw
// values as encoding/json for every valid JSON object.
func FuzzScanMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"level":"info","time":"2026-11-23T10:30:15Z","msg":"x"}`, `{"a":{"msg":"inner"},"msg":"outer"}`,
		`{"LEVEL":30, "Msg" : "a\"b", "ts":[1,2,{"x":"}"}]}`, `{"msg":1,"msg":"last"}`, `{"\u006cevel":"warn"}`, `{"meſsage":"fold"}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = bytes.TrimSpace(data)
		if !json.Valid(data) || len(data) == 0 || data[0] != '{' || !utf8.Valid(data) {
			return
		}
		var want reference
		if json.Unmarshal(data, &want) != nil {
			return
		}
		var got fields
		if !scanValid(data, &got) {
			t.Fatalf("scanValid refused valid JSON")
		}
		pairs := [][2][]byte{{want.Time, got.Time}, {want.Timestamp, got.Timestamp}, {want.TS, got.TS}, {want.AtTime, got.AtTime},
			{want.Level, got.Level}, {want.Severity, got.Severity}, {want.Lvl, got.Lvl}, {want.Msg, got.Msg}, {want.Message, got.Message}}
		for i, p := range pairs {
			if !bytes.Equal(p[0], p[1]) {
				t.Fatalf("field %d: encoding/json %q, scanner %q", i, p[0], p[1])
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	msg := []byte(`{"level":"info","time":"2026-11-24T02:30:00.123456Z","msg":"event","id":12345,"pad":"ppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = Parse(msg, recv)
	}
}

var rfc3339Seeds = []string{"2026-11-24T02:30:00.123456Z", "2026-11-24T02:30:00Z", "1970-01-01T00:00:00Z", "0000-01-01T00:00:00Z",
	"0000-03-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "2024-02-29T12:00:00Z", "2026-02-29T12:00:00Z", "2000-02-29T00:00:00Z",
	"1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z",
	"2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:60Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.1Z",
	"2026-01-01T00:00:00.1234567891234Z", "2026-01-01T00:00:00,5Z", "2026-01-01t00:00:00Z", "2026-01-01T00:00:00z",
	"2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.5+01:00", "2026-01-01T00:00:00.5xZ", "+026-01-01T00:00:00Z",
	"2026-1-01T00:00:00Z", "2026-01-01T00:00:00", "1969-12-31T23:59:59.5Z"}

// checkRFC3339Z: what parseRFC3339Z reads, time.Parse reads the same (the
// same instant and representation, UTC) and its year.
func checkRFC3339Z(t *testing.T, s string) {
	t.Helper()
	got, year, ok := parseRFC3339Z(s)
	if !ok {
		return
	}
	want, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%q: parseRFC3339Z %v, time.Parse %v", s, got, err)
	}
	if got != want || year != want.Year() {
		t.Fatalf("%q: parseRFC3339Z %v (year %d), time.Parse %v", s, got, year, want)
	}
}

// TestRFC3339ZMatchesTimeParse: the seeds, and every day of 1968-2101 at
// times with each length of fraction, read as time.Parse reads them.
func TestRFC3339ZMatchesTimeParse(t *testing.T) {
	accepted := 0
	for _, s := range rfc3339Seeds {
		checkRFC3339Z(t, s)
		if _, _, ok := parseRFC3339Z(s); ok {
			accepted++
		}
	}
	if accepted < 10 {
		t.Fatalf("only %d seeds take the fast path", accepted)
	}
	for d := time.Date(1968, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() < 2102; d = d.AddDate(0, 0, 1) {
		for i, layout := range []string{"2006-01-02T15:04:05Z", "2006-01-02T15:04:05.0Z", "2006-01-02T15:04:05.000Z",
			"2006-01-02T15:04:05.000000Z", "2006-01-02T15:04:05.000000000Z"} {
			s := d.Add(time.Duration(i)*time.Hour + 1234567891*time.Nanosecond).Format(layout)
			if _, _, ok := parseRFC3339Z(s); !ok {
				t.Fatalf("%q: not on the fast path", s)
			}
			checkRFC3339Z(t, s)
		}
	}
}

func FuzzRFC3339Z(f *testing.F) {
	for _, s := range rfc3339Seeds {
		f.Add(s)
	}
	f.Fuzz(checkRFC3339Z)
}
