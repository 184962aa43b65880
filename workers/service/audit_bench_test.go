package service

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// BenchmarkCachedResolveAuditOnVsOff measures cached resolves with audit
// events on (best-effort, the default) against a worker without audit, each
// on its own server, in alternating rounds of the same run, and prints the
// ratios (goal: throughput ≥ 0.8×, p99 ≤ 1.3×).
func BenchmarkCachedResolveAuditOnVsOff(b *testing.B) {
	type side struct {
		conns []*nats.Conn
		js    jetstream.JetStream
	}
	setup := func(opts ...Option) side {
		srv := natstest.Server(b)
		cfg := joinedConfig(srv.ClientURL(), newMasterKey(b))
		cfg.HTTPAddr = "off"
		s, err := Start(context.Background(), cfg, zerolog.Nop(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Stop(context.Background()) })
		nc, c := connect(b, srv.ClientURL())
		walkthrough(b, c)
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			b.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		sd := side{js: js}
		for i := 0; i < 4; i++ {
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(nc.Close)
			sd.conns = append(sd.conns, nc)
		}
		return sd
	}
	on, off := setup(), setup(withoutAudit())
	subject := events.Subjects{}.Resolve("bio", "local-bio")
	body := []byte(`{"secret":"biodb01"}`)
	const requesters, rounds = 32, 5
	per := max(b.N/rounds, 2000)
	load(b, on.conns, requesters, 1000, subject, body)
	load(b, off.conns, requesters, 1000, subject, body)
	b.ResetTimer()
	var onR, offR, onP99, offP99 []float64
	for r := 0; r < rounds; r++ {
		x, _, x99 := load(b, off.conns, requesters, per, subject, body)
		y, _, y99 := load(b, on.conns, requesters, per, subject, body)
		offR, onR = append(offR, x), append(onR, y)
		offP99, onP99 = append(offP99, float64(x99)), append(onP99, float64(y99))
	}
	b.StopTimer()
	rOn, rOff := median(onR), median(offR)
	p99On, p99Off := time.Duration(median(onP99)), time.Duration(median(offP99))
	b.ReportMetric(rOn/rOff, "throughput-ratio")
	b.ReportMetric(float64(p99On)/float64(p99Off), "p99-ratio")
	stored := countEvents(on.js)
	fmt.Printf("cached resolve, audit on: %.0f req/s p99 %s | audit off: %.0f req/s p99 %s | throughput ratio %.2f (goal ≥ 0.80), p99 ratio %.2f (goal ≤ 1.30) | %d audit events stored\n",
		rOn, p99On, rOff, p99Off, rOn/rOff, float64(p99On)/float64(p99Off), stored)
}
