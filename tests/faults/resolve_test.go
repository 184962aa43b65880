package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// Resolve load against three workers on a 3-node cluster (R3 buckets) while
// a NATS node is killed with SIGKILL and restarted and a worker is stopped
// with SIGTERM and started again: at most 1% of the resolves fail, and every
// worker's stop ends with exit 0 within --shutdown-timeout plus a margin.
func TestResolveThroughNodeKillAndWorkerStop(t *testing.T) {
	const (
		requesters = 6
		phase      = 1000 // successful resolves between two faults
		maxFailPct = 1.0
	)
	b := binaries(t)
	aws := awsfake.New(t)
	aws.AddCredentials(awsfake.Credentials{AccessKeyID: "AKIDFAULTSEXAMPLE001", SecretAccessKey: "faults-secret"})
	aws.PutSecretString("dbaws01", `{"login":"awsuser","password":"awspass"}`)

	c := procs.StartCluster(t, b, 3)
	workers := []*procs.Worker{startWorker(t, c), startWorker(t, c), startWorker(t, c)}
	var wmu sync.Mutex
	logs := func() string {
		wmu.Lock()
		defer wmu.Unlock()
		var sb strings.Builder
		for i, w := range workers {
			fmt.Fprintf(&sb, "--- worker %d (exited %v):\n%s\n", i, w.Exited(), tail(w.Logs(), 25))
		}
		return sb.String()
	}
	nc := connect(t, c)
	waitInstances(t, nc, 3, 90*time.Second, logs)
	cl := events.NewClient(nc, "")

	// A short TTL, so resolves keep reaching the providers (the built-in
	// store in the R3 bucket, the AWS fake) during the faults.
	cache := &events.CachePolicy{TTL: events.Duration(2 * time.Second)}
	admin(t, cl, events.ResourceConnections, events.VerbPut, events.Connection{Name: "local-bio", Provider: events.ProviderBuiltin,
		Groups: []string{"bio"}, Secrets: []string{"db*"}, Cache: cache}, nil, 30*time.Second)
	value, _ := json.Marshal(map[string]string{"login": "user01", "password": "password01"})
	admin(t, cl, events.ResourceSecrets, events.VerbPut, events.SecretPut{Connection: "local-bio", Name: "db01", Value: value}, nil, 30*time.Second)
	admin(t, cl, events.ResourceConnections, events.VerbPut, events.Connection{Name: "aws-bio", Provider: events.ProviderAWS,
		Groups: []string{"bio"}, Secrets: []string{"db*"}, Cache: cache,
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDFAULTSEXAMPLE001",
			SecretAccessKey: "faults-secret", Endpoint: aws.URL()}}, nil, 30*time.Second)
	targets := []struct{ conn, secret, login string }{{"local-bio", "db01", "user01"}, {"aws-bio", "dbaws01", "awsuser"}}
	// Every worker has seen both connections: each answers a few resolves.
	for _, tg := range targets {
		eventually(t, 30*time.Second, "resolving "+tg.conn, func() bool {
			for range 6 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := cl.Resolve(ctx, "bio", tg.conn, events.ResolveRequest{Secret: tg.secret})
				cancel()
				if err != nil {
					return false
				}
			}
			return true
		}, logs)
	}

	var ok, failed atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range requesters {
		rc := events.NewClient(connect(t, c), "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tg := targets[(r+i)%len(targets)]
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				reply, err := rc.Resolve(ctx, "bio", tg.conn, events.ResolveRequest{Secret: tg.secret})
				cancel()
				if err == nil {
					if login, _ := reply.String("login"); login != tg.login {
						err = fmt.Errorf("wrong login %q", login)
					}
				}
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					errs[tg.conn+": "+err.Error()]++
					errMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	progress := func(what string) {
		t.Helper()
		target := ok.Load() + phase
		eventually(t, 90*time.Second, what, func() bool { return ok.Load() >= target }, logs)
	}
	progress("resolves before the faults")

	// A NATS node killed with SIGKILL, then restarted on its ports and store.
	killed := c.Nodes[1]
	killed.Kill()
	t.Logf("killed nats-server %s after %d resolves (%d failed)", killed.Name, ok.Load(), failed.Load())
	progress("resolves with a node down")
	killed.Start()
	c.WaitReady(60 * time.Second)
	progress("resolves after the node's restart")

	// A worker stopped with SIGTERM under load, then started again.
	took := stopWorker(t, "0 (under load)", workers[0])
	t.Logf("worker 0 stopped in %s after %d resolves (%d failed)", took.Round(time.Millisecond), ok.Load(), failed.Load())
	progress("resolves with two workers")
	wmu.Lock()
	workers[0] = startWorker(t, c)
	wmu.Unlock()
	waitInstances(t, nc, 3, 60*time.Second, logs)
	progress("resolves after the worker's restart")

	close(stop)
	wg.Wait()
	total := ok.Load() + failed.Load()
	pct := 100 * float64(failed.Load()) / float64(total)
	t.Logf("%d resolves by %d requesters, %d failed (%.3f%%)", total, requesters, failed.Load(), pct)
	for e, n := range errs {
		t.Logf("  %d× %s", n, e)
	}
	if pct > maxFailPct {
		t.Errorf("%.3f%% of the resolves failed, want ≤ %.1f%%", pct, maxFailPct)
	}
	for i, w := range workers {
		took := stopWorker(t, fmt.Sprint(i), w)
		t.Logf("worker %d stopped in %s", i, took.Round(time.Millisecond))
	}
}
