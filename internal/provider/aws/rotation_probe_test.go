package aws

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// sqsProbeFake answers SQS's JSON protocol: ReceiveMessage with no message,
// or the error a real queue gives for a missing queue or a refused identity.
type sqsProbeFake struct {
	mu       sync.Mutex
	answer   string // "ok", "denied", "missing", "down"
	requests []*http.Request
	bodies   []string
}

// sdkText is a phrase of the service's error message: it must never reach a step.
const sdkText = "sdk-internal-detail-xyzzy"

func (f *sqsProbeFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, r)
	f.bodies = append(f.bodies, string(b))
	answer := f.answer
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	switch {
	case r.Header.Get("X-Amz-Target") != "AmazonSQS.ReceiveMessage":
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type":"com.amazon.coral.service#UnknownOperationException"}`))
	case answer == "ok":
		_, _ = w.Write([]byte(`{}`))
	case answer == "denied":
		w.Header().Set("x-amzn-query-error", "AccessDenied;Sender")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"__type":"com.amazon.coral.service#AccessDeniedException","message":"` + sdkText + ` not authorized to perform sqs:receivemessage"}`))
	case answer == "missing":
		w.Header().Set("x-amzn-query-error", "AWS.SimpleQueueService.NonExistentQueue;Sender")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"` + sdkText + ` The specified queue does not exist."}`))
	default:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"__type":"com.amazon.coral.availability#ServiceUnavailableException","message":"` + sdkText + `"}`))
	}
}

// TestProbeEventsStep: the events step of conn test is one short
// ReceiveMessage on the queue (1 s wait, 1 message, visibility 1 s) with the
// connection's credentials at aws.endpoint; it passes when the queue is
// readable, fails forbidden when the identity may not receive, not_found
// when the queue is gone, unavailable when SQS is down; no step quotes the
// service's text.
func TestProbeEventsStep(t *testing.T) {
	fake := &sqsProbeFake{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	isolate(t)
	queue := srv.URL + "/123456789012/secret-changes"
	conn := events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDPROBETEST0000001",
			SecretAccessKey: "probe-test-secret", Endpoint: srv.URL, Events: &events.AWSEvents{QueueURL: queue}}}
	p := newProvider(t, conn, WithRetry(1, 0))
	for _, tc := range []struct {
		answer string
		ok     bool
		code   events.Code
		detail string
	}{
		{"ok", true, "", "sqs:ReceiveMessage"},
		{"denied", false, events.CodeForbidden, "AccessDenied"},
		{"missing", false, events.CodeNotFound, "does not exist"},
		{"down", false, events.CodeUnavailable, "unavailable"},
	} {
		t.Run(tc.answer, func(t *testing.T) {
			fake.mu.Lock()
			fake.answer, fake.requests, fake.bodies = tc.answer, nil, nil
			fake.mu.Unlock()
			st := p.probeEvents(ctxT(t))
			if st.Name != events.StepEvents || st.OK != tc.ok {
				t.Fatalf("step %+v, want ok=%v", st, tc.ok)
			}
			if tc.ok {
				if !strings.Contains(st.Detail, tc.detail) || !strings.Contains(st.Detail, queue) {
					t.Errorf("detail %q", st.Detail)
				}
			} else {
				if st.Error == nil || st.Error.Code != tc.code {
					t.Fatalf("error %+v, want %s", st.Error, tc.code)
				}
				if !strings.Contains(st.Error.Message, "aws.events.queue_url") || !strings.Contains(st.Error.Message, tc.detail) {
					t.Errorf("message %q lacks the field or %q", st.Error.Message, tc.detail)
				}
				if strings.Contains(st.Error.Message, sdkText) || strings.Contains(st.Error.Message, "probe-test-secret") {
					t.Errorf("message %q quotes the service or the key", st.Error.Message)
				}
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if len(fake.requests) == 0 {
				t.Fatal("no request reached the queue's endpoint")
			}
			r, body := fake.requests[0], fake.bodies[0]
			if !strings.Contains(r.Header.Get("Authorization"), "Credential=AKIDPROBETEST0000001/") {
				t.Errorf("not signed with the connection's key: %q", r.Header.Get("Authorization"))
			}
			for _, want := range []string{`"QueueUrl":"` + queue + `"`, `"WaitTimeSeconds":1`, `"MaxNumberOfMessages":1`, `"VisibilityTimeout":1`} {
				if !strings.Contains(body, want) {
					t.Errorf("ReceiveMessage body %s lacks %s", body, want)
				}
			}
		})
	}
}

// TestProbeWithoutCredentialsSkipsEvents: no credentials, no queue call:
// the events step fails with the credentials' code.
func TestProbeWithoutCredentialsSkipsEvents(t *testing.T) {
	fake := &sqsProbeFake{answer: "ok"}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	isolate(t)
	conn := events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthDefault, Endpoint: srv.URL,
			Events: &events.AWSEvents{QueueURL: srv.URL + "/123456789012/secret-changes"}}}
	p := newProvider(t, conn, WithRetry(1, 0))
	steps := p.Probe(ctxT(t))
	last := steps[len(steps)-1]
	if last.Name != events.StepEvents || last.OK || last.Error == nil || last.Error.Code != events.CodeOf(events.ErrUnauthorized) {
		t.Fatalf("steps %+v", steps)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.requests) != 0 {
		t.Errorf("%d requests without credentials", len(fake.requests))
	}
}
