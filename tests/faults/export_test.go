package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// The export fault test's figures (issue 9: tens of thousands of events,
// duplicates ≤ 0.5%).
const (
	exportEvents     = 30_000
	exportRate       = 800 // events a second published, so the faults land mid-stream
	exportPublishers = 4
	exportBatch      = 50 // max_events: bounds what one interrupted call can duplicate
	maxDupPct        = 0.5
)

// Log export of 30,000 uniquely identified events (each published with a
// message id, its body carrying the id) from three workers on a 3-node
// cluster (R3 streams) to the CloudWatch Logs fake while: a worker is killed
// with SIGKILL mid-batch (and started again), the sink throttles every call
// for 10 s, then answers 503 for 10 s, and the node leading the logs stream is
// killed with SIGKILL (and restarted). Nothing is lost: every id reaches
// CloudWatch; duplicates are counted, attributed to a fault and reported
// and at most 0.5% of them; all within a bounded
// time, and every worker's SIGTERM then exits 0.
func TestExportThroughFaults(t *testing.T) {
	b := binaries(t)
	start := time.Now()
	aws := awsfake.New(t)
	// Each worker process signs with its own access key (auth "default",
	// the key in its environment), so the fake's calls tell which worker
	// delivered what: worker i is started with key i, the restarted one with 3.
	workerKey := func(i int) string { return fmt.Sprintf("AKIDFAULTSLOGS00000%d", i) }
	for i := range 4 {
		aws.AddCredentials(awsfake.Credentials{AccessKeyID: workerKey(i), SecretAccessKey: "faults-logs-secret"})
	}
	cw := aws.Logs()
	cw.SetDelay(50 * time.Millisecond) // calls in flight when the worker is killed

	c := procs.StartCluster(t, b, 3)
	start3 := func(i int) *procs.Worker {
		return startWorkerEnv(t, c, []string{"AWS_ACCESS_KEY_ID=" + workerKey(i), "AWS_SECRET_ACCESS_KEY=faults-logs-secret",
			"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"})
	}
	workers := []*procs.Worker{start3(0), start3(1), start3(2)}
	// A timeline of the fake's calls: when the n-th call was recorded (to the
	// sampling period), to place each delivery relative to the faults.
	tl := newCallTimeline(cw, start)
	defer tl.stop()
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
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	logsStream := events.Subjects{}.LogsStream()
	info := func() *jetstream.StreamInfo {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, logsStream)
		if err != nil {
			return nil
		}
		return s.CachedInfo()
	}
	if si := info(); si == nil || si.Config.Replicas != len(c.Nodes) {
		t.Fatalf("logs stream %s: %+v, want %d replicas (--kv-replicas)", logsStream, si, len(c.Nodes))
	}

	admin(t, cl, events.ResourceConnections, events.VerbPut, events.Connection{Name: "aws-logs", Provider: events.ProviderAWS,
		Groups: []string{"ops"}, Secrets: []string{},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthDefault, Endpoint: aws.URL()}}, nil, 30*time.Second)
	admin(t, cl, events.ResourceExports, events.VerbPut, events.Export{Name: "chaos", Connection: "aws-logs",
		Subjects:   []string{"logs.chaos.>"},
		CloudWatch: &events.CloudWatchSink{LogGroup: "/faults/chaos", LogStream: "{subject}", Create: true},
		Batch:      &events.BatchPolicy{MaxEvents: exportBatch, MaxWait: events.Duration(200 * time.Millisecond)}}, nil, 30*time.Second)

	// Publishers: paced, each event retried with the same message id until
	// the stream acks it (JetStream's duplicate window keeps it once).
	var published, pubRetries atomic.Int64
	var pubWG sync.WaitGroup
	pubStart := time.Now()
	for p := range exportPublishers {
		pjs, err := jetstream.New(connect(t, c))
		if err != nil {
			t.Fatal(err)
		}
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			for i := p; i < exportEvents; i += exportPublishers {
				if ahead := time.Until(pubStart.Add(time.Duration(i) * time.Second / exportRate)); ahead > 0 {
					time.Sleep(ahead) // pacing the load, not synchronization
				}
				subject := fmt.Sprintf("logs.chaos.s%d", i%3)
				body := fmt.Sprintf(`{"level":"info","msg":"chaos event","id":%d,"time":%q}`, i, time.Now().UTC().Format(time.RFC3339Nano))
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := pjs.Publish(ctx, subject, []byte(body), jetstream.WithMsgID(fmt.Sprintf("chaos-%d", i)))
					cancel()
					if err == nil {
						break
					}
					pubRetries.Add(1)
					if time.Since(pubStart) > 5*time.Minute {
						t.Errorf("publishing event %d: %v", i, err)
						return
					}
				}
				published.Add(1)
			}
		}()
	}

	calls := func(pred func(awsfake.LogCall) bool) int {
		n := 0
		for _, call := range cw.Calls() {
			if call.Op == awsfake.OpPutLogEvents && pred(call) {
				n++
			}
		}
		return n
	}
	succeeded := func(call awsfake.LogCall) bool { return call.Error == "" }

	// 1. A worker killed with SIGKILL mid-batch, then started again.
	eventually(t, 90*time.Second, "2,000 events exported", func() bool { return cw.Count() >= 2000 }, logs)
	killAt := time.Since(start)
	workers[0].Kill()
	ackPending := -1
	{
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if cons, err := js.Consumer(ctx, logsStream, events.ExportConsumer("chaos")); err == nil {
			ackPending = cons.CachedInfo().NumAckPending
		}
		cancel()
	}
	t.Logf("worker 0 killed (SIGKILL) at %d events in CloudWatch, %d messages ack-pending", cw.Count(), ackPending)
	wmu.Lock()
	workers[0] = start3(3)
	wmu.Unlock()

	// 2. 10 s of throttling, then 3. 10 s of 503, each until a call succeeds
	// after its end. Each fault also refuses at least `refusals` calls: bound
	// by time alone it could end before a call came under heavy load, and
	// then tested nothing.
	const refusals = 5
	for _, fault := range []struct {
		name   string
		inject func(time.Duration)
		is     func(awsfake.LogCall) bool
	}{
		{"throttling", func(d time.Duration) { cw.ThrottleFor(d); cw.ThrottleNext(refusals) },
			func(c awsfake.LogCall) bool { return c.Error == "ThrottlingException" }},
		{"503", func(d time.Duration) { cw.FailFor(d, 503); cw.FailNext(refusals, 503) },
			func(c awsfake.LogCall) bool { return c.Error == "ServiceUnavailableException" }},
	} {
		refusedBefore := calls(fault.is)
		end := time.Now().Add(10 * time.Second)
		fault.inject(10 * time.Second)
		okBefore := calls(succeeded)
		eventually(t, 60*time.Second, fmt.Sprintf("%d calls refused by %s", refusals, fault.name), func() bool {
			return calls(fault.is)-refusedBefore >= refusals
		}, logs)
		eventually(t, 60*time.Second, "a delivery after 10 s of "+fault.name, func() bool {
			return time.Now().After(end) && calls(succeeded) > okBefore
		}, logs)
		t.Logf("10 s of %s: %d PutLogEvents calls refused; %d events in CloudWatch", fault.name, calls(fault.is)-refusedBefore, cw.Count())
	}

	// 4. The node leading the logs stream killed with SIGKILL, then restarted.
	si := info()
	if si == nil || si.Cluster == nil || c.Node(si.Cluster.Leader) == nil {
		t.Fatalf("logs stream leader: %+v", si)
	}
	leader := c.Node(si.Cluster.Leader)
	before := cw.Count()
	leaderAt := time.Since(start)
	leader.Kill()
	eventually(t, 60*time.Second, "a new logs stream leader", func() bool {
		si := info()
		return si != nil && si.Cluster != nil && si.Cluster.Leader != "" && si.Cluster.Leader != leader.Name
	}, logs)
	newLeader := info().Cluster.Leader
	eventually(t, 90*time.Second, "deliveries with the leader's node down", func() bool {
		return cw.Count() >= min(before+1000, exportEvents)
	}, logs)
	t.Logf("stream leader %s killed (SIGKILL) at %d events in CloudWatch; new leader %s", leader.Name, before, newLeader)
	leader.Start()
	c.WaitReady(60 * time.Second)

	// Everything published, once in the stream, and in CloudWatch.
	pubDone := make(chan struct{})
	go func() { pubWG.Wait(); close(pubDone) }()
	eventually(t, 5*time.Minute, "every event published", func() bool {
		select {
		case <-pubDone:
			return true
		default:
			return false
		}
	}, logs)
	if si := info(); si == nil || si.State.Msgs != exportEvents {
		t.Errorf("logs stream holds %+v messages, want %d (one per message id)", si, exportEvents)
	}
	counts := map[int]int{}
	distinct := func() int {
		clear(counts)
		var bad string
		cw.AllEvents(func(group, stream string, ev awsfake.LogEvent) {
			var m struct {
				ID *int `json:"id"`
			}
			if json.Unmarshal([]byte(ev.Message), &m) != nil || m.ID == nil || *m.ID < 0 || *m.ID >= exportEvents {
				bad = ev.Message
				return
			}
			counts[*m.ID]++
		})
		if bad != "" {
			t.Fatalf("CloudWatch holds an event that is not ours: %q", bad)
		}
		return len(counts)
	}
	last := -1
	eventually(t, 3*time.Minute, "every id in CloudWatch", func() bool {
		n := cw.Count()
		if n < exportEvents || n == last {
			return false
		}
		last = n
		return distinct() == exportEvents
	}, func() string {
		missing := []int{}
		distinct()
		for i := 0; i < exportEvents && len(missing) < 20; i++ {
			if counts[i] == 0 {
				missing = append(missing, i)
			}
		}
		return fmt.Sprintf("%d of %d ids in CloudWatch; first missing %v\n%s", len(counts), exportEvents, missing, logs())
	})
	elapsed := time.Since(start)
	dups := cw.Count() - exportEvents
	pct := 100 * float64(dups) / exportEvents
	t.Logf("%d events published (%d publish retries) and all exported in %s: %d duplicates (%.3f%%), %d PutLogEvents calls (%d succeeded)",
		published.Load(), pubRetries.Load(), elapsed.Round(time.Second), dups, pct, calls(func(awsfake.LogCall) bool { return true }), calls(succeeded))
	if dups > 0 {
		t.Logf("duplicated ids (id ranges ×count): %s", dupRanges(counts))
		t.Logf("duplicates by cause (worker 0 killed at %s, leader killed at %s):\n%s",
			killAt.Round(time.Millisecond), leaderAt.Round(time.Millisecond),
			explainDups(cw.Calls(), cw, tl, counts, workerKey, killAt, leaderAt))
	}
	t.Logf("the live workers' counters (the killed one's died with it): %s", exportCounters(workers,
		"cloudbridge_export_redeliveries_suppressed_total", "cloudbridge_export_accepted_ignored_total", "cloudbridge_export_ledger_dropped_total"))
	if pct > maxDupPct {
		// Redelivery suppression (workers/export/ledger.go) acks what a sink
		// call already accepted when the new consumer leader hands it out
		// again; what is left is a worker killed between a call and its
		// acks and broadcast, bounded by the calls in flight.
		t.Errorf("%d duplicates (%.3f%%), goal ≤ %.1f%%", dups, pct, maxDupPct)
	}
	for _, call := range cw.Calls() {
		if call.Op == awsfake.OpPutLogEvents && call.Error == "" && (!call.Ordered || call.Events > exportBatch) {
			t.Errorf("a PutLogEvents call broke the limits or the batch policy: %+v", call)
			break
		}
	}
	for i, w := range workers {
		w.Signal(syscall.SIGTERM)
		code, exited := w.Wait(shutdownTimeout + stopMargin)
		if !exited || code != 0 {
			t.Errorf("worker %d: SIGTERM: exit %d (exited %v)\n%s", i, code, exited, tail(w.Logs(), 40))
		}
	}
}

// dupRanges renders the ids seen more than once as ranges, e.g. "100-149×2".
func dupRanges(counts map[int]int) string {
	var out []string
	for i := 0; i < exportEvents; i++ {
		if counts[i] < 2 {
			continue
		}
		j := i
		for j+1 < exportEvents && counts[j+1] == counts[i] {
			j++
		}
		out = append(out, fmt.Sprintf("%d-%d×%d", i, j, counts[i]))
		i = j
	}
	if len(out) > 40 {
		out = append(out[:40], "…")
	}
	return strings.Join(out, " ")
}

// callTimeline samples how many calls the fake has recorded, to date each call.
type callTimeline struct {
	mu      sync.Mutex
	samples []timelineSample
	done    chan struct{}
	exited  chan struct{}
}

type timelineSample struct {
	at    time.Duration // since the test's start
	calls int
}

func newCallTimeline(cw *awsfake.Logs, start time.Time) *callTimeline {
	tl := &callTimeline{done: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(tl.exited)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tl.done:
				return
			case <-tick.C:
				n := len(cw.Calls())
				tl.mu.Lock()
				tl.samples = append(tl.samples, timelineSample{time.Since(start), n})
				tl.mu.Unlock()
			}
		}
	}()
	return tl
}

func (tl *callTimeline) stop() {
	select {
	case <-tl.done:
	default:
		close(tl.done)
		<-tl.exited
	}
}

// at is when call i (0-based) was first seen recorded.
func (tl *callTimeline) at(i int) time.Duration {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, s := range tl.samples {
		if s.calls > i {
			return s.at
		}
	}
	return -1
}

// explainDups reconstructs, for every duplicated id, which calls (worker by
// access key, time) carried each copy: the fake appends a successful call's
// accepted events to its stream in call order, under the lock that records
// the call. It classifies each duplicate by the first copy: delivered by the
// killed worker within 2 s before its kill ("kill": accepted, acks lost with
// the process), within 3 s around the leader kill ("leader": acks lost with
// the consumer leader), else "other".
func explainDups(calls []awsfake.LogCall, cw *awsfake.Logs, tl *callTimeline, counts map[int]int,
	key func(int) string, killAt, leaderAt time.Duration) string {
	type copyOf struct {
		call int
		key  string
	}
	streamEvents := map[string][]awsfake.LogEvent{}
	cw.AllEvents(func(group, stream string, ev awsfake.LogEvent) {
		streamEvents[group+"/"+stream] = append(streamEvents[group+"/"+stream], ev)
	})
	off := map[string]int{}
	copies := map[int][]copyOf{}
	for i, call := range calls {
		if call.Op != awsfake.OpPutLogEvents || call.Error != "" {
			continue
		}
		k := call.Group + "/" + call.Stream
		evs := streamEvents[k]
		for j := off[k]; j < off[k]+call.Accepted && j < len(evs); j++ {
			var m struct {
				ID *int `json:"id"`
			}
			if json.Unmarshal([]byte(evs[j].Message), &m) == nil && m.ID != nil && counts[*m.ID] > 1 {
				copies[*m.ID] = append(copies[*m.ID], copyOf{i, call.AccessKeyID})
			}
		}
		off[k] += call.Accepted
	}
	workerOf := func(k string) string {
		for i := range 4 {
			if key(i) == k {
				return fmt.Sprintf("w%d", i)
			}
		}
		return "?"
	}
	byCause := map[string]int{}
	var lines []string
	ids := make([]int, 0, len(copies))
	for id := range copies {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		cs := copies[id]
		first := tl.at(cs[0].call)
		cause := "other"
		switch {
		case cs[0].key == key(0) && first >= killAt-2*time.Second && first <= killAt+time.Second:
			cause = "kill"
		case first >= leaderAt-3*time.Second && first <= leaderAt+3*time.Second:
			cause = "leader"
		}
		byCause[cause]++
		if len(lines) < 60 {
			var parts []string
			for _, c := range cs {
				parts = append(parts, fmt.Sprintf("%s@%s(call %d)", workerOf(c.key), tl.at(c.call).Round(10*time.Millisecond), c.call))
			}
			lines = append(lines, fmt.Sprintf("  id %d [%s]: %s", id, cause, strings.Join(parts, " ")))
		}
	}
	return fmt.Sprintf("  by cause: kill %d, leader %d, other %d\n%s", byCause["kill"], byCause["leader"], byCause["other"], strings.Join(lines, "\n"))
}

// exportCounters sums, over the workers' /metrics, each named counter
// (every label set), e.g. "cloudbridge_export_redeliveries_suppressed_total=292".
func exportCounters(workers []*procs.Worker, names ...string) string {
	sums := make([]float64, len(names))
	for _, w := range workers {
		addr, ok := w.HTTPAddr(time.Second)
		if !ok {
			continue
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		_ = resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			for i, n := range names {
				if rest, ok := strings.CutPrefix(line, n); ok && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
					if v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64); err == nil {
						sums[i] += v
					}
				}
			}
		}
	}
	var out []string
	for i, n := range names {
		out = append(out, fmt.Sprintf("%s=%v", n, sums[i]))
	}
	return strings.Join(out, ", ")
}
