package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// An old sealed record written back into the bucket (by someone with KV
// write access) is refused by a worker that saw a newer one: the watched
// view keeps the newer connection, a read-through refuses the old one, and
// the refusal is counted.
func TestReplayedRecordRefused(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio", "chem")); err != nil {
		t.Fatal(err)
	}
	v1, err := e.kv("connections").Get(c, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil { // chem revoked
		t.Fatal(err)
	}
	before := testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(e.kv("connections").Bucket()))
	if _, err := e.kv("connections").Put(c, "a", v1.Value()); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the watcher to refuse the replayed record", func() bool {
		return testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(e.kv("connections").Bucket())) > before
	})
	got, ok := r.Connection("a")
	if !ok || got.AllowsGroup("chem") {
		t.Fatalf("view after replay: %v %+v", ok, got.Groups)
	}
	_, err = r.LookupConnection(c, "a")
	wantCode(t, err, events.CodeUnavailable)
	if !errors.Is(err, events.ErrUnavailable) || !strings.Contains(err.Error(), "older") {
		t.Fatalf("lookup of the replayed record: %v", err)
	}
	// The admin repairs it by putting the connection again (kept secrets
	// cannot come from a refused record) …
	redacted := awsConn(t, "a", "bio")
	redacted.AWS.SecretAccessKey = events.Redacted
	_, err = r.PutConnection(c, redacted)
	wantCode(t, err, events.CodeBadRequest)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatalf("repairing put: %v", err)
	}
	if got, err := r.LookupConnection(c, "a"); err != nil || got.AllowsGroup("chem") {
		t.Fatalf("after repair: %+v %v", got.Groups, err)
	}
	// … or by deleting it.
	if _, err := e.kv("connections").Put(c, "a", v1.Value()); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteConnection(c, "a"); err != nil {
		t.Fatalf("deleting a replayed record: %v", err)
	}
}

// The generation is sealed with the value: raising it on an old record
// breaks the envelope.
func TestGenerationCannotBeForged(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio", "chem")); err != nil {
		t.Fatal(err)
	}
	v1, _ := e.kv("connections").Get(c, "a")
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(v1.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	rec["gen"] = json.RawMessage(`18000000000000000000`)
	forged, _ := json.Marshal(rec)
	if _, err := e.kv("connections").Put(c, "a", forged); err != nil {
		t.Fatal(err)
	}
	_, err := r.LookupConnection(c, "a")
	wantCode(t, err, events.CodeUnavailable)
	if !strings.Contains(err.Error(), "failed authentication") {
		t.Fatalf("forged generation: %v", err)
	}
	// Downgraded to a version 1 record: generation 0, older than seen.
	rec["v"], rec["gen"] = json.RawMessage(`1`), json.RawMessage(`0`)
	forged, _ = json.Marshal(rec)
	if _, err := e.kv("connections").Put(c, "a", forged); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupConnection(c, "a"); err == nil {
		t.Fatal("a downgraded record was accepted")
	}
	// The repairing put carries a generation above the forged one.
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.kv("connections").Get(c, "a")
	if bytes.Contains(raw.Value(), []byte(`"gen":18000000000000000000`)) {
		t.Fatalf("followed a forged generation: %s", raw.Value())
	}
}

// An unreadable record (here: sealed under another key) can be replaced
// and deleted by an admin; its built-in secrets too.
func TestUnreadableRecordIsRepairable(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	other := e.open(seal.New(newKey(t)), registry.Options{})
	if _, err := other.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := other.PutSecret(c, "b", "db01", []byte(`"x"`)); err != nil {
		t.Fatal(err)
	}
	r := e.open(seal.New(newKey(t)), registry.Options{})
	_, err := r.LookupConnection(c, "a")
	wantCode(t, err, events.CodeUnavailable)
	if _, err := r.PutConnection(c, awsConn(t, "a", "chem")); err != nil {
		t.Fatalf("replacing an unreadable record: %v", err)
	}
	if got, err := r.LookupConnection(c, "a"); err != nil || !got.AllowsGroup("chem") {
		t.Fatalf("after replacing: %v", err)
	}
	if err := r.DeleteConnection(c, "b"); err != nil {
		t.Fatalf("deleting an unreadable record: %v", err)
	}
	if _, err := e.kv("secrets").Get(c, "b.db01"); err == nil {
		t.Fatal("the deleted connection's secret is still stored")
	}
}

// A worker that starts with records in the bucket keeps them sealed until
// used; a replay of an older record is still refused and counted, though
// the record it replaces was never used (the watcher opens it first).
func TestReplayRefusedOverRecordLoadedAtStart(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	old := map[string][]byte{}
	for _, n := range []string{"a", "b"} {
		if _, err := w.PutConnection(c, awsConn(t, n, "bio", "chem")); err != nil {
			t.Fatal(err)
		}
		v1, err := e.kv("connections").Get(c, n)
		if err != nil {
			t.Fatal(err)
		}
		old[n] = v1.Value()
		if _, err := w.PutConnection(c, awsConn(t, n, "bio")); err != nil { // chem revoked
			t.Fatal(err)
		}
	}
	late := e.open(seal.New(key), registry.Options{})
	// Start opened one record (to check the master key); the other is
	// still sealed.
	n := "a"
	if !registry.Unopened(late, n) {
		n = "b"
	}
	if !registry.Unopened(late, n) {
		t.Fatal("every record loaded at start was opened")
	}
	bucket := e.kv("connections").Bucket()
	before := testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(bucket))
	if _, err := e.kv("connections").Put(c, n, old[n]); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "both watchers to refuse the replayed record", func() bool {
		return testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(bucket)) >= before+2
	})
	for _, r := range []*registry.Registry{w, late} {
		got, ok := r.Connection(n)
		if !ok || got.AllowsGroup("chem") {
			t.Fatalf("view after replay: %v %+v", ok, got.Groups)
		}
	}
	if _, err := late.LookupConnection(c, n); !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("lookup of the replayed record by the late worker: %v", err)
	}
}

// A read from the bucket of a replayed record is refused by a worker that
// loaded the newer one at start and never used it.
func TestLookupOfReplayRefusedOverRecordLoadedAtStart(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	old := map[string][]byte{}
	for _, n := range []string{"a", "b"} {
		if _, err := w.PutConnection(c, awsConn(t, n, "bio", "chem")); err != nil {
			t.Fatal(err)
		}
		v1, err := e.kv("connections").Get(c, n)
		if err != nil {
			t.Fatal(err)
		}
		old[n] = v1.Value()
		if _, err := w.PutConnection(c, awsConn(t, n, "bio")); err != nil {
			t.Fatal(err)
		}
	}
	late := e.open(seal.New(key), registry.Options{})
	n := "a"
	if !registry.Unopened(late, n) {
		n = "b"
	}
	// The watchers are stopped, so only the bucket read meets the replay.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	late.Stop(sctx)
	cancel()
	if _, err := e.kv("connections").Put(c, n, old[n]); err != nil {
		t.Fatal(err)
	}
	_, err := late.LookupConnection(c, n)
	if !errors.Is(err, events.ErrUnavailable) || !strings.Contains(err.Error(), "older") {
		t.Fatalf("lookup of a replayed record: %v", err)
	}
}

// A replayed built-in secret is refused by the read of the secret and by
// rekey alike (the same check as for connections).
func TestReplayedSecretRefusedByReadAndRekey(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "db", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	v1, err := e.kv("secrets").Get(c, "b.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "db", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Secret(c, "b", "db"); err != nil || string(got.Value) != "v2" {
		t.Fatalf("secret: %q %v", got.Value, err)
	}
	if _, err := e.kv("secrets").Put(c, "b.db", v1.Value()); err != nil {
		t.Fatal(err)
	}
	_, err = r.Secret(c, "b", "db")
	if !errors.Is(err, events.ErrUnavailable) || !strings.Contains(err.Error(), "older") {
		t.Fatalf("read of a replayed secret: %v", err)
	}
	res, err := r.Rekey(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failed) != 1 || res.Failed[0] != "b.db" {
		t.Fatalf("rekey over a replayed secret: %+v", res)
	}
}

// A key deleted and written again is accepted by a worker that remembers the
// deleted record's generation, though that record was sealed by a worker
// whose clock runs an hour ahead and the new one by a worker that never saw
// it, with a clock on time: the delete marker carries the generation, and the
// new record is sealed above it. No worker's clock decides.
func TestWriteAfterDeleteLandsAboveRememberedGeneration(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	ahead := e.open(seal.New(key), registry.Options{})
	registry.SetClock(ahead, func() time.Time { return time.Now().Add(time.Hour) })
	remembers := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	bucket := e.kv("connections").Bucket()
	refused := func() float64 {
		return testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(bucket)) +
			testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(e.kv("secrets").Bucket()))
	}
	before := refused()
	if _, err := ahead.PutConnection(c, builtinConn(t, "k")); err != nil {
		t.Fatal(err)
	}
	if err := ahead.PutSecret(c, "k", "db", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other worker to see the connection", func() bool {
		_, ok := remembers.Connection("k")
		return ok
	})
	if got, err := remembers.Secret(c, "k", "db"); err != nil || string(got.Value) != "v1" {
		t.Fatalf("secret: %q %v", got.Value, err)
	}
	if err := remembers.DeleteSecret(c, "k", "db"); err != nil {
		t.Fatal(err)
	}
	if err := remembers.DeleteConnection(c, "k"); err != nil {
		t.Fatal(err)
	}
	// A worker started after the delete, with a clock on time.
	fresh := e.open(seal.New(key), registry.Options{})
	if _, err := fresh.PutConnection(c, builtinConn(t, "k")); err != nil {
		t.Fatal(err)
	}
	if err := fresh.PutSecret(c, "k", "db", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the worker that remembers to apply the new connection", func() bool {
		_, ok := remembers.Connection("k")
		return ok || refused() > before
	})
	if n := refused() - before; n != 0 {
		t.Fatalf("%v record(s) written after the delete refused as rollbacks", n)
	}
	if got, err := remembers.Secret(c, "k", "db"); err != nil || string(got.Value) != "v2" {
		t.Fatalf("secret written after the delete: %q %v", got.Value, err)
	}
	if _, err := remembers.LookupConnection(c, "k"); err != nil {
		t.Fatalf("lookup of the connection written after the delete: %v", err)
	}
}

// The generations of the connections in the view are carried by the view's
// records, not repeated in the worker's memory of generations; a deleted
// connection's is remembered, so a replay of it is still refused.
func TestGenerationsCarriedByTheView(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	r := e.open(seal.New(key), registry.Options{})
	other := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	for i := 0; i < 20; i++ {
		if _, err := r.PutConnection(c, awsConn(t, fmt.Sprint("c", i), "bio")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.PutConnection(c, awsConn(t, "c0", "bio", "chem")); err != nil {
		t.Fatal(err)
	}
	v1, err := e.kv("connections").Get(c, "c0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, awsConn(t, "c0", "bio")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other worker to apply the puts", func() bool {
		got, ok := other.Connection("c0")
		_, last := other.Connection("c19")
		return ok && last && !got.AllowsGroup("chem")
	})
	for _, w := range []*registry.Registry{r, other} {
		if n := registry.SeenGens(w); n != 0 {
			t.Fatalf("%d generations remembered besides the view's", n)
		}
	}
	if err := r.DeleteConnection(c, "c0"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other worker to apply the delete", func() bool {
		_, ok := other.Connection("c0")
		return !ok
	})
	bucket := e.kv("connections").Bucket()
	before := testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(bucket))
	if _, err := e.kv("connections").Put(c, "c0", v1.Value()); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "both workers to refuse the replay of the deleted record", func() bool {
		return testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(bucket)) >= before+2
	})
	for _, w := range []*registry.Registry{r, other} {
		if _, ok := w.Connection("c0"); ok {
			t.Fatal("a replay of a deleted record was applied")
		}
	}
}

// The last record of a key, written back into the bucket after the key was
// deleted, is refused by the worker that deleted it and by one that read
// it: the delete marker carries a generation above the record's, which they
// remember, and a re-create is sealed above the marker.
func TestReplayOfLastRecordAfterDeleteRefused(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	r := e.open(seal.New(key), registry.Options{})
	other := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	conns, secrets := e.kv("connections"), e.kv("secrets")
	refused := func(kv jetstream.KeyValue) float64 {
		return testutil.ToFloat64(metrics.RegistryRollbackRefused.WithLabelValues(kv.Bucket()))
	}
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "db", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, builtinConn(t, "a")); err != nil {
		t.Fatal(err)
	}
	lastConn, err := conns.Get(c, "a")
	if err != nil {
		t.Fatal(err)
	}
	lastSecret, err := secrets.Get(c, "b.db")
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other worker to apply the connections", func() bool {
		_, a := other.Connection("a")
		_, b := other.Connection("b")
		return a && b
	})
	for _, w := range []*registry.Registry{r, other} {
		if got, err := w.Secret(c, "b", "db"); err != nil || string(got.Value) != "v1" {
			t.Fatalf("secret: %q %v", got.Value, err)
		}
	}
	var secretDeleted atomic.Bool
	other.OnChange(func(ch registry.Change) {
		if ch.Kind == registry.KindSecret && ch.Conn == "b" && ch.Name == "db" && ch.Deleted {
			secretDeleted.Store(true)
		}
	})
	if err := r.DeleteSecret(c, "b", "db"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteConnection(c, "a"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other worker to apply the deletes", func() bool {
		_, ok := other.Connection("a")
		_, err := other.Secret(c, "b", "db")
		return !ok && errors.Is(err, events.ErrNotFound)
	})
	natstest.Eventually(t, 5*time.Second, "the other worker's secrets watcher to meet the delete", func() bool {
		return secretDeleted.Load()
	})

	beforeConns, beforeSecrets := refused(conns), refused(secrets)
	if _, err := conns.Put(c, "a", lastConn.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Put(c, "b.db", lastSecret.Value()); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "both watchers to refuse the replayed connection", func() bool {
		return refused(conns) >= beforeConns+2
	})
	for i, w := range []*registry.Registry{r, other} {
		if _, ok := w.Connection("a"); ok {
			t.Fatalf("worker %d applied the replayed last record of a deleted connection", i)
		}
		_, err := w.LookupConnection(c, "a")
		if !errors.Is(err, events.ErrUnavailable) || !strings.Contains(err.Error(), "older") {
			t.Fatalf("worker %d, lookup of the replayed connection: %v", i, err)
		}
		_, err = w.Secret(c, "b", "db")
		if !errors.Is(err, events.ErrUnavailable) || !strings.Contains(err.Error(), "older") {
			t.Fatalf("worker %d, read of the replayed secret: %v", i, err)
		}
	}
	if refused(secrets) < beforeSecrets+2 {
		t.Fatalf("replayed secret refusals counted: %v", refused(secrets)-beforeSecrets)
	}
	// Written again, each is accepted by both.
	if _, err := r.PutConnection(c, builtinConn(t, "a")); err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "db", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other worker to apply the new connection", func() bool {
		_, ok := other.Connection("a")
		return ok
	})
	for i, w := range []*registry.Registry{r, other} {
		if got, err := w.Secret(c, "b", "db"); err != nil || string(got.Value) != "v2" {
			t.Fatalf("worker %d, secret written again: %q %v", i, got.Value, err)
		}
	}
}

// Reading the connections of the view through the bucket (lookups, the
// secrets' checks of their connection, a put's fallback, rekey) adds nothing
// to the worker's memory of generations: the view's records carry them.
func TestReadsOfTheViewRememberNothing(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	for i := 0; i < 10; i++ {
		if _, err := r.PutConnection(c, builtinConn(t, fmt.Sprint("b", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		name := fmt.Sprint("b", i)
		if _, err := r.LookupConnection(c, name); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SecretNames(c, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Rekey(c); err != nil {
		t.Fatal(err)
	}
	if n := registry.SeenGens(r); n != 0 {
		t.Fatalf("%d generations remembered besides the view's", n)
	}
}

// A worker started after a delete remembers the generation of the delete
// marker it loads, so the deleted record written back is refused by it too.
func TestReplayAfterDeleteRefusedByWorkerStartedSince(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	r := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	last, err := e.kv("connections").Get(c, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteConnection(c, "a"); err != nil {
		t.Fatal(err)
	}
	fresh := e.open(seal.New(key), registry.Options{})
	if n := registry.SeenGens(fresh); n != 1 {
		t.Fatalf("a worker started after one delete remembers %d generations", n)
	}
	if _, err := e.kv("connections").Put(c, "a", last.Value()); err != nil {
		t.Fatal(err)
	}
	_, err = fresh.LookupConnection(c, "a")
	if !errors.Is(err, events.ErrUnavailable) || !strings.Contains(err.Error(), "older") {
		t.Fatalf("lookup of the replayed record by a worker started since: %v", err)
	}
}

// A delete that read a record before another worker wrote the key again
// deletes the newer record, its marker above the newer generation (the
// marker is written with compare-and-set on the revision read, and read
// again when it fails): a write after the delete, by a worker on time, is
// then accepted by a worker that saw the newer record, sealed by a worker
// whose clock runs an hour ahead.
func TestDeleteRacingAPutLandsAboveIt(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	deleter := e.open(seal.New(key), registry.Options{})
	ahead := e.open(seal.New(key), registry.Options{})
	registry.SetClock(ahead, func() time.Time { return time.Now().Add(time.Hour) })
	remembers := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	if _, err := deleter.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := deleter.PutSecret(c, "b", "db", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	read, err := e.kv("secrets").Get(c, "b.db")
	if err != nil {
		t.Fatal(err)
	}
	// Written between the delete's read and its marker.
	if err := ahead.PutSecret(c, "b", "db", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if got, err := remembers.Secret(c, "b", "db"); err != nil || string(got.Value) != "v2" {
		t.Fatalf("secret: %q %v", got.Value, err)
	}
	if err := registry.DeleteRead(deleter, "secrets", "b.db", registry.StoredGen(read.Value()), read.Revision()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv("secrets").Get(c, "b.db"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("after the delete: %v", err)
	}
	fresh := e.open(seal.New(key), registry.Options{})
	if err := fresh.PutSecret(c, "b", "db", []byte("v3")); err != nil {
		t.Fatal(err)
	}
	if got, err := remembers.Secret(c, "b", "db"); err != nil || string(got.Value) != "v3" {
		t.Fatalf("secret written after the delete: %q %v", got.Value, err)
	}
}
