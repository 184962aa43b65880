package registry_test

import (
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// HasConnection answers from the view's slot: a record loaded at start stays
// sealed (nothing is opened to pick a request's lane).
func TestHasConnectionOpensNothing(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	names := []string{"b1", "b2", "b3"}
	for _, n := range names {
		if _, err := w.PutConnection(c, builtinConn(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	late := e.open(seal.New(key), registry.Options{})
	var sealed []string
	for _, n := range names {
		if registry.Unopened(late, n) {
			sealed = append(sealed, n)
		}
	}
	// Start opens one record to check the master key.
	if len(sealed) < 2 {
		t.Fatalf("%d of 3 records sealed after start, want ≥ 2", len(sealed))
	}
	for _, n := range sealed {
		if !late.HasConnection(n) {
			t.Errorf("HasConnection(%s) = false for a sealed record in the view", n)
		}
		if !registry.Unopened(late, n) {
			t.Errorf("HasConnection(%s) opened the record", n)
		}
	}
	if late.HasConnection("nope") {
		t.Error("HasConnection(nope) = true")
	}
	// Once opened, it still says so; after a delete, it does not.
	if _, ok := late.Connection(sealed[0]); !ok || !late.HasConnection(sealed[0]) {
		t.Errorf("opened %s: Connection %v, HasConnection %v", sealed[0], ok, late.HasConnection(sealed[0]))
	}
	if err := w.DeleteConnection(c, sealed[1]); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, "the late registry to see the delete", func() bool {
		return !late.HasConnection(sealed[1])
	})
}
