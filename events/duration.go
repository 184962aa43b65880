package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Duration is a time.Duration written on the wire as a Go duration string such
// as "5m", "1h30m" or "500ms".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration without trailing zero units ("5m", not "5m0s").
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &valueError{raw: b, msg: "duration must be a string such as \"5m\""}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &valueError{raw: b, msg: fmt.Sprintf("invalid duration %q (want e.g. \"5m\", \"90s\", \"1h30m\")", truncate(s, 40))}
	}
	if v < 0 {
		return &valueError{raw: b, msg: fmt.Sprintf("duration %q is negative", s)}
	}
	*d = Duration(v)
	return nil
}

// valueError is a field value a custom decoder refused. encoding/json does
// not say which field it was, so Decode finds the path (cache.ttl) itself.
type valueError struct {
	raw []byte // the refused JSON value, as in the body
	msg string
}

func (e *valueError) Error() string { return e.msg }
