package service

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// sqsFault wraps a worker's AWS transport and fails SQS ReceiveMessage
// calls as AWS does once a caller's session token has expired, selected by
// their long poll: the running consumer polls for 2 s, the events probe of
// conn test for 1 s. So the consumer can be broken while a fresh probe
// passes (the consumer's credentials expired, a fresh client's did not), or
// the reverse.
type sqsFault struct {
	next     http.RoundTripper
	consumer atomic.Bool // fail receives with WaitTimeSeconds > 1
	probe    atomic.Bool // fail receives with WaitTimeSeconds <= 1
	failed   atomic.Int64
}

// faultText is the cloud's text of the injected error: never in a reply.
const faultText = "The security token included in the request is expired"

func (f *sqsFault) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("X-Amz-Target") == "AmazonSQS.ReceiveMessage" && req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		var in struct{ WaitTimeSeconds int32 }
		_ = json.Unmarshal(b, &in)
		if (in.WaitTimeSeconds > 1 && f.consumer.Load()) || (in.WaitTimeSeconds <= 1 && f.probe.Load()) {
			f.failed.Add(1)
			body := `{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"` + faultText + `"}`
			return &http.Response{StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{"Content-Type": {"application/x-amz-json-1.0"}, "X-Amzn-Requestid": {"fault-1"}},
				Body:   io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
		}
	}
	return f.next.RoundTrip(req)
}

// eventsSteps are the events steps of a connection test of conn.
func eventsSteps(t testing.TB, c *events.Client, conn string) ([]events.Step, *events.TestReply) {
	t.Helper()
	_, rep := eventsStep(t, c, conn)
	var out []events.Step
	for _, s := range rep.Steps {
		if s.Name == events.StepEvents {
			out = append(out, s)
		}
	}
	return out, rep
}

// TestRotationConsumerHealthInConnTest: through conn test (the NATS
// subject), the events step reports the running consumer's own state next
// to the fresh probe's. The consumer's receives fail (expired token) while
// a probe passes: a second, failed events step says the consumer on this
// worker cannot receive, with the class (unauthorized) and since when, and
// none of the cloud's text; /metrics says degraded. Recovery clears it. The
// reverse, a probe that fails while the consumer receives, fails the step
// too, with no consumer step.
func TestRotationConsumerHealthInConnTest(t *testing.T) {
	e := newRotationMoto(t)
	e.create(t, "bio/db01", `{"password":"pw-ch-v1"}`)
	srv := natstest.Server(t)
	calls := newAWSCalls(e.name)
	fault := &sqsFault{next: calls}
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)),
		WithProvider("aws", awsFactory(fault, 2)))
	_, c := connect(t, srv.ClientURL())
	const name = "aws-sm-consumer-health"
	conn := e.connection(name, time.Hour, 0)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	consuming(t, w, name)
	gauge := `cloudbridge_rotation_degraded{conn="` + name + `"} `
	if !waitUntil(15*time.Second, func() bool { return calls.n("ReceiveMessage") > 0 && containsAny(scrape(t, w), gauge+"0") }) {
		t.Fatal("no receive, or /metrics does not say the connection is not degraded")
	}
	steps, rep := eventsSteps(t, c, name)
	if len(steps) != 1 || !steps[0].OK || !rep.OK {
		t.Fatalf("healthy: events steps %+v (report ok %v), want one passed", steps, rep.OK)
	}

	// The consumer's receives fail; a fresh probe passes.
	before := time.Now()
	fault.consumer.Store(true)
	if !waitUntil(15*time.Second, func() bool { return w.rotations.degraded(name) }) {
		t.Fatal("the consumer is not degraded 15 s after its receives began to fail")
	}
	steps, rep = eventsSteps(t, c, name)
	if rep.OK || len(steps) != 2 {
		t.Fatalf("consumer degraded: events steps %+v (report ok %v), want the probe's and the consumer's", steps, rep.OK)
	}
	if !steps[0].OK {
		t.Errorf("the probe's step failed while its receives pass: %+v", steps[0])
	}
	st := steps[1]
	if st.OK || st.Error == nil || st.Error.Code != events.CodeUnauthorized {
		t.Fatalf("consumer's step: %+v, want failed, unauthorized", st)
	}
	if !strings.Contains(st.Error.Message, "consumer on this worker cannot receive") || !strings.Contains(st.Error.Message, "degraded") {
		t.Errorf("consumer's step message: %q", st.Error.Message)
	}
	_, _, since := w.rotations.Degraded(name)
	if stamp := since.UTC().Format(time.RFC3339); !strings.Contains(st.Error.Message, stamp) || since.Before(before.Add(-time.Second)) {
		t.Errorf("consumer's step message %q lacks since %s (fault at %s)", st.Error.Message, stamp, before.UTC().Format(time.RFC3339))
	}
	if b, _ := json.Marshal(rep); strings.Contains(string(b), faultText) || strings.Contains(string(b), "ExpiredToken") {
		t.Errorf("the cloud's text in the reply: %s", b)
	}
	if m := scrape(t, w); !containsAny(m, gauge+"1") {
		t.Errorf("/metrics while degraded lacks %s1", gauge)
	}

	// Recovery clears it.
	fault.consumer.Store(false)
	if !waitUntil(20*time.Second, func() bool { return !w.rotations.degraded(name) }) {
		t.Fatal("still degraded 20 s after the receives were fixed")
	}
	steps, rep = eventsSteps(t, c, name)
	if len(steps) != 1 || !steps[0].OK || !rep.OK {
		t.Fatalf("after recovery: events steps %+v (report ok %v), want one passed", steps, rep.OK)
	}
	if m := scrape(t, w); !containsAny(m, gauge+"0") {
		t.Errorf("/metrics after recovery lacks %s0", gauge)
	}

	// The reverse: the consumer receives, a fresh probe fails.
	fault.probe.Store(true)
	failed := fault.failed.Load()
	steps, rep = eventsSteps(t, c, name)
	if fault.failed.Load() == failed {
		t.Fatal("the probe made no receive")
	}
	if rep.OK || len(steps) != 1 || steps[0].OK || steps[0].Error == nil || steps[0].Error.Code != events.CodeUnauthorized {
		t.Fatalf("probe failing: events steps %+v (report ok %v), want one failed, unauthorized", steps, rep.OK)
	}
	if w.rotations.degraded(name) {
		t.Error("the consumer is degraded by the probe's failure")
	}
	fault.probe.Store(false)
	if containsAny(w.logs.String(), "pw-ch-v1") {
		t.Error("a secret value in the logs")
	}
}
