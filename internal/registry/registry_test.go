package registry_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// Values that must never appear in the bucket in clear.
const (
	awsSecretKey   = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-PLAINTEXT-SAK"
	secretPassword = "pw-9f3c1e7a-PLAINTEXT-SECRET"
)

type env struct {
	t   *testing.T
	srv *server.Server
	js  jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Server(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, js: js}
}

func newKey(t *testing.T) seal.Key {
	t.Helper()
	raw := make([]byte, seal.KeySize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	k, err := seal.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// open opens and starts a registry on the env's buckets, stopped when the test ends.
func (e *env) open(sealer *seal.Sealer, opts registry.Options) *registry.Registry {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts.Logger = zerolog.Nop()
	r, err := registry.Open(ctx, e.js, sealer, opts)
	if err != nil {
		e.t.Fatalf("open: %v", err)
	}
	if r.Ready() {
		e.t.Fatal("ready before Start")
	}
	if err := r.Start(ctx); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	if !r.Ready() {
		e.t.Fatal("not ready after Start")
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Stop(ctx)
	})
	return r
}

func (e *env) kv(what string) jetstream.KeyValue {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), events.Subjects{Prefix: ""}.Bucket(what))
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// conn decodes a connection from its wire form, so the tests do not depend on
// the Go shape of provider blocks.
func conn(t *testing.T, js string) events.Connection {
	t.Helper()
	var c events.Connection
	if err := events.Decode([]byte(js), &c); err != nil {
		t.Fatalf("decoding %s: %v", js, err)
	}
	return c
}

func wire(t *testing.T, v any) string {
	t.Helper()
	b, err := events.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func awsConn(t *testing.T, name string, groups ...string) events.Connection {
	g, _ := json.Marshal(append([]string{}, groups...))
	return conn(t, fmt.Sprintf(`{"name":%q,"provider":"aws","groups":%s,"secrets":["db*"],
		"aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIDEXAMPLEKEYID0001","secret_access_key":%q}}`,
		name, g, awsSecretKey))
}

func builtinConn(t *testing.T, name string) events.Connection {
	return conn(t, fmt.Sprintf(`{"name":%q,"provider":"builtin","groups":["bio"],"secrets":["*"]}`, name))
}

func wantCode(t *testing.T, err error, code events.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := events.CodeOf(err); got != code {
		t.Fatalf("got %s (%v), want %s", got, err, code)
	}
}

func TestConnectionPutGetListDelete(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)

	for _, name := range []string{"zeta", "alpha", "mid"} {
		if _, err := r.PutConnection(c, awsConn(t, name, "bio")); err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
	}
	// The bucket read gives the sensitive fields in clear.
	got, err := r.LookupConnection(c, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(wire(t, got), awsSecretKey) || got.Provider != "aws" || !got.AllowsGroup("bio") {
		t.Fatalf("lookup: %s", wire(t, got))
	}
	// The writer's own watched view has the write at once (PutConnection waits for it).
	if v, ok := r.Connection("mid"); !ok || !strings.Contains(wire(t, v), awsSecretKey) {
		t.Fatalf("watched view after put: %v %s", ok, wire(t, v))
	}
	var names []string
	for _, x := range r.Connections() {
		names = append(names, x.Name)
	}
	if strings.Join(names, ",") != "alpha,mid,zeta" {
		t.Fatalf("list: %v", names)
	}

	if err := r.DeleteConnection(c, "mid"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Connection("mid"); ok {
		t.Fatal("deleted connection still in the watched view")
	}
	_, err = r.LookupConnection(c, "mid")
	wantCode(t, err, events.CodeNotFound)
	if !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("not errors.Is ErrNotFound: %v", err)
	}
	wantCode(t, r.DeleteConnection(c, "mid"), events.CodeNotFound)
	if len(r.Connections()) != 2 {
		t.Fatalf("list after delete: %d", len(r.Connections()))
	}
}

func TestPutConnectionRejectsInvalidAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	bad := []events.Connection{
		{Name: "Bad Name", Provider: "builtin"},
		{Name: "x", Provider: "azure"},
		{Name: "x"},
		conn(t, `{"name":"x","provider":"aws","aws":{"region":"mars-1","auth":"default"}}`),
	}
	for _, b := range bad {
		wantCode(t, func() error { _, err := r.PutConnection(c, b); return err }(), events.CodeBadRequest)
	}
	if n := len(r.Connections()); n != 0 {
		t.Fatalf("%d connections stored from invalid puts", n)
	}
	if _, err := e.kv("connections").Get(c, "x"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("bucket holds x after invalid puts: %v", err)
	}
}

func TestRedactedFieldKeepsStoredValue(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	got, _ := r.LookupConnection(c, "a")
	red := all.Table.Redact(got)
	if strings.Contains(wire(t, red), awsSecretKey) || !strings.Contains(wire(t, red), events.Redacted) {
		t.Fatalf("redacted form: %s", wire(t, red))
	}
	// Put back the redacted form with a changed group: the secret is kept.
	red.Groups = []string{"chem"}
	if _, err := r.PutConnection(c, red); err != nil {
		t.Fatal(err)
	}
	got, _ = r.LookupConnection(c, "a")
	if !strings.Contains(wire(t, got), awsSecretKey) || !got.AllowsGroup("chem") || got.AllowsGroup("bio") {
		t.Fatalf("after putting back the redacted form: %s", wire(t, got))
	}
	// A redacted field for a connection that does not exist is refused.
	red = all.Table.Redact(got)
	red.Name = "new"
	wantCode(t, func() error { _, err := r.PutConnection(c, red); return err }(), events.CodeBadRequest)
}

func TestSealedAtRest(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "db01", []byte(`{"password":"`+secretPassword+`"}`)); err != nil {
		t.Fatal(err)
	}
	s, err := r.Secret(c, "b", "db01")
	if err != nil || !bytes.Contains(s.Value, []byte(secretPassword)) || s.Revision == 0 {
		t.Fatalf("secret read back: %q rev %d %v", s.Value, s.Revision, err)
	}

	raw, err := e.kv("connections").Get(c, "a")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw.Value(), []byte(awsSecretKey)) {
		t.Fatalf("connection record holds the secret access key in clear: %s", raw.Value())
	}
	// The record carries a redacted public copy and a sealed envelope naming its key.
	var rec struct {
		V      int             `json:"v"`
		Public json.RawMessage `json:"public"`
		Sealed struct {
			KeyID string `json:"kid"`
			Data  []byte `json:"data"`
		} `json:"sealed"`
	}
	if err := json.Unmarshal(raw.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.V != 2 || rec.Sealed.KeyID != r.CurrentKeyID() || len(rec.Sealed.Data) == 0 ||
		!bytes.Contains(rec.Public, []byte(events.Redacted)) || !bytes.Contains(rec.Public, []byte(`"AKIDEXAMPLEKEYID0001"`)) {
		t.Fatalf("connection record: %s", raw.Value())
	}

	sraw, err := e.kv("secrets").Get(c, "b.db01")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sraw.Value(), []byte(secretPassword)) || bytes.Contains(sraw.Value(), []byte("password")) {
		t.Fatalf("secret record holds the value in clear: %s", sraw.Value())
	}
}

// A sealed value is bound to its record: copied onto another key it does not open.
func TestMovedCiphertextIsUnavailable(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "one", []byte(`"`+secretPassword+`"`)); err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "two", []byte(`"other"`)); err != nil {
		t.Fatal(err)
	}
	kv := e.kv("secrets")
	one, _ := kv.Get(c, "b.one")
	if _, err := kv.Put(c, "b.two", one.Value()); err != nil {
		t.Fatal(err)
	}
	_, err := r.Secret(c, "b", "two")
	wantCode(t, err, events.CodeUnavailable)
	if !strings.Contains(err.Error(), "failed authentication") || strings.Contains(err.Error(), secretPassword) {
		t.Fatalf("message: %v", err)
	}
}

func TestSecretsPutListDelete(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	var changes []registry.Change
	var mu sync.Mutex
	r.OnChange(func(ch registry.Change) {
		if ch.Kind == registry.KindSecret {
			mu.Lock()
			changes = append(changes, ch)
			mu.Unlock()
		}
	})
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"db02", "db01", "app/x"} {
		if err := r.PutSecret(c, "b", n, []byte(`"v-`+n+`"`)); err != nil {
			t.Fatalf("put %s: %v", n, err)
		}
	}
	names, err := r.SecretNames(c, "b")
	if err != nil || strings.Join(names, ",") != "app/x,db01,db02" {
		t.Fatalf("names %v %v", names, err)
	}
	// Overwrite: the new value, a new revision.
	before, _ := r.Secret(c, "b", "db01")
	if err := r.PutSecret(c, "b", "db01", []byte(`"new"`)); err != nil {
		t.Fatal(err)
	}
	after, _ := r.Secret(c, "b", "db01")
	if string(after.Value) != `"new"` || after.Revision <= before.Revision {
		t.Fatalf("overwrite: %q rev %d → %d", after.Value, before.Revision, after.Revision)
	}

	wantCode(t, r.PutSecret(c, "a", "db01", []byte(`"x"`)), events.CodeBadRequest)  // not builtin
	wantCode(t, r.PutSecret(c, "nope", "db01", []byte(`"x"`)), events.CodeNotFound) // no connection
	wantCode(t, func() error { _, err := r.SecretNames(c, "nope"); return err }(), events.CodeNotFound)
	wantCode(t, func() error { _, err := r.Secret(c, "b", "missing"); return err }(), events.CodeNotFound)
	wantCode(t, r.DeleteSecret(c, "b", "missing"), events.CodeNotFound)
	wantCode(t, r.DeleteSecret(c, "nope", "db01"), events.CodeNotFound)

	if err := r.DeleteSecret(c, "b", "db02"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, func() error { _, err := r.Secret(c, "b", "db02"); return err }(), events.CodeNotFound)
	natstest.Eventually(t, 5*time.Second, "secret change notifications", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range changes {
			if ch.Conn == "b" && ch.Name == "db02" && ch.Deleted {
				return true
			}
		}
		return false
	})

	// Deleting the connection deletes its secrets.
	if err := r.DeleteConnection(c, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if names, err := r.SecretNames(c, "b"); err != nil || len(names) != 0 {
		t.Fatalf("secrets survived their connection: %v %v", names, err)
	}
}

// Moving a builtin connection to a cloud provider drops its built-in secrets.
func TestLeavingBuiltinDropsSecrets(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := r.PutSecret(c, "b", "db01", []byte(`"`+secretPassword+`"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, awsConn(t, "b", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv("secrets").Get(c, "b.db01"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("secret of a former builtin connection still stored: %v", err)
	}
}

func TestExportsPutGetListDelete(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{LogsSubjects: []string{"logs.>"}})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	x := func(js string) events.Export {
		var x events.Export
		if err := events.Decode([]byte(js), &x); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return x
	}
	good := x(`{"name":"e1","connection":"a","subjects":["logs.app.>"],"cloudwatch":{"log_group":"g"}}`)
	if _, err := r.PutExport(c, good); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutExport(c, x(`{"name":"e0","connection":"a","subjects":["logs.x"],"cloudwatch":{"log_group":"g"}}`)); err != nil {
		t.Fatal(err)
	}
	got, err := r.LookupExport(c, "e1")
	if err != nil || wire(t, got) != wire(t, good) {
		t.Fatalf("lookup: %s %v", wire(t, got), err)
	}
	if xs := r.Exports(); len(xs) != 2 || xs[0].Name != "e0" || xs[1].Name != "e1" {
		t.Fatalf("list: %s", wire(t, xs))
	}
	// Export blocks hold nothing secret and are stored as plain JSON.
	raw, _ := e.kv("exports").Get(c, "e1")
	if string(raw.Value()) != wire(t, good) {
		t.Fatalf("stored export: %s", raw.Value())
	}

	for _, bad := range []struct {
		x    events.Export
		code events.Code
	}{
		{x(`{"name":"e2","connection":"b","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`), events.CodeBadRequest},  // wrong provider
		{x(`{"name":"e2","connection":"zz","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`), events.CodeNotFound},   // no connection
		{x(`{"name":"e2","connection":"a","subjects":["other.>"],"cloudwatch":{"log_group":"g"}}`), events.CodeBadRequest}, // outside the stream
		{x(`{"name":"e2","connection":"a","subjects":[],"cloudwatch":{"log_group":"g"}}`), events.CodeBadRequest},
		{x(`{"name":"e2","connection":"a","subjects":["logs.>"]}`), events.CodeBadRequest}, // no sink
	} {
		_, err := r.PutExport(c, bad.x)
		wantCode(t, err, bad.code)
	}
	if len(r.Exports()) != 2 {
		t.Fatal("a rejected export was stored")
	}

	// A connection used by an export can be neither deleted nor moved to another provider.
	wantCode(t, r.DeleteConnection(c, "a"), events.CodeBadRequest)
	moved := conn(t, `{"name":"a","provider":"builtin","groups":["bio"],"secrets":["*"]}`)
	wantCode(t, func() error { _, err := r.PutConnection(c, moved); return err }(), events.CodeBadRequest)
	if got, _ := r.LookupConnection(c, "a"); got.Provider != "aws" {
		t.Fatal("provider changed under an export")
	}

	if err := r.DeleteExport(c, "e1"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteExport(c, "e0"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, r.DeleteExport(c, "e1"), events.CodeNotFound)
	wantCode(t, func() error { _, err := r.LookupExport(c, "e1"); return err }(), events.CodeNotFound)
	if len(r.Exports()) != 0 {
		t.Fatalf("exports after delete: %s", wire(t, r.Exports()))
	}
	if err := r.DeleteConnection(c, "a"); err != nil {
		t.Fatalf("delete after its exports went: %v", err)
	}
}

// A write through one registry is applied by every other registry's watcher.
func TestWatcherAppliesWritesOfAnotherInstance(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	other := e.open(seal.New(key), registry.Options{})
	var seen atomic.Int32
	other.OnChange(func(ch registry.Change) {
		if ch.Kind == registry.KindConnection && ch.Name == "a" {
			seen.Add(1)
		}
	})
	c := ctx(t)
	if _, err := w.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other registry to see the put", func() bool {
		v, ok := other.Connection("a")
		return ok && strings.Contains(wire(t, v), awsSecretKey)
	})
	if seen.Load() == 0 {
		t.Fatal("no change notification")
	}
	var x events.Export
	_ = json.Unmarshal([]byte(`{"name":"e","connection":"a","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`), &x)
	if _, err := w.PutExport(c, x); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other registry to see the export", func() bool {
		return len(other.Exports()) == 1
	})
	// The other instance enforces what it has seen: the connection is in use.
	wantCode(t, other.DeleteConnection(c, "a"), events.CodeBadRequest)
	if err := w.DeleteExport(c, "e"); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteConnection(c, "a"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other registry to see the deletes", func() bool {
		_, ok := other.Connection("a")
		return !ok && len(other.Exports()) == 0
	})
}

// A registry started later loads the current state before Start returns.
func TestStartLoadsCurrentState(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	if _, err := w.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	var loaded atomic.Int32
	ctx2, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	late, err := registry.Open(ctx2, e.js, seal.New(key), registry.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	late.OnChange(func(ch registry.Change) {
		if ch.Kind == registry.KindConnection && ch.Name == "a" {
			loaded.Add(1)
		}
	})
	if err := late.Start(ctx2); err != nil {
		t.Fatal(err)
	}
	defer late.Stop(ctx2)
	if _, ok := late.Connection("a"); !ok || loaded.Load() != 1 {
		t.Fatalf("initial state not loaded by Start: %v %d", ok, loaded.Load())
	}
}

// The watched view may lag; a lookup in the bucket does not. Resolve confirms
// a negative answer from the view this way.
func TestLookupConfirmsNegativeAnswerAgainstBucket(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	stale := e.open(seal.New(key), registry.Options{})
	// Stop the second registry's watchers: its view no longer follows the bucket.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	stale.Stop(sctx)
	cancel()
	if stale.Ready() {
		t.Fatal("ready after Stop")
	}
	c := ctx(t)
	if _, err := w.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, ok := stale.Connection("a"); ok {
		t.Fatal("stopped watcher applied a write")
	}
	got, err := stale.LookupConnection(c, "a")
	if err != nil || !got.AllowsGroup("bio") {
		t.Fatalf("bucket lookup: %v", err)
	}
	// And a delete is seen by the lookup at once too.
	if err := w.DeleteConnection(c, "a"); err != nil {
		t.Fatal(err)
	}
	_, err = stale.LookupConnection(c, "a")
	wantCode(t, err, events.CodeNotFound)
}

func TestRekey(t *testing.T) {
	e := newEnv(t)
	oldKey, newK := newKey(t), newKey(t)
	old := e.open(seal.New(oldKey), registry.Options{})
	c := ctx(t)
	if _, err := old.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := old.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	if err := old.PutSecret(c, "b", "db01", []byte(`"`+secretPassword+`"`)); err != nil {
		t.Fatal(err)
	}

	// Only the new key: every record is unavailable, and the view skips them.
	onlyNew := e.open(seal.New(newK), registry.Options{})
	if _, ok := onlyNew.Connection("a"); ok {
		t.Fatal("record sealed under an unknown key is in the watched view")
	}
	_, err := onlyNew.LookupConnection(c, "a")
	wantCode(t, err, events.CodeUnavailable)
	if !errors.Is(err, events.ErrUnavailable) || !strings.Contains(err.Error(), "master key") ||
		strings.Contains(err.Error(), awsSecretKey) {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = onlyNew.Secret(c, "b", "db01")
	wantCode(t, err, events.CodeUnavailable)
	wantCode(t, onlyNew.PutSecret(c, "b", "db02", []byte(`"x"`)), events.CodeUnavailable)
	// A rekey without the old key goes on past every record it cannot open,
	// lists them, and changes nothing.
	if res, err := onlyNew.Rekey(c); err != nil || res.Resealed != 0 || strings.Join(res.Failed, ",") != "a,b,b.db01" {
		t.Fatalf("rekey without the key that sealed the records: %+v %v", res, err)
	}

	// New key current, old key previous: rekey re-seals all three records.
	both := e.open(seal.New(newK, oldKey), registry.Options{})
	if both.CurrentKeyID() != newK.ID() {
		t.Fatal("current key id")
	}
	res, err := both.Rekey(c)
	if err != nil || res.Resealed != 3 || len(res.Failed) != 0 {
		t.Fatalf("rekey: %+v %v", res, err)
	}
	if res, err := both.Rekey(c); err != nil || res.Resealed != 0 {
		t.Fatalf("second rekey: %+v %v", res, err)
	}
	for _, b := range []struct{ bucket, key string }{{"connections", "a"}, {"connections", "b"}, {"secrets", "b.db01"}} {
		raw, err := e.kv(b.bucket).Get(c, b.key)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw.Value(), []byte(`"kid":"`+newK.ID()+`"`)) {
			t.Fatalf("%s/%s not under the new key: %s", b.bucket, b.key, raw.Value())
		}
		if b.key == "a" && !bytes.Contains(raw.Value(), []byte(events.Redacted)) {
			t.Fatalf("rekey dropped the public copy: %s", raw.Value())
		}
	}
	// Now the new key alone reads everything, and the old key alone reads nothing.
	if got, err := onlyNew.LookupConnection(c, "a"); err != nil || !strings.Contains(wire(t, got), awsSecretKey) {
		t.Fatalf("after rekey: %v", err)
	}
	if s, err := onlyNew.Secret(c, "b", "db01"); err != nil || !bytes.Contains(s.Value, []byte(secretPassword)) {
		t.Fatalf("secret after rekey: %v", err)
	}
	natstest.Eventually(t, 5*time.Second, "the watcher to apply re-sealed records", func() bool {
		_, ok := onlyNew.Connection("a")
		return ok
	})
	_, err = old.LookupConnection(c, "a")
	wantCode(t, err, events.CodeUnavailable)
}

// Rekey uses compare-and-set: a record written between its read and its
// update is not overwritten with the old value.
func TestRekeyDoesNotLoseConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	oldKey, newK := newKey(t), newKey(t)
	// The writer seals under the old key and reads both, like a worker not yet restarted.
	old := e.open(seal.New(oldKey, newK), registry.Options{})
	both := e.open(seal.New(newK, oldKey), registry.Options{})
	c := ctx(t)
	if _, err := old.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := old.PutSecret(c, "b", fmt.Sprintf("s%02d", i), []byte(`"old"`)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 50; i++ {
			if err := old.PutSecret(c, "b", fmt.Sprintf("s%02d", i), []byte(`"written-during-rekey"`)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for {
		if _, err := both.Rekey(c); err != nil && events.CodeOf(err) != events.CodeUnavailable {
			t.Fatalf("rekey: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if _, err := both.Rekey(c); err != nil {
				t.Fatalf("final rekey: %v", err)
			}
			for i := 0; i < 50; i++ {
				s, err := both.Secret(c, "b", fmt.Sprintf("s%02d", i))
				if err != nil || string(s.Value) != `"written-during-rekey"` {
					t.Fatalf("s%02d: %q %v", i, s.Value, err)
				}
			}
			return
		default:
		}
	}
}

// A record the watcher cannot read is dropped from the view, not served stale.
func TestUnreadableRecordLeavesTheView(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv("connections").Put(c, "a", []byte(`{"v":1,"sealed":{"kid":"nope","nonce":"","data":""}}`)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the unreadable record to leave the view", func() bool {
		_, ok := r.Connection("a")
		return !ok
	})
	_, err := r.LookupConnection(c, "a")
	wantCode(t, err, events.CodeUnavailable)
	if _, err := e.kv("connections").Put(c, "a", []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	_, err = r.LookupConnection(c, "a")
	wantCode(t, err, events.CodeUnavailable)
	if !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt record: %v", err)
	}
}

// Open is idempotent and names buckets after the prefix.
func TestOpenIsIdempotentAndUsesPrefix(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	for i := 0; i < 2; i++ {
		e.open(seal.New(key), registry.Options{Prefix: "acme.prod"})
	}
	for _, what := range []string{"connections", "secrets", "exports"} {
		name := events.Subjects{Prefix: "acme.prod"}.Bucket(what)
		if name != "acme_prod_"+what {
			t.Fatalf("bucket name %s", name)
		}
		if _, err := e.js.KeyValue(context.Background(), name); err != nil {
			t.Fatalf("bucket %s: %v", name, err)
		}
	}
	if (events.Subjects{}).Bucket("secrets") != "cloudbridge_secrets" {
		t.Fatal("default bucket name")
	}
}

// Stop ends within its deadline.
func TestStopEndsWatchers(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	r.Stop(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Stop waited out its deadline (%s)", time.Since(start))
	}
}

// A name that cannot be a KV key is reported as not found, not as a storage
// failure carrying the NATS client's text.
func TestInvalidKeyIsNotFound(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		func() error { _, err := r.LookupConnection(c, "a b"); return err }(),
		func() error { _, err := r.LookupExport(c, "x*"); return err }(),
		func() error { _, err := r.Secret(c, "b", "no spaces"); return err }(),
		r.DeleteSecret(c, "b", "no spaces"),
	} {
		wantCode(t, err, events.CodeNotFound)
		if strings.Contains(err.Error(), "nats:") {
			t.Fatalf("NATS client text in %q", err)
		}
	}
}

// Records loaded at start are served when first used; a put over one keeps
// its redacted fields; a worker whose view is behind the bucket (its watcher
// stopped) still keeps the stored value, not its stale one.
func TestLoadedAtStartAndStaleViewPuts(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	for _, n := range []string{"a", "b"} {
		if _, err := w.PutConnection(c, awsConn(t, n, "bio")); err != nil {
			t.Fatal(err)
		}
	}
	late := e.open(seal.New(key), registry.Options{})
	if got, ok := late.Connection("a"); !ok || !strings.Contains(wire(t, got), awsSecretKey) {
		t.Fatalf("record loaded at start: %v %+v", ok, got)
	}
	if n := len(late.Connections()); n != 2 {
		t.Fatalf("listed %d connections, want 2", n)
	}
	if err := late.Health(); err != nil {
		t.Fatalf("health: %v", err)
	}
	// The view is stopped: the other worker changes the secret key.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	late.Stop(sctx)
	cancel()
	changed := awsConn(t, "b", "bio")
	changed.AWS.SecretAccessKey = "a-newer-secret-access-key-0000000000000000"
	if _, err := w.PutConnection(c, changed); err != nil {
		t.Fatal(err)
	}
	redacted := awsConn(t, "b", "chem")
	redacted.AWS.SecretAccessKey = events.Redacted
	if _, err := late.PutConnection(c, redacted); err != nil {
		t.Fatalf("put through a stale view: %v", err)
	}
	got, err := w.LookupConnection(c, "b")
	if err != nil || !got.AllowsGroup("chem") || got.AWS.SecretAccessKey != changed.AWS.SecretAccessKey {
		t.Fatalf("after a put through a stale view: %v %+v", err, got.AWS)
	}
	// A new connection the stale view does not know is created; one it does
	// not know but the bucket has is written over.
	if _, err := late.PutConnection(c, awsConn(t, "c", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.PutConnection(c, awsConn(t, "d", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, err := late.PutConnection(c, redactedConn(t, "d", "chem")); err != nil {
		t.Fatalf("put over a record the view lacks: %v", err)
	}
	if got, err := w.LookupConnection(c, "d"); err != nil || !got.AllowsGroup("chem") || got.AWS.SecretAccessKey != awsSecretKey {
		t.Fatalf("after a put over a record the view lacks: %v", err)
	}
}

func redactedConn(t *testing.T, name string, groups ...string) events.Connection {
	c := awsConn(t, name, groups...)
	c.AWS.SecretAccessKey = events.Redacted
	return c
}

// A worker whose master key opens none of the records loaded at start is
// unhealthy, though it opens records only when used.
func TestWrongKeyAtStartIsUnhealthy(t *testing.T) {
	e := newEnv(t)
	w := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	for _, n := range []string{"b", "a"} {
		if _, err := w.PutConnection(c, awsConn(t, n, "bio")); err != nil {
			t.Fatal(err)
		}
	}
	wrong := e.open(seal.New(newKey(t)), registry.Options{})
	err := wrong.Health()
	if err == nil || !strings.Contains(err.Error(), "2 stored connection") || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("health with the wrong key: %v", err)
	}
}

// ConnectionsOf opens the records loaded at start only for the providers
// asked for: the others stay sealed.
func TestConnectionsOfLeavesOthersSealed(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	for _, n := range []string{"b1", "b2", "b3"} {
		if _, err := w.PutConnection(c, builtinConn(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.PutConnection(c, awsConn(t, "a", "bio")); err != nil {
		t.Fatal(err)
	}
	late := e.open(seal.New(key), registry.Options{})
	got := late.ConnectionsOf(func(p string) bool { return p == events.ProviderAWS })
	if len(got) != 1 || got[0].Name != "a" || !strings.Contains(wire(t, got[0]), awsSecretKey) {
		t.Fatalf("ConnectionsOf(aws) = %+v", got)
	}
	sealed := 0
	for _, n := range []string{"b1", "b2", "b3"} {
		if registry.Unopened(late, n) {
			sealed++
		}
	}
	// Start opens one record to check the master key.
	if sealed < 2 {
		t.Fatalf("%d of 3 builtin records still sealed, want ≥ 2", sealed)
	}
	if n := len(late.ConnectionsOf(func(p string) bool { return p == events.ProviderBuiltin })); n != 3 {
		t.Fatalf("ConnectionsOf(builtin): %d", n)
	}
}

// Deleting the record opened at start to check the master key does not make
// a worker with records under an unknown key unhealthy while its key opens
// the others (still sealed).
func TestHealthAfterTheCheckedRecordIsDeleted(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	other := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := w.PutConnection(c, awsConn(t, n, "bio")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.PutConnection(c, awsConn(t, "x", "bio")); err != nil {
		t.Fatal(err)
	}
	late := e.open(seal.New(key), registry.Options{})
	for _, n := range []string{"a", "b", "c"} {
		if !registry.Unopened(late, n) {
			if err := w.DeleteConnection(c, n); err != nil {
				t.Fatal(err)
			}
			natstest.Eventually(t, 5*time.Second, "the late worker to see the delete", func() bool {
				_, ok := late.Connection(n)
				return !ok
			})
		}
	}
	// x may or may not have been opened (and found unreadable) at start;
	// opening it now makes sure the worker knows of one unreadable record.
	if _, ok := late.Connection("x"); ok {
		t.Fatal("a record under another key was served")
	}
	if err := late.Health(); err != nil {
		t.Fatalf("health: %v", err)
	}
}

// A put applies its own write to the view before it returns (read your
// writes, listeners notified) and the watcher, bringing the same write back,
// neither applies nor notifies it again; writes of another worker after it
// (a delete included) still apply.
func TestPutAppliesItsOwnWriteOnce(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	other := e.open(seal.New(key), registry.Options{})
	var changes, deletes atomic.Int32
	gate, stalled := make(chan struct{}), make(chan struct{})
	w.OnChange(func(ch registry.Change) {
		if ch.Kind == registry.KindConnection && ch.Name == "gate" {
			// The watcher stalls here, so w's puts below must apply
			// their own writes.
			close(stalled)
			select {
			case <-gate:
			case <-time.After(10 * time.Second):
			}
		}
		if ch.Kind == registry.KindConnection && ch.Name == "a" {
			changes.Add(1)
			if ch.Deleted {
				deletes.Add(1)
			}
		}
	})
	c := ctx(t)
	if _, err := other.PutConnection(c, awsConn(t, "gate", "bio")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stalled:
	case <-c.Done():
		t.Fatal("the watcher did not apply the other worker's put")
	}
	groups := []string{"g1", "g2", "g3"}
	for i, g := range groups {
		if _, err := w.PutConnection(c, awsConn(t, "a", g)); err != nil {
			t.Fatal(err)
		}
		got, ok := w.Connection("a")
		if !ok || len(got.Groups) != 1 || got.Groups[0] != g || !strings.Contains(wire(t, got), awsSecretKey) {
			t.Fatalf("put %d: the view has %v (%v), want groups [%s] in clear", i, got.Groups, ok, g)
		}
		if n := changes.Load(); n != int32(i+1) {
			t.Fatalf("put %d: %d change notifications when its reply came, want %d", i, n, i+1)
		}
	}
	// Once w's watcher has applied a later write of another worker, it has
	// brought back the three puts: none of them was notified again.
	close(gate)
	if _, err := other.PutConnection(c, awsConn(t, "z", "bio")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the watcher to apply the other worker's put", func() bool {
		_, ok := w.Connection("z")
		return ok
	})
	if n := changes.Load(); n != int32(len(groups)) {
		t.Fatalf("%d change notifications for %d puts", n, len(groups))
	}
	// The other worker's delete and put of the same connection apply.
	if err := other.DeleteConnection(c, "a"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the delete to apply", func() bool {
		_, ok := w.Connection("a")
		return !ok && deletes.Load() == 1
	})
	if _, err := other.PutConnection(c, awsConn(t, "a", "g4")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the other worker's put to apply", func() bool {
		got, ok := w.Connection("a")
		return ok && len(got.Groups) == 1 && got.Groups[0] == "g4"
	})
	// And w's next put updates it with compare-and-set on the revision the
	// watcher applied.
	if _, err := w.PutConnection(c, awsConn(t, "a", "g5")); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.Connection("a"); len(got.Groups) != 1 || got.Groups[0] != "g5" {
		t.Fatalf("the view has %v after the last put", got.Groups)
	}
}

// startStalled opens a registry on the env's buckets and starts it on a
// goroutine of its own, its watcher stalling on the Initial notification of
// each connection in stall until the test sends on the gate returned (the
// watcher reports each stall on stalled). changes records every connection
// change notified.
func (e *env) startStalled(key seal.Key, stall ...string) (r *registry.Registry, stalled <-chan string, gate chan<- struct{}, changes func() []registry.Change, started <-chan error) {
	e.t.Helper()
	c := ctx(e.t)
	r, err := registry.Open(c, e.js, seal.New(key), registry.Options{Logger: zerolog.Nop()})
	if err != nil {
		e.t.Fatal(err)
	}
	st, g, done := make(chan string, len(stall)), make(chan struct{}), make(chan error, 1)
	var mu sync.Mutex
	var got []registry.Change
	r.OnChange(func(ch registry.Change) {
		if ch.Kind != registry.KindConnection {
			return
		}
		mu.Lock()
		got = append(got, ch)
		mu.Unlock()
		for _, n := range stall {
			if ch.Initial && ch.Name == n {
				st <- n
				select {
				case <-g:
				case <-c.Done():
				}
			}
		}
	})
	go func() { done <- r.Start(c) }()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Stop(ctx)
	})
	return r, st, g, func() []registry.Change {
		mu.Lock()
		defer mu.Unlock()
		return append([]registry.Change(nil), got...)
	}, done
}

func waitStall(t *testing.T, stalled <-chan string, want string) {
	t.Helper()
	select {
	case n := <-stalled:
		if n != want {
			t.Fatalf("stalled at %q, want %q", n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the start-up load did not reach %q", want)
	}
}

// A put through a worker while its start-up load is under way (before
// Start returns) is not undone by the load bringing an older revision of the
// same connection: the load compares the slot's revision, as every change
// does.
func TestStartupLoadKeepsANewerSlot(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	// In revision order: gate1, a, gate2.
	for _, n := range []string{"gate1", "a", "gate2"} {
		if _, err := w.PutConnection(c, awsConn(t, n, "old")); err != nil {
			t.Fatal(err)
		}
	}
	late, stalled, gate, _, started := e.startStalled(key, "gate1", "gate2")
	waitStall(t, stalled, "gate1")
	// a is not loaded yet: the put writes over the bucket's record and
	// adopts its write.
	if _, err := late.PutConnection(c, awsConn(t, "a", "new")); err != nil {
		t.Fatal(err)
	}
	gate <- struct{}{}
	// The load has applied a's older revision by now.
	waitStall(t, stalled, "gate2")
	if got, ok := late.Connection("a"); !ok || len(got.Groups) != 1 || got.Groups[0] != "new" {
		t.Fatalf("during the load the view has %v (%v), want [new]", got.Groups, ok)
	}
	close(gate)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if got, ok := late.Connection("a"); !ok || len(got.Groups) != 1 || got.Groups[0] != "new" {
		t.Fatalf("after the load the view has %v (%v), want [new]", got.Groups, ok)
	}
}

// A delete marker the start-up load brings (a connection deleted before the
// worker started) is notified as Initial, as the rest of the load: a
// listener acting on the whole state once Start returns ignores it.
func TestStartupLoadNotifiesDeletesAsInitial(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	for _, n := range []string{"gone", "kept"} {
		if _, err := w.PutConnection(c, awsConn(t, n, "bio")); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.DeleteConnection(c, "gone"); err != nil {
		t.Fatal(err)
	}
	_, _, _, changes, started := e.startStalled(key)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	var sawDelete bool
	for _, ch := range changes() {
		if !ch.Initial {
			t.Errorf("the start-up load notified %+v without Initial", ch)
		}
		sawDelete = sawDelete || (ch.Name == "gone" && ch.Deleted)
	}
	if !sawDelete {
		t.Fatalf("the load brought no delete marker (%+v): the test does not test it", changes())
	}
}

// Each put of a built-in secret is its next version (1, 2, 3…), also when
// two workers put it at once (fewer than its 10 attempts); a put after a delete starts again at 1.
func TestSecretVersionsCountPuts(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	a := e.open(seal.New(key), registry.Options{})
	b := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	if _, err := a.PutConnection(c, builtinConn(t, "k")); err != nil {
		t.Fatal(err)
	}
	version := func(r *registry.Registry) uint64 {
		t.Helper()
		got, err := r.Secret(c, "k", "db")
		if err != nil {
			t.Fatal(err)
		}
		return got.Version
	}
	for want := uint64(1); want <= 3; want++ {
		if err := a.PutSecret(c, "k", "db", []byte(fmt.Sprint("v", want))); err != nil {
			t.Fatal(err)
		}
		if got := version(a); got != want {
			t.Fatalf("put %d: version %d", want, got)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		for _, r := range []*registry.Registry{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- r.PutSecret(c, "k", "db", []byte("concurrent"))
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := version(b); got != 11 {
		t.Fatalf("after 3 + 8 puts: version %d, want 11", got)
	}
	if err := b.DeleteSecret(c, "k", "db"); err != nil {
		t.Fatal(err)
	}
	if err := a.PutSecret(c, "k", "db", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got := version(b); got != 1 {
		t.Fatalf("after a delete: version %d, want 1", got)
	}
}

// The watcher meeting a record this worker is writing before the put has
// adopted it applies the plaintext the put sealed, without opening the
// record: here a record that would not open shows that it is not opened,
// and the same bytes written by no put of this worker are refused.
func TestWatcherAppliesOwnWriteWithoutOpeningIt(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	r := e.open(seal.New(key), registry.Options{})
	another := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	val := []byte(`{"v":2,"gen":5,"sealed":{"kid":"none","n":"AA==","c":"AA=="}}`)
	pt, err := events.Marshal(awsConn(t, "own", "bio"))
	if err != nil {
		t.Fatal(err)
	}
	forget := registry.ExpectOwn(r, "own", val, pt, 5)
	if _, err := e.kv("connections").Put(c, "own", val); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the watcher to apply the own write", func() bool {
		got, ok := r.Connection("own")
		return ok && got.AllowsGroup("bio")
	})
	forget()
	if _, err := e.kv("connections").Put(c, "other", val); err != nil {
		t.Fatal(err)
	}
	// Written after it by another worker: once r's watcher has applied
	// this, it has passed the other record.
	if _, err := another.PutConnection(c, awsConn(t, "z", "bio")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the watcher to pass the other record", func() bool {
		_, ok := r.Connection("z")
		return ok
	})
	if _, ok := r.Connection("other"); ok {
		t.Fatal("a record written by no put of this worker was applied unopened")
	}
}

// A put over a delete marker seals its record again, above the generation
// the marker carries: the watcher still knows that record as this worker's
// own write (and applies it without opening it), not the one sealed first.
func TestOwnWriteOverADeleteMarkerIsRecognised(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, awsConn(t, "a", "old")); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteConnection(c, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Connection("a"); ok {
		t.Fatal("the delete did not apply")
	}
	// The put writes its record, then waits to adopt it (as the watcher
	// waits to apply it) while the test looks at the record stored.
	release := registry.HoldConnections(r)
	defer release()
	done := make(chan error, 1)
	go func() {
		_, err := r.PutConnection(c, awsConn(t, "a", "new"))
		done <- err
	}()
	var stored []byte
	natstest.Eventually(t, 10*time.Second, "the put to write over the marker", func() bool {
		got, err := e.kv("connections").Get(c, "a")
		if err == nil {
			stored = got.Value()
		}
		return err == nil
	})
	if !registry.IsOwnWrite(r, "a", stored) {
		t.Error("the record written over the delete marker is not recognised as the put's own write")
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Connection("a"); !ok || len(got.Groups) != 1 || got.Groups[0] != "new" {
		t.Fatalf("the view has %v (%v), want [new]", got.Groups, ok)
	}
}

// A delete marker whose read hangs (JetStream not answering) does not hold
// up the changes of other secrets: they are notified while it is read. The
// delete is notified once its marker is read, and a later put of the same
// secret after the delete. The read ends when the registry stops.
func TestMarkerReadDoesNotStallTheSecretsWatcher(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	r := e.open(seal.New(key), registry.Options{})
	other := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"db", "later"} {
		if err := r.PutSecret(c, "b", n, []byte("v1")); err != nil {
			t.Fatal(err)
		}
		// Read, so r remembers its generation and reads its delete marker.
		if _, err := r.Secret(c, "b", n); err != nil {
			t.Fatal(err)
		}
	}
	type seen struct {
		ch    registry.Change
		ended bool // a marker read had returned when it was notified
	}
	var mu sync.Mutex
	var got []seen
	hang, err := registry.HangMarkerReads(r)
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Release()
	r.OnChange(func(ch registry.Change) {
		if ch.Kind == registry.KindSecret {
			mu.Lock()
			got = append(got, seen{ch, hang.Ended()})
			mu.Unlock()
		}
	})
	changes := func(name string) []seen {
		mu.Lock()
		defer mu.Unlock()
		var out []seen
		for _, s := range got {
			if s.ch.Name == name {
				out = append(out, s)
			}
		}
		return out
	}
	if err := other.DeleteSecret(c, "b", "db"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hang.Entered():
	case <-c.Done():
		t.Fatal("r did not read the delete marker")
	}
	// Another secret, and the same one written again, while the read hangs.
	if err := other.PutSecret(c, "b", "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := other.PutSecret(c, "b", "db", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "the other secret's change to be notified", func() bool {
		return len(changes("other")) == 1
	})
	if s := changes("other")[0]; s.ended {
		t.Fatal("the other secret's change was notified only once the marker read had returned: the watcher waited for it")
	}
	hang.Release()
	natstest.Eventually(t, 10*time.Second, "the delete and the put of db to be notified", func() bool {
		return len(changes("db")) == 2
	})
	db := changes("db")
	if !db[0].ch.Deleted || db[1].ch.Deleted {
		t.Fatalf("db's changes notified out of order: %+v", db)
	}
	if !db[0].ended {
		t.Fatal("the delete was notified before its marker was read")
	}

	// A read hanging when the registry stops ends with it.
	hang, err = registry.HangMarkerReads(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.DeleteSecret(c, "b", "later"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hang.Entered():
	case <-c.Done():
		t.Fatal("r did not read the second delete marker")
	}
	stop, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.Stop(stop)
	if stop.Err() != nil || !hang.Ended() {
		t.Fatal("Stop did not end the hanging marker read")
	}
}

// secretKeys lists the keys of the secrets bucket under connection conn.
func (e *env) secretKeys(c context.Context, conn string) []string {
	e.t.Helper()
	l, err := e.kv("secrets").ListKeysFiltered(c, conn+".>")
	if err != nil {
		e.t.Fatal(err)
	}
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	return keys
}

// A secret put through a worker whose view still has a connection another
// worker has deleted (or moved off builtin) leaves no secret stored for it:
// the put reads the connection again after its write, removes the secret and
// fails as its check would have.
func TestSecretPutRacingConnectionDeleteLeavesNoOrphan(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	w := e.open(seal.New(key), registry.Options{})
	other := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	for _, n := range []string{"gone", "moved"} {
		if _, err := other.PutConnection(c, builtinConn(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 5*time.Second, "w to see the connections", func() bool {
		_, a := w.Connection("gone")
		_, b := w.Connection("moved")
		return a && b
	})
	// w's connections watcher stalls on the gate, so its view keeps both.
	gate, stalled := make(chan struct{}), make(chan struct{})
	defer close(gate)
	w.OnChange(func(ch registry.Change) {
		if ch.Kind == registry.KindConnection && ch.Name == "gate" {
			close(stalled)
			select {
			case <-gate:
			case <-c.Done():
			}
		}
	})
	if _, err := other.PutConnection(c, awsConn(t, "gate", "bio")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stalled:
	case <-c.Done():
		t.Fatal("w's watcher did not reach the gate")
	}
	if err := other.DeleteConnection(c, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.PutConnection(c, awsConn(t, "moved", "bio")); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.Connection("gone"); !ok {
		t.Fatal("w's view has applied the delete: the test does not test the race")
	}
	wantCode(t, w.PutSecret(c, "gone", "db", []byte("v")), events.CodeNotFound)
	wantCode(t, w.PutSecret(c, "moved", "db", []byte("v")), events.CodeBadRequest)
	for _, n := range []string{"gone", "moved"} {
		if keys := e.secretKeys(c, n); len(keys) > 0 {
			t.Errorf("secrets left for connection %s (%s): %v", n, map[string]string{"gone": "deleted", "moved": "now aws"}[n], keys)
		}
	}
}

// Secret puts through one worker racing conn rm through another, on a real
// nats-server: whatever the interleaving, a deleted connection keeps no
// secret, and each put either stored its secret for a connection that was
// there or failed not_found.
func TestSecretPutsRacingConnectionDeletes(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	a := e.open(seal.New(key), registry.Options{})
	b := e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	c, cancel := context.WithTimeout(c, 60*time.Second)
	defer cancel()
	for round := 0; round < 20; round++ {
		name := fmt.Sprint("race", round)
		if _, err := a.PutConnection(c, builtinConn(t, name)); err != nil {
			t.Fatal(err)
		}
		natstest.Eventually(t, 5*time.Second, "b to see the connection", func() bool {
			_, ok := b.Connection(name)
			return ok
		})
		var wg sync.WaitGroup
		errs := make(chan error, 5)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := b.PutSecret(c, name, fmt.Sprint("s", i), []byte("v")); err != nil && !errors.Is(err, events.ErrNotFound) {
					errs <- fmt.Errorf("put: %w", err)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.DeleteConnection(c, name); err != nil {
				errs <- fmt.Errorf("delete: %w", err)
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		if keys := e.secretKeys(c, name); len(keys) > 0 {
			t.Fatalf("round %d: secrets left for the deleted connection: %v", round, keys)
		}
	}
}
