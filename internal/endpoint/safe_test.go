package endpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestReplyCarriesSafeMessageLogCarriesCause: a handler failing with a
// foreign error (a NATS error whose text holds a marker) translated at the
// boundary replies with the safe message only, in the body and in the micro
// headers, while the log event carries the cause.
func TestReplyCarriesSafeMessageLogCarriesCause(t *testing.T) {
	const marker = "MARKER-nats-e01f"
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	var logs testenv.Buffer
	r := NewRunner(zerolog.New(&logs), 5*time.Second, 4)
	fail := map[string]error{
		"wrapped": fmt.Errorf("storing connection %q: %w", "db",
			events.Wrap(events.CodeUnavailable, fmt.Errorf("nats: %s: %w", marker, nats.ErrConnectionClosed), "the registry is unavailable")),
		"joined":  fmt.Errorf("storing: %w: %w", events.ErrUnavailable, fmt.Errorf("nats: %s", marker)),
		"foreign": fmt.Errorf("nats: %s", marker),
	}
	svc, err := srv.Add(nc, srv.Config{Name: "safe", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	for name, e := range fail {
		e := e
		if err := svc.AddEndpoint(name, r.Handler(name, func(context.Context, micro.Request, *Fields) (any, error) { return nil, e }),
			srv.WithSubject("safe."+name)); err != nil {
			t.Fatal(err)
		}
	}
	for name := range fail {
		msg, err := nc.Request("safe."+name, []byte(`{}`), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var rep events.ErrorReply
		if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error == nil {
			t.Fatalf("%s: reply %s: %v", name, msg.Data, err)
		}
		if strings.Contains(string(msg.Data), marker) || strings.Contains(msg.Header.Get(micro.ErrorHeader), marker) {
			t.Errorf("%s: the reply leaks the foreign error: %s %v", name, msg.Data, msg.Header)
		}
		if want := fmt.Sprint(rep.Error.Code.Number()); msg.Header.Get(micro.ErrorCodeHeader) != want {
			t.Errorf("%s: %s header %q, want %s", name, micro.ErrorCodeHeader, msg.Header.Get(micro.ErrorCodeHeader), want)
		}
	}
	natstest.Eventually(t, 5*time.Second, "three log events with the cause", func() bool {
		return strings.Count(logs.String(), marker) == len(fail)
	})
}
