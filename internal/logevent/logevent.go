// Package logevent turns a raw log message from the logs stream into an event
// ready for a sink: its time, its normalized level and the message to send.
//
// A JSON object (from zerolog, slog, logrus, bunyan, pino and similar) is
// forwarded whole; its time comes from time|timestamp|ts|@timestamp (RFC 3339
// or epoch seconds, milliseconds, microseconds or nanoseconds, as a number or a
// string), its level from level|severity|lvl (names or numeric bunyan/pino
// levels) and its message from msg|message. Anything else is a text line
// stamped with the stream's receive time.
package logevent

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Levels, lowest first; the same names as events.Levels.
const (
	LevelTrace = "trace"
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
	LevelFatal = "fatal"
)

// Event is one parsed log message.
type Event struct {
	// Time is the event's own time, or the stream's receive time when the
	// message carries none (or one that cannot be read).
	Time time.Time
	// Level is one of the Level constants, or "" when the message has none.
	Level string
	// Message is the text to export: the whole JSON object or the text line,
	// always valid UTF-8.
	Message []byte
	// Text is the msg|message field of a JSON event (empty for text lines).
	Text string
	// JSON reports that Message is a JSON object.
	JSON bool
	// Empty reports a message with nothing but white space: there is nothing
	// to export.
	Empty bool
	// Repaired reports that invalid UTF-8 was replaced with U+FFFD.
	Repaired bool
	// TimeFromMessage reports that Time came from the message itself.
	TimeFromMessage bool
}

// fields are the raw values of the keys read from a JSON event. Keys match
// case-insensitively, so "Level" and "LEVEL" count too.
type fields struct {
	Time, Timestamp, TS, AtTime []byte
	Level, Severity, Lvl        []byte
	Msg, Message                []byte
}

// Parse reads data, received at received (the stream's receive time). It never
// fails: what is not a JSON object is a text line.
func Parse(data []byte, received time.Time) Event {
	ev := Event{Time: received}
	if !utf8.Valid(data) {
		data = bytes.ToValidUTF8(data, []byte("\uFFFD"))
		ev.Repaired = true
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		ev.Empty = true
		ev.Message = data
		return ev
	}
	if trimmed[0] == '{' && trimmed[len(trimmed)-1] == '}' {
		var f fields
		if scanValid(trimmed, &f) {
			ev.JSON = true
			ev.Message = trimmed
			for _, raw := range [][]byte{f.Time, f.Timestamp, f.TS, f.AtTime} {
				if t, ok := parseTime(raw); ok {
					ev.Time, ev.TimeFromMessage = t, true
					break
				}
			}
			for _, raw := range [][]byte{f.Level, f.Severity, f.Lvl} {
				if l := parseLevel(raw); l != "" {
					ev.Level = l
					break
				}
			}
			for _, raw := range [][]byte{f.Msg, f.Message} {
				// Like Message, Text shares data's bytes when it has no escapes.
				if s, ok := unquoteView(raw); ok {
					ev.Text = s
					break
				}
			}
			return ev
		}
	}
	ev.Message = bytes.TrimRight(data, "\r\n")
	return ev
}

// Rank orders levels: 0 for trace up to 5 for fatal; -1 for "" or unknown.
func Rank(level string) int {
	switch level {
	case LevelTrace:
		return 0
	case LevelDebug:
		return 1
	case LevelInfo:
		return 2
	case LevelWarn:
		return 3
	case LevelError:
		return 4
	case LevelFatal:
		return 5
	}
	return -1
}

// Below reports whether an event of level falls below min. An event without a
// level is never below: what cannot be classified is exported.
func Below(level, min string) bool {
	if min == "" || level == "" {
		return false
	}
	return Rank(level) < Rank(min)
}

// parseLevel normalizes a level: a name (any case, with synonyms such as
// warning, err, critical, panic, notice) or a number (bunyan/pino 10..60).
func parseLevel(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	if raw[0] == '"' {
		s, ok := unquoteView(raw)
		if !ok {
			return ""
		}
		// A name first: most levels are names, and a failed ParseFloat
		// allocates its error. ("inf" parses as a number: +Inf.)
		if l := namedLevel(s); l != "" && !strings.EqualFold(s, "inf") {
			return l
		}
		if n, err := strconv.ParseFloat(s, 64); err == nil {
			return numericLevel(n)
		}
		return ""
	}
	n, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return ""
	}
	return numericLevel(n)
}

// numericLevel maps bunyan/pino numbers: 10 trace, 20 debug, 30 info, 40 warn,
// 50 error, 60 fatal; in between rounds down.
func numericLevel(n float64) string {
	switch {
	case n >= 60:
		return LevelFatal
	case n >= 50:
		return LevelError
	case n >= 40:
		return LevelWarn
	case n >= 30:
		return LevelInfo
	case n >= 20:
		return LevelDebug
	case n >= 10:
		return LevelTrace
	}
	return ""
}

func namedLevel(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	// slog writes levels between the named ones as "INFO+2" or "DEBUG-4".
	if i := strings.IndexAny(s, "+-"); i > 0 {
		s = s[:i]
	}
	switch s {
	case "trace", "trc", "verbose", "finest", "finer":
		return LevelTrace
	case "debug", "dbg", "fine", "default":
		return LevelDebug
	case "info", "inf", "information", "informational", "notice":
		return LevelInfo
	case "warn", "wrn", "warning":
		return LevelWarn
	case "error", "err", "erro", "eror":
		return LevelError
	case "fatal", "ftl", "critical", "crit", "alert", "emergency", "emerg", "panic", "dpanic":
		return LevelFatal
	}
	return ""
}

// Epoch magnitudes: below 1e11 a number is seconds (up to year 5138), below
// 1e14 milliseconds, below 1e17 microseconds, else nanoseconds.
func parseTime(raw []byte) (time.Time, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, false
	}
	if raw[0] == '"' {
		s, ok := unquoteView(raw)
		if !ok {
			return time.Time{}, false
		}
		s = strings.TrimSpace(s)
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t, validYear(t)
		}
		// Some loggers write a space instead of the T.
		if len(s) > 10 && s[10] == ' ' {
			if t, err := time.Parse(time.RFC3339Nano, s[:10]+"T"+s[11:]); err == nil {
				return t, validYear(t)
			}
		}
		if n, err := strconv.ParseFloat(s, 64); err == nil {
			return epoch(s, n)
		}
		return time.Time{}, false
	}
	n, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return time.Time{}, false
	}
	return epoch(string(raw), n)
}

func epoch(s string, n float64) (time.Time, bool) {
	if n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return time.Time{}, false
	}
	// Integers are parsed exactly: float64 loses nanoseconds.
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		switch {
		case i < 1e11:
			return time.Unix(i, 0), true
		case i < 1e14:
			return time.UnixMilli(i), true
		case i < 1e17:
			return time.UnixMicro(i), true
		default:
			return time.Unix(0, i), true
		}
	}
	var t time.Time
	switch {
	case n < 1e11:
		sec, frac := math.Modf(n)
		t = time.Unix(int64(sec), int64(math.Round(frac*1e9)))
	case n < 1e14:
		t = time.UnixMicro(int64(math.Round(n * 1e3)))
	case n < 1e17:
		t = time.Unix(0, int64(math.Round(n*1e3)))
	case n < 9e18:
		t = time.Unix(0, int64(n))
	default:
		return time.Time{}, false
	}
	return t, true
}

func validYear(t time.Time) bool {
	y := t.Year()
	return y >= 1970 && y <= 9999
}

// TruncateMarker ends a message cut to fit a sink's size limit.
const TruncateMarker = "…[truncated]"

// Truncate cuts msg to at most max bytes, on a UTF-8 boundary, ending with
// TruncateMarker. A message already within max is returned as is.
func Truncate(msg []byte, max int) []byte {
	if len(msg) <= max {
		return msg
	}
	keep := max - len(TruncateMarker)
	if keep < 0 {
		keep = 0
	}
	for keep > 0 && !utf8.RuneStart(msg[keep]) {
		keep--
	}
	out := make([]byte, 0, keep+len(TruncateMarker))
	out = append(out, msg[:keep]...)
	return append(out, TruncateMarker...)
}
