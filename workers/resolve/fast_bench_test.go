package resolve

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
)

// staticConns is a watched view that never changes, read without a lock as
// the registry's is.
type staticConns struct{ c events.Connection }

func (s staticConns) Connection(name string) (events.Connection, bool) { return s.c, name == s.c.Name }
func (s staticConns) HasConnection(name string) bool                   { return name == s.c.Name }
func (s staticConns) LookupConnection(_ context.Context, name string) (events.Connection, error) {
	if name == s.c.Name {
		return s.c, nil
	}
	return events.Connection{}, events.ErrNotFound
}

// benchRequest is a request answered in place, as srv.Request answers.
type benchRequest struct {
	fakeRequest
	replies int
}

func (r *benchRequest) Arrived() time.Time     { return time.Now() }
func (r *benchRequest) Elapsed() time.Duration { return time.Microsecond }
func (r *benchRequest) RespondHeader([]byte, nats.Header) error {
	r.replies++
	return nil
}

func (r *benchRequest) ErrorHeader(string, string, []byte, nats.Header) error {
	r.replies++
	return nil
}

var _ micro.Request = (*benchRequest)(nil)

// BenchmarkCachedHit is the worker's cost of a cached resolve answered
// inline (the resolve endpoint's handler, audit off), without NATS.
func BenchmarkCachedHit(b *testing.B) {
	w, _ := newFastWorker(&testing.T{})
	w.cfg.Connections = staticConns{events.Connection{Name: "c1", Provider: "fake", Groups: []string{"bio"}, Secrets: []string{"db*"}}}
	w.cfg.Runner = endpoint.NewRunner(zerolog.Nop(), 5*time.Second, 16)
	h := w.dispatched(events.OpResolve, w.fastResolve, w.handleResolve)
	in := events.ResolveRequest{Secret: "db1"}
	var f endpoint.Fields
	if _, err := w.handleResolve(context.Background(), newRequest(&testing.T{}, "bio", "c1", in), &f); err != nil {
		b.Fatal(err)
	}
	req := &benchRequest{fakeRequest: *newRequest(&testing.T{}, "bio", "c1", in)}
	h.Handle(req) // the lane answers it and remembers the request
	if err := w.cfg.Runner.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	if m := w.fast.known(req.subject, req.data); m == nil {
		b.Fatal("the request was not remembered")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.Handle(req)
	}
	b.StopTimer()
	if req.replies != b.N+1 {
		b.Fatalf("%d replies, want %d", req.replies, b.N+1)
	}
}
