package export

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"google.golang.org/api/option"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/fake/loggingfake"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

const testKeyID = "AKIDEXPORTWORKER01"

// env is one test's NATS server and cloud fakes.
type env struct {
	t   testing.TB
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	cw  *awsfake.Logs
	cl  *loggingfake.Fake
	aws *awsfake.Server // serves cw and s3
	s3  *awsfake.S3
	// url and cwURL, when set, are the NATS server's and CloudWatch's
	// endpoints outside this process (the export benchmark's nats-server and
	// fake processes); srv and cw are then nil.
	url, cwURL string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := natstest.ServerWith(t, &server.Options{MaxPayload: 4 << 20})
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(20000))
	if err != nil {
		t.Fatal(err)
	}
	af := awsfake.New(t)
	af.AddCredentials(awsfake.Credentials{AccessKeyID: testKeyID, SecretAccessKey: "secret"})
	cw := af.Logs()
	cl, err := loggingfake.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &env{t: t, srv: srv, nc: nc, js: js, cw: cw, cl: cl, aws: af, s3: af.S3()}
}

func testAWSConfig(_ context.Context, conn events.Connection) (aws.Config, error) {
	return aws.Config{Region: conn.AWS.Region,
		Credentials: credentials.NewStaticCredentialsProvider(conn.AWS.AccessKeyID, conn.AWS.SecretAccessKey, "")}, nil
}

func (e *env) factory() SinkFactory {
	return NewSinkFactory(testAWSConfig, func(context.Context, events.Connection) ([]option.ClientOption, error) {
		return e.cl.ClientOptions(), nil
	})
}

func awsConn(endpoint string) events.Connection {
	return events.Connection{Name: "aws-logs", Provider: events.ProviderAWS, Groups: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: testKeyID, SecretAccessKey: "secret", Endpoint: endpoint}}
}

func gcpConn() events.Connection {
	return events.Connection{Name: "gcp-logs", Provider: events.ProviderGCP, Groups: []string{"*"},
		GCP: &events.GCPConfig{Project: "my-project", Auth: events.GCPAuthDefault}}
}

func (e *env) conns() map[string]events.Connection {
	cw := e.cwURL
	if e.cw != nil {
		cw = e.cw.URL()
	}
	return map[string]events.Connection{"aws-logs": awsConn(cw), "gcp-logs": gcpConn()}
}

// connect opens a connection of its own to the env's NATS server, closed
// when the test ends.
func (e *env) connect() *nats.Conn {
	e.t.Helper()
	if e.url == "" {
		return natstest.Connect(e.t, e.srv)
	}
	nc, err := nats.Connect(e.url)
	if err != nil {
		e.t.Fatalf("connecting to nats: %v", err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

func cwExport(name string, subjects ...string) events.Export {
	return events.Export{Name: name, Connection: "aws-logs", Subjects: subjects,
		CloudWatch: &events.CloudWatchSink{LogGroup: "/platform/{export}", LogStream: "{subject}", Create: true},
		Batch:      &events.BatchPolicy{MaxWait: events.Duration(50 * time.Millisecond)}}
}

func clExport(name string, subjects ...string) events.Export {
	return events.Export{Name: name, Connection: "gcp-logs", Subjects: subjects,
		CloudLogging: &events.CloudLoggingSink{Project: "my-project", LogID: name},
		Batch:        &events.BatchPolicy{MaxWait: events.Duration(50 * time.Millisecond)}}
}

// worker starts a worker on its own connection, stopped when the test ends.
func (e *env) worker(mod func(*Config), exports ...events.Export) *Worker {
	e.t.Helper()
	nc := e.connect()
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	// Calls under -race on a loaded machine can take a second or more: the
	// tests about the call deadline set their own.
	cfg := Config{NC: nc, JS: js, Sinks: e.factory(), CallTimeout: 20 * time.Second,
		RetryMin: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond, Logger: testLogger()}
	if mod != nil {
		mod(&cfg)
	}
	w, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	w.Apply(exports, e.conns())
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return w
}

func testLogger() zerolog.Logger {
	if os.Getenv("EXPORT_TEST_LOG") != "" {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	return zerolog.Nop()
}

// event is a test log event carrying a unique id.
type event struct {
	Level string `json:"level"`
	Time  string `json:"time"`
	Msg   string `json:"msg"`
	ID    int    `json:"id"`
	Pad   string `json:"pad,omitempty"`
}

// publish publishes n JSON events with ids from first, round-robin over subjects.
func (e *env) publish(first, n int, subjects []string, pad string) {
	e.t.Helper()
	now := time.Now().UTC()
	for i := first; i < first+n; i++ {
		body, _ := json.Marshal(event{Level: "info", Time: now.Add(time.Duration(i) * time.Microsecond).Format(time.RFC3339Nano), Msg: "event", ID: i, Pad: pad})
		if _, err := e.js.PublishAsync(subjects[i%len(subjects)], body); err != nil {
			e.t.Fatalf("publish: %v", err)
		}
		if i%10000 == 9999 {
			e.waitPublished()
		}
	}
	e.waitPublished()
}

// waitPublished waits for every async publish's ack, failing when none came
// for 30 s (a loaded machine makes publishing slow, not stuck).
func (e *env) waitPublished() {
	e.t.Helper()
	pending, since := e.js.PublishAsyncPending(), time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-e.js.PublishAsyncComplete():
			return
		case <-tick.C:
		}
		if p := e.js.PublishAsyncPending(); p < pending {
			pending, since = p, time.Now()
		} else if time.Since(since) > 30*time.Second {
			e.t.Fatalf("publishing stuck: %d acks pending, none for 30s", p)
		}
	}
}

// cwIDs counts stored CloudWatch events by id.
func cwIDs(f *awsfake.Logs) map[int]int {
	ids := map[int]int{}
	f.AllEvents(func(_, _ string, ev awsfake.LogEvent) {
		var e event
		if json.Unmarshal([]byte(ev.Message), &e) == nil {
			ids[e.ID]++
		}
	})
	return ids
}

// exportedEvents collects result events.
type exportedEvents struct {
	mu     sync.Mutex
	events []events.ExportedEvent
}

func (e *env) watchExported() *exportedEvents {
	got := &exportedEvents{}
	sub, err := e.nc.Subscribe(events.Subjects{}.ExportedWildcard(), func(m *nats.Msg) {
		var ev events.ExportedEvent
		if json.Unmarshal(m.Data, &ev) == nil {
			got.mu.Lock()
			got.events = append(got.events, ev)
			got.mu.Unlock()
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return got
}

func (x *exportedEvents) total(export string) (events, batches int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, ev := range x.events {
		if ev.Export == export {
			events += ev.Events
			batches++
		}
	}
	return events, batches
}

// deadLetters reads every dead letter stored so far.
func (e *env) deadLetters() []events.DeadLetter {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, DefaultDeadStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []events.DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var dl events.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			e.t.Fatalf("dead letter: %v", err)
		}
		out = append(out, dl)
	}
	return out
}

func counter(name, label string) float64 {
	return testutil.ToFloat64(metrics.ExportRetries.WithLabelValues(name, label))
}

func consumerPending(t testing.TB, js jetstream.JetStream, export string) (ackPending int, pending uint64) {
	t.Helper()
	c, err := js.Consumer(context.Background(), DefaultLogsStream, events.ExportConsumer(export))
	if err != nil {
		return -1, 0
	}
	info, err := c.Info(context.Background())
	if err != nil {
		return -1, 0
	}
	return info.NumAckPending, info.NumPending
}

func subjectsN(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s.s%d", prefix, i))
	}
	return out
}

// waitProgress waits until count reaches want, failing only when count has
// not grown for stall. How long delivering n events takes depends on the CPU
// the test gets (CI runs every package's tests at once on 2 cores, under
// -race: at a load of 20 a test gets a tenth of a core), so a deadline on the
// whole would be a guess about the machine; what the worker must never do is
// stop making progress for longer than its configured timings allow. stall
// is derived from them by the caller (e.g. the fault, a retry backoff, the
// call deadline and AckWait, after which a message lost on its way is
// redelivered).
func waitProgress(t testing.TB, stall time.Duration, what string, want int, count func() int) {
	t.Helper()
	last, since, logged := -1, time.Now(), time.Now()
	for {
		got := count()
		if got >= want {
			return
		}
		if time.Since(logged) >= 30*time.Second {
			t.Logf("waiting for %s: %d of %d", what, got, want)
			logged = time.Now()
		}
		if got > last {
			last, since = got, time.Now()
		} else if time.Since(since) > stall {
			// Where it is stuck: every goroutine, to the test's output.
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Logf("goroutines at the stall:\n%s", buf.String())
			t.Fatalf("waiting for %s: %d of %d, no progress for %s", what, got, want, stall)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitActive is waitProgress where what counts as the worker's progress is
// count or busy (for example attempts that ran to their deadline, which
// under load can be several in a row before a call gets through).
func waitActive(t testing.TB, stall time.Duration, what string, want int, count, busy func() int) {
	t.Helper()
	last, since := -1, time.Now()
	for {
		got := count()
		if got >= want {
			return
		}
		if a := got + busy(); a > last {
			last, since = a, time.Now()
		} else if time.Since(since) > stall {
			t.Fatalf("waiting for %s: %d of %d, no call ended for %s", what, got, want, stall)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stallOf is the longest worker w may legitimately make no progress on a
// healthy sink: a call running to its deadline, the retry's backoff, and
// AckWait for a message lost on its way to come back. The deadline is the
// stretched one (maxCallTimeouts × CallTimeout): under load a call that
// timed out once gets twice the deadline, and may use it all.
func stallOf(w *Worker) time.Duration {
	return maxCallTimeouts*w.cfg.CallTimeout + w.cfg.RetryMax + w.cfg.AckWait
}
