package registry_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// benchRecords is the number of builtin connections, and of secrets (one
// each), of BenchmarkRegistryAtScale: CLOUDBRIDGE_BENCH_RECORDS, default
// 100,000.
func benchRecords(b *testing.B) int {
	n := 100_000
	if v := os.Getenv("CLOUDBRIDGE_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 16 {
			b.Fatalf("CLOUDBRIDGE_BENCH_RECORDS=%q: want a number ≥ 16", v)
		}
	}
	return n
}

// BenchmarkRegistryAtScale runs a cloudbridge worker process joined to a
// nats-server process (so that neither the server's CPU nor the load's is
// in the worker's process) and measures, against baselines measured in the
// same run on the same server:
//
//   - admin puts of N builtin connections and N built-in secrets by 16
//     concurrent admins (requests through the worker), against 16
//     concurrent bare KV puts of values of the same sizes;
//   - restart until serving (SIGTERM, start a new worker, until it answers
//     a resolve of a built-in secret), against a bare KV watch of the same
//     buckets until their current state is loaded (median of 3 rounds);
//   - the worker's RSS with them loaded, and after a restart (at serving
//     and 3s later).
//
// go test -run '^$' -bench RegistryAtScale -benchtime 1x ./internal/registry
func BenchmarkRegistryAtScale(b *testing.B) {
	n := benchRecords(b)
	bins := procs.Build(b)
	cluster := procs.StartCluster(b, bins, 1)
	url := cluster.Nodes[0].ClientURL()
	// CLOUDBRIDGE_BENCH_GOMEMLIMIT, when set, is the workers' GOMEMLIMIT.
	env := []string{"CLOUDBRIDGE_MASTER_KEY=" + procs.MasterKey}
	if v := os.Getenv("CLOUDBRIDGE_BENCH_GOMEMLIMIT"); v != "" {
		env = append(env, "GOMEMLIMIT="+v)
	}
	// CLOUDBRIDGE_BENCH_CPUPROFILE, when set to a directory, profiles the
	// first worker's CPU during the admin connection and secret puts
	// (pprofDuring).
	profDir := os.Getenv("CLOUDBRIDGE_BENCH_CPUPROFILE")
	firstEnv := env
	if profDir != "" {
		firstEnv = append(append([]string(nil), env...), "CLOUDBRIDGE_PPROF_ADDR=127.0.0.1:0")
	}
	start := func() (*procs.Worker, string) {
		w := procs.StartWorker(b, bins, firstEnv,
			"serve", "--nats-url", url, "--http-addr", "127.0.0.1:0", "--log-level", "info")
		addr, ok := w.HTTPAddr(60 * time.Second)
		if !ok {
			b.Fatalf("worker did not start:\n%s", w.Logs())
		}
		return w, addr
	}
	w, addr := start()
	admins := make([]*nats.Conn, 16)
	for i := range admins {
		nc, err := nats.Connect(url)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		admins[i] = nc
	}
	subj := events.Subjects{}
	connPut := func(i int) []byte {
		return fmt.Appendf(nil, `{"name":"c%07d","provider":"builtin","groups":["bio"],"secrets":["*"]}`, i)
	}
	secretPut := func(i int) []byte {
		return fmt.Appendf(nil, `{"connection":"c%07d","name":"db01","value":"value-of-secret-%07d-xxxxxxxxxxxxxxxxxxxxxxxx"}`, i, i)
	}
	server := cluster.Nodes[0]
	b.ResetTimer()
	var connCPU, secretCPU cpuUse
	stopProfile := pprofDuring(b, w, profDir, "conn-put")
	connRate := parallel(b, admins, n, func(nc *nats.Conn, i int) error {
		return adminRequest(nc, subj.Admin(events.ResourceConnections, events.VerbPut), connPut(i))
	}, measureCPU(&connCPU, w, server))
	stopProfile()
	stopProfile = pprofDuring(b, w, profDir, "secret-put")
	secretRate := parallel(b, admins, n, func(nc *nats.Conn, i int) error {
		return adminRequest(nc, subj.Admin(events.ResourceSecrets, events.VerbPut), secretPut(i))
	}, measureCPU(&secretCPU, w, server))
	stopProfile()
	loadedRSS, loadedHeap := memory(b, addr)

	// Bare KV puts of values the size of the records just stored.
	js, err := jetstream.New(admins[0])
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	connKV, _ := js.KeyValue(ctx, subj.Bucket(events.BucketConnections))
	secretKV, _ := js.KeyValue(ctx, subj.Bucket(events.BucketSecrets))
	connSize, secretSize := valueSize(b, connKV, "c0000000"), valueSize(b, secretKV, "c0000000.db01")
	var bareConnCPU, bareSecretCPU, responderCPU cpuUse
	bare := func(name string, size int, use *cpuUse) float64 {
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = js.DeleteKeyValue(ctx, name) }()
		kvs := make([]jetstream.KeyValue, len(admins))
		for i, nc := range admins {
			js, _ := jetstream.New(nc)
			kvs[i], _ = js.KeyValue(ctx, kv.Bucket())
		}
		val := []byte(strings.Repeat("x", size))
		return parallelKV(b, len(kvs), n, func(g, i int) error {
			_, err := kvs[g].Put(ctx, fmt.Sprintf("c%07d", i), val)
			return err
		}, measureCPU(use, nil, server))
	}
	bareConn := bare("bench_bare_connections", connSize, &bareConnCPU)
	bareSecret := bare("bench_bare_secrets", secretSize, &bareSecretCPU)
	responderRate := bareResponder(b, url, admins, n, connSize, measureCPU(&responderCPU, nil, server))

	// Restarts, each after a bare watch of the buckets.
	var restarts, watchBoth, watchConns []float64
	var rssAtServing, rssLater, heapLater float64
	resolve := subj.Resolve("bio", "c0000000")
	for round := 0; round < 3; round++ {
		watchConns = append(watchConns, bareWatch(b, url, n, connKV.Bucket()).Seconds())
		watchBoth = append(watchBoth, bareWatch(b, url, 2*n, connKV.Bucket(), secretKV.Bucket()).Seconds())
		w.Signal(syscall.SIGTERM)
		if _, exited := w.Wait(30 * time.Second); !exited {
			b.Fatalf("worker did not stop:\n%s", w.Logs())
		}
		t0 := time.Now()
		w = procs.StartWorker(b, bins, env,
			"serve", "--nats-url", url, "--http-addr", "127.0.0.1:0", "--log-level", "info")
		for {
			msg, err := admins[0].Request(resolve, []byte(`{"secret":"db01"}`), time.Second)
			if err == nil && msg.Header.Get(events.HeaderErrorCode) == "" {
				break
			}
			if time.Since(t0) > 120*time.Second || w.Exited() {
				b.Fatalf("worker not serving after %s (%v):\n%s", time.Since(t0), err, w.Logs())
			}
			time.Sleep(2 * time.Millisecond) // polling a process for a benchmark figure
		}
		restarts = append(restarts, time.Since(t0).Seconds())
		if round == 2 {
			a, ok := w.HTTPAddr(10 * time.Second)
			if !ok {
				b.Fatalf("no http address:\n%s", w.Logs())
			}
			rssAtServing, _ = memory(b, a)
			time.Sleep(3 * time.Second) // what the worker holds once its start-up work is done
			rssLater, heapLater = memory(b, a)
		}
	}
	b.StopTimer()
	mib := func(v float64) float64 { return v / (1 << 20) }
	restart, wb, wc := testenv.Median(restarts), testenv.Median(watchBoth), testenv.Median(watchConns)
	b.ReportMetric(connRate, "conn-puts/s")
	b.ReportMetric(secretRate, "secret-puts/s")
	b.ReportMetric(float64(connCPU.worker.Microseconds())/float64(n), "worker-µs/conn-put")
	b.ReportMetric(restart, "restart-s")
	b.ReportMetric(mib(loadedRSS), "rss-loaded-MiB")
	b.ReportMetric(mib(rssLater), "rss-restarted-MiB")
	fmt.Printf("registry at %d builtin connections + %d secrets, 16 concurrent admins, worker and nats-server in separate processes (GOMEMLIMIT %q):\n", n, n, os.Getenv("CLOUDBRIDGE_BENCH_GOMEMLIMIT"))
	fmt.Printf("  admin puts: connections %.0f/s, secrets %.0f/s | bare KV puts of same-size values: %.0f/s, %.0f/s | ratio %.2f, %.2f (goal ≥ 5,000/s)\n",
		connRate, secretRate, bareConn, bareSecret, connRate/bareConn, secretRate/bareSecret)
	fmt.Printf("  bare responder (one connection; request → its own goroutine → KV put → reply), connection-size values: %.0f/s | admin connection puts against it: ratio %.2f\n",
		responderRate, connRate/responderRate)
	fmt.Printf("  CPU per put (µs; worker | nats-server | this process: the admins, and the responder for it): admin connections %s, secrets %s | bare KV puts %s, %s | bare responder %s\n",
		connCPU.per(n), secretCPU.per(n), bareConnCPU.per(n), bareSecretCPU.per(n), responderCPU.per(n))
	fmt.Printf("  restart until serving (median of 3): %.2fs %v | bare KV watch of the connections bucket %.2fs %v, of both buckets %.2fs %v (goal ≤ 2s)\n",
		restart, secs(restarts), wc, secs(watchConns), wb, secs(watchBoth))
	fmt.Printf("  worker RSS: loaded %.0f MiB (heap %.0f MiB); after restart %.0f MiB at serving, %.0f MiB 3s later (heap %.0f MiB) (goal ≤ 150 MiB)\n",
		mib(loadedRSS), mib(loadedHeap), mib(rssAtServing), mib(rssLater), mib(heapLater))
}

// pprofDuring takes CPU profiles of worker w (started with
// CLOUDBRIDGE_PPROF_ADDR) one second at a time into dir/<phase>-NNN.pprof
// until the returned func is called (which waits for the last one); nothing
// when dir is "". go tool pprof merges them: go tool pprof -top dir/*.pprof.
func pprofDuring(b *testing.B, w *procs.Worker, dir, phase string) func() {
	b.Helper()
	if dir == "" {
		return func() {}
	}
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == "" && time.Now().Before(deadline); {
		for _, line := range strings.Split(w.Logs(), "\n") {
			var ev struct {
				Addr string `json:"addr"`
			}
			if strings.Contains(line, "pprof listening") && json.Unmarshal([]byte(line), &ev) == nil {
				addr = ev.Addr
			}
		}
		time.Sleep(20 * time.Millisecond) // polling a process's log for a benchmark's profile
	}
	if addr == "" {
		b.Fatalf("no pprof address in the worker's log:\n%s", w.Logs())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	// The allocations of the phase: go tool pprof -sample_index=alloc_space
	// -base dir/<phase>-allocs-start dir/<phase>-allocs-end.
	allocs := func(name string) {
		resp, err := http.Get("http://" + addr + "/debug/pprof/allocs")
		if err != nil {
			b.Error(err)
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, phase+"-allocs-"+name), data, 0o644)
		}
		if err != nil {
			b.Error(err)
		}
	}
	allocs("start")
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=1")
			if err != nil {
				b.Error(err)
				return
			}
			data, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%03d.pprof", phase, i)), data, 0o644)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	}()
	return func() { stop.Store(true); <-done; allocs("end") }
}

func secs(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func adminRequest(nc *nats.Conn, subject string, body []byte) error {
	msg, err := nc.Request(subject, body, 30*time.Second)
	if err != nil {
		return err
	}
	if code := msg.Header.Get(events.HeaderErrorCode); code != "" {
		return fmt.Errorf("%s: %s", code, msg.Data)
	}
	return nil
}

// parallel runs fn for i in [0,n) from one goroutine per connection and
// returns the rate; measure (when not nil) is called at the start, and what
// it returns at the end.
func parallel(b *testing.B, conns []*nats.Conn, n int, fn func(nc *nats.Conn, i int) error, measure func() func()) float64 {
	return parallelKV(b, len(conns), n, func(g, i int) error { return fn(conns[g], i) }, measure)
}

func parallelKV(b *testing.B, goroutines, n int, fn func(g, i int) error, measure func() func()) float64 {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	if measure != nil {
		defer measure()()
	}
	start := time.Now()
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				if err := fn(g, i); err != nil {
					failed.Store(fmt.Errorf("%d: %w", i, err))
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

func valueSize(b *testing.B, kv jetstream.KeyValue, key string) int {
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		b.Fatal(err)
	}
	return len(e.Value())
}

// bareWatch watches buckets from a new connection until their current
// state (want entries in all) is loaded.
func bareWatch(b *testing.B, url string, want int, buckets ...string) time.Duration {
	b.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var got atomic.Int64
	for _, name := range buckets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv, err := js.KeyValue(ctx, name)
			if err != nil {
				b.Error(err)
				return
			}
			kw, err := kv.WatchAll(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			defer func() { _ = kw.Stop() }()
			for e := range kw.Updates() {
				if e == nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if int(got.Load()) != want {
		b.Fatalf("bare watch of %v: %d entries, want %d", buckets, got.Load(), want)
	}
	return d
}

// memory reads the worker's RSS and Go heap in use from its /metrics.
func memory(b *testing.B, addr string) (rss, heap float64) {
	b.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	detail := map[string]float64{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "process_resident_memory_bytes":
			rss = v
		case "go_memstats_heap_inuse_bytes":
			heap = v
		}
		detail[f[0]] = v
	}
	if os.Getenv("CLOUDBRIDGE_BENCH_MEMDETAIL") != "" {
		fmt.Printf("  memory of %s: rss %.1f MiB, heap inuse %.1f, idle %.1f, released %.1f, sys %.1f, next gc %.1f, stack %.1f, other sys %.1f MiB\n", addr,
			detail["process_resident_memory_bytes"]/(1<<20), detail["go_memstats_heap_inuse_bytes"]/(1<<20), detail["go_memstats_heap_idle_bytes"]/(1<<20),
			detail["go_memstats_heap_released_bytes"]/(1<<20), detail["go_memstats_sys_bytes"]/(1<<20), detail["go_memstats_next_gc_bytes"]/(1<<20),
			detail["go_memstats_stack_inuse_bytes"]/(1<<20), detail["go_memstats_other_sys_bytes"]/(1<<20))
	}
	return rss, heap
}

// cpuUse is the CPU time used during a phase by the worker, the nats-server
// and this (the benchmark's) process.
type cpuUse struct{ worker, server, self time.Duration }

// per formats u per operation of n, in µs: worker | server | this process.
func (u cpuUse) per(n int) string {
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	if u.worker == 0 {
		return fmt.Sprintf("[- | %.0f | %.0f]", us(u.server), us(u.self))
	}
	return fmt.Sprintf("[%.0f | %.0f | %.0f]", us(u.worker), us(u.server), us(u.self))
}

// measureCPU returns a measure for parallel: it records into u the CPU time
// the worker (when not nil), the server and this process use in between.
func measureCPU(u *cpuUse, w *procs.Worker, server *procs.Node) func() func() {
	return func() func() {
		var w0 time.Duration
		if w != nil {
			w0 = w.CPU()
		}
		s0, self0 := server.CPU(), selfCPU()
		return func() {
			if w != nil {
				u.worker = w.CPU() - w0
			}
			u.server, u.self = server.CPU()-s0, selfCPU()-self0
		}
	}
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bareResponder is the second baseline of the admin puts: what a service
// answering a request with a KV put does at the least. A responder with one
// NATS connection of its own (as a worker has) takes each request on a
// goroutine of its own, puts a value of size bytes into a bucket and
// replies; the admins' 16 connections send n requests, as for the admin
// puts. It returns the rate.
func bareResponder(b *testing.B, url string, admins []*nats.Conn, n, size int, measure func() func()) float64 {
	b.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	const name = "bench_bare_responder"
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = js.DeleteKeyValue(ctx, name) }()
	val := []byte(strings.Repeat("x", size))
	sub, err := nc.QueueSubscribe("bench.bare.put", "bench", func(m *nats.Msg) {
		go func() {
			if _, err := kv.Put(ctx, string(m.Data), val); err != nil {
				_ = m.Respond([]byte("error"))
				return
			}
			_ = m.Respond([]byte("{}"))
		}()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return parallel(b, admins, n, func(nc *nats.Conn, i int) error {
		msg, err := nc.Request("bench.bare.put", fmt.Appendf(nil, "c%07d", i), 30*time.Second)
		if err != nil {
			return err
		}
		if string(msg.Data) != "{}" {
			return fmt.Errorf("bare responder: %s", msg.Data)
		}
		return nil
	}, measure)
}
