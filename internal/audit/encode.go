package audit

import (
	"math"
	"strconv"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/jsonenc"
)

// appendEvent appends ev's JSON to b: the bytes events.Marshal makes (field
// order, omitempty, string escaping without HTML escapes, times as
// RFC 3339 with nanoseconds, numbers as encoding/json writes them), written
// field by field instead of by reflection. TestAppendEventIsMarshal holds the
// two equal for every field of events.AuditEvent.
func appendEvent(b []byte, ev *events.AuditEvent) []byte {
	b = append(b, `{"time":`...)
	b = appendTime(b, ev.Time)
	b = append(b, `,"op":`...)
	b = jsonenc.AppendString(b, ev.Op)
	b = appendField(b, "verb", ev.Verb)
	b = appendField(b, "group", ev.Group)
	b = appendField(b, "connection", ev.Connection)
	b = appendField(b, "secret", ev.Secret)
	b = appendField(b, "version", ev.Version)
	if ev.Cached {
		b = append(b, `,"cached":true`...)
	}
	if ev.Stale {
		b = append(b, `,"stale":true`...)
	}
	b = append(b, `,"outcome":`...)
	b = jsonenc.AppendString(b, ev.Outcome)
	if ev.Count != 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(ev.Count), 10)
	}
	if ev.Until != nil {
		b = append(b, `,"until":`...)
		b = appendTime(b, *ev.Until)
	}
	b = append(b, `,"latency_ms":`...)
	b = appendFloat(b, ev.LatencyMS)
	b = appendField(b, "instance", ev.Instance)
	b = append(b, `,"request_id":`...)
	b = jsonenc.AppendString(b, ev.RequestID)
	if rq := ev.Requester; rq != nil {
		b = append(b, `,"requester":{`...)
		n := len(b)
		b = appendField(b, "account", rq.Account)
		b = appendField(b, "user", rq.User)
		b = appendField(b, "name", rq.Name)
		b = appendField(b, "host", rq.Host)
		b = appendField(b, "server", rq.Server)
		if len(b) > n {
			b = append(b[:n], b[n+1:]...) // the first field's comma
		}
		b = append(b, '}')
	}
	b = appendField(b, "role", ev.Role)
	if len(ev.Scopes) > 0 {
		b = append(b, `,"scopes":[`...)
		for i, s := range ev.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonenc.AppendString(b, s)
		}
		b = append(b, ']')
	}
	if ev.Expires != nil {
		b = append(b, `,"expires":`...)
		b = appendTime(b, *ev.Expires)
	}
	b = appendField(b, "fingerprint", ev.Fingerprint)
	if ev.Sealed {
		b = append(b, `,"sealed":true`...)
	}
	b = appendField(b, "reply_key", ev.ReplyKey)
	return append(b, '}')
}

// appendField appends ,"name":"v" unless v is empty (omitempty).
func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return jsonenc.AppendString(b, v)
}

// appendTime appends t as time.Time's MarshalJSON does.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendFloat appends f as encoding/json does (f is finite: a latency).
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
