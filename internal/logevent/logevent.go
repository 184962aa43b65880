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
		// The usual spellings first, without namedLevel's folding (the
		// constants: s may share the message's bytes).
		switch s {
		case LevelInfo:
			return LevelInfo
		case LevelDebug:
			return LevelDebug
		case LevelWarn:
			return LevelWarn
		case LevelError:
			return LevelError
		case LevelTrace:
			return LevelTrace
		case LevelFatal:
			return LevelFatal
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
		if t, year, ok := parseRFC3339Z(s); ok {
			return t, year >= 1970 && year <= 9999
		}
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

// parseRFC3339Z reads the most common form of an event's time,
// YYYY-MM-DDTHH:MM:SS[.fraction]Z, to what time.Parse(time.RFC3339Nano, s)
// returns (the same fields refused out of range, the fraction cut to
// nanoseconds, the time in UTC) and its year, without time.Date (a third of
// parsing an event's time); ok is false for anything else, which is left to
// time.Parse. FuzzRFC3339Z holds it to time.Parse.
func parseRFC3339Z(s string) (t time.Time, year int, ok bool) {
	if len(s) < len("2006-01-02T15:04:05Z") || s[len(s)-1] != 'Z' ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, 0, false
	}
	ok = true
	num := func(d string) int {
		n := 0
		for i := 0; i < len(d); i++ {
			if d[i] < '0' || d[i] > '9' {
				ok = false
				return 0
			}
			n = n*10 + int(d[i]-'0')
		}
		return n
	}
	year, month, day := num(s[0:4]), num(s[5:7]), num(s[8:10])
	hour, minute, sec := num(s[11:13]), num(s[14:16]), num(s[17:19])
	if !ok || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, 0, false
	}
	nsec := 0
	if frac := s[19 : len(s)-1]; frac != "" {
		if len(frac) < 2 || frac[0] != '.' {
			return time.Time{}, 0, false
		}
		n := num(frac[1:])
		if !ok {
			return time.Time{}, 0, false
		}
		if len(frac) > 10 { // past nanoseconds: cut, as time.Parse does
			n = num(frac[1:10])
		}
		for i := len(frac) - 1; i < 9; i++ {
			n *= 10
		}
		nsec = n
	}
	unix := daysSinceEpoch(year, month, day)*86400 + int64(hour*3600+minute*60+sec)
	return time.Unix(unix, int64(nsec)).UTC(), year, true
}

// daysIn is the number of days of month in year (Gregorian).
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysSinceEpoch is the days from 1970-01-01 to the date (proleptic
// Gregorian; Howard Hinnant's days_from_civil).
func daysSinceEpoch(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12 // March is 0
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
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
