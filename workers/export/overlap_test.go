package export

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// A second deployment (another prefix) on the same NATS with the default
// --logs-subjects cannot create its logs stream: start-up ends at once with
// an error saying what to do, not the server's raw API text.
func TestStartLogsSubjectsOverlap(t *testing.T) {
	e := newEnv(t)
	e.worker(nil)

	nc := natstest.Connect(t, e.srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subjects := events.Subjects{Prefix: "a.b"}
	w, err := New(Config{NC: nc, JS: js, Sinks: e.factory(), Subjects: subjects,
		LogsStream: subjects.LogsStream(), DeadStream: subjects.DeadStream(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = bus.Retry(ctx, zerolog.Nop(), "creating the log streams", w.Start)
	if err == nil {
		t.Fatal("Start succeeded with overlapping logs subjects")
	}
	if ctx.Err() != nil {
		t.Fatalf("retried until the deadline: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"A_B_LOGS", "overlap", "--logs-subjects", "--logs-stream"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "err_code") || strings.Contains(msg, "API error") {
		t.Errorf("error %q carries the server's raw text", msg)
	}
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jsSubjectsOverlap {
		t.Errorf("error %v does not wrap the server's overlap error", err)
	}
}
