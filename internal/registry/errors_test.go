package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestTranslateKeepsKVTextOutOfReplies: whatever the KV error says (here a
// marker standing for a server address, a stream name or an API error), the
// wire message is built from the operation and the code; the log's Detail
// keeps the cause.
func TestTranslateKeepsKVTextOutOfReplies(t *testing.T) {
	const marker = "MARKER-kv-91c2"
	tests := []struct {
		err  error
		code events.Code
	}{
		{fmt.Errorf("%s: %w", marker, context.DeadlineExceeded), events.CodeTimeout},
		{fmt.Errorf("%s: %w", marker, jetstream.ErrKeyNotFound), events.CodeNotFound},
		{fmt.Errorf("%s: %w", marker, jetstream.ErrKeyDeleted), events.CodeNotFound},
		{fmt.Errorf("%s: %w", marker, nats.ErrConnectionClosed), events.CodeUnavailable},
		{fmt.Errorf("%s: %w", marker, jetstream.ErrKeyExists), events.CodeUnavailable},
		{errors.New("nats: " + marker), events.CodeUnavailable},
	}
	for _, tt := range tests {
		err := translate(`storing connection "db"`, tt.err)
		w := events.AsWire(fmt.Errorf("outer: %w", err))
		if w.Code != tt.code {
			t.Errorf("%v: code %s, want %s", tt.err, w.Code, tt.code)
		}
		if strings.Contains(w.Message, marker) || !strings.HasPrefix(w.Message, `outer: storing connection "db": `) {
			t.Errorf("%v: wire message %q", tt.err, w.Message)
		}
		if !strings.Contains(events.Detail(err), marker) {
			t.Errorf("%v: Detail %q lost the cause", tt.err, events.Detail(err))
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("%v: the cause is not reachable with errors.Is", tt.err)
		}
	}
	if translate("x", nil) != nil {
		t.Error("translate(nil) is not nil")
	}
}
