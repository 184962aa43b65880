package export

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

// BenchmarkExportCloudWatch exports 200-byte JSON events to the fake
// CloudWatch and compares the rate with a bare durable pull consumer acking
// each message on the same stream (the baseline of issue 14; a bare consume
// without acks and a bare Fetch loop are printed too, once).
//
// It runs CLOUDBRIDGE_BENCH_ROUNDS pairs of rounds (5 by default) back to
// back on the one stream: in each pair a new durable consumer reads it all
// with acks (the baseline) and a new export (its own consumer, log group and
// worker) exports it all, the baseline first in even pairs and the export
// first in odd ones. The ratio is the median of the pairs' ratios: one round
// alone swings by a fifth on the 2 shared cores, and a pair measures both
// sides within seconds of each other.
//
// Both rates are steady-state rates: the consumer's from its first message
// to its last, the export's from its first batch stored to all but its last
// two batches stored. The export's start (the worker's start, the first
// batch filling with nothing to overlap it, the first put creating the log
// group and stream) is printed apart, with the ratio counting it in
// (ratio-with-start).
//
// The NATS server is a nats-server process and the CloudWatch fake another
// (newBenchEnv), so that the benchmark's process holds the worker (or the
// bare consumer) alone; each process's CPU per event is printed apart. It
// prints the batches' fill and the allocations per event. Run with
// -benchtime=1x:
//
//	go test -run '^$' -bench ExportCloudWatch -benchtime 1x ./workers/export/
func BenchmarkExportCloudWatch(b *testing.B) {
	n, rounds := benchEvents(b), benchRounds(b)
	for range b.N {
		e, serverCPU, fake := newBenchEnv(b, true)
		ctx := context.Background()
		if _, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: DefaultLogsStream,
			Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
		// {"level":"info","time":"…","msg":"event","id":N,"pad":"…"} padded to 200 bytes.
		pad := strings.Repeat("p", 200-len(`{"level":"info","time":"2026-11-24T02:30:00.123456Z","msg":"event","id":12345,"pad":""}`))
		e.publish(0, n, []string{"logs.bench.app"}, pad)

		// Bare consume: an ephemeral consumer reading every message, no acks.
		bare, bytes := bareConsume(b, e, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, FilterSubject: "logs.bench.>"}, n, false)
		bareRate := float64(n-1) / bare.Seconds()
		// The client's Fetch alone (a pull a batch at a time, as the export
		// pulls), acking each message: what pulling costs before any export work.
		var bareFetch time.Duration
		var fetchCPU, fetchSrv float64
		{
			cpu0, srv0 := cpuTime(), serverCPU()
			cons, err := e.js.CreateOrUpdateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{Durable: "bare-fetch", AckPolicy: jetstream.AckExplicitPolicy,
				FilterSubject: "logs.bench.>", MaxAckPending: 200_000})
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			for got := 0; got < n; {
				mb, err := cons.Fetch(4600, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					b.Fatal(err)
				}
				for m := range mb.Messages() {
					_ = m.Ack()
					got++
				}
			}
			bareFetch = time.Since(t0)
			fetchCPU, fetchSrv = perEvent(cpuTime()-cpu0, n), perEvent(serverCPU()-srv0, n)
			_ = e.js.DeleteConsumer(ctx, DefaultLogsStream, "bare-fetch")
		}

		var pairs []benchPair
		for r := range rounds {
			var p benchPair
			first := "baseline"
			if r%2 == 0 {
				p.base = baselineRound(b, e, serverCPU, n, r)
				p.exp = exportRound(b, e, serverCPU, fake, n, r)
			} else {
				first = "export"
				p.exp = exportRound(b, e, serverCPU, fake, n, r)
				p.base = baselineRound(b, e, serverCPU, n, r)
			}
			pairs = append(pairs, p)
			fmt.Printf("pair %d (%s first): baseline %.0f/s, %.1fµs per event (consumer %.1f + nats-server %.1f); export %.0f/s, %.1fµs (worker %.1f + nats-server %.1f), fake %.1fµs; ratio %.2f, cpu-ratio %.2f; start %v, ratio-with-start %.2f\n",
				r, first, p.base.rate, p.base.cpu+p.base.srv, p.base.cpu, p.base.srv,
				p.exp.rate, p.exp.cpu+p.exp.srv, p.exp.cpu, p.exp.srv, p.exp.fake, p.ratio(), p.cpuRatio(),
				p.exp.head.Round(time.Millisecond), p.exp.wholeRate/p.base.rate)
		}
		allCalls := fake.calls()

		// Fill: each round's calls but its last, which takes the remainder.
		var calls, evs, byt, fullCalls int
		for r := range rounds {
			var last awsfake.LogCall
			rc := 0
			for _, c := range allCalls {
				if c.Op != "PutLogEvents" || c.Error != "" || c.Group != "/platform/"+benchExportName(r) {
					continue
				}
				if rc > 0 {
					calls++
					evs += last.Events
					byt += last.Bytes
					if last.Bytes >= cloudwatch.MaxBatchBytes*95/100 || last.Events >= cloudwatch.MaxBatchEvents*95/100 {
						fullCalls++
					}
				}
				last, rc = c, rc+1
			}
		}
		fill, fullPct, perCall := 0.0, 0.0, 0.0
		if calls > 0 {
			fill = float64(byt) / float64(calls) / cloudwatch.MaxBatchBytes
			fullPct = 100 * float64(fullCalls) / float64(calls)
			perCall = float64(evs) / float64(calls)
		}
		med := func(f func(benchPair) float64) float64 {
			xs := make([]float64, len(pairs))
			for i, p := range pairs {
				xs[i] = f(p)
			}
			return testenv.Median(xs)
		}
		ratios := make([]float64, len(pairs))
		for i, p := range pairs {
			ratios[i] = p.ratio()
		}
		ratio := testenv.Median(ratios)
		ackedRate := med(func(p benchPair) float64 { return p.base.rate })
		expRate := med(func(p benchPair) float64 { return p.exp.rate })
		cpuRatio := med(benchPair.cpuRatio)
		withStart := med(func(p benchPair) float64 { return p.exp.wholeRate / p.base.rate })
		head := med(func(p benchPair) float64 { return float64(p.exp.head.Microseconds()) / 1000 })
		expAllocs := med(func(p benchPair) float64 { return p.exp.allocs })
		bareAllocs := med(func(p benchPair) float64 { return p.base.allocs })
		b.ReportMetric(ackedRate, "bare-acked-events/s")
		b.ReportMetric(expRate, "export-events/s")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(withStart, "ratio-with-start")
		b.ReportMetric(head, "start-ms")
		b.ReportMetric(expRate/bareRate, "ratio-vs-noack")
		b.ReportMetric(expRate/(float64(n)/bareFetch.Seconds()), "ratio-vs-fetch")
		b.ReportMetric(100*fill, "fill-bytes-%")
		b.ReportMetric(fullPct, "batches-95%-full-%")
		b.ReportMetric(perCall, "events/call")
		b.ReportMetric(expAllocs, "allocs/event")
		b.ReportMetric(cpuRatio, "cpu-ratio")
		b.ReportMetric(med(func(p benchPair) float64 { return p.exp.cpu }), "worker-µs/event")
		b.ReportMetric(med(func(p benchPair) float64 { return p.exp.fake }), "fake-µs/event")
		where := "a nats-server process"
		if e.url == "" {
			where = "in process (CLOUDBRIDGE_BENCH_INPROCESS=1): its CPU is in the process's"
		}
		slices.Sort(ratios)
		fmt.Printf("events=%d avg-size=%dB, %d pairs of rounds; nats-server %s, CloudWatch fake a process of its own\n", n, bytes/n, rounds, where)
		fmt.Printf("bare consume without acks: %v (%.0f/s)\n", bare.Round(time.Millisecond), bareRate)
		fmt.Printf("bare Fetch of 4,600 at a time, acking each: %v (%.0f/s, %.2f of the baseline's median), CPU per event %.1fµs (consumer process %.1f + nats-server %.1f)\n",
			bareFetch.Round(time.Millisecond), float64(n)/bareFetch.Seconds(), float64(n)/bareFetch.Seconds()/ackedRate, fetchCPU+fetchSrv, fetchCPU, fetchSrv)
		fmt.Printf("medians of the pairs: baseline, bare durable pull consumer acking each message, %.0f/s; export to the CloudWatch fake %.0f/s; ratio=%.2f (pairs %.2f–%.2f; vs no acks %.2f)\n",
			ackedRate, expRate, ratio, ratios[0], ratios[len(ratios)-1], expRate/bareRate)
		fmt.Printf("the export's start: first batch stored after %.0f ms (median); with the start counted in, ratio-with-start=%.2f\n", head, withStart)
		fmt.Printf("calls=%d (each round's last left out) fill=%.1f%% of 1,048,576 bytes, %.1f%% of batches ≥95%% full, %.0f events/call (limit 10,000)\n", calls, 100*fill, fullPct, perCall)
		fmt.Printf("CPU per event (medians): baseline %.1fµs, export %.1fµs: cpu-ratio=%.2f (the fake's CPU, its own process, not in it)\n",
			med(func(p benchPair) float64 { return p.base.cpu + p.base.srv }), med(func(p benchPair) float64 { return p.exp.cpu + p.exp.srv }), cpuRatio)
		more, diff := "more", expAllocs-bareAllocs
		if diff < 0 {
			more, diff = "fewer", -diff
		}
		fmt.Printf("allocs/event=%.1f (the worker's process); the baseline's %.1f, so %.1f %s\n", expAllocs, bareAllocs, diff, more)
	}
}

// benchRounds is how many pairs of rounds BenchmarkExportCloudWatch runs:
// CLOUDBRIDGE_BENCH_ROUNDS, or 5.
func benchRounds(b *testing.B) int {
	v := os.Getenv("CLOUDBRIDGE_BENCH_ROUNDS")
	if v == "" {
		return 5
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 50 {
		b.Fatalf("CLOUDBRIDGE_BENCH_ROUNDS=%q: want a number from 1 to 50", v)
	}
	return n
}

// benchPair is one pair of rounds: the baseline's and the export's figures.
type benchPair struct {
	base baseRound
	exp  expRound
}

func (p benchPair) ratio() float64 { return p.exp.rate / p.base.rate }

// cpuRatio is (consumer process + nats-server) ÷ (worker process +
// nats-server) CPU per event; the fake's is apart (a real CloudWatch is not
// on this machine).
func (p benchPair) cpuRatio() float64 { return (p.base.cpu + p.base.srv) / (p.exp.cpu + p.exp.srv) }

type baseRound struct {
	rate     float64 // events/s, first message to last
	cpu, srv float64 // µs per event: this process's, nats-server's
	allocs   float64 // per event, this process
}

type expRound struct {
	rate, wholeRate float64       // events/s: steady, and with the start counted in
	head            time.Duration // from asking the worker to start to its first batch stored
	cpu, srv, fake  float64       // µs per event in the steady state: worker process, nats-server, fake
	allocs          float64       // per event in the steady state, the worker's process
}

// baselineRound reads the stream with a new bare durable pull consumer
// acking each message (its CPU profile, with CLOUDBRIDGE_BENCH_CPUPROFILE,
// of round 0 only).
func baselineRound(b *testing.B, e *env, serverCPU func() time.Duration, n, r int) baseRound {
	b.Helper()
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	stopProfile := func() {}
	if r == 0 {
		stopProfile = profilePhase(b, ".baseline")
	}
	cpu0, srv0 := cpuTime(), serverCPU()
	name := "bare-acked-" + strconv.Itoa(r)
	d, _ := bareConsume(b, e, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: "logs.bench.>", MaxAckPending: 200_000}, n, true)
	runtime.ReadMemStats(&ms1)
	out := baseRound{rate: float64(n-1) / d.Seconds(), cpu: perEvent(cpuTime()-cpu0, n), srv: perEvent(serverCPU()-srv0, n),
		allocs: float64(ms1.Mallocs-ms0.Mallocs) / float64(n)}
	stopProfile()
	_ = e.js.DeleteConsumer(context.Background(), DefaultLogsStream, name)
	return out
}

func benchExportName(r int) string { return "bench" + strconv.Itoa(r) }

// exportRound exports the stream with a new export on a worker of its own,
// stopped at the end of the round (with CLOUDBRIDGE_BENCH_CPUPROFILE, the
// profiles of round 0's steady state). The fake's count is
// cumulative: the rounds before stored n events each.
func exportRound(b *testing.B, e *env, serverCPU func() time.Duration, fake *cwFakeProc, n, r int) expRound {
	b.Helper()
	before := r * n
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	start := time.Now()
	exp := cwExport(benchExportName(r), "logs.bench.>")
	// Limits: CloudWatch's own; a short max_wait so the run's last, partial
	// batch does not add the default 1s to a saturated run.
	exp.Batch = &events.BatchPolicy{MaxWait: events.Duration(250 * time.Millisecond)}
	w := e.worker(nil, exp)
	// The steady state starts with the first batch stored: by then the
	// worker, its consumer, the log group and stream exist, and the batches
	// behind the first are filling as they do later on.
	first, fake0 := fake.wait(before+1, time.Minute)
	head := time.Since(start)
	stopProfile := func() {}
	if r == 0 {
		// The profiles of the steady state, the worker's process's and the
		// fake's (its starts with its first "cpu", ends with the next "wait").
		stopProfile = profilePhase(b, "")
		fake.cpu()
	}
	runtime.ReadMemStats(&ms0)
	cpu1, srv1 := cpuTime(), serverCPU()
	// It ends with all but the last two batches stored, so the run's
	// partial tail (waiting for max_wait) does not count.
	target := n - 2*cloudwatch.MaxBatchBytes/(200+cloudwatch.EventOverhead)
	got, fake1 := fake.wait(before+target, 2*time.Minute)
	exported := time.Since(start)
	runtime.ReadMemStats(&ms1)
	steady := got - first
	out := expRound{
		rate:      float64(steady) / (exported - head).Seconds(),
		wholeRate: float64(got-before) / exported.Seconds(),
		head:      head,
		cpu:       perEvent(cpuTime()-cpu1, steady),
		srv:       perEvent(serverCPU()-srv1, steady),
		fake:      perEvent(fake1-fake0, steady),
		allocs:    float64(ms1.Mallocs-ms0.Mallocs) / float64(steady),
	}
	stopProfile()
	fake.wait(before+n, time.Minute) // every event exported
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		b.Fatalf("stopping the round's worker: %v", err)
	}
	_ = e.js.DeleteConsumer(ctx, DefaultLogsStream, events.ExportConsumer(benchExportName(r)))
	return out
}

// perEvent is d per event in µs.
func perEvent(d time.Duration, n int) float64 {
	return float64(d.Microseconds()) / float64(n)
}

// bareConsume reads n messages with a pull consumer (Consume, the client's
// fast path), acking each when ack; it returns the time from the first
// message to the last and the bytes read.
func bareConsume(b *testing.B, e *env, cfg jetstream.ConsumerConfig, n int, ack bool) (time.Duration, int) {
	b.Helper()
	ctx := context.Background()
	cons, err := e.js.CreateOrUpdateConsumer(ctx, DefaultLogsStream, cfg)
	if err != nil {
		b.Fatal(err)
	}
	var count, bytes atomic.Int64
	done := make(chan struct{})
	var first, last time.Time // written by the callback (one goroutine), read after done
	cc, err := cons.Consume(func(m jetstream.Msg) {
		bytes.Add(int64(len(m.Data())))
		if ack {
			_ = m.Ack()
		}
		switch count.Add(1) {
		case 1:
			first = time.Now()
		case int64(n):
			last = time.Now()
			close(done)
		}
	}, jetstream.PullMaxMessages(10_000))
	if err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("bare consume: %d of %d messages", count.Load(), n)
	}
	cc.Stop()
	if ack {
		_ = e.nc.Flush()
	}
	// From the first message to the last: the steady-state rate is (n-1)/d.
	return last.Sub(first), int(bytes.Load())
}

// noopSink accepts everything at once: the worker and NATS without a cloud.
type noopSink struct{ delivered *atomic.Int64 }

func (noopSink) Limits() logevent.Limits {
	return logevent.Limits{MaxEvents: cloudwatch.MaxBatchEvents, MaxBytes: cloudwatch.MaxBatchBytes}
}
func (noopSink) Size(r *logevent.Record) int { return len(r.Message) + cloudwatch.EventOverhead }
func (noopSink) Close() error                { return nil }
func (s noopSink) Write(_ context.Context, _ []logevent.Record, out []logevent.Outcome) error {
	for i := range out {
		if out[i].Status == logevent.Pending {
			out[i].Status = logevent.Delivered
			s.delivered.Add(1)
		}
	}
	return nil
}

// BenchmarkExportNoopSink measures the worker and JetStream alone (parse,
// batch, ack) with a sink that accepts everything, against a bare consume.
func BenchmarkExportNoopSink(b *testing.B) {
	const n = 100_000
	for range b.N {
		e, _, _ := newBenchEnv(b, false)
		ctx := context.Background()
		if _, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: DefaultLogsStream,
			Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
		pad := strings.Repeat("p", 110)
		e.publish(0, n, []string{"logs.bench.app"}, pad)
		cons, err := e.js.CreateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, FilterSubject: "logs.bench.>"})
		if err != nil {
			b.Fatal(err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(10_000))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for range n {
			if _, err := it.Next(); err != nil {
				b.Fatal(err)
			}
		}
		bare := time.Since(start)
		it.Stop()
		var delivered atomic.Int64
		start = time.Now()
		exp := cwExport("noop", "logs.bench.>")
		exp.Batch = &events.BatchPolicy{MaxWait: events.Duration(250 * time.Millisecond)}
		e.worker(func(c *Config) {
			c.Sinks = func(context.Context, events.Export, events.Connection) (Sink, error) {
				return noopSink{&delivered}, nil
			}
		}, exp)
		target := int64(n - 10_000)
		for delivered.Load() < target {
			time.Sleep(time.Millisecond)
		}
		exported := time.Since(start)
		ratio := (float64(target) / exported.Seconds()) / (float64(n) / bare.Seconds())
		b.ReportMetric(ratio, "ratio")
		fmt.Printf("noop sink: bare %.0f/s, export %.0f/s, ratio %.2f\n", float64(n)/bare.Seconds(), float64(target)/exported.Seconds(), ratio)
	}
}

// benchEvents is how many events BenchmarkExportCloudWatch exports:
// CLOUDBRIDGE_BENCH_EVENTS (e.g. more, for a profile with more samples), or
// 200,000: at 100,000 the export took 0.6 s, so its fixed costs (the
// worker's start, its first pull and log stream) and one scheduling hiccup
// on the 2 shared cores moved the ratio by a tenth (0.76–0.91 in 5 quiet
// runs, against 0.81–0.84 in 6 at 200,000).
func benchEvents(b *testing.B) int {
	v := os.Getenv("CLOUDBRIDGE_BENCH_EVENTS")
	if v == "" {
		return 200_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 50_000 {
		b.Fatalf("CLOUDBRIDGE_BENCH_EVENTS=%q: want a number ≥ 50,000", v)
	}
	return n
}

// profilePhase writes a CPU profile of one phase alone to the file named by
// CLOUDBRIDGE_BENCH_CPUPROFILE with suffix appended, if set (-cpuprofile
// covers every phase at once): the export's to the file itself, the
// baseline's to file.baseline. It returns the function that stops it.
func profilePhase(b testing.TB, suffix string) (stop func()) {
	path := os.Getenv("CLOUDBRIDGE_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path + suffix)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
