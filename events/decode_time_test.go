package events

import (
	"strings"
	"testing"
)

// TestDecodeTimeField: a time that is not an RFC 3339 string is bad_request
// naming the field, without the time package's layout text.
func TestDecodeTimeField(t *testing.T) {
	for _, body := range []string{
		`{"export":"e","since":"1h"}`,
		`{"export":"e","since":"garbage"}`,
		`{"export":"e","since":12}`,
		`{"export":"e","since":true}`,
		`{"export":"e","since":"2026-13-01T00:00:00Z"}`,
	} {
		var q DeadQuery
		err := Decode([]byte(body), &q)
		if CodeOf(err) != CodeBadRequest {
			t.Fatalf("%s: err = %v, want bad_request", body, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "since: want an RFC 3339 time") || strings.Contains(msg, "2006") || strings.Contains(msg, "UnmarshalJSON") {
			t.Errorf("%s: message %q, want one naming since and RFC 3339 only", body, msg)
		}
	}
	var q DeadQuery
	if err := Decode([]byte(`{"export":"e","since":"2026-12-02T05:00:00Z"}`), &q); err != nil || q.Since == nil {
		t.Fatalf("a good time: %v", err)
	}
}
