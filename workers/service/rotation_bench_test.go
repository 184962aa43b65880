package service

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// BenchmarkRotationUnderLoad: two workers (one NATS server, moto behind an
// EventBridge rule and an SQS queue), a connection with TTL 12h and 10 hot
// secrets, 16 requesters resolving them from the cache without pause. In
// interleaved 2 s windows of the same run, a hot secret is rotated
// (PutSecretValue, then its CloudTrail event on EventBridge; the window
// waits until both workers serve the new value), or, in the steady
// windows, a secret outside the allowlist is (the same emulator and
// consumer work, no invalidation). It prints the upstream GetSecretValue calls per rotation per
// worker (goal ≤ 1) and the p99 of resolves in the rotation windows
// against the steady windows (goal ≤ 1.1×).
//
//	go test -run '^$' -bench RotationUnderLoad -benchtime 1x ./workers/service
func BenchmarkRotationUnderLoad(b *testing.B) {
	const (
		secrets    = 10
		requesters = 16
		rotations  = 12 // and as many control events, interleaved
		every      = 2 * time.Second
	)
	e := newRotationMoto(b)
	e.create(b, "chem/cold", `{"password":"pw-b-cold-0"}`)
	for i := range secrets {
		e.create(b, fmt.Sprintf("bio/hot%02d", i), fmt.Sprintf(`{"password":"pw-b-%d-0"}`, i))
	}
	srv := natstest.Server(b)
	key := newMasterKey(b)
	calls := []*awsCalls{newAWSCalls(e.name), newAWSCalls(e.name)}
	ws := []*worker{
		startWorker(b, joinedConfig(srv.ClientURL(), key), WithProvider("aws", awsFactory(calls[0], 20))),
		startWorker(b, joinedConfig(srv.ClientURL(), key), WithProvider("aws", awsFactory(calls[1], 20))),
	}
	_, admin := connect(b, srv.ClientURL())
	conn := e.connection("aws-sm-bench", 12*time.Hour, 0)
	adminReq(b, admin, events.ResourceConnections, events.VerbPut, conn, nil)
	for _, w := range ws {
		consuming(b, w, conn.Name)
	}
	for i := range secrets {
		warm(b, admin, conn.Name, fmt.Sprintf("bio/hot%02d", i), ws...)
	}
	clients := make([]*events.Client, 4)
	for i := range clients {
		_, clients[i] = connect(b, srv.ClientURL())
	}

	type sample struct {
		at time.Time
		d  time.Duration
	}
	var (
		stop    atomic.Bool
		failed  atomic.Int64
		wg      sync.WaitGroup
		mu      sync.Mutex
		samples []sample
	)
	for r := range requesters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[r%len(clients)]
			local := make([]sample, 0, 1<<14)
			for i := 0; !stop.Load(); i++ {
				secret := fmt.Sprintf("bio/hot%02d", (r+i)%secrets)
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.Resolve(ctx, "bio", conn.Name, events.ResolveRequest{Secret: secret})
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				local = append(local, sample{t0, time.Since(t0)})
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		}()
	}

	type phase struct {
		from, to time.Time
		rotating bool
	}
	var phases []phase
	version := make([]int, secrets)
	n := 0
	var upstream [2]map[string]int
	b.ResetTimer()
	before := []map[string]int{calls[0].snapshot(), calls[1].snapshot()}
	for k := range 2 * rotations {
		// Odd windows rotate a hot secret; even ones are the steady
		// baseline with the same cloud traffic (PutSecretValue and its
		// event, received and parsed by a consumer) of a secret outside the
		// allowlist, so nothing is invalidated: the baseline carries the
		// emulator's CPU, which shares the machine, as the rotations do.
		// Interleaving them every 2 s spreads the machine's other load
		// over both.
		deleted := calls[0].n("DeleteMessage") + calls[1].n("DeleteMessage")
		p := phase{from: time.Now(), rotating: k%2 == 1}
		next := p.from.Add(every)
		n++
		if !p.rotating {
			e.rotate(b, "chem/cold", fmt.Sprintf(`{"password":"pw-b-cold-%d"}`, n))
			e.emit(b, "PutSecretValue", fmt.Sprintf("bench-%d", n), "chem/cold", time.Now())
			// Handled once a consumer deleted it (as cheap a wait as the
			// rotation windows' cache peeks).
			if !waitUntil(30*time.Second, func() bool { return calls[0].n("DeleteMessage")+calls[1].n("DeleteMessage") >= deleted+1 }) {
				b.Fatal("a control event was not received within 30 s")
			}
		} else {
			i := (k / 2) % secrets
			name := fmt.Sprintf("bio/hot%02d", i)
			version[i]++
			value := fmt.Sprintf(`{"password":"pw-b-%d-%d"}`, i, version[i])
			e.rotate(b, name, value)
			e.emit(b, "PutSecretValue", fmt.Sprintf("bench-%d", n), name, time.Now())
			for _, w := range ws {
				if !waitUntil(30*time.Second, func() bool { return serves(w, conn.Name, name, value) }) {
					b.Fatalf("rotation %d of %s not served within 30 s", n, name)
				}
			}
		}
		time.Sleep(time.Until(next)) // the event rate, not a synchronization
		p.to = time.Now()
		phases = append(phases, p)
	}
	for i, c := range calls {
		upstream[i] = c.since(before[i])
	}
	stop.Store(true)
	wg.Wait()
	b.StopTimer()

	var steady, rotating []time.Duration
	for _, s := range samples {
		for _, p := range phases {
			if !s.at.Before(p.from) && s.at.Before(p.to) {
				if p.rotating {
					rotating = append(rotating, s.d)
				} else {
					steady = append(steady, s.d)
				}
				break
			}
		}
	}
	if len(steady) == 0 || len(rotating) == 0 {
		b.Fatal("no samples")
	}
	p99s, p99r := percentile(steady, 0.99), percentile(rotating, 0.99)
	total := rotations
	perWorker := make([]float64, len(calls))
	pool := 0
	for i := range calls {
		perWorker[i] = float64(upstream[i]["GetSecretValue"]) / float64(total)
		pool += upstream[i]["GetSecretValue"]
	}
	ratio := float64(p99r) / float64(p99s)
	b.Logf("%d rotations under load (%d requesters, %d hot secrets, TTL 12h, 2 workers): GetSecretValue %d for the pool, "+
		"%.2f per rotation per worker (worker 1 %.2f, worker 2 %.2f; goal <= 1); DescribeSecret %d",
		total, requesters, secrets, pool, float64(pool)/float64(total)/2, perWorker[0], perWorker[1],
		upstream[0]["DescribeSecret"]+upstream[1]["DescribeSecret"])
	b.Logf("resolves: steady p99 %s (p50 %s, %d samples), during rotations p99 %s (p50 %s, %d samples): ratio %.2f (goal <= 1.1); %d failed",
		p99s.Round(time.Microsecond), percentile(steady, 0.5).Round(time.Microsecond), len(steady),
		p99r.Round(time.Microsecond), percentile(rotating, 0.5).Round(time.Microsecond), len(rotating), ratio, failed.Load())
	b.ReportMetric(float64(pool)/float64(total)/2, "GetSecretValue/rotation/worker")
	b.ReportMetric(ratio, "p99-rotating/steady")
}

func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}
