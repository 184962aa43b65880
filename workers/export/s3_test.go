package export

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	s3api "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/sink/s3"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

const archive = "archive-bucket"

func s3Export(name string, subjects ...string) events.Export {
	return events.Export{Name: name, Connection: "aws-logs", Subjects: subjects,
		S3: &events.S3Sink{Bucket: archive, MaxObjectBytes: 256 << 10, MaxWait: events.Duration(100 * time.Millisecond)}}
}

// s3KillExport is the export of the killed worker process with an s3 sink.
func s3KillExport() events.Export {
	exp := s3Export(childExport, "logs.kill.>")
	exp.S3.MaxObjectBytes = 64 << 10
	return exp
}

// s3Lines reads every object of the archive bucket: the ids of the events
// in its lines by count, and how many objects there are. It fails the test
// on an object that is not gzip NDJSON of the export's lines.
func s3Lines(t testing.TB, f *awsfake.S3) (ids map[int]int, objects int) {
	t.Helper()
	ids = map[int]int{}
	for _, k := range f.Keys(archive) {
		obj, ok := f.Object(archive, k)
		if !ok {
			continue
		}
		objects++
		zr, err := gzip.NewReader(bytes.NewReader(obj.Data))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var l struct {
				Subject string `json:"subject"`
				Seq     uint64 `json:"seq"`
				Event   event  `json:"event"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Seq == 0 || !strings.HasPrefix(l.Subject, "logs.") {
				t.Fatalf("%s: line %q: %v", k, sc.Text(), err)
			}
			ids[l.Event.ID]++
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	return ids, objects
}

// s3Events is the sum of the objects' "events" metadata: a cheap lower
// bound check before reading every line.
func s3Events(f *awsfake.S3) int {
	n := 0
	for _, k := range f.Keys(archive) {
		if obj, ok := f.Object(archive, k); ok {
			c, _ := strconv.Atoi(obj.Metadata["events"])
			n += c
		}
	}
	return n
}

func distinct(ids map[int]int, n int) (missing, dups int) {
	for i := range n {
		if ids[i] == 0 {
			missing++
		}
		dups += max(ids[i]-1, 0)
	}
	return missing, dups
}

// TestS3ManyEvents: 20,000 events (10,000 under -race) over several subjects are archived once
// each, in objects of at most max_object_bytes, everything acked.
func TestS3ManyEvents(t *testing.T) {
	n := 20_000
	if raceEnabled {
		n = 10_000
	}
	e := newEnv(t)
	e.s3.CreateBucket(archive)
	results := e.watchExported()
	exp := s3Export("s3-app", "logs.app.>")
	e.worker(nil, exp)
	e.publish(0, n, subjectsN("logs.app", 5), strings.Repeat("p", 100))
	natstest.Eventually(t, 60*time.Second, "every event archived and acked", func() bool {
		if ack, pending := consumerPending(t, e.js, exp.Name); ack != 0 || pending != 0 || s3Events(e.s3) < n {
			return false
		}
		ids, _ := s3Lines(t, e.s3)
		return len(ids) >= n
	})
	ids, objects := s3Lines(t, e.s3)
	missing, dups := distinct(ids, n)
	if missing != 0 || dups != 0 {
		t.Fatalf("%d missing, %d duplicates", missing, dups)
	}
	for _, k := range e.s3.Keys(archive) {
		obj, _ := e.s3.Object(archive, k)
		zr, _ := gzip.NewReader(bytes.NewReader(obj.Data))
		data, _ := io.ReadAll(zr)
		if len(data) > exp.S3.MaxObjectBytes || obj.PutBy != testKeyID || !strings.HasPrefix(k, "logs/s3-app/") {
			t.Fatalf("object %s: %d bytes, signed by %q", k, len(data), obj.PutBy)
		}
	}
	t.Logf("%d events in %d objects", n, objects)
	if objects < 2 {
		t.Fatalf("%d objects: max_object_bytes did not cut batches", objects)
	}
	natstest.Eventually(t, 10*time.Second, "result events", func() bool { got, _ := results.total("s3-app"); return got >= n })
}

// TestS3Faults: 10 seconds of SlowDown or of 5xx, and at least the first
// calls that come, lose nothing, duplicate nothing and show in the retry
// metrics.
func TestS3Faults(t *testing.T) {
	const n = 3000
	fault := 10 * time.Second
	if testing.Short() {
		fault = 2 * time.Second
	}
	for _, tt := range []struct {
		name, code, reason string
	}{
		{"slowdown", "SlowDown", string(events.CodeThrottled)},
		{"5xx", "InternalError", string(events.CodeUnavailable)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.s3.CreateBucket(archive)
			exp := s3Export("f-s3-"+tt.name, "logs.f.>")
			before := counter(exp.Name, tt.reason)
			in := metrics.ExportEventsIn.WithLabelValues(exp.Name)
			inBefore := testutil.ToFloat64(in)
			// As in TestFaults: the fault outlasts AckWait twice, and it
			// refuses 3 calls more after its time, so it cannot end before
			// the first call however late that comes.
			w := e.worker(func(c *Config) { c.AckWait = fault / 2; c.RetryMax = time.Second })
			e.publish(0, n, subjectsN("logs.f", 3), "")
			const refusals = 3
			e.aws.FailFor(awsfake.OpPutObject, tt.code, fault)
			e.aws.Fail(awsfake.OpPutObject, tt.code, refusals)
			start := time.Now()
			w.Apply([]events.Export{exp}, e.conns())
			waitProgress(t, fault+stallOf(w), "the fault's refused calls", refusals, func() int { return e.aws.Refused(awsfake.OpPutObject) })
			waitProgress(t, fault+stallOf(w), "every event after the fault", n, func() int {
				if c := s3Events(e.s3); c < n {
					return c
				}
				ids, _ := s3Lines(t, e.s3)
				return len(ids)
			})
			t.Logf("archived in %v after the fault started; the worker received %v messages for %d events",
				time.Since(start), testutil.ToFloat64(in)-inBefore, n)
			if time.Since(start) < fault {
				t.Fatalf("archived during the fault")
			}
			if got := counter(exp.Name, tt.reason); got <= before {
				t.Fatalf("retries{%s} did not grow (%d calls refused)", tt.reason, e.aws.Refused(awsfake.OpPutObject))
			}
			ids, objects := s3Lines(t, e.s3)
			if missing, dups := distinct(ids, n); missing != 0 || dups != 0 {
				t.Fatalf("%d missing, %d duplicates in %d objects", missing, dups, objects)
			}
		})
	}
}

// lostReply stores the object and then fails the call, as when S3's reply
// is lost: the runner retries the same records, which must make the same
// key and overwrite the object instead of adding a copy.
type lostReply struct {
	s3.API
	lost *atomic.Int64
}

func (l lostReply) PutObject(ctx context.Context, in *s3api.PutObjectInput, opts ...func(*s3api.Options)) (*s3api.PutObjectOutput, error) {
	out, err := l.API.PutObject(ctx, in, opts...)
	if err == nil && l.lost.Add(1)%2 == 1 {
		return nil, errors.New("connection reset after the upload")
	}
	return out, err
}

// TestS3RetryOverwrites: every other PutObject reply is lost after S3 stored
// the object; the retried objects have the same keys, so the archive holds
// each event once.
func TestS3RetryOverwrites(t *testing.T) {
	const n = 2000
	e := newEnv(t)
	e.s3.CreateBucket(archive)
	var lost atomic.Int64
	factory := func(ctx context.Context, x events.Export, conn events.Connection) (Sink, error) {
		cfg, _ := testAWSConfig(ctx, conn)
		return s3.New(lostReply{s3.NewClient(cfg, conn), &lost}, x), nil
	}
	exp := s3Export("s3-lost", "logs.lost.>")
	exp.S3.MaxObjectBytes = 16 << 10
	e.worker(func(c *Config) { c.Sinks = factory }, exp)
	e.publish(0, n, []string{"logs.lost.a", "logs.lost.b"}, "")
	natstest.Eventually(t, 30*time.Second, "every event archived and acked", func() bool {
		if ack, pending := consumerPending(t, e.js, exp.Name); ack != 0 || pending != 0 || s3Events(e.s3) < n {
			return false
		}
		ids, _ := s3Lines(t, e.s3)
		return len(ids) >= n
	})
	ids, objects := s3Lines(t, e.s3)
	if missing, dups := distinct(ids, n); missing != 0 || dups != 0 {
		t.Fatalf("%d missing, %d duplicates", missing, dups)
	}
	puts := e.aws.Calls(awsfake.OpPutObject)
	if puts < 2*objects {
		t.Fatalf("%d PutObject calls for %d objects: the replies were not lost", puts, objects)
	}
	t.Logf("%d objects, %d PutObject calls (half of the replies lost)", objects, puts)
}

// TestS3KilledWorker: a worker process archiving to S3 killed with SIGKILL
// in the middle of a batch and restarted loses no event; the duplicates of
// the interrupted batch are counted.
func TestS3KilledWorker(t *testing.T) {
	const n = 10_000
	e := newEnv(t)
	e.s3.CreateBucket(archive)
	// Slow calls, so the kill lands while a PutObject is in flight.
	e.aws.SetLatency(awsfake.OpPutObject, 100*time.Millisecond)
	if _, err := e.js.CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{Name: DefaultLogsStream,
		Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	e.publish(0, n, subjectsN("logs.kill", 3), strings.Repeat("p", 200))

	first := startChild(t, e, childSink+"=s3")
	natstest.Eventually(t, 60*time.Second, "the first worker to archive some events", func() bool {
		return s3Events(e.s3) >= 3000
	})
	if err := first.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = first.Wait()
	before, _ := s3Lines(t, e.s3)
	if len(before) >= n {
		t.Fatalf("everything was archived before the kill; the test proves nothing")
	}
	ackPending, _ := consumerPending(t, e.js, childExport)
	t.Logf("killed after %d events; %d messages unacked at the kill", len(before), ackPending)
	if ackPending <= 0 {
		t.Fatalf("no batch in flight at the kill")
	}
	startChild(t, e, childSink+"=s3")
	natstest.Eventually(t, 90*time.Second, "every event after the restart", func() bool {
		if s3Events(e.s3) < n {
			return false
		}
		ids, _ := s3Lines(t, e.s3)
		return len(ids) >= n
	})
	ids, objects := s3Lines(t, e.s3)
	missing, dups := distinct(ids, n)
	if missing != 0 {
		t.Fatalf("%d events lost", missing)
	}
	t.Logf("all %d events archived in %d objects; %d duplicates from the interrupted batch", n, objects, dups)
	if e.aws.Calls(awsfake.OpPutObject) == 0 || e.s3.Keys(archive) == nil {
		t.Fatalf("no object written")
	}
}
