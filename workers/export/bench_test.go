package export

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
)

// BenchmarkExportCloudWatch exports 200-byte JSON events to the fake
// CloudWatch and compares the rate with a bare JetStream consume of the same
// stream in the same run. Run with -benchtime=1x:
//
//	go test -run '^$' -bench ExportCloudWatch -benchtime 1x ./workers/export/
func BenchmarkExportCloudWatch(b *testing.B) {
	const n = 100_000
	for range b.N {
		e := newEnv(b)
		ctx := context.Background()
		if _, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: DefaultLogsStream,
			Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
		// {"level":"info","time":"…","msg":"event","id":N,"pad":"…"} padded to 200 bytes.
		pad := strings.Repeat("p", 200-len(`{"level":"info","time":"2026-11-24T02:30:00.123456Z","msg":"event","id":12345,"pad":""}`))
		e.publish(0, n, []string{"logs.bench.app"}, pad)

		// Bare consume: an ephemeral consumer reading every message, no acks.
		cons, err := e.js.CreateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, FilterSubject: "logs.bench.>"})
		if err != nil {
			b.Fatal(err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(10_000))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		bytes := 0
		for range n {
			m, err := it.Next()
			if err != nil {
				b.Fatal(err)
			}
			bytes += len(m.Data())
		}
		bare := time.Since(start)
		it.Stop()

		// Bare consume with explicit acks, as the export's consumer has.
		acked, err := e.js.CreateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy,
			FilterSubject: "logs.bench.>", MaxAckPending: 200_000})
		if err != nil {
			b.Fatal(err)
		}
		it, err = acked.Messages(jetstream.PullMaxMessages(10_000))
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		for range n {
			m, err := it.Next()
			if err != nil {
				b.Fatal(err)
			}
			_ = m.Ack()
		}
		bareAcked := time.Since(start)
		it.Stop()

		// Export: one worker, one block, one log stream.
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		start = time.Now()
		exp := cwExport("bench", "logs.bench.>")
		// Limits: CloudWatch's own; a short max_wait so the run's last, partial
		// batch does not add the default 1s to a saturated run.
		exp.Batch = &events.BatchPolicy{MaxWait: events.Duration(250 * time.Millisecond)}
		e.worker(nil, exp)
		// Saturated rate: the time to deliver all but the last two batches,
		// so the run's partial tail (waiting for max_wait) does not count.
		target := n - 2*cloudwatch.MaxBatchBytes/(200+cloudwatch.EventOverhead)
		got := 0
		for got = e.cw.Count(); got < target; got = e.cw.Count() {
			time.Sleep(time.Millisecond)
		}
		exported := time.Since(start)
		runtime.ReadMemStats(&ms1)
		for e.cw.Count() < n {
			time.Sleep(time.Millisecond)
		}

		var calls, evs, byt int
		for _, c := range e.cw.Calls() {
			if c.Op == "PutLogEvents" && c.Error == "" {
				calls++
				evs += c.Events
				byt += c.Bytes
			}
		}
		bareRate := float64(n) / bare.Seconds()
		expRate := float64(got) / exported.Seconds()
		// Fill excluding the last call of the run, which takes the remainder.
		fill := float64(byt) / float64(calls) / cloudwatch.MaxBatchBytes
		if calls > 1 {
			lastCall := e.cw.Calls()[len(e.cw.Calls())-1]
			fill = float64(byt-lastCall.Bytes) / float64(calls-1) / cloudwatch.MaxBatchBytes
		}
		b.ReportMetric(bareRate, "bare-events/s")
		b.ReportMetric(expRate, "export-events/s")
		b.ReportMetric(expRate/bareRate, "ratio")
		bareAckedRate := float64(n) / bareAcked.Seconds()
		b.ReportMetric(expRate/bareAckedRate, "ratio-vs-acked")
		b.ReportMetric(100*fill, "fill-bytes-%")
		b.ReportMetric(float64(evs)/float64(calls), "events/call")
		b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(got), "allocs/event")
		fmt.Printf("bare consume with acks: %v (%.0f/s), export/acked ratio=%.2f\n", bareAcked.Round(time.Millisecond), bareAckedRate, expRate/bareAckedRate)
		fmt.Printf("events=%d avg-size=%dB bare=%v (%.0f/s) export=%v (%.0f/s) ratio=%.2f calls=%d fill=%.1f%% of 1,048,576 bytes, %.0f events/call (limit 10,000); process allocs/event=%.1f (includes the in-process fake and nats-server)\n",
			n, bytes/n, bare.Round(time.Millisecond), bareRate, exported.Round(time.Millisecond), expRate, expRate/bareRate, calls, 100*fill, float64(evs)/float64(calls), float64(ms1.Mallocs-ms0.Mallocs)/float64(got))
	}
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
		e := newEnv(b)
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
