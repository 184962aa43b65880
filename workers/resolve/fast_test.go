package resolve

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// fakeConns is a watched view that tests change at will. opens counts the
// reads that would open a sealed record in the registry (Connection).
type fakeConns struct {
	mu    sync.Mutex
	by    map[string]events.Connection
	opens int
}

func (f *fakeConns) Connection(name string) (events.Connection, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens++
	c, ok := f.by[name]
	return c, ok
}

func (f *fakeConns) HasConnection(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.by[name]
	return ok
}

func (f *fakeConns) openCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens
}

func (f *fakeConns) LookupConnection(_ context.Context, name string) (events.Connection, error) {
	if c, ok := f.Connection(name); ok {
		return c, nil
	}
	return events.Connection{}, events.ErrNotFound
}

func (f *fakeConns) set(c events.Connection) {
	f.mu.Lock()
	f.by[c.Name] = c
	f.mu.Unlock()
}

// fakeRequest is a micro request that records its reply.
type fakeRequest struct {
	subject string
	data    []byte
}

func (r *fakeRequest) Respond([]byte, ...micro.RespondOpt) error               { return nil }
func (r *fakeRequest) RespondJSON(any, ...micro.RespondOpt) error              { return nil }
func (r *fakeRequest) Error(string, string, []byte, ...micro.RespondOpt) error { return nil }
func (r *fakeRequest) Data() []byte                                            { return r.data }
func (r *fakeRequest) Headers() micro.Headers                                  { return nil }
func (r *fakeRequest) Subject() string                                         { return r.subject }
func (r *fakeRequest) Reply() string                                           { return "" }

const secretJSON = `{"login":"u","password":"p","login,password":"joined"}`

func newFastWorker(t *testing.T) (*Worker, *fakeConns) {
	t.Helper()
	conns := &fakeConns{by: map[string]events.Connection{}}
	conns.set(events.Connection{Name: "c1", Provider: "fake", Groups: []string{"bio"}, Secrets: []string{"db*"}})
	store := cache.New(cache.Options{})
	t.Cleanup(store.Close)
	w := New(Config{Connections: conns, Cache: store, Factories: map[string]provider.Factory{
		"fake": func(context.Context, events.Connection) (provider.Resolver, error) {
			return provider.ResolverFunc(func(_ context.Context, req provider.Request) (provider.Secret, error) {
				return provider.Secret{Version: "v1", Data: []byte(secretJSON)}, nil
			}), nil
		},
	}})
	t.Cleanup(w.Close)
	return w, conns
}

func newRequest(t *testing.T, group, conn string, in events.ResolveRequest) *fakeRequest {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeRequest{subject: events.Subjects{}.Op(events.OpResolve, group, conn), data: body}
}

// warm resolves through the regular path, filling the cache.
func warm(t *testing.T, w *Worker, group, conn string, in events.ResolveRequest) {
	t.Helper()
	var f endpoint.Fields
	if _, err := w.handleResolve(context.Background(), newRequest(t, group, conn, in), &f); err != nil {
		t.Fatalf("regular resolve: %v", err)
	}
}

// fast answers a resolve from the cache as the endpoint does: inline when
// its body is known, else on its connection's lane; false when the request
// needs the provider (or fails).
func fast(t *testing.T, w *Worker, group, conn string, in events.ResolveRequest) (*events.ResolveReply, bool) {
	t.Helper()
	var f endpoint.Fields
	req := newRequest(t, group, conn, in)
	body, ok := w.fastResolve(req, &f)
	if !ok {
		// As Dispatched goes on: fresh fields, the lane, the stage.
		f = endpoint.Fields{}
		if _, err := w.laneOf(events.OpResolve)(req, &f); err != nil {
			return nil, false
		}
		reply, release, err := w.stage(events.OpResolve)(req, &f)
		if release != nil {
			release()
		}
		if err != nil || reply == nil {
			return nil, false
		}
		body = reply
	}
	var out events.ResolveReply
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return &out, true
}

func TestFastPathAnswersAHit(t *testing.T) {
	w, _ := newFastWorker(t)
	in := events.ResolveRequest{Secret: "db1"}
	if _, ok := fast(t, w, "bio", "c1", in); ok {
		t.Fatal("fast path answered a miss")
	}
	warm(t, w, "bio", "c1", in)
	out, ok := fast(t, w, "bio", "c1", in)
	if !ok || !out.Cached || out.Connection != "c1" || out.Secret != "db1" {
		t.Fatalf("hit: ok=%v reply=%+v", ok, out)
	}
	if _, ok := fast(t, w, "bio", "c1", events.ResolveRequest{Secret: "db1", Fresh: true}); ok {
		t.Fatal("fast path answered a fresh request")
	}
}

// TestInlinePathNeedsAKnownBody: the subscription's goroutine answers only
// bodies the cache answered before (no decoding there); a body that missed
// is not remembered, so a flood of distinct misses cannot push out the
// bodies of hits.
func TestInlinePathNeedsAKnownBody(t *testing.T) {
	w, _ := newFastWorker(t)
	in := events.ResolveRequest{Secret: "db1"}
	warm(t, w, "bio", "c1", in)
	var f endpoint.Fields
	req := newRequest(t, "bio", "c1", in)
	if _, ok := w.fastResolve(req, &f); ok {
		t.Fatal("inline path answered a body it had never seen")
	}
	if _, ok := fast(t, w, "bio", "c1", in); !ok {
		t.Fatal("lane did not answer the hit")
	}
	if _, ok := w.fastResolve(req, &f); !ok {
		t.Fatal("inline path did not answer a known body")
	}
	miss := events.ResolveRequest{Secret: "db9"}
	if _, ok := fast(t, w, "bio", "c1", miss); ok {
		t.Fatal("a miss was answered from the cache")
	}
	body, _ := json.Marshal(miss)
	if w.fast.known(events.Subjects{}.Op(events.OpResolve, "bio", "c1"), body) != nil {
		t.Fatal("the body of a miss was remembered")
	}
}

func TestFastPathChecksGroup(t *testing.T) {
	w, _ := newFastWorker(t)
	in := events.ResolveRequest{Secret: "db1"}
	warm(t, w, "bio", "c1", in)
	if _, ok := fast(t, w, "chem", "c1", in); ok {
		t.Fatal("fast path answered a group the connection does not allow")
	}
}

func TestFastPathChecksAllowlist(t *testing.T) {
	w, conns := newFastWorker(t)
	in := events.ResolveRequest{Secret: "db1"}
	warm(t, w, "bio", "c1", in)
	// The allowlist narrows in the watched view; the cache still holds db1.
	conns.set(events.Connection{Name: "c1", Provider: "fake", Groups: []string{"bio"}, Secrets: []string{"other*"}})
	if _, ok := fast(t, w, "bio", "c1", in); ok {
		t.Fatal("fast path answered a secret outside the allowlist")
	}
	conns.set(events.Connection{Name: "c1", Provider: "fake", Groups: []string{"chem"}, Secrets: []string{"db*"}})
	if _, ok := fast(t, w, "bio", "c1", in); ok {
		t.Fatal("fast path answered a group removed from the connection")
	}
}

func TestFastPathHonoursInvalidation(t *testing.T) {
	w, _ := newFastWorker(t)
	in := events.ResolveRequest{Secret: "db1"}
	sib := events.ResolveRequest{Secret: "db2"}
	warm(t, w, "bio", "c1", in)
	warm(t, w, "bio", "c1", sib)
	w.SecretChanged("c1", "db1")
	if _, ok := fast(t, w, "bio", "c1", in); ok {
		t.Fatal("fast path answered an invalidated secret")
	}
	if _, ok := fast(t, w, "bio", "c1", sib); !ok {
		t.Fatal("invalidating one secret dropped its sibling from the fast path")
	}
}

func TestFastPathHonoursConnectionChange(t *testing.T) {
	w, _ := newFastWorker(t)
	in := events.ResolveRequest{Secret: "db1"}
	warm(t, w, "bio", "c1", in)
	w.ConnectionChanged("c1")
	if _, ok := fast(t, w, "bio", "c1", in); ok {
		t.Fatal("fast path answered after the connection changed")
	}
}

// TestFastPathKeysAreUnambiguous: a reply narrowed to ["login,password"]
// is not served for ["login","password"], nor the other way round (keys
// with NUL, the old separator, are refused by validation).
func TestFastPathKeysAreUnambiguous(t *testing.T) {
	w, _ := newFastWorker(t)
	joined := events.ResolveRequest{Secret: "db1", Keys: []string{"login,password"}}
	split := events.ResolveRequest{Secret: "db1", Keys: []string{"login", "password"}}
	warm(t, w, "bio", "c1", joined)
	a, ok := fast(t, w, "bio", "c1", joined)
	if !ok || len(a.Credentials) != 1 {
		t.Fatalf("joined: ok=%v creds=%v", ok, a)
	}
	b, ok := fast(t, w, "bio", "c1", split)
	if !ok {
		t.Fatal("split keys: not answered from the cache")
	}
	if len(b.Credentials) != 2 || string(b.Credentials["login"]) != `"u"` {
		t.Fatalf("split keys got %v: memo keys collide", b.Credentials)
	}
	a, _ = fast(t, w, "bio", "c1", joined)
	if len(a.Credentials) != 1 || string(a.Credentials["login,password"]) != `"joined"` {
		t.Fatalf("joined keys got %v after split: memo keys collide", a.Credentials)
	}
}
