package service

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/audit"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// loadWith runs total requests of do from requesters goroutines over conns
// and returns the throughput and the p99 latency.
func loadWith(b *testing.B, conns []*nats.Conn, requesters, total int, do requestFunc) (float64, time.Duration) {
	rate, _, p99 := loadLat(b, conns, requesters, total, do)
	return rate, p99
}

// cpuTime is the CPU time this process used so far (user and system):
// server, workers and requesters all run in it.
func cpuTime() time.Duration {
	ru := rusage()
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rusage is this process's resource usage so far (zero where getrusage
// fails).
func rusage() syscall.Rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return syscall.Rusage{}
	}
	return ru
}

// loadAverage is the 1-minute load average, for the printed figures.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// BenchmarkCachedResolveAuditOnVsOff measures cached resolves with audit
// events on (best-effort, the default), with audit on and sealed replies,
// against a worker without audit, each worker on its own server, in
// alternating rounds of the same run, and prints the ratios against audit
// off (goal: throughput ≥ 0.8×, p99 ≤ 1.3×). Every request carries a request
// id as the typed client's do; a sealed request also carries the
// requester's curve key, and its reply is opened and checked as the typed
// client does (events.ReplySealer) (the requesters share the two cores with the worker, so the
// requester's cost of opening counts too).
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

	plain := func(nc *nats.Conn, _ int) error {
		m := nats.NewMsg(subject)
		m.Data = body
		m.Header.Set(events.HeaderRequestID, nuid.Next())
		rep, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil || rep.Header.Get(events.HeaderErrorCode) != "" {
			return fmt.Errorf("request %s: %v", subject, err)
		}
		return nil
	}
	// One curve key per requester, as each typed client makes its own.
	keys := make([]*events.ReplySealer, requesters)
	for i := range keys {
		kp, _ := nkeys.CreateCurveKeys()
		keys[i], _ = events.NewReplySealer(kp)
	}
	sealed := func(nc *nats.Conn, r int) error {
		id := nuid.Next()
		m := nats.NewMsg(subject)
		m.Data = body
		m.Header.Set(events.HeaderRequestID, id)
		m.Header.Set(events.HeaderReplyKey, keys[r].PublicKey())
		rep, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil || rep.Header.Get(events.HeaderErrorCode) != "" {
			return fmt.Errorf("sealed request %s: %v", subject, err)
		}
		pt, err := keys[r].Open(rep.Header.Get(events.HeaderSenderKey), id, time.Now(), rep.Data)
		if err != nil || !bytes.Contains(pt, []byte("password01")) {
			return fmt.Errorf("opening the sealed reply: %v", err)
		}
		return nil
	}

	per := max(b.N/rounds, 2000)
	loadWith(b, off.conns, requesters, 1000, plain)
	loadWith(b, on.conns, requesters, 1000, plain)
	loadWith(b, on.conns, requesters, 1000, sealed)
	stored0 := countEvents(on.js)
	dropped0 := audit.Dropped("buffer_full") + audit.Dropped("publish_failed")
	b.ResetTimer()
	var offR, onR, sealR, offP, onP, sealP []float64
	// CPU time of each side (the whole process: server, worker, requesters),
	// a figure the other tenants of the machine disturb less than wall time.
	var offCPU, onCPU, sealCPU time.Duration
	timed := func(cpu *time.Duration, f func() (float64, time.Duration)) (float64, time.Duration) {
		c0 := cpuTime()
		r, p := f()
		*cpu += cpuTime() - c0
		return r, p
	}
	for r := 0; r < rounds; r++ {
		x, x99 := timed(&offCPU, func() (float64, time.Duration) { return loadWith(b, off.conns, requesters, per, plain) })
		y, y99 := timed(&onCPU, func() (float64, time.Duration) { return loadWith(b, on.conns, requesters, per, plain) })
		z, z99 := timed(&sealCPU, func() (float64, time.Duration) { return loadWith(b, on.conns, requesters, per, sealed) })
		offR, onR, sealR = append(offR, x), append(onR, y), append(sealR, z)
		offP, onP, sealP = append(offP, float64(x99)), append(onP, float64(y99)), append(sealP, float64(z99))
	}
	b.StopTimer()
	n := rounds * (per / requesters) * requesters
	sent := uint64(2 * n)
	var stored uint64
	natstest.Eventually(b, 30*time.Second, "the measured requests' audit events stored or counted lost", func() bool {
		stored = countEvents(on.js) - stored0
		lost := audit.Dropped("buffer_full") + audit.Dropped("publish_failed") - dropped0
		return stored+uint64(lost) >= sent
	})
	lost := audit.Dropped("buffer_full") + audit.Dropped("publish_failed") - dropped0
	rOff, rOn, rSeal := testenv.Median(offR), testenv.Median(onR), testenv.Median(sealR)
	pOff, pOn, pSeal := time.Duration(testenv.Median(offP)), time.Duration(testenv.Median(onP)), time.Duration(testenv.Median(sealP))
	b.ReportMetric(rOn/rOff, "throughput-ratio")
	b.ReportMetric(float64(pOn)/float64(pOff), "p99-ratio")
	b.ReportMetric(rSeal/rOff, "sealed-throughput-ratio")
	b.ReportMetric(float64(pSeal)/float64(pOff), "sealed-p99-ratio")
	fmt.Printf("cached resolve (load average %s), medians of %d rounds of %d requests:\n"+
		"  audit off:          %6.0f req/s p99 %s\n"+
		"  audit on:           %6.0f req/s p99 %s | throughput ratio %.2f (goal ≥ 0.80), p99 ratio %.2f (goal ≤ 1.30)\n"+
		"  audit on + sealed:  %6.0f req/s p99 %s | throughput ratio %.2f (goal ≥ 0.80), p99 ratio %.2f (goal ≤ 1.30)\n"+
		"  CPU per request (whole process): audit off %s, audit on %s (%.2f×), on + sealed %s (%.2f×)\n"+
		"  audit events of the measured requests: %d stored, %.0f dropped (of %d)\n",
		loadAverage(), rounds, per, rOff, pOff, rOn, pOn, rOn/rOff, float64(pOn)/float64(pOff),
		rSeal, pSeal, rSeal/rOff, float64(pSeal)/float64(pOff),
		offCPU/time.Duration(n), onCPU/time.Duration(n), float64(onCPU)/float64(offCPU), sealCPU/time.Duration(n), float64(sealCPU)/float64(offCPU),
		stored, lost, sent)
}
