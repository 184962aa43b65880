package service

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// load sends total requests of subject with body from requesters
// goroutines spread over conns connections and returns the throughput and
// the latencies' p50 and p99.
func load(b *testing.B, conns []*nats.Conn, requesters, total int, subject string, body []byte) (float64, time.Duration, time.Duration) {
	return loadLat(b, conns, requesters, total, func(nc *nats.Conn, _ int) error {
		msg, err := nc.Request(subject, body, 5*time.Second)
		if err != nil {
			return fmt.Errorf("request %s: %w", subject, err)
		}
		if code := msg.Header.Get(events.HeaderErrorCode); code != "" {
			return fmt.Errorf("request %s: %s", subject, code)
		}
		return nil
	})
}

// requestFunc sends one request on nc as requester r and checks its reply.
type requestFunc func(nc *nats.Conn, r int) error

// loadLat runs total requests of do from requesters closed-loop goroutines
// over conns and returns the throughput and the latencies' p50 and p99.
func loadLat(b *testing.B, conns []*nats.Conn, requesters, total int, do requestFunc) (float64, time.Duration, time.Duration) {
	b.Helper()
	lat := make([][]time.Duration, requesters)
	per := max(total/requesters, 1)
	var wg sync.WaitGroup
	start := time.Now()
	for r := 0; r < requesters; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			nc := conns[r%len(conns)]
			l := make([]time.Duration, 0, per)
			for i := 0; i < per; i++ {
				t0 := time.Now()
				if err := do(nc, r); err != nil {
					b.Error(err)
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[r] = l
		}(r)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		b.Fatal("no requests completed")
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return float64(len(all)) / elapsed.Seconds(), all[len(all)/2], all[len(all)*99/100]
}

// BenchmarkCachedResolveVsEcho measures cached resolves through NATS against
// a bare nats.go echo responder on the same server, in the same run, with 64
// closed-loop requesters, and reports the ratios (goal: throughput ≥ 0.95 of
// echo, p99 ≤ 1.1× echo).
//
// The NATS server is a nats-server process (internal/testenv/procs), so that
// its CPU is not in the worker's process; CLOUDBRIDGE_BENCH_INPROCESS=1 uses
// an in-process server instead; CLOUDBRIDGE_BENCH_AUDIT=off runs the worker
// without audit events (the cost of the event each hit publishes).
// CLOUDBRIDGE_BENCH_SAME=echo (or resolve) sends that side's requests in
// both rounds of every pair: the ratios it prints, of a side against
// itself, are the benchmark's noise on this machine.
func BenchmarkCachedResolveVsEcho(b *testing.B) {
	var url string
	// serverCPU is the nats-server process's CPU time so far (0 in process).
	serverCPU := func() time.Duration { return 0 }
	if os.Getenv("CLOUDBRIDGE_BENCH_INPROCESS") == "1" {
		url = natstest.Server(b).ClientURL()
	} else {
		node := procs.StartCluster(b, procs.Build(b), 1).Nodes[0]
		url, serverCPU = node.ClientURL(), node.CPU
	}
	cfg := joinedConfig(url, newMasterKey(b))
	cfg.HTTPAddr = "off"
	var opts []Option
	if os.Getenv("CLOUDBRIDGE_BENCH_AUDIT") == "off" {
		opts = append(opts, withoutAudit())
	}
	s, err := Start(context.Background(), cfg, zerolog.Nop(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Stop(context.Background()) }()
	_, c := connect(b, url)
	walkthrough(b, c)
	subject := events.Subjects{}.Resolve("bio", "local-bio")
	body := []byte(`{"secret":"biodb01"}`)
	warm, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		b.Fatal(err)
	}
	warm.Cached = true
	reply, _ := json.Marshal(warm)
	// The resolve reply as the requesters get it (body and headers), to
	// compare with the echo's.
	sample, err := conns0(b, url).Request(subject, body, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	sampleHdr := 0
	for k, vs := range sample.Header {
		for _, v := range vs {
			sampleHdr += len(k) + len(v) + 4
		}
	}

	// The echo responder answers with a reply of the same size, from its own connection.
	enc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	if _, err := enc.QueueSubscribe("bench.echo", "q", func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
		b.Fatal(err)
	}
	_ = enc.Flush()

	conns := make([]*nats.Conn, 4)
	for i := range conns {
		nc, err := nats.Connect(url)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		conns[i] = nc
	}
	// The rounds come in pairs, an echo round and a resolve round of per
	// requests each, in alternating order (echo first in even pairs,
	// resolve first in odd ones), so that neither side always follows the
	// other (a round pays for the garbage the one before it left).
	const requesters, pairs = 64, 7
	per := max(b.N/pairs, 50_000)
	load(b, conns, requesters, 1000, "bench.echo", body)
	load(b, conns, requesters, 1000, subject, body)
	b.ResetTimer()
	var echoR, resR, echoP99s, resP99s, echoP50s, resP50s, ratios, p99Ratios []float64
	// The CPU and allocations of each side's rounds: this process (the
	// requesters, and the echo responder or the worker) and the server's.
	var echoCost, resCost roundCost
	same := ""
	switch v := os.Getenv("CLOUDBRIDGE_BENCH_SAME"); v {
	case "":
	case "echo":
		same = "bench.echo"
	case "resolve":
		same = subject
	default:
		b.Fatalf("CLOUDBRIDGE_BENCH_SAME=%q: want echo or resolve", v)
	}
	round := func(subj string, cost *roundCost) (float64, time.Duration, time.Duration) {
		if same != "" {
			subj = same
		}
		c0 := sampleCost(serverCPU)
		rps, p50, p99 := load(b, conns, requesters, per, subj, body)
		cost.add(c0, sampleCost(serverCPU), per/requesters*requesters)
		return rps, p50, p99
	}
	for r := 0; r < pairs; r++ {
		var e, x float64
		var e50, e99, x50, x99 time.Duration
		if r%2 == 0 {
			e, e50, e99 = round("bench.echo", &echoCost)
			x, x50, x99 = round(subject, &resCost)
		} else {
			x, x50, x99 = round(subject, &resCost)
			e, e50, e99 = round("bench.echo", &echoCost)
		}
		echoR, resR = append(echoR, e), append(resR, x)
		ratios, p99Ratios = append(ratios, x/e), append(p99Ratios, float64(x99)/float64(e99))
		echoP50s, resP50s = append(echoP50s, float64(e50)), append(resP50s, float64(x50))
		echoP99s, resP99s = append(echoP99s, float64(e99)), append(resP99s, float64(x99))
	}
	b.StopTimer()
	echoRPS, rps := testenv.Median(echoR), testenv.Median(resR)
	echoP50, p50 := time.Duration(testenv.Median(echoP50s)), time.Duration(testenv.Median(resP50s))
	echoP99, p99 := time.Duration(testenv.Median(echoP99s)), time.Duration(testenv.Median(resP99s))
	// The ratios are the medians of the pairs' (each pair's two rounds ran
	// back to back, on the same machine): the machine's drift from one
	// pair to the next moves both sides of a pair alike.
	ratio, p99Ratio := testenv.Median(ratios), testenv.Median(p99Ratios)
	b.ReportMetric(rps, "resolve/s")
	b.ReportMetric(echoRPS, "echo/s")
	b.ReportMetric(ratio, "throughput-ratio")
	b.ReportMetric(p99Ratio, "p99-ratio")
	b.ReportMetric(float64(p99.Microseconds()), "resolve-p99-µs")
	b.ReportMetric(float64(echoP99.Microseconds()), "echo-p99-µs")
	b.ReportMetric(resCost.procPerReq(), "resolve-proc-cpu-µs/req")
	b.ReportMetric(echoCost.procPerReq(), "echo-proc-cpu-µs/req")
	fmt.Printf("cached resolve (medians of %d pairs of rounds of %d requests): %.0f req/s p50 %s p99 %s | echo: %.0f req/s p50 %s p99 %s | throughput ratio %.2f (pairs %.2f–%.2f, ratio of the medians %.2f; goal ≥ 0.95), p99 ratio %.2f (pairs %.2f–%.2f, of the medians %.2f; goal ≤ 1.1)\n",
		pairs, per/requesters*requesters, rps, p50, p99, echoRPS, echoP50, echoP99,
		ratio, slices.Min(ratios), slices.Max(ratios), rps/echoRPS, p99Ratio, slices.Min(p99Ratios), slices.Max(p99Ratios), float64(p99)/float64(echoP99))
	// CPU per request is robust on a shared machine where the ratios are
	// not: this process's (requesters plus the worker, or plus the echo
	// responder: the difference is the worker's cost over a bare
	// responder's) and the nats-server process's.
	resReads, resWrites := resCost.syscallsPerReq()
	echoReads, echoWrites := echoCost.syscallsPerReq()
	fmt.Printf("CPU per request: this process %.2f µs resolve vs %.2f µs echo (worker over echo responder +%.2f µs), nats-server %.2f µs vs %.2f µs; allocations per request %.1f vs %.1f; this process's reads+writes per request %.2f+%.2f vs %.2f+%.2f; context switches per 1,000 requests %.0f vs %.0f, garbage collections %.2f vs %.2f; reply %d B body + %d B headers vs echo %d B body; load average %s\n",
		resCost.procPerReq(), echoCost.procPerReq(), resCost.procPerReq()-echoCost.procPerReq(),
		resCost.serverPerReq(), echoCost.serverPerReq(), resCost.allocsPerReq(), echoCost.allocsPerReq(),
		resReads, resWrites, echoReads, echoWrites,
		resCost.perThousand(resCost.switches), echoCost.perThousand(echoCost.switches),
		resCost.perThousand(resCost.gcs), echoCost.perThousand(echoCost.gcs),
		len(sample.Data), sampleHdr, len(reply), loadAverage())
}

// costSample is what this process and the server used so far.
type costSample struct {
	proc, server time.Duration
	mallocs      uint64
	// reads and writes are this process's read and write system calls.
	reads, writes uint64
	// switches are this process's context switches (voluntary and not),
	// gcs its garbage collections.
	switches, gcs uint64
}

func sampleCost(serverCPU func() time.Duration) costSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r, w := syscallCounts()
	return costSample{proc: cpuTime(), server: serverCPU(), mallocs: ms.Mallocs, reads: r, writes: w,
		switches: contextSwitches(), gcs: uint64(ms.NumGC)}
}

// syscallCounts are this process's read and write system calls so far
// (/proc/self/io; 0 where it cannot be read).
func syscallCounts() (reads, writes uint64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// contextSwitches are this process's context switches so far, voluntary
// (a thread that blocked: a parked Go thread woken again) and involuntary
// (preempted), from getrusage; 0 where it fails.
func contextSwitches() uint64 {
	ru := rusage()
	return uint64(ru.Nvcsw + ru.Nivcsw)
}

// roundCost adds up the cost of one side's rounds.
type roundCost struct {
	proc, server  time.Duration
	mallocs       uint64
	reads, writes uint64
	switches, gcs uint64
	requests      int
}

func (c *roundCost) add(from, to costSample, requests int) {
	c.proc += to.proc - from.proc
	c.server += to.server - from.server
	c.mallocs += to.mallocs - from.mallocs
	c.reads += to.reads - from.reads
	c.writes += to.writes - from.writes
	c.switches += to.switches - from.switches
	c.gcs += to.gcs - from.gcs
	c.requests += requests
}

func (c *roundCost) procPerReq() float64 {
	return float64(c.proc.Microseconds()) / float64(max(c.requests, 1))
}

func (c *roundCost) serverPerReq() float64 {
	return float64(c.server.Microseconds()) / float64(max(c.requests, 1))
}

func (c *roundCost) allocsPerReq() float64 { return float64(c.mallocs) / float64(max(c.requests, 1)) }

// perThousand is n per 1,000 of the side's requests.
func (c *roundCost) perThousand(n uint64) float64 {
	return 1000 * float64(n) / float64(max(c.requests, 1))
}

// syscallsPerReq are this process's read and write system calls per request.
func (c *roundCost) syscallsPerReq() (reads, writes float64) {
	n := float64(max(c.requests, 1))
	return float64(c.reads) / n, float64(c.writes) / n
}

// conns0 is a plain connection to url, closed when the benchmark ends.
func conns0(b *testing.B, url string) *nats.Conn {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}
