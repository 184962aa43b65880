package export

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/child"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// newBenchEnv is the export benchmarks' environment: a nats-server 2.15
// process (internal/testenv/procs), so that the server's CPU is not in the
// worker's process, or an in-process server with
// CLOUDBRIDGE_BENCH_INPROCESS=1; and, with fake, the CloudWatch fake in a
// process of its own (startCWFake). serverCPU is the nats-server process's
// CPU so far (0 in process: then it is in cpuTime's).
func newBenchEnv(b *testing.B, fake bool) (e *env, serverCPU func() time.Duration, cw *cwFakeProc) {
	b.Helper()
	e = &env{t: b}
	serverCPU = func() time.Duration { return 0 }
	if os.Getenv("CLOUDBRIDGE_BENCH_INPROCESS") == "1" {
		e.srv = natstest.Server(b)
		e.nc = natstest.Connect(b, e.srv)
	} else {
		node := procs.StartCluster(b, procs.Build(b), 1).Nodes[0]
		e.url, serverCPU = node.ClientURL(), node.CPU
		e.nc = e.connect()
	}
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(20000))
	if err != nil {
		b.Fatal(err)
	}
	e.js = js
	if fake {
		cw = startCWFake(b)
		e.cwURL = cw.url
	}
	return e, serverCPU, cw
}

// cwFakeEnv, set, makes TestCloudWatchFakeProcess the CloudWatch fake.
const cwFakeEnv = "CLOUDBRIDGE_BENCH_CWFAKE"

// cwFakeProc is the CloudWatch fake (awsfake, the real wire protocol,
// SigV4 and every PutLogEvents limit checked) in a child process, the test
// binary re-executed as TestCloudWatchFakeProcess: a real CloudWatch costs
// the worker's machine none of the fake's CPU, so the benchmark counts it
// apart.
type cwFakeProc struct {
	b   *testing.B
	url string
	p   *child.Process
}

func startCWFake(b *testing.B) *cwFakeProc {
	b.Helper()
	f := &cwFakeProc{b: b, p: child.Start(b, "the CloudWatch fake process", "TestCloudWatchFakeProcess", "CWFAKE ", cwFakeEnv+"=1")}
	url, ok := strings.CutPrefix(f.p.Next(time.Minute), "url ")
	if !ok {
		b.Fatal("the CloudWatch fake process did not say its URL")
	}
	f.url = url
	return f
}

func (f *cwFakeProc) ask(cmd string, timeout time.Duration) string {
	f.b.Helper()
	return f.p.Ask(cmd, timeout)
}

// cpu is the fake process's CPU time so far.
func (f *cwFakeProc) cpu() time.Duration {
	f.b.Helper()
	ns, err := strconv.ParseInt(strings.TrimPrefix(f.ask("cpu", time.Minute), "cpu "), 10, 64)
	if err != nil {
		f.b.Fatal(err)
	}
	return time.Duration(ns)
}

// wait returns once the fake stored at least n events (it polls its count
// every millisecond, in its own process), with the count and its CPU then.
func (f *cwFakeProc) wait(n int, within time.Duration) (count int, cpu time.Duration) {
	f.b.Helper()
	var ns int64
	if _, err := fmt.Sscanf(f.ask("wait "+strconv.Itoa(n), within), "reached %d %d", &count, &ns); err != nil {
		f.b.Fatal(err)
	}
	return count, time.Duration(ns)
}

// calls is every CloudWatch call the fake recorded.
func (f *cwFakeProc) calls() []awsfake.LogCall {
	f.b.Helper()
	var calls []awsfake.LogCall
	if err := json.Unmarshal([]byte(strings.TrimPrefix(f.ask("calls", time.Minute), "calls ")), &calls); err != nil {
		f.b.Fatal(err)
	}
	return calls
}

// TestCloudWatchFakeProcess is the export benchmark's CloudWatch fake, run
// as a process of its own (cwFakeProc); skipped otherwise. It prints
// "CWFAKE url URL", then answers commands, one a line on its standard input:
// "cpu" prints "CWFAKE cpu NS" (its CPU time so far); "wait N" prints
// "CWFAKE reached COUNT NS" once N events are stored; "calls" prints
// "CWFAKE calls JSON" (every call recorded). It ends with its input. With
// CLOUDBRIDGE_BENCH_CPUPROFILE=file it writes its CPU profile of the export
// phase (its first "cpu" to the "wait" after) to file.fake.
func TestCloudWatchFakeProcess(t *testing.T) {
	if os.Getenv(cwFakeEnv) == "" {
		t.Skip("BenchmarkExportCloudWatch's CloudWatch fake, run by the benchmark")
	}
	af := awsfake.New(t)
	af.AddCredentials(awsfake.Credentials{AccessKeyID: testKeyID, SecretAccessKey: "secret"})
	cw := af.Logs()
	// Counted, not kept: a real CloudWatch stores the events off this
	// machine, and keeping 200,000 of them cost the fake (new memory
	// touched at every call) more than reading and checking them.
	cw.SetKeepEvents(false)
	fmt.Printf("CWFAKE url %s\n", cw.URL())
	// With CLOUDBRIDGE_BENCH_CPUPROFILE=file, the fake's profile of the
	// export phase (from its first "cpu" to the "wait" after) goes to file.fake.
	stopProfile, profiled := func() {}, false
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "cpu":
			if !profiled {
				stopProfile, profiled = profilePhase(t, ".fake"), true
			}
			fmt.Printf("CWFAKE cpu %d\n", cpuTime())
		case "wait":
			n, err := strconv.Atoi(arg)
			if err != nil {
				t.Fatalf("wait %q: %v", arg, err)
			}
			got := cw.Count()
			for ; got < n; got = cw.Count() {
				time.Sleep(time.Millisecond) // polling the count; the measure, not synchronization
			}
			fmt.Printf("CWFAKE reached %d %d\n", got, cpuTime())
			stopProfile()
			stopProfile = func() {}
		case "calls":
			data, err := json.Marshal(cw.Calls())
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("CWFAKE calls %s\n", data)
		default:
			t.Fatalf("unknown command %q", sc.Text())
		}
	}
}
