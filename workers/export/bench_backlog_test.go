package export

import (
	"bufio"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// backlogExport is the export of the backlog benchmark's worker process: the
// sink's own limits (CloudWatch: 10,000 events, 1 MiB a batch).
func backlogExport() events.Export {
	exp := cwExport("backlog", "logs.backlog.>")
	exp.Batch = nil
	return exp
}

// reportHeapOnSIGUSR1 makes the worker process print "heap <bytes>" (the
// live heap after a GC) on stdout at each SIGUSR1.
func reportHeapOnSIGUSR1() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for range sig {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if f := os.Getenv(childMem); f != "1" {
				if out, err := os.Create(f); err == nil {
					_ = pprof.WriteHeapProfile(out)
					_ = out.Close()
				}
			}
			fmt.Printf("heap %d\n", ms.HeapAlloc)
		}
	}()
}

// BenchmarkExportBacklog: a worker process exports to a CloudWatch that
// answers 503 to every call while 1,000,000 events pile up in the stream. It
// prints the worker's live heap and RSS at 100,000 and at 1,000,000 events of
// backlog: a worker pulls only into its batches, so its memory is bounded by
// the batch sizes, not by the backlog (goal: flat).
//
//	go test -run '^$' -bench ExportBacklog -benchtime 1x ./workers/export/
func BenchmarkExportBacklog(b *testing.B) {
	const first, total = 100_000, 1_000_000
	for range b.N {
		e := newEnv(b)
		e.cw.FailFor(time.Hour, 503)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", childNATS+"="+e.srv.ClientURL(), childCW+"="+e.cw.URL(),
			childSink+"=backlog", childMem+"="+cmp.Or(os.Getenv("EXPORT_BACKLOG_HEAPPROFILE"), "1"))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		heaps := make(chan int64, 4)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "heap "); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					heaps <- n
				}
			}
		}()
		natstest.Eventually(b, time.Minute, "the worker's consumer", func() bool {
			a, _ := consumerPending(b, e.js, "backlog")
			return a >= 0
		})
		measure := func(backlog int) (heap, rss, held int64) {
			// Steady: every event in the stream, the worker holding its
			// batches (ack-pending), the rest waiting in the stream.
			natstest.Eventually(b, 2*time.Minute, fmt.Sprintf("a backlog of %d", backlog), func() bool {
				a, p := consumerPending(b, e.js, "backlog")
				held = int64(a)
				return a > 0 && int(p)+a == backlog
			})
			if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
				b.Fatal(err)
			}
			select {
			case heap = <-heaps:
			case <-time.After(30 * time.Second):
				b.Fatal("no heap report from the worker")
			}
			return heap, vmRSS(b, cmd.Process.Pid), held
		}
		pad := strings.Repeat("p", 100)
		e.publish(0, first, []string{"logs.backlog.app"}, pad)
		h1, r1, a1 := measure(first)
		e.publish(first, total-first, []string{"logs.backlog.app"}, pad)
		h2, r2, a2 := measure(total)
		mib := func(n int64) float64 { return float64(n) / (1 << 20) }
		b.ReportMetric(mib(h1), "heap-MiB@100k")
		b.ReportMetric(mib(h2), "heap-MiB@1M")
		b.ReportMetric(mib(r1), "rss-MiB@100k")
		b.ReportMetric(mib(r2), "rss-MiB@1M")
		b.ReportMetric(float64(r2)/float64(r1), "rss-ratio")
		fmt.Printf("worker process, sink down: backlog 100,000: heap %.1f MiB, RSS %.1f MiB, %d messages held; backlog 1,000,000: heap %.1f MiB, RSS %.1f MiB, %d held; RSS ratio %.2f\n",
			mib(h1), mib(r1), a1, mib(h2), mib(r2), a2, float64(r2)/float64(r1))
	}
}

// vmRSS is the resident set of process pid (Linux /proc).
func vmRSS(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Skipf("reading the worker's RSS: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
