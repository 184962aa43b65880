package registry_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// cluster3 starts three in-process nats-servers with JetStream routed into
// one cluster and returns a JetStream client of the first.
func cluster3(t *testing.T) jetstream.JetStream {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		ports[i] = testenv.MustFreePort(t)
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var first *server.Server
	for i, p := range ports {
		s := natstest.ServerWith(t, &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Cluster:    server.ClusterOpts{Name: "regtest", Host: "127.0.0.1", Port: p},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		})
		if first == nil {
			first = s
		}
	}
	js, err := jetstream.New(natstest.Connect(t, first))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, "the JetStream cluster to elect a leader", func() bool {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(c)
		return err == nil
	})
	return js
}

// On replicated (R3) buckets, concurrent puts of one key all succeed: a
// compare-and-set answered 10164 (another write of the key still being
// replicated) is a conflict to retry, not an unavailable bucket.
func TestConcurrentPutsOnReplicatedBuckets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	js := cluster3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var r *registry.Registry
	natstest.Eventually(t, 30*time.Second, "the R3 buckets to be created", func() bool {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		r, err = registry.Open(c, js, seal.New(newKey(t)), registry.Options{Replicas: 3, Logger: zerolog.Nop()})
		return err == nil
	})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Stop(c)
	})
	if _, err := r.PutConnection(ctx, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	const rounds, writers = 10, 6
	for round := 0; round < rounds; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 2*writers)
		for w := 0; w < writers; w++ {
			wg.Add(2)
			go func() {
				defer wg.Done()
				// Creates in even rounds, puts over a stored record in
				// odd ones.
				if _, err := r.PutConnection(ctx, awsConn(t, fmt.Sprintf("a%d", round/2), "bio")); err != nil {
					errs <- fmt.Errorf("put connection: %w", err)
				}
			}()
			go func() {
				defer wg.Done()
				if err := r.PutSecret(ctx, "b", fmt.Sprintf("s%d", round/2), []byte("v")); err != nil {
					errs <- fmt.Errorf("put secret: %w", err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
	}
}

// On replicated (R3) buckets, a secret put's check after its write reads
// from the streams' leaders (a follower behind them could answer without a
// delete a quorum has acknowledged), and a put racing its connection's
// delete leaves no secret, decided by the view or by the bucket's read; a
// connection's delete right after a put finds the secret on the leader.
func TestSecretPutCheckOnReplicatedBuckets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	js := cluster3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key := newKey(t)
	open := func() *registry.Registry {
		var r *registry.Registry
		natstest.Eventually(t, 30*time.Second, "the R3 buckets to be bound", func() bool {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var err error
			r, err = registry.Open(c, js, seal.New(key), registry.Options{Replicas: 3, Logger: zerolog.Nop()})
			return err == nil
		})
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r.Stop(c)
		})
		return r
	}
	w, other := open(), open()
	for _, n := range []string{"gone", "gone2"} {
		if _, err := other.PutConnection(ctx, builtinConn(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, "w to see the connections", func() bool {
		_, ok1 := w.Connection("gone")
		_, ok2 := w.Connection("gone2")
		return ok1 && ok2
	})
	spy := spyGets(t, js.Conn())
	// The secret the put wrote, read from the leader: a listing of the
	// bucket's keys goes through a consumer, which may be on a follower
	// that has not applied the removal yet (the test failed so in CI).
	keptForLeaderCase(t, ctx, w, other, func(conn string) []string {
		stored, err := registry.SecretStored(ctx, other, conn+".db")
		if err != nil {
			t.Fatal(err)
		}
		if stored {
			return []string{conn + ".db"}
		}
		return nil
	}, false)
	connsBucket := events.Subjects{}.Bucket(events.BucketConnections)
	probe := `"next_by_subj":"$KV.` + connsBucket + `.\u003e"}`
	natstest.Eventually(t, 5*time.Second, "the check's reads sent to the leaders", func() bool {
		return spy.has("$JS.API.STREAM.MSG.GET.KV_"+connsBucket, probe) &&
			spy.has("$JS.API.STREAM.MSG.GET.KV_"+connsBucket, `{"last_by_subj":"$KV.`+connsBucket+`.gone2"}`)
	})
	if spy.has("$JS.API.DIRECT.GET.KV_"+connsBucket, probe) {
		t.Error("the probe was sent as a direct get")
	}

	// A put acknowledged just before its connection's delete through
	// another worker: the delete reads the secrets from the leader, and
	// finds it (a listing through a consumer on a follower behind could
	// miss it).
	registry.SetFaults(w, registry.Faults{})
	secretsBucket := events.Subjects{}.Bucket(events.BucketSecrets)
	for i := range 10 {
		name := fmt.Sprint("del", i)
		if _, err := w.PutConnection(ctx, builtinConn(t, name)); err != nil {
			t.Fatal(err)
		}
		natstest.Eventually(t, 10*time.Second, "other to see "+name, func() bool {
			_, ok := other.Connection(name)
			return ok
		})
		if err := w.PutSecret(ctx, name, "db", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := other.DeleteConnection(ctx, name); err != nil {
			t.Fatal(err)
		}
		if stored, err := registry.SecretStored(ctx, other, name+".db"); err != nil || stored {
			t.Fatalf("%s: secret left after its connection's delete (%v)", name, err)
		}
	}
	natstest.Eventually(t, 5*time.Second, "the deletes' reads of the secrets sent to the leader", func() bool {
		return spy.has("$JS.API.STREAM.MSG.GET.KV_"+secretsBucket, `"next_by_subj":"$KV.`+secretsBucket+`.del9.\u003e"}`)
	})
}
