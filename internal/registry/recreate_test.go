package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// A connections bucket deleted and created again while a worker runs: the
// worker is unhealthy while it is missing, then reloads its view from the new
// bucket (a connection of the bucket deleted leaves it, one put through
// another worker into the new bucket is seen) and follows it again (its own
// puts reach the other worker), counted once.
func TestBucketCreatedAgainIsReloaded(t *testing.T) {
	e := newEnv(t)
	sealer := seal.New(newKey(t))
	c := ctx(t)
	a, err := registry.Open(c, e.js, sealer, registry.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	registry.SetFaults(a, registry.Faults{CheckBucketsEvery: 50 * time.Millisecond})
	if err := a.Start(c); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	if _, err := a.PutConnection(c, builtinConn(t, "old")); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Connection("old"); !ok {
		t.Fatal("own put not in the view")
	}
	bucket := e.kv("connections").Bucket()
	before := testutil.ToFloat64(metrics.RegistryBucketRecreated.WithLabelValues(bucket))

	if err := e.js.DeleteKeyValue(c, bucket); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "the worker to be unhealthy with its bucket missing", func() bool {
		return a.Health() != nil
	})
	// Another worker starting creates the bucket again (same configuration)
	// and puts a connection into it.
	b := e.open(sealer, registry.Options{})
	if _, err := b.PutConnection(c, builtinConn(t, "new")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "the worker to reload the bucket created again", func() bool {
		_, isNew := a.Connection("new")
		_, isOld := a.Connection("old")
		return isNew && !isOld && a.Health() == nil
	})
	if got := testutil.ToFloat64(metrics.RegistryBucketRecreated.WithLabelValues(bucket)) - before; got != 1 {
		t.Errorf("recreated counted %v times, want 1", got)
	}
	// It follows the new bucket: its own put reaches the other worker, and
	// the other's delete reaches it.
	if _, err := a.PutConnection(c, builtinConn(t, "again")); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteConnection(c, "new"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "the workers to follow the new bucket", func() bool {
		_, bAgain := b.Connection("again")
		_, aNew := a.Connection("new")
		return bAgain && !aNew
	})
}
