package export

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// Environment of a worker child process (see TestMain).
const (
	childEnv    = "CLOUDBRIDGE_EXPORT_CHILD"
	childNATS   = "CLOUDBRIDGE_EXPORT_CHILD_NATS"
	childCW     = "CLOUDBRIDGE_EXPORT_CHILD_CW"
	childExport = "kill9"
	childSink   = "CLOUDBRIDGE_EXPORT_CHILD_SINK" // "s3" for s3KillExport, "backlog" for backlogExport, else killExport
	childMem    = "CLOUDBRIDGE_EXPORT_CHILD_MEM"  // set: SIGUSR1 prints the live heap to stdout (bench_backlog_test.go)
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

func killExport() events.Export {
	exp := cwExport(childExport, "logs.kill.>")
	exp.Batch.MaxEvents = 1000
	return exp
}

// runChild is a worker process: it exports until killed (or SIGTERM).
func runChild() int {
	nc, err := nats.Connect(os.Getenv(childNATS))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: connect:", err)
		return 1
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return 1
	}
	w, err := New(Config{NC: nc, JS: js, Sinks: NewSinkFactory(testAWSConfig, nil), AckWait: 3 * time.Second, CallTimeout: 20 * time.Second,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		return 1
	}
	if err := w.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child: start:", err)
		return 1
	}
	exp := killExport()
	switch os.Getenv(childSink) {
	case "s3":
		exp = s3KillExport()
	case "backlog":
		exp = backlogExport()
	}
	if os.Getenv(childMem) != "" {
		reportHeapOnSIGUSR1()
	}
	w.Apply([]events.Export{exp}, map[string]events.Connection{"aws-logs": awsConn(os.Getenv(childCW))})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = w.Stop(ctx)
	nc.Close()
	return 0
}

func startChild(t *testing.T, e *env, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childNATS+"="+e.srv.ClientURL(), childCW+"="+e.cw.URL())
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting worker process: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// TestKilledWorker: a worker process killed with SIGKILL in the middle of a
// batch and restarted loses no event.
func TestKilledWorker(t *testing.T) {
	const n = 10_000
	e := newEnv(t)
	// Slow calls, so the kill lands while a PutLogEvents call is in flight.
	e.cw.SetDelay(100 * time.Millisecond)
	if _, err := e.js.CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{Name: DefaultLogsStream,
		Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	e.publish(0, n, subjectsN("logs.kill", 3), "")

	first := startChild(t, e)
	natstest.Eventually(t, 60*time.Second, "the first worker to deliver some events", func() bool { return e.cw.Count() >= 3000 })
	if err := first.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = first.Wait()
	delivered := e.cw.Count()
	if delivered >= n {
		t.Fatalf("everything was delivered before the kill; the test proves nothing")
	}
	ackPending, _ := consumerPending(t, e.js, childExport)
	t.Logf("killed after %d events; %d messages unacked at the kill", delivered, ackPending)
	if ackPending <= 0 {
		t.Fatalf("no batch in flight at the kill")
	}

	startChild(t, e)
	natstest.Eventually(t, 90*time.Second, "every event after the restart", func() bool { return len(cwIDs(e.cw)) >= n })
	ids := cwIDs(e.cw)
	dups := 0
	for i := range n {
		if ids[i] == 0 {
			t.Fatalf("event %d lost", i)
		}
		dups += ids[i] - 1
	}
	t.Logf("all %d events delivered; %d duplicates from the interrupted batch", n, dups)
	for i, c := range e.cw.Calls() {
		if c.Op == "PutLogEvents" && c.Error == "SerializationException" && c.Events == 0 {
			continue // the body the kill cut short: the fake could not read it
		}
		if c.Op == "PutLogEvents" && (!c.Ordered || c.Bytes > 1_048_576 || c.Events > 10_000) {
			t.Fatalf("call %d broke a limit: %+v", i, c)
		}
	}
}
