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
// alternating phases of the same run the pool is left alone (steady) or a
// hot secret is rotated every 2 s (PutSecretValue, then its CloudTrail
// event on EventBridge; the next rotation waits until both workers serve the
// new value). It prints the upstream GetSecretValue calls per rotation per
// worker (goal ≤ 1) and the p99 of resolves during the rotation phases
// against the steady phases (goal ≤ 1.1×).
//
//	go test -run '^$' -bench RotationUnderLoad -benchtime 1x ./workers/service
func BenchmarkRotationUnderLoad(b *testing.B) {
	const (
		secrets    = 10
		requesters = 16
		rounds     = 2               // steady + rotating, twice
		steadyFor  = 6 * time.Second // per steady phase
		rotations  = 4               // per rotating phase
		every      = 2 * time.Second
	)
	e := newRotationMoto(b)
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
	before := []map[string]int{}
	var upstream [2]map[string]int
	b.ResetTimer()
	for round := range rounds {
		p := phase{from: time.Now()}
		time.Sleep(steadyFor) // a steady phase is measured for its length: no rotation in it
		p.to = time.Now()
		phases = append(phases, p)

		p = phase{from: time.Now(), rotating: true}
		before = before[:0]
		for _, c := range calls {
			before = append(before, c.snapshot())
		}
		for k := range rotations {
			next := time.Now().Add(every)
			i := (round*rotations + k) % secrets
			name := fmt.Sprintf("bio/hot%02d", i)
			version[i]++
			value := fmt.Sprintf(`{"password":"pw-b-%d-%d"}`, i, version[i])
			e.rotate(b, name, value)
			n++
			e.emit(b, "PutSecretValue", fmt.Sprintf("bench-%d", n), name, time.Now())
			for _, w := range ws {
				if !waitUntil(30*time.Second, func() bool { return serves(w, conn.Name, name, value) }) {
					b.Fatalf("rotation %d of %s not served within 30 s", n, name)
				}
			}
			time.Sleep(time.Until(next)) // the rotation rate, not a synchronization
		}
		p.to = time.Now()
		phases = append(phases, p)
		for i, c := range calls {
			d := c.since(before[i])
			if upstream[i] == nil {
				upstream[i] = map[string]int{}
			}
			for k, v := range d {
				upstream[i][k] += v
			}
		}
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
	total := rounds * rotations
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
