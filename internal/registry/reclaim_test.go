package registry_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
)

// A worker that loads at least ReclaimAfter connection records at start
// returns the load's garbage to the operating system once, after Start.
func TestStartReclaimsALargeLoad(t *testing.T) {
	e := newEnv(t)
	sealer := seal.New(newKey(t))
	a := e.open(sealer, registry.Options{})
	c := ctx(t)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := a.PutConnection(c, builtinConn(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := registry.Open(c, e.js, sealer, registry.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	reclaimed := make(chan struct{})
	registry.SetFaults(r, registry.Faults{ReclaimAfter: 3, Reclaimed: func() { close(reclaimed) }})
	if err := r.Start(c); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	select {
	case <-reclaimed:
	case <-c.Done():
		t.Fatal("no reclaim after loading 3 connections")
	}
}
