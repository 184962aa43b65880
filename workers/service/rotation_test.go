package service

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// chanSource is a rotation.Source fed by the test; one is shared by every
// worker's consumer, as a queue is (each message goes to one of them).
type chanSource struct{ ch chan rotation.Message }

func (c *chanSource) Receive(ctx context.Context) ([]rotation.Message, error) {
	select {
	case m := <-c.ch:
		return []rotation.Message{m}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// eventedCloud is a provider with a value per secret that can change, and
// change events from src.
type eventedCloud struct {
	src   *chanSource
	calls atomic.Int64
	mu    sync.Mutex
	value map[string]string
}

func (e *eventedCloud) set(secret, v string) {
	e.mu.Lock()
	e.value[secret] = v
	e.mu.Unlock()
}

func (e *eventedCloud) Resolve(_ context.Context, req provider.Request) (provider.Secret, error) {
	e.calls.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	return provider.Secret{Version: e.value[req.Secret], Data: []byte(e.value[req.Secret])}, nil
}

func (e *eventedCloud) RotationSource(context.Context) (rotation.Source, error) { return e.src, nil }

// TestRotationEventRefreshesEveryWorker: with a 12h TTL, one change event
// (handled by whichever worker's consumer gets it) makes both workers serve
// the new value within 2 s, re-read ahead once per worker; duplicated,
// malformed and foreign-secret events change nothing.
func TestRotationEventRefreshesEveryWorker(t *testing.T) {
	cloud := &eventedCloud{src: &chanSource{ch: make(chan rotation.Message, 16)}, value: map[string]string{"biodb01": "v1", "biodb02": "w1"}}
	factory := func(context.Context, events.Connection) (provider.Resolver, error) { return cloud, nil }
	srv := natstest.Server(t)
	key := newMasterKey(t)
	w1 := startWorker(t, joinedConfig(srv.ClientURL(), key), WithProvider("aws", factory))
	w2 := startWorker(t, joinedConfig(srv.ClientURL(), key), WithProvider("aws", factory))
	_, c := connect(t, srv.ClientURL())
	conn := events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"biodb*"},
		Cache: &events.CachePolicy{TTL: events.Duration(12 * time.Hour)},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthDefault,
			Events: &events.AWSEvents{QueueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/secret-changes"}}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	for _, w := range []*worker{w1, w2} {
		waitCond(t, "the consumers", func() bool {
			w.rotations.mu.Lock()
			defer w.rotations.mu.Unlock()
			return w.rotations.running["aws-sm-bio"] != nil
		})
	}
	// Warm both workers' caches (queue group: resolve until each has it).
	for _, w := range []*worker{w1, w2} {
		waitCond(t, "a warm cache", func() bool {
			_, _ = resolveReq(c, "bio", "aws-sm-bio", events.ResolveRequest{Secret: "biodb01"})
			_, ok := w.cache.Peek("aws-sm-bio", provider.Request{Secret: "biodb01"})
			return ok
		})
	}
	before := cloud.calls.Load()
	cloud.set("biodb01", "v2")
	cloud.src.ch <- rotation.Message{ID: "bad", Type: rotation.TypeMalformed, Err: context.Canceled}
	cloud.src.ch <- rotation.Message{ID: "e0", Type: "PutSecretValue", Changes: []rotation.Change{{Secret: "chemdb01", Kind: rotation.Changed}}}
	cloud.src.ch <- rotation.Message{ID: "e1", Type: "PutSecretValue", Changes: []rotation.Change{{Secret: "biodb01", Kind: rotation.Changed}}}
	deadline := time.Now().Add(2 * time.Second)
	for _, w := range []*worker{w1, w2} {
		for {
			sec, ok := w.cache.Peek("aws-sm-bio", provider.Request{Secret: "biodb01"})
			if ok && string(sec.Data) == "v2" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a worker still serves %q %v 2 s after the event", sec.Data, ok)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := cloud.calls.Load() - before; n != 2 {
		t.Fatalf("%d provider calls for one rotation on two workers, want 2", n)
	}
	// A duplicate (same id, to whichever consumer) re-reads nothing on the worker that saw it.
	got, err := resolveReq(c, "bio", "aws-sm-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil || !got.Cached {
		t.Fatalf("after the event: %+v %v", got, err)
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// degraded is Degraded's first result.
func (r *rotations) degraded(conn string) bool {
	d, _, _ := r.Degraded(conn)
	return d
}
