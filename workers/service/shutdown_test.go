package service

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// hangingListener accepts connections and never answers.
func hangingListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never read or answered
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestSIGTERMWithUndeliverableExport: the real binary, an export whose sink
// is unreachable or accepts and never answers, events held in batches:
// SIGTERM exits 0 within --shutdown-timeout plus a small margin.
func TestSIGTERMWithUndeliverableExport(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	bins := procs.Build(t)
	c := procs.StartCluster(t, bins, 1)
	c.WaitReady(30 * time.Second)
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const shutdown = 3 * time.Second
	for i, tc := range []struct{ name, endpoint string }{
		{"unreachable", "http://127.0.0.1:1"},
		{"hanging", hangingListener(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := procs.StartWorker(t, bins, []string{"CLOUDBRIDGE_MASTER_KEY=" + procs.MasterKey}, "serve", "--allow-endpoints", "127.0.0.1",
				"--nats-url", c.URLs(), "--http-addr", "127.0.0.1:0", "--shutdown-timeout", shutdown.String())
			natstest.Eventually(t, 30*time.Second, "the worker registers", func() bool {
				_, err := nc.Request("$SRV.PING.cloudbridge", nil, time.Second)
				return err == nil || w.Exited()
			})
			if w.Exited() {
				t.Fatalf("worker exited:\n%s", w.Logs())
			}
			conn := fmt.Sprintf("sink-%d", i)
			exp := fmt.Sprintf("stuck-%d", i)
			subject := fmt.Sprintf("logs.stuck%d.app", i)
			admin := func(resource, verb string, body any) {
				t.Helper()
				b, _ := json.Marshal(body)
				m, err := nc.Request(events.Subjects{}.Admin(resource, verb), b, 10*time.Second)
				if err != nil {
					t.Fatalf("%s %s: %v", resource, verb, err)
				}
				var er events.ErrorReply
				if json.Unmarshal(m.Data, &er) == nil && er.Error != nil {
					t.Fatalf("%s %s: %s", resource, verb, m.Data)
				}
			}
			admin(events.ResourceConnections, events.VerbPut, events.Connection{Name: conn, Provider: events.ProviderAWS, Groups: []string{"ops"},
				AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDSHUTDOWNTEST01",
					SecretAccessKey: "secret", Endpoint: tc.endpoint}})
			admin(events.ResourceExports, events.VerbPut, events.Export{Name: exp, Connection: conn, Subjects: []string{subject},
				CloudWatch: &events.CloudWatchSink{LogGroup: "/stuck", LogStream: "{subject}", Create: true},
				Batch:      &events.BatchPolicy{MaxWait: events.Duration(50 * time.Millisecond)}})
			for j := range 50 {
				if _, err := js.Publish(context.Background(), subject, fmt.Appendf(nil, `{"msg":"event %d"}`, j)); err != nil {
					t.Fatal(err)
				}
			}
			natstest.Eventually(t, 30*time.Second, "the worker holds the events", func() bool {
				cons, err := js.Consumer(context.Background(), events.Subjects{}.LogsStream(), events.ExportConsumer(exp))
				if err != nil {
					return false
				}
				info, err := cons.Info(context.Background())
				return err == nil && info.NumAckPending == 50
			})
			start := time.Now()
			w.Signal(syscall.SIGTERM)
			code, exited := w.Wait(shutdown + 2*time.Second)
			if !exited || code != 0 {
				t.Fatalf("exit %d (exited %v) %s after SIGTERM:\n%s", code, exited, time.Since(start), w.Logs())
			}
			t.Logf("exited 0 %s after SIGTERM (shutdown timeout %s)", time.Since(start).Round(10*time.Millisecond), shutdown)
		})
	}
}
