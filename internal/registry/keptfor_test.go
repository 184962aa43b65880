package registry_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

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
