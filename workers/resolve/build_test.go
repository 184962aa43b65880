package resolve

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// TestProviderBuildRacingAChangeIsNotKept: a provider whose build began
// before its connection changed is closed and never used; the request gets a
// provider built from the changed connection.
func TestProviderBuildRacingAChangeIsNotKept(t *testing.T) {
	conns := &fakeConns{by: map[string]events.Connection{}}
	conns.set(events.Connection{Name: "c1", Provider: "fake", Description: "old", Groups: []string{"bio"}, Secrets: []string{"*"}})
	store := cache.New(cache.Options{})
	t.Cleanup(store.Close)
	release := make(chan struct{})
	started := make(chan string, 10)
	var mu sync.Mutex
	var closed []string
	w := New(Config{Connections: conns, Cache: store, Factories: map[string]provider.Factory{
		"fake": func(_ context.Context, c events.Connection) (provider.Resolver, error) {
			started <- c.Description
			if c.Description == "old" {
				<-release
			}
			return &closingResolver{desc: c.Description, onClose: func(d string) {
				mu.Lock()
				closed = append(closed, d)
				mu.Unlock()
			}}, nil
		},
	}})
	t.Cleanup(w.Close)

	type result struct {
		out *events.ResolveReply
		err error
	}
	done := make(chan result, 1)
	go func() {
		var f endpoint.Fields
		out, err := w.handleResolve(context.Background(), newRequest(t, "bio", "c1", events.ResolveRequest{Secret: "db"}), &f)
		r, _ := out.(*events.ResolveReply)
		done <- result{r, err}
	}()
	select {
	case d := <-started:
		if d != "old" {
			t.Fatalf("first build from %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the provider build never started")
	}
	// The connection changes while its provider is being built.
	conns.set(events.Connection{Name: "c1", Provider: "fake", Description: "new", Groups: []string{"bio"}, Secrets: []string{"*"}})
	w.ConnectionChanged("c1")
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := string(r.out.Credentials["built_from"]); got != `"new"` {
		t.Fatalf("request used a provider built from %s, want \"new\"", got)
	}
	// Later requests use the new provider, and the old one was closed.
	var f endpoint.Fields
	out, err := w.handleResolve(context.Background(), newRequest(t, "bio", "c1", events.ResolveRequest{Secret: "db2"}), &f)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out.(*events.ResolveReply).Credentials["built_from"]); got != `"new"` {
		t.Fatalf("next request used a provider built from %s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(closed) != 1 || closed[0] != "old" {
		t.Fatalf("closed providers = %v, want [old]", closed)
	}
}

type closingResolver struct {
	desc    string
	onClose func(string)
}

func (c *closingResolver) Resolve(context.Context, provider.Request) (provider.Secret, error) {
	return provider.Secret{Version: "v1", Data: []byte(`{"built_from":"` + c.desc + `"}`)}, nil
}

func (c *closingResolver) Close() error { c.onClose(c.desc); return nil }

// The bookkeeping of builds racing changes does not grow with the changes
// of connections no build is under way for.
func TestChangesWithoutBuildsLeaveNoEpochs(t *testing.T) {
	store := cache.New(cache.Options{})
	t.Cleanup(store.Close)
	w := New(Config{Connections: &fakeConns{by: map[string]events.Connection{}}, Cache: store})
	t.Cleanup(w.Close)
	for i := 0; i < 100; i++ {
		w.ConnectionChanged("c" + string(rune('a'+i%26)) + string(rune('a'+i/26)))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.epochs) != 0 || len(w.building) != 0 {
		t.Fatalf("%d epochs, %d builds recorded after changes without builds", len(w.epochs), len(w.building))
	}
}
