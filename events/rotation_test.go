package events

import (
	"strings"
	"testing"
	"time"
)

func TestAWSEventsValidate(t *testing.T) {
	const q = "https://sqs.us-east-1.amazonaws.com/123456789012/secret-changes"
	for _, tc := range []struct {
		ev       AWSEvents
		endpoint string
		field    string // "" = valid
	}{
		{AWSEvents{QueueURL: q}, "", ""},
		{AWSEvents{QueueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/changes.fifo", DegradedTTL: Duration(30 * time.Second)}, "", ""},
		{AWSEvents{QueueURL: "https://us-east-1.queue.amazonaws.com/123456789012/secret-changes"}, "", ""},
		{AWSEvents{QueueURL: "http://127.0.0.1:5000/123456789012/secret-changes"}, "http://127.0.0.1:5000", ""},
		{AWSEvents{}, "", "aws.events.queue_url: required"},
		{AWSEvents{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/secret-changes"}, "", "aws.events.queue_url: queue in region"},
		{AWSEvents{QueueURL: "http://sqs.us-east-1.amazonaws.com/123456789012/secret-changes"}, "", "aws.events.queue_url"},
		{AWSEvents{QueueURL: "https://evil.example.com/123456789012/secret-changes"}, "", "aws.events.queue_url"},
		{AWSEvents{QueueURL: "https://sqs.us-east-1.amazonaws.com/secret-changes"}, "", "aws.events.queue_url"},
		{AWSEvents{QueueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/bad name"}, "", "aws.events.queue_url"},
		{AWSEvents{QueueURL: "https://u:p@sqs.us-east-1.amazonaws.com/123456789012/q"}, "", "aws.events.queue_url"},
		{AWSEvents{QueueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/" + strings.Repeat("q", 81)}, "", "aws.events.queue_url"},
		{AWSEvents{QueueURL: "ftp://127.0.0.1/123456789012/q"}, "http://127.0.0.1:5000", "aws.events.queue_url"},
		{AWSEvents{QueueURL: q, DegradedTTL: Duration(time.Millisecond)}, "", "aws.events.degraded_ttl"},
		{AWSEvents{QueueURL: q, DegradedTTL: Duration(2 * time.Hour)}, "", "aws.events.degraded_ttl"},
	} {
		err := tc.ev.Validate("us-east-1", tc.endpoint)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.ev, err)
			}
			continue
		}
		if CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want bad_request naming %s", tc.ev, err, tc.field)
		}
	}
}

func TestGCPEventsValidate(t *testing.T) {
	const s = "projects/bio-prod/subscriptions/secret-changes"
	for _, tc := range []struct {
		ev    GCPEvents
		field string
	}{
		{GCPEvents{Subscription: s}, ""},
		{GCPEvents{Subscription: s, Endpoint: "http://127.0.0.1:8085", DegradedTTL: Duration(time.Minute)}, ""},
		{GCPEvents{Subscription: s, Endpoint: "https://pubsub.example.internal"}, ""},
		{GCPEvents{}, "gcp.events.subscription: required"},
		{GCPEvents{Subscription: "secret-changes"}, "gcp.events.subscription"},
		{GCPEvents{Subscription: "projects/bio-prod/topics/secret-changes"}, "gcp.events.subscription"},
		{GCPEvents{Subscription: "projects/bio-prod/subscriptions/goog-x"}, "gcp.events.subscription"},
		{GCPEvents{Subscription: "projects/bio-prod/subscriptions/a/b"}, "gcp.events.subscription"},
		{GCPEvents{Subscription: s, Endpoint: "grpc://h:1"}, "gcp.events.endpoint"},
		{GCPEvents{Subscription: s, Endpoint: "http://h:1/path"}, "gcp.events.endpoint"},
		{GCPEvents{Subscription: s, DegradedTTL: Duration(25 * time.Hour)}, "gcp.events.degraded_ttl"},
	} {
		err := tc.ev.Validate()
		if tc.field == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.ev, err)
			}
			continue
		}
		if CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want bad_request naming %s", tc.ev, err, tc.field)
		}
	}
	if p := (&GCPEvents{Subscription: s}).SubscriptionProject(); p != "bio-prod" {
		t.Errorf("SubscriptionProject = %q", p)
	}
}

func TestDegradedTTLDefault(t *testing.T) {
	if (&AWSEvents{}).TTL() != time.Minute || (&GCPEvents{DegradedTTL: Duration(5 * time.Second)}).TTL() != 5*time.Second {
		t.Error("degraded TTL defaults wrong")
	}
}

func TestRotationBlocksDecode(t *testing.T) {
	var ev GCPEvents
	if err := Decode([]byte(`{"subscription":"projects/bio-prod/subscriptions/s1","degraded_ttl":"30s"}`), &ev); err != nil || ev.TTL() != 30*time.Second {
		t.Fatalf("decode: %v %+v", err, ev)
	}
	for _, bad := range []string{`{"subscription":"x","topic":"y"}`, `{"Subscription":"x"}`, `{"subscription":"x","subscription":"y"}`} {
		if err := Decode([]byte(bad), &ev); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
