package service

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/child"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// hangingEndpoint is a TCP listener that accepts connections and never
// answers: a cloud endpoint that hangs.
func hangingEndpoint(t testing.TB) (string, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	accepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
	return "http://" + ln.Addr().String(), accepted
}

// floodSetup is a worker joined to the NATS server at url with a builtin
// connection of group chem, its secret cached, and an AWS connection of group
// bio whose endpoint hangs. Its debug log is captured, unless it is a
// benchmark's: that one logs at the production default level (info), to
// nowhere, so the measured resolves do not each append a debug line to an
// in-memory buffer that grows (and is copied) without end.
func floodSetup(t testing.TB, url string, timeout time.Duration, opts ...Option) (*worker, *events.Client, func() int) {
	t.Helper()
	cfg := joinedConfig(url, newMasterKey(t))
	cfg.RequestTimeout = timeout
	var w *worker
	if _, bench := t.(*testing.B); bench {
		w = startWorkerLog(t, cfg, zerolog.New(io.Discard).Level(zerolog.InfoLevel), nil, opts...)
	} else {
		w = startWorker(t, cfg, opts...)
	}
	hang, accepted := hangingEndpoint(t) // stopped before the worker: its calls end
	_, c := connect(t, url)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "local-chem",
		Provider: events.ProviderBuiltin, Groups: []string{"chem"}, Secrets: []string{"chemdb*"}}, nil)
	adminReq(t, c, events.ResourceSecrets, events.VerbPut,
		events.SecretPut{Connection: "local-chem", Name: "chemdb01", Value: []byte(`{"login":"chem","password":"pw"}`)}, nil)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "aws-hang",
		Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEYID0001",
			SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", Endpoint: hang}}, nil)
	if r, err := resolveReq(c, "chem", "local-chem", events.ResolveRequest{Secret: "chemdb01"}); err != nil || r.Cached {
		t.Fatalf("warming chemdb01: %+v %v", r, err)
	}
	return w, c, accepted
}

// flood sends n resolves of distinct secrets to aws-hang without waiting,
// and collects the replies on ch.
func flood(t testing.TB, url string, n int) (<-chan *nats.Msg, func()) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *nats.Msg, n)
	inbox := nats.NewInbox()
	sub, err := nc.ChanSubscribe(inbox+".*", ch)
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	subject := events.Subjects{}.Resolve("bio", "aws-hang")
	for i := 0; i < n; i++ {
		body := []byte(fmt.Sprintf(`{"secret":"biodb%05d"}`, i))
		if err := nc.PublishRequest(subject, inbox+"."+strconv.Itoa(i), body); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch, nc.Close
}

// TestFloodedConnectionCostsOnlyItself: while aws-hang's endpoint hangs
// under 3,000 resolves of distinct secrets, chem's cached resolves, a chem
// read of its provider and admin all answer, and aws-hang's surplus fails at
// once with throttled naming the connection.
//
// The request timeout is long enough for the whole flood to be read before
// the admitted requests reach their deadline, so exactly one round of them is
// admitted: the AWS SDK opens a new connection for each call, and a second
// round would dial the hanging endpoint again (each round at most
// max_concurrent at a time, but more in all). Before the lanes, the cached
// resolves waited on the subscription's goroutine behind the flood's fast
// failures (and their audit events): under heavy load and -race that took
// longer than their 5 s deadline, which made this test flaky.
func TestFloodedConnectionCostsOnlyItself(t *testing.T) {
	srv := natstest.Server(t)
	w, c, hangAccepted := floodSetup(t, srv.ClientURL(), 8*time.Second)
	snc := natstest.Connect(t, srv)
	before, _ := resolveCounts(t, w.HTTPAddr())
	statsBefore := resolveStats(t, snc, w)
	const n = 3000
	replies, done := flood(t, srv.ClientURL(), n)
	defer done()

	for i := 0; i < 200; i++ {
		r, err := resolveReq(c, "chem", "local-chem", events.ResolveRequest{Secret: "chemdb01"})
		if err != nil || !r.Cached {
			t.Fatalf("cached chem resolve %d during the flood: %+v %v", i, r, err)
		}
	}
	// chem's own provider (the built-in store) still answers a miss.
	if r, err := resolveReq(c, "chem", "local-chem", events.ResolveRequest{Secret: "chemdb01", Fresh: true}); err != nil || r.Cached {
		t.Fatalf("fresh chem resolve during the flood: %+v %v", r, err)
	}
	var list events.ConnectionList
	adminReq(t, c, events.ResourceConnections, events.VerbList, events.Empty{}, &list)

	// Every flood request gets an answer; the surplus is throttled at once
	// (how soon is the benchmark's business: a busy machine admits another
	// round each time the admitted ones reach their deadline).
	codes := map[string]int{}
	throttledFirst := 0
	timedOut := false
	deadline := time.After(60 * time.Second)
	for got := 0; got < n; got++ {
		var m *nats.Msg
		select {
		case m = <-replies:
		case <-deadline:
			t.Fatalf("only %d of %d flood requests answered: %v", got, n, codes)
		}
		code := m.Header.Get(events.HeaderErrorCode)
		codes[code]++
		switch code {
		case strconv.Itoa(events.CodeThrottled.Number()):
			if !strings.Contains(m.Header.Get(events.HeaderError), `"aws-hang"`) {
				t.Fatalf("throttled reply does not name the connection: %q", m.Header.Get(events.HeaderError))
			}
			if !timedOut {
				throttledFirst++
			}
		case "":
			t.Fatalf("a request to the hanging endpoint succeeded: %s", m.Data)
		default:
			timedOut = true
		}
	}
	throttled := codes[strconv.Itoa(events.CodeThrottled.Number())]
	timeouts := codes[strconv.Itoa(events.CodeTimeout.Number())]
	admitted := events.DefaultMaxConcurrent + events.DefaultMaxQueue
	if throttled+timeouts != n || timeouts != admitted {
		t.Fatalf("codes %v: want timeout for the %d admitted, throttled for the rest", codes, admitted)
	}
	t.Logf("codes %v; %d throttled replies came before the first timed-out one", codes, throttledFirst)
	// $SRV.STATS counted every reply as it was sent, the throttled ones
	// from the lane and the timeouts from their goroutines, as /metrics did.
	after, _ := resolveCounts(t, w.HTTPAddr())
	st := resolveStats(t, snc, w)
	var reqs, errs float64
	for code, v := range after {
		reqs += v - before[code]
		if code != "ok" {
			errs += v - before[code]
		}
	}
	if gotReqs, gotErrs := st.NumRequests-statsBefore.NumRequests, st.NumErrors-statsBefore.NumErrors; float64(gotReqs) != reqs ||
		float64(gotErrs) != errs || gotErrs != n || !strings.HasPrefix(st.LastError, strconv.Itoa(events.CodeThrottled.Number())+":") &&
		!strings.HasPrefix(st.LastError, strconv.Itoa(events.CodeTimeout.Number())+":") {
		t.Fatalf("$SRV.STATS counted %d requests, %d errors (last %q); /metrics %v requests, %v errors; %d flood errors",
			gotReqs, gotErrs, st.LastError, reqs, errs, n)
	}
	// The upstream work is bounded: the hanging endpoint saw at most
	// max_concurrent calls.
	if got := hangAccepted(); got > events.DefaultMaxConcurrent {
		t.Fatalf("the hanging endpoint got %d connections, want at most %d", got, events.DefaultMaxConcurrent)
	}
}

// cachedLatencies times n sequential cached chem resolves.
func cachedLatencies(b *testing.B, nc *nats.Conn, n int) []time.Duration {
	subject := events.Subjects{}.Resolve("chem", "local-chem")
	body := []byte(`{"secret":"chemdb01"}`)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		m, err := nc.Request(subject, body, 5*time.Second)
		if err != nil || m.Header.Get(events.HeaderErrorCode) != "" {
			b.Fatalf("cached resolve: %v", err)
		}
		out = append(out, time.Since(t0))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// BenchmarkCachedResolveUnderFlood measures the p99 of chem's cached
// resolves while aws-hang's endpoint hangs under a steady flood of resolves
// of distinct secrets, against the same resolves idle in the same run (goal:
// ratio ≤ 2), and the share of the flood failed at once with throttled. The
// sub-benchmark without audit shows what the flood's audit events (one per
// throttled request, stored by JetStream) cost.
//
// The worker joins a nats-server process (internal/testenv/procs), as it
// would in production, so that the server's routing of the flood and its
// JetStream store of the audit events do not run on the worker's Go
// scheduler between the measured resolves; the server's CPU is reported
// apart. CLOUDBRIDGE_BENCH_INPROCESS=1 uses an in-process server instead
// (its CPU then counts as the process's).
//
// The flood comes from a process of its own (this test binary again, as
// TestFloodGenerator), as it would from other clients: its publishing and
// the decoding of its replies do not run on this process's Go scheduler,
// between the measured resolves, and its CPU is reported apart. It is paced
// at a steady rate (CLOUDBRIDGE_FLOOD_RATE a second, 10,000 by default). CPU
// per flood request is this process's CPU (worker and the measuring client;
// with CLOUDBRIDGE_BENCH_INPROCESS=1 the NATS server and JetStream too) in
// the flooded phase less the idle phase's (the same 2,000 cached resolves),
// per flood request sent; the nats-server process's is reported the same
// way.
//
//	go test -run '^$' -bench CachedResolveUnderFlood -benchtime 1x ./workers/service
func BenchmarkCachedResolveUnderFlood(b *testing.B) {
	var bins procs.Binaries
	inProcess := os.Getenv("CLOUDBRIDGE_BENCH_INPROCESS") == "1"
	if !inProcess {
		bins = procs.Build(b)
	}
	// server starts a fresh NATS server for a sub-benchmark: its URL, and
	// its process's CPU so far (0 in-process: it is this process's).
	server := func(b *testing.B) (string, func() time.Duration) {
		if inProcess {
			return natstest.Server(b).ClientURL(), func() time.Duration { return 0 }
		}
		node := procs.StartCluster(b, bins, 1).Nodes[0]
		return node.ClientURL(), node.CPU
	}
	b.Run("audit", func(b *testing.B) { url, cpu := server(b); benchFlood(b, url, cpu) })
	b.Run("no-audit", func(b *testing.B) { url, cpu := server(b); benchFlood(b, url, cpu, withoutAudit()) })
}

func benchFlood(b *testing.B, url string, serverCPU func() time.Duration, opts ...Option) {
	floodSetup(b, url, 2*time.Second, opts...)
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	const samples = 2000
	rounds := floodRounds()
	p := func(l []time.Duration, q int) time.Duration { return l[len(l)*q/100] }
	for i := 0; i < b.N; i++ {
		gen := startFloodGenerator(b, url)
		gen.pause()
		// The phases alternate, idle then flooded, rounds times, so that
		// both see the same machine (a load that changes during the run
		// moves both); the p99s are of all the rounds' resolves of a
		// phase.
		var idle, flooded []time.Duration
		var ratios []float64
		var idleCPU, floodCPU, idleSrv, floodSrv, idleWall, floodWall time.Duration
		var idleIO, floodIO int64
		var idleAllocs, floodAllocs, idleGC, floodGC uint64
		var res floodResult
		for r := 0; r < rounds; r++ {
			var ms0, ms1, ms2, ms3 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0, io0, srv0 := cpuTime(), processIO(), serverCPU()
			t0 := time.Now()
			idleR := cachedLatencies(b, nc, samples)
			idleCPU += cpuTime() - cpu0
			idleIO += processIO() - io0
			idleWall += time.Since(t0)
			idleSrv += serverCPU() - srv0
			runtime.ReadMemStats(&ms1)

			gen.resume()
			stopProfile := profileFlood(b, r)
			gen.command("start")
			runtime.ReadMemStats(&ms2)
			cpu1, io1, srv1 := cpuTime(), processIO(), serverCPU()
			t1 := time.Now()
			floodR := cachedLatencies(b, nc, samples)
			floodCPU += cpuTime() - cpu1
			floodIO += processIO() - io1
			floodWall += time.Since(t1)
			floodSrv += serverCPU() - srv1
			runtime.ReadMemStats(&ms3)
			stopProfile()
			w := gen.pause()
			res.Sent, res.Skipped, res.Answered, res.Throttled = res.Sent+w.Sent, res.Skipped+w.Skipped, res.Answered+w.Answered, res.Throttled+w.Throttled
			res.CPU, res.Wall = res.CPU+w.CPU, res.Wall+w.Wall

			idleAllocs += ms1.Mallocs - ms0.Mallocs
			floodAllocs += ms3.Mallocs - ms2.Mallocs
			idleGC += uint64(ms1.NumGC - ms0.NumGC)
			floodGC += uint64(ms3.NumGC - ms2.NumGC)
			ratios = append(ratios, float64(p(floodR, 99))/float64(p(idleR, 99)))
			idle, flooded = append(idle, idleR...), append(flooded, floodR...)
		}
		gen.stop()
		sort.Slice(idle, func(i, j int) bool { return idle[i] < idle[j] })
		sort.Slice(flooded, func(i, j int) bool { return flooded[i] < flooded[j] })

		n := max(res.Sent, 1)
		resolves := float64(samples * rounds)
		ratio := float64(p(flooded, 99)) / float64(p(idle, 99))
		perFlood := time.Duration(float64(floodCPU-idleCPU) / float64(n))
		srvPerFlood := time.Duration(float64(floodSrv-idleSrv) / float64(n))
		ioPerFlood := float64(floodIO-idleIO) / float64(n)
		allocsPerFlood := (float64(floodAllocs) - float64(idleAllocs)) / float64(n)
		b.ReportMetric(float64(p(idle, 99).Microseconds()), "p99-idle-µs")
		b.ReportMetric(float64(p(flooded, 99).Microseconds()), "p99-flood-µs")
		b.ReportMetric(ratio, "p99-ratio")
		b.ReportMetric(testenv.Median(ratios), "round-p99-ratio-median")
		b.ReportMetric(float64(res.Throttled)/float64(n), "fast-fail-share")
		b.ReportMetric(float64(perFlood.Nanoseconds())/1000, "cpu-µs/flood-req")
		b.ReportMetric(ioPerFlood, "syscalls/flood-req")
		if floodSrv > 0 {
			b.ReportMetric(float64(srvPerFlood.Nanoseconds())/1000, "server-cpu-µs/flood-req")
		}
		b.ReportMetric(allocsPerFlood, "allocs/flood-req")
		// How much of a core this process (worker, measuring client, and
		// the NATS server when in-process) had in each phase: on a shared
		// machine a flooded phase that gets less CPU than the idle one is
		// starved, not busy.
		b.Logf("process CPU: %.0f%% of a core idle (%.0f µs per cached resolve), %.0f%% under the flood (%.1f µs more per flood request); the flood generator's process %.0f%%",
			100*float64(idleCPU)/float64(idleWall), float64(idleCPU.Microseconds())/resolves,
			100*float64(floodCPU)/float64(floodWall), float64(perFlood.Nanoseconds())/1000,
			100*float64(res.CPU)/float64(max(res.Wall, 1)))
		if floodSrv > 0 {
			b.Logf("nats-server process CPU: %.0f%% of a core idle, %.0f%% under the flood (%.1f µs more per flood request)",
				100*float64(idleSrv)/float64(idleWall), 100*float64(floodSrv)/float64(floodWall), float64(srvPerFlood.Nanoseconds())/1000)
		}
		b.Logf("read and write system calls: %.1f per cached resolve idle, %.2f more per flood request",
			float64(idleIO)/resolves, ioPerFlood)
		b.Logf("heap allocations: %.0f per cached resolve idle, %.0f more per flood request; %d garbage collections idle, %d under the flood",
			float64(idleAllocs)/resolves, allocsPerFlood, idleGC, floodGC)
		b.Logf("cached resolves, %d rounds of %d a phase: p50 idle %s, under flood %s; p99 idle %s, under flood %s: ratio %.2f (goal ≤ 2); per round %s",
			rounds, samples, p(idle, 50), p(flooded, 50), p(idle, 99), p(flooded, 99), ratio, formatRatios(ratios))
		b.Logf("flood: %d sent in %s (%.0f a second; %d not sent, the generator was late), %d answered so far, %d throttled at once (%.1f%%)",
			res.Sent, floodWall.Round(time.Millisecond), float64(res.Sent)/floodWall.Seconds(), res.Skipped, res.Answered,
			res.Throttled, 100*float64(res.Throttled)/float64(n))
	}
}

func formatRatios(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = strconv.FormatFloat(r, 'f', 2, 64)
	}
	return strings.Join(parts, "/")
}

// floodRounds is how many times the idle and flooded phases alternate: 5,
// or CLOUDBRIDGE_FLOOD_ROUNDS.
func floodRounds() int {
	if n, err := strconv.Atoi(os.Getenv("CLOUDBRIDGE_FLOOD_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// floodResult is what the flood generator counted in the measured window.
type floodResult struct {
	// Sent and Skipped: requests sent, and not sent because the generator
	// was late by more than 10 ms.
	Sent, Skipped int64
	// Answered and Throttled: replies to the requests sent in the window
	// that came within it, and those of them throttled.
	Answered, Throttled int64
	// CPU and Wall: the generator process's CPU and the window's length.
	CPU, Wall time.Duration
}

type floodGenerator struct {
	b *testing.B
	p *child.Process
}

// startFloodGenerator starts the flood in a process of its own and returns
// once its first requests have filled aws-hang's bulkhead (its steady state).
func startFloodGenerator(b *testing.B, url string) *floodGenerator {
	b.Helper()
	g := &floodGenerator{b: b, p: child.Start(b, "the flood generator", "TestFloodGenerator", "FLOOD ", floodGeneratorEnv+"="+url)}
	if line := g.next(30 * time.Second); line != "warm" {
		b.Fatalf("flood generator: %q, want warm", line)
	}
	return g
}

func (g *floodGenerator) command(c string) { g.p.Send(c) }

func (g *floodGenerator) next(timeout time.Duration) string { return g.p.Next(timeout) }

// pause stops the flood and returns the counts since the last "start" (or
// since the generator began).
func (g *floodGenerator) pause() floodResult {
	g.command("pause")
	var res floodResult
	if err := json.Unmarshal([]byte(g.next(30*time.Second)), &res); err != nil {
		g.b.Fatal(err)
	}
	return res
}

// resume goes on with the flood and returns once it is steady again (a
// request sent since was throttled).
func (g *floodGenerator) resume() {
	g.command("resume")
	if line := g.next(30 * time.Second); line != "resumed" {
		g.b.Fatalf("flood generator: %q, want resumed", line)
	}
}

// stop ends the flood generator.
func (g *floodGenerator) stop() {
	g.command("stop")
	g.p.Stop()
}

// floodGeneratorEnv names the NATS server the flood generator floods.
const floodGeneratorEnv = "CLOUDBRIDGE_FLOOD_GENERATOR"

// TestFloodGenerator is BenchmarkCachedResolveUnderFlood's flood, run as a
// process of its own; skipped otherwise. It sends resolves of distinct
// secrets to aws-hang at a steady rate on a 1 ms ticker: each tick sends what
// is due by then, so a late tick does not lower the rate, but at most 10 ms
// worth, so a generator the machine stalled does not come back as one burst
// (what it did not send is counted). It prints "FLOOD warm" once a request
// was throttled and 200 ms have passed. Commands, one a line on its standard
// input: "start" counts from the next request on; "pause" stops sending and
// prints the counts since the last start (FLOOD {json}); "resume" sends again
// at the rate from then on, and prints "FLOOD resumed" once a request sent
// since was throttled and 50 ms have passed (the flood is steady again);
// "stop" ends it.
func TestFloodGenerator(t *testing.T) {
	url := os.Getenv(floodGeneratorEnv)
	if url == "" {
		t.Skip("BenchmarkCachedResolveUnderFlood's flood generator, run by the benchmark")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rate := floodRate()
	// The replies to the requests sent from request from on (the counted
	// ones), and the throttled replies to those sent from request since
	// on (the flood is steady).
	var answered, throttled, throttledSince, sent, skipped atomic.Int64
	var from, since atomic.Int64
	from.Store(math.MaxInt64)
	throttledCode := strconv.Itoa(events.CodeThrottled.Number())
	inbox := nats.NewInbox()
	sub, err := nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		n, err := strconv.ParseInt(m.Subject[len(inbox)+1:], 10, 64)
		if err != nil {
			return
		}
		isThrottled := m.Header.Get(events.HeaderErrorCode) == throttledCode
		if isThrottled && n >= since.Load() {
			throttledSince.Add(1)
		}
		if n < from.Load() {
			return
		}
		answered.Add(1)
		if isThrottled {
			throttled.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	commands := make(chan string)
	go func() {
		defer close(commands)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			commands <- sc.Text()
		}
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	subject := events.Subjects{}.Resolve("bio", "aws-hang")
	body := make([]byte, 0, 64)
	reply := make([]byte, 0, 64)
	// The pacing runs from begin, when base requests were sent or skipped.
	begin, base := time.Now(), int64(0)
	warm, paused, steady := false, false, false
	var cpu0 time.Duration
	var t0 time.Time
	var sent0, skipped0 int64
	for {
		select {
		case c, ok := <-commands:
			switch {
			case ok && c == "start":
				sent0, skipped0 = sent.Load(), skipped.Load()
				answered.Store(0)
				throttled.Store(0)
				from.Store(sent0)
				cpu0, t0 = cpuTime(), time.Now()
			case ok && c == "pause":
				paused = true
				res := floodResult{Sent: sent.Load() - sent0, Skipped: skipped.Load() - skipped0,
					Answered: answered.Load(), Throttled: throttled.Load(), CPU: cpuTime() - cpu0, Wall: time.Since(t0)}
				out, _ := json.Marshal(res)
				fmt.Printf("FLOOD %s\n", out)
			case ok && c == "resume":
				paused, steady = false, false
				begin, base = time.Now(), sent.Load()+skipped.Load()
				throttledSince.Store(0)
				since.Store(sent.Load())
			case ok && c == "stop", !ok:
				return
			default:
				t.Fatalf("flood generator: command %q", c)
			}
			continue
		case <-tick.C:
		}
		if !warm && throttledSince.Load() > 0 && time.Since(begin) > 200*time.Millisecond {
			warm, steady = true, true
			fmt.Println("FLOOD warm")
		}
		if warm && !steady && throttledSince.Load() > 0 && time.Since(begin) > 50*time.Millisecond {
			steady = true
			fmt.Println("FLOOD resumed")
		}
		if paused {
			continue
		}
		due := int64(time.Since(begin).Seconds()*float64(rate)) - (sent.Load() + skipped.Load() - base)
		if most := int64(rate / 100); due > most {
			skipped.Add(due - most)
			due = most
		}
		for j := int64(0); j < due; j++ {
			n := sent.Load()
			body = strconv.AppendInt(append(body[:0], `{"secret":"biodb`...), n, 10)
			body = append(body, `"}`...)
			reply = strconv.AppendInt(append(append(reply[:0], inbox...), '.'), n, 10)
			if err := nc.PublishRequest(subject, string(reply), body); err != nil {
				t.Fatal(err)
			}
			sent.Add(1)
		}
	}
}

// TestInvalidateOneSecretKeepsSiblingCached: invalidate CONN SECRET and a
// secret put drop that secret only; its sibling is still cached: true.
func TestInvalidateOneSecretKeepsSiblingCached(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	adminReq(t, c, events.ResourceSecrets, events.VerbPut,
		events.SecretPut{Connection: "local-bio", Name: "biodb02", Value: []byte(`{"login":"user02","password":"password02"}`)}, nil)
	for _, s := range []string{"biodb01", "biodb02"} {
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: s}); err != nil {
			t.Fatal(err)
		}
	}
	cached := func(secret string) bool {
		t.Helper()
		r, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		return r.Cached
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Request(ctx, c.Subjects().Invalidate(), events.InvalidateRequest{Connection: "local-bio", Secret: "biodb01"}, nil); err != nil {
		t.Fatal(err)
	}
	if cached("biodb01") {
		t.Fatal("biodb01 still cached after invalidate local-bio biodb01")
	}
	if !cached("biodb02") {
		t.Fatal("invalidating biodb01 dropped its sibling biodb02")
	}
	// A secret put drops that secret only, too.
	adminReq(t, c, events.ResourceSecrets, events.VerbPut,
		events.SecretPut{Connection: "local-bio", Name: "biodb01", Value: []byte(`{"login":"user01","password":"changed"}`)}, nil)
	natstest.Eventually(t, 5*time.Second, "the put to reach the cache", func() bool { return !cached("biodb01") })
	if !cached("biodb02") {
		t.Fatal("a secret put of biodb01 dropped its sibling biodb02")
	}
}

// processIO is the process's read and write system calls so far.
func processIO() int64 {
	r, w := syscallCounts()
	return int64(r + w)
}

// profileFlood writes a CPU profile and an execution trace of round's
// flooded phase to $CLOUDBRIDGE_FLOOD_CPUPROFILE-<sub-benchmark>-<round>.prof
// and $CLOUDBRIDGE_FLOOD_TRACE-<sub-benchmark>-<round>.trace when those are
// set (go tool pprof takes them all at once; go tool trace -pprof=sched shows
// where goroutines waited for a processor).
func profileFlood(b *testing.B, round int) func() {
	sub := b.Name()[strings.LastIndex(b.Name(), "/")+1:] + "-" + strconv.Itoa(round)
	var stops []func()
	if base := os.Getenv("CLOUDBRIDGE_FLOOD_CPUPROFILE"); base != "" {
		f, err := os.Create(base + "-" + sub + ".prof")
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); _ = f.Close() })
	}
	if base := os.Getenv("CLOUDBRIDGE_FLOOD_TRACE"); base != "" {
		f, err := os.Create(base + "-" + sub + ".trace")
		if err != nil {
			b.Fatal(err)
		}
		if err := trace.Start(f); err != nil {
			b.Fatal(err)
		}
		stops = append(stops, func() { trace.Stop(); _ = f.Close() })
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// floodRate is the flood's requests a second: 10,000, or
// CLOUDBRIDGE_FLOOD_RATE.
func floodRate() int {
	if n, err := strconv.Atoi(os.Getenv("CLOUDBRIDGE_FLOOD_RATE")); err == nil && n > 0 {
		return n
	}
	return 10000
}
