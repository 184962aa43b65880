package registry_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// keptForEnv is a worker w and another worker, sharing the buckets, with the
// builtin connections names put through the other and seen by w.
func keptForEnv(t *testing.T, names ...string) (e *env, w, other *registry.Registry) {
	t.Helper()
	e = newEnv(t)
	key := newKey(t)
	w = e.open(seal.New(key), registry.Options{})
	other = e.open(seal.New(key), registry.Options{})
	c := ctx(t)
	for _, n := range names {
		if _, err := other.PutConnection(c, builtinConn(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 5*time.Second, "w to see the connections", func() bool {
		for _, n := range names {
			if _, ok := w.Connection(n); !ok {
				return false
			}
		}
		return true
	})
	return e, w, other
}

// A secret put whose connection another worker deletes (or moves off
// builtin) between the put's check and its write, the delete's sweep of the
// connection's secrets done before the write, leaves no secret: the put's
// check after its write, decided by the worker's view once it has applied
// the connections bucket's last revision (no read of the connection of its
// own), removes the secret and fails as its check would have; the view is
// held behind the change until the write, so the check must wait for it.
func TestSecretPutAfterTheDeletesSweepLeavesNoOrphan(t *testing.T) {
	e, w, other := keptForEnv(t, "gone", "moved", "kept")
	c := ctx(t)
	var target atomic.Value
	target.Store("")
	var bucketReads atomic.Int32
	// w's connections watcher is held from before the change until the
	// put has written: its view then applies the change only as the put
	// checks it, which must wait for it.
	release := func() {}
	registry.SetFaults(w, registry.Faults{
		SecretChecked: func() {
			release = registry.HoldConnections(w)
			switch target.Load().(string) {
			case "gone":
				if err := other.DeleteConnection(c, "gone"); err != nil {
					t.Error(err)
				}
			case "moved":
				if _, err := other.PutConnection(c, awsConn(t, "moved", "bio")); err != nil {
					t.Error(err)
				}
			}
		},
		SecretWritten: func() { release() },
		ConnReread: func(context.Context) error {
			bucketReads.Add(1)
			return nil
		},
	})
	for _, tc := range []struct {
		conn string
		code events.Code
	}{{"gone", events.CodeNotFound}, {"moved", events.CodeBadRequest}, {"kept", ""}} {
		target.Store(tc.conn)
		err := w.PutSecret(c, tc.conn, "db", []byte("v"))
		keys := e.secretKeys(c, tc.conn)
		if tc.code == "" {
			if err != nil {
				t.Fatalf("%s: %v", tc.conn, err)
			}
			if len(keys) != 1 {
				t.Fatalf("%s: secrets stored %v, want its one", tc.conn, keys)
			}
			continue
		}
		wantCode(t, err, tc.code)
		if len(keys) > 0 {
			t.Errorf("secrets left for connection %s: %v", tc.conn, keys)
		}
	}
	if n := bucketReads.Load(); n > 0 {
		t.Errorf("the puts read their connection from the bucket %d time(s): the view should have decided", n)
	}
}

// When the view cannot decide (the connections bucket's last revision
// cannot be read), the put reads its connection from the bucket, with the
// same outcome.
func TestSecretPutChecksTheBucketWhenTheViewCannotDecide(t *testing.T) {
	e, w, other := keptForEnv(t, "gone", "kept")
	c := ctx(t)
	var target atomic.Value
	target.Store("")
	var bucketReads atomic.Int32
	registry.SetFaults(w, registry.Faults{
		SecretChecked: func() {
			if target.Load().(string) == "gone" {
				if err := other.DeleteConnection(c, "gone"); err != nil {
					t.Error(err)
				}
			}
		},
		LastRevision: func(context.Context) (uint64, error) { return 0, errors.New("injected: no stream info") },
		ConnReread: func(context.Context) error {
			bucketReads.Add(1)
			return nil
		},
	})
	target.Store("gone")
	wantCode(t, w.PutSecret(c, "gone", "db", []byte("v")), events.CodeNotFound)
	if keys := e.secretKeys(c, "gone"); len(keys) > 0 {
		t.Errorf("secrets left for the deleted connection: %v", keys)
	}
	target.Store("kept")
	if err := w.PutSecret(c, "kept", "db", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if s, err := w.Secret(c, "kept", "db"); err != nil || string(s.Value) != "v" {
		t.Fatalf("kept: %q %v", s.Value, err)
	}
	if n := bucketReads.Load(); n != 2 {
		t.Errorf("the bucket was read %d time(s), want once per put", n)
	}
}

// A put whose check after its write cannot read the connection at all
// succeeds: the value is stored, and nothing tells its connection is gone.
func TestSecretPutSucceedsWhenItsConnectionCannotBeReadAgain(t *testing.T) {
	_, w, _ := keptForEnv(t, "kept")
	c := ctx(t)
	registry.SetFaults(w, registry.Faults{
		LastRevision: func(context.Context) (uint64, error) { return 0, errors.New("injected: no stream info") },
		ConnReread:   func(context.Context) error { return errors.New("injected: the bucket does not answer") },
	})
	if err := w.PutSecret(c, "kept", "db", []byte("v")); err != nil {
		t.Fatalf("put: %v", err)
	}
	if s, err := w.Secret(c, "kept", "db"); err != nil || string(s.Value) != "v" {
		t.Fatalf("stored: %q %v", s.Value, err)
	}
}

// The check after the write runs on a deadline of its own: a request whose
// context ends right after its write still removes the secret of a
// connection deleted meanwhile (and fails not_found, not with the request's
// end), and a check that hangs ends at that deadline, however long the
// request had left, the put then successful.
func TestSecretPutCheckHasADeadlineOfItsOwn(t *testing.T) {
	e, w, other := keptForEnv(t, "gone", "slow")
	c := ctx(t)
	var target atomic.Value
	target.Store("")
	var cancelReq atomic.Value
	checks := make(chan error, 2)
	registry.SetFaults(w, registry.Faults{
		SecretChecked: func() {
			if target.Load().(string) == "gone" {
				if err := other.DeleteConnection(c, "gone"); err != nil {
					t.Error(err)
				}
			}
		},
		SecretWritten: func() { cancelReq.Load().(context.CancelFunc)() },
		LastRevision:  func(context.Context) (uint64, error) { return 0, errors.New("injected: no stream info") },
		ConnReread: func(ctx context.Context) error {
			d, ok := ctx.Deadline()
			switch {
			case ctx.Err() != nil:
				checks <- errors.New("the check got the request's ended context")
			case !ok || time.Until(d) > registry.KeptForTimeout:
				checks <- errors.New("the check has no deadline of its own")
			default:
				checks <- nil
			}
			if target.Load().(string) == "slow" {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		},
	})

	target.Store("gone")
	req, cancel := context.WithCancel(c)
	cancelReq.Store(cancel)
	wantCode(t, w.PutSecret(req, "gone", "db", []byte("v")), events.CodeNotFound)
	if err := <-checks; err != nil {
		t.Error(err)
	}
	if keys := e.secretKeys(c, "gone"); len(keys) > 0 {
		t.Errorf("secrets left for the deleted connection: %v", keys)
	}

	target.Store("slow")
	req, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	cancelReq.Store(context.CancelFunc(func() {}))
	done := make(chan error, 1)
	go func() { done <- w.PutSecret(req, "slow", "db", []byte("v")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("put: %v", err)
		}
	case <-c.Done():
		t.Fatal("the put's check did not end at its own deadline")
	}
	if err := <-checks; err != nil {
		t.Error(err)
	}
	if s, err := w.Secret(c, "slow", "db"); err != nil || string(s.Value) != "v" {
		t.Fatalf("stored: %q %v", s.Value, err)
	}
}

// BenchmarkSecretPutCheck puts secrets through one worker, 16 at a time, in
// alternating rounds: the check after each write decided by the view (one
// shared read of the connections bucket's last revision for the puts under
// way), against a read of each put's connection from the bucket (the view
// made unable to decide), as the check did before. It prints the rate and
// the CPU per put of the process (worker and in-process nats-server) of
// each, and their ratios.
func BenchmarkSecretPutCheck(b *testing.B) {
	srv := natstest.Server(b)
	nc := natstest.Connect(b, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	raw := make([]byte, seal.KeySize)
	_, _ = rand.Read(raw)
	key, err := seal.NewKey(raw)
	if err != nil {
		b.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	w, err := registry.Open(c, js, seal.New(key), registry.Options{Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(c); err != nil {
		b.Fatal(err)
	}
	defer w.Stop(context.Background())
	const n, rounds = 3000, 3
	for i := 0; i < n; i++ {
		if _, err := w.PutConnection(c, events.Connection{Name: fmt.Sprint("p", i), Provider: events.ProviderBuiltin,
			Groups: []string{"bio"}, Secrets: []string{"*"}}); err != nil {
			b.Fatal(err)
		}
	}
	cpuNow := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	run := func(name string, bucket bool) (rate, cpu float64) {
		f := registry.Faults{}
		if bucket {
			f.LastRevision = func(context.Context) (uint64, error) { return 0, errors.New("the view does not decide") }
		}
		registry.SetFaults(w, f)
		t0, c0 := time.Now(), cpuNow()
		var wg sync.WaitGroup
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += 16 {
					if err := w.PutSecret(c, fmt.Sprint("p", i), name, []byte("v")); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		return n / time.Since(t0).Seconds(), float64((cpuNow() - c0).Microseconds()) / n
	}
	b.ResetTimer()
	for round := 0; round < rounds; round++ {
		br, bc := run(fmt.Sprint("bucket", round), true)
		vr, vc := run(fmt.Sprint("view", round), false)
		fmt.Printf("round %d: view %.0f puts/s, %.0f µs CPU per put | bucket read %.0f puts/s, %.0f µs | ratio %.2f rate, %.2f CPU\n",
			round, vr, vc, br, bc, vr/br, vc/bc)
	}
}

// getSpy records the stream message gets sent through a server: to the
// streams' leaders (STREAM.MSG.GET) and direct ones (DIRECT.GET).
type getSpy struct {
	mu   sync.Mutex
	gets []string // "<subject> <body>"
}

func spyGets(t *testing.T, nc *nats.Conn) *getSpy {
	t.Helper()
	s := &getSpy{}
	for _, subj := range []string{"$JS.API.STREAM.MSG.GET.>", "$JS.API.DIRECT.GET.>"} {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			s.mu.Lock()
			s.gets = append(s.gets, m.Subject+" "+string(m.Data))
			s.mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// has reports whether a get to subject with a body ending with body was
// seen.
func (s *getSpy) has(subject, body string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.gets {
		if strings.HasPrefix(g, subject+" {") && strings.HasSuffix(g, body) {
			return true
		}
	}
	return false
}

// countWith counts the gets to subject with a body ending with body.
func (s *getSpy) countWith(subject, body string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.gets {
		if strings.HasPrefix(g, subject+" {") && strings.HasSuffix(g, body) {
			n++
		}
	}
	return n
}

func (s *getSpy) count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.gets {
		if strings.HasPrefix(g, prefix) {
			n++
		}
	}
	return n
}

// keptForLeaderCase puts a secret of connection "gone" through w while
// other deletes it, the view held behind the delete (decided by the view
// once it applied the probed revision), then of "gone2" with the view unable
// to decide (the connection read from the bucket): both fail not_found and
// leave no secret.
func keptForLeaderCase(t *testing.T, c context.Context, w, other *registry.Registry, secretKeys func(string) []string, leader bool) {
	t.Helper()
	var target atomic.Value
	target.Store("gone")
	release := func() {}
	f := registry.Faults{
		LeaderReads: leader,
		SecretChecked: func() {
			release = registry.HoldConnections(w)
			if err := other.DeleteConnection(c, target.Load().(string)); err != nil {
				t.Error(err)
			}
		},
		SecretWritten: func() { release() },
	}
	registry.SetFaults(w, f)
	wantCode(t, w.PutSecret(c, "gone", "db", []byte("v")), events.CodeNotFound)
	if keys := secretKeys("gone"); len(keys) > 0 {
		t.Errorf("secrets left for the deleted connection: %v", keys)
	}
	f.LastRevision = func(context.Context) (uint64, error) { return 0, errors.New("injected: the view does not decide") }
	registry.SetFaults(w, f)
	target.Store("gone2")
	wantCode(t, w.PutSecret(c, "gone2", "db", []byte("v")), events.CodeNotFound)
	if keys := secretKeys("gone2"); len(keys) > 0 {
		t.Errorf("secrets left for the deleted connection: %v", keys)
	}
}

// The check's reads (the connections bucket's last revision, the
// connection, the secret to remove) go to the streams' leaders when asked
// (as for replicated buckets), and otherwise, on a single replica, as
// direct gets: the probe, one get of the next message after the view.
func TestSecretPutCheckReadsFromTheLeader(t *testing.T) {
	connsBucket := events.Subjects{}.Bucket(events.BucketConnections)
	conns, secrets := "KV_"+connsBucket, "KV_"+events.Subjects{}.Bucket(events.BucketSecrets)
	probe := `"next_by_subj":"$KV.` + connsBucket + `.\u003e"}`
	for _, leader := range []bool{true, false} {
		t.Run(fmt.Sprint("leader=", leader), func(t *testing.T) {
			e, w, other := keptForEnv(t, "gone", "gone2")
			c := ctx(t)
			spy := spyGets(t, natstest.Connect(t, e.srv))
			keptForLeaderCase(t, c, w, other, func(conn string) []string { return e.secretKeys(c, conn) }, leader)
			if !leader {
				natstest.Eventually(t, 5*time.Second, "the probe as a direct get", func() bool {
					return spy.has("$JS.API.DIRECT.GET."+conns, probe)
				})
				if n := spy.count("$JS.API.STREAM.MSG.GET."); n > 0 {
					t.Errorf("%d get(s) sent to a single replica's leader API", n)
				}
				return
			}
			natstest.Eventually(t, 5*time.Second, "the check's reads sent to the leaders", func() bool {
				return spy.has("$JS.API.STREAM.MSG.GET."+conns, probe) &&
					spy.has("$JS.API.STREAM.MSG.GET."+conns, `{"last_by_subj":"$KV.`+connsBucket+`.gone2"}`) &&
					spy.count("$JS.API.STREAM.MSG.GET."+secrets+" ") >= 2
			})
			if spy.has("$JS.API.DIRECT.GET."+conns, probe) {
				t.Error("the probe was sent as a direct get")
			}
		})
	}
}

// The view's check has a budget of its own: a read of the connections
// bucket's last revision that does not answer leaves the bucket's read and
// the removal their time, the put failing as its check would have and
// leaving no secret.
func TestSecretPutCheckHasTimeLeftAfterASlowProbe(t *testing.T) {
	e, w, other := keptForEnv(t, "gone")
	c := ctx(t)
	var reads atomic.Int32
	registry.SetFaults(w, registry.Faults{
		SecretChecked: func() {
			if err := other.DeleteConnection(c, "gone"); err != nil {
				t.Error(err)
			}
		},
		LastRevision: func(ctx context.Context) (uint64, error) {
			<-ctx.Done() // does not answer within its own deadline
			return 0, ctx.Err()
		},
		ConnReread: func(context.Context) error {
			reads.Add(1)
			return nil
		},
	})
	wantCode(t, w.PutSecret(c, "gone", "db", []byte("v")), events.CodeNotFound)
	if keys := e.secretKeys(c, "gone"); len(keys) > 0 {
		t.Errorf("secrets left for the deleted connection: %v", keys)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("the connection was read from the bucket %d time(s), want once", n)
	}
}

// A replicated stream refuses a write of a key while another write of it
// is being replicated (10164, "wrong last sequence"), the put's own just
// acknowledged among them: the removal of a secret stored for a connection
// deleted meanwhile tries again while the record is still the put's, instead
// of taking the conflict for a later write and leaving the orphan.
func TestOrphanRemovalRetriesAConflictOnItsOwnWrite(t *testing.T) {
	e, w, other := keptForEnv(t, "gone")
	c := ctx(t)
	var conflicts atomic.Int32
	registry.SetFaults(w, registry.Faults{
		SecretChecked: func() {
			if err := other.DeleteConnection(c, "gone"); err != nil {
				t.Error(err)
			}
		},
		OrphanPurge: func() error {
			if conflicts.Add(1) <= 2 {
				return &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}
			}
			return nil
		},
	})
	wantCode(t, w.PutSecret(c, "gone", "db", []byte("v")), events.CodeNotFound)
	if keys := e.secretKeys(c, "gone"); len(keys) > 0 {
		t.Errorf("secrets left for the deleted connection: %v", keys)
	}
	if n := conflicts.Load(); n != 3 {
		t.Errorf("purge attempts %d, want 3 (two conflicts, then the purge)", n)
	}
}

// A connection's delete finds its secrets as the put's check reads: from
// the secrets stream's leader when asked (as for replicated buckets, whose
// listing through a consumer may run on a follower behind the leader and
// miss a secret whose put was just acknowledged), one read per key. It
// removes every secret of the connection, a key written again meanwhile
// and one already deleted included, and none of another connection whose
// name it prefixes. The deletes of a connection and of a secret read the
// record they delete the same way.
func TestConnectionDeleteReadsItsSecretsFromTheLeader(t *testing.T) {
	for _, leader := range []bool{true, false} {
		t.Run(fmt.Sprint("leader=", leader), func(t *testing.T) {
			e, w, _ := keptForEnv(t, "gone", "gone-x")
			c := ctx(t)
			for _, n := range []string{"a", "b", "c", "d"} {
				if err := w.PutSecret(c, "gone", n, []byte("v")); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.PutSecret(c, "gone", "b", []byte("v2")); err != nil {
				t.Fatal(err)
			}
			if err := w.DeleteSecret(c, "gone", "c"); err != nil {
				t.Fatal(err)
			}
			if err := w.PutSecret(c, "gone-x", "a", []byte("v")); err != nil {
				t.Fatal(err)
			}
			registry.SetFaults(w, registry.Faults{LeaderReads: leader})
			spy := spyGets(t, natstest.Connect(t, e.srv))
			if err := w.DeleteConnection(c, "gone"); err != nil {
				t.Fatal(err)
			}
			if keys := e.secretKeys(c, "gone"); len(keys) > 0 {
				t.Errorf("secrets left for the deleted connection: %v", keys)
			}
			if keys := e.secretKeys(c, "gone-x"); len(keys) != 1 {
				t.Errorf("secrets of gone-x: %v, want its one", keys)
			}
			api := "$JS.API.DIRECT.GET."
			if leader {
				api = "$JS.API.STREAM.MSG.GET."
			}
			reads := api + "KV_" + events.Subjects{}.Bucket(events.BucketSecrets)
			filter := `"next_by_subj":"$KV.` + events.Subjects{}.Bucket(events.BucketSecrets) + `.gone.\u003e"}`
			natstest.Eventually(t, 5*time.Second, "the delete's reads of the secrets", func() bool {
				// One read per key (a, b, c's marker, d), and the one
				// that finds no more.
				return spy.countWith(reads, filter) == 5
			})
			// The records deleted are read the same way: the
			// connection, and a secret removed on its own.
			if err := w.DeleteSecret(c, "gone-x", "a"); err != nil {
				t.Fatal(err)
			}
			conns := events.Subjects{}.Bucket(events.BucketConnections)
			secrets := events.Subjects{}.Bucket(events.BucketSecrets)
			natstest.Eventually(t, 5*time.Second, "the deletes' reads of their records", func() bool {
				return spy.has(api+"KV_"+conns, `{"last_by_subj":"$KV.`+conns+`.gone"}`) &&
					spy.has(api+"KV_"+secrets, `{"last_by_subj":"$KV.`+secrets+`.gone-x.a"}`)
			})
		})
	}
}

// A delete that finds its key written since it read it reads the key again
// from the stream's leader when asked (a follower behind it could answer
// that the key holds nothing and leave the record), then deletes what it
// finds.
func TestDeleteAfterAConflictRereadsFromTheLeader(t *testing.T) {
	e, w, _ := keptForEnv(t, "kept")
	c := ctx(t)
	if err := w.PutSecret(c, "kept", "db", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	first, err := w.Secret(c, "kept", "db")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutSecret(c, "kept", "db", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	registry.SetFaults(w, registry.Faults{LeaderReads: true})
	spy := spyGets(t, natstest.Connect(t, e.srv))
	// The revision read before the second put: the purge conflicts.
	if err := registry.DeleteRead(w, "secrets", "kept.db", 0, first.Revision); err != nil {
		t.Fatal(err)
	}
	if keys := e.secretKeys(c, "kept"); len(keys) > 0 {
		t.Errorf("secrets left: %v", keys)
	}
	secrets := events.Subjects{}.Bucket(events.BucketSecrets)
	natstest.Eventually(t, 5*time.Second, "the read again sent to the leader", func() bool {
		return spy.has("$JS.API.STREAM.MSG.GET.KV_"+secrets, `{"last_by_subj":"$KV.`+secrets+`.kept.db"}`)
	})
}
