package aws

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func blockConn() events.Connection {
	return events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"biodb*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIAEXAMPLE000000000", SecretAccessKey: "s"}}
}

func TestKindValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*events.Connection)
		field string
	}{
		{"valid", func(*events.Connection) {}, ""},
		{"redacted secret is valid", func(c *events.Connection) { c.AWS.SecretAccessKey = events.Redacted }, ""},
		{"no block", func(c *events.Connection) { c.AWS = nil }, "aws"},
		{"no region", func(c *events.Connection) { c.AWS.Region = "" }, "aws.region"},
		{"bad region", func(c *events.Connection) { c.AWS.Region = "mars" }, "aws.region"},
		{"missing key id", func(c *events.Connection) { c.AWS.AccessKeyID = "" }, "aws.access_key_id"},
		{"short key id", func(c *events.Connection) { c.AWS.AccessKeyID = "AKIA" }, "aws.access_key_id"},
		{"missing key", func(c *events.Connection) { c.AWS.SecretAccessKey = "" }, "aws.secret_access_key"},
		{"long token", func(c *events.Connection) { c.AWS.SessionToken = strings.Repeat("t", 8193) }, "aws.secret_access_key, aws.session_token"},
		{"keys with task role", func(c *events.Connection) { c.AWS.Auth = events.AWSAuthTaskRole }, "aws.access_key_id"},
		{"no auth", func(c *events.Connection) { c.AWS.Auth = "" }, "aws.auth"},
		{"unknown auth", func(c *events.Connection) { c.AWS.Auth = "magic" }, "aws.auth"},
		{"bad role", func(c *events.Connection) { c.AWS.RoleARN = "role" }, "aws.role_arn"},
		{"role ok", func(c *events.Connection) {
			c.AWS.RoleARN = "arn:aws:iam::123456789012:role/reader"
			c.AWS.ExternalID = "ext-1"
			c.AWS.SessionName = "cloudbridge"
			c.AWS.Duration = events.Duration(time.Hour)
		}, ""},
		{"external id without role", func(c *events.Connection) { c.AWS.ExternalID = "x1" }, "aws.role_arn"},
		{"bad external id", func(c *events.Connection) {
			c.AWS.RoleARN = "arn:aws:iam::123456789012:role/reader"
			c.AWS.ExternalID = "a b"
		}, "aws.external_id"},
		{"bad session name", func(c *events.Connection) {
			c.AWS.RoleARN = "arn:aws:iam::123456789012:role/reader"
			c.AWS.SessionName = "x"
		}, "aws.session_name"},
		{"short duration", func(c *events.Connection) {
			c.AWS.RoleARN = "arn:aws:iam::123456789012:role/reader"
			c.AWS.Duration = events.Duration(time.Minute)
		}, "aws.duration"},
		{"endpoint ok", func(c *events.Connection) { c.AWS.Endpoint = "http://127.0.0.1:4566" }, ""},
		{"bad endpoint", func(c *events.Connection) { c.AWS.Endpoint = "ftp://x" }, "aws.endpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := blockConn()
			tc.edit(&c)
			err := Kind.Validate(&c)
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, events.ErrBadRequest) || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("err = %v, want bad_request naming %s", err, tc.field)
			}
		})
	}
}

func TestKindRedactAndKeep(t *testing.T) {
	stored := blockConn()
	stored.AWS.SecretAccessKey, stored.AWS.SessionToken = "SECRETKEY", "SESSIONTOKEN"
	red := Kind.Redact(stored)
	if red.AWS.SecretAccessKey != events.Redacted || red.AWS.SessionToken != events.Redacted || red.AWS.AccessKeyID != stored.AWS.AccessKeyID {
		t.Fatalf("redacted: %+v", red.AWS)
	}
	if stored.AWS.SecretAccessKey != "SECRETKEY" {
		t.Fatal("Redact changed the original")
	}
	if got := strings.Join(Kind.Redacted(&red), ","); got != "aws.secret_access_key,aws.session_token" {
		t.Fatalf("Redacted = %s", got)
	}
	if err := Kind.KeepRedacted(&red, &stored); err != nil {
		t.Fatal(err)
	}
	if red.AWS.SecretAccessKey != "SECRETKEY" || red.AWS.SessionToken != "SESSIONTOKEN" {
		t.Fatalf("KeepRedacted did not restore: %+v", red.AWS)
	}
	if len(Kind.Redacted(&red)) != 0 {
		t.Fatal("still redacted after KeepRedacted")
	}
	// An empty field stays empty, a new value replaces the stored one.
	empty := blockConn()
	if r := Kind.Redact(empty); r.AWS.SessionToken != "" {
		t.Fatalf("empty token redacted to %q", r.AWS.SessionToken)
	}
	// Redacted with nothing stored.
	c := blockConn()
	c.AWS.SessionToken = events.Redacted
	err := Kind.KeepRedacted(&c, nil)
	if !errors.Is(err, events.ErrBadRequest) || !strings.HasPrefix(err.Error(), "aws.session_token:") {
		t.Fatalf("redacted with nothing stored: %v", err)
	}
}

func TestKindRouting(t *testing.T) {
	c := blockConn()
	c.AWS.Endpoint = "https://vpce.example"
	c.AWS.RoleARN = "arn:aws:iam::123456789012:role/reader"
	c.AWS.Events = &events.AWSEvents{QueueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/secret-changes"}
	var got []string
	for _, f := range Kind.Routing(&c) {
		got = append(got, f.Name+"="+f.Value)
	}
	want := "aws.auth=access_key aws.region=us-east-1 aws.endpoint=https://vpce.example aws.role_arn=arn:aws:iam::123456789012:role/reader" +
		" aws.events.queue_url=https://sqs.us-east-1.amazonaws.com/123456789012/secret-changes"
	if strings.Join(got, " ") != want {
		t.Fatalf("Routing = %v", got)
	}
	if n := len(Kind.Routing(&events.Connection{})); n != 5 {
		t.Fatalf("Routing without a block lists %d fields, want the same 5", n)
	}
}

// TestEventsBlock: aws.events is checked with the connection's region and
// endpoint, its queue URL passes the endpoint check, and Events reports it.
func TestEventsBlock(t *testing.T) {
	q := "https://sqs.us-east-1.amazonaws.com/123456789012/secret-changes"
	for _, tc := range []struct {
		name     string
		ev       events.AWSEvents
		endpoint string
		want     string // error prefix; "" valid
	}{
		{"valid", events.AWSEvents{QueueURL: q}, "", ""},
		{"degraded ttl", events.AWSEvents{QueueURL: q, DegradedTTL: events.Duration(30 * time.Second)}, "", ""},
		{"no queue", events.AWSEvents{}, "", "aws.events.queue_url: required"},
		{"other region", events.AWSEvents{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/q"}, "", "aws.events.queue_url: queue in region"},
		{"not sqs without endpoint", events.AWSEvents{QueueURL: "https://evil.example/123456789012/q"}, "", "aws.events.queue_url:"},
		{"emulator with endpoint", events.AWSEvents{QueueURL: "http://127.0.0.1:5000/123456789012/q"}, "http://127.0.0.1:5000", ""},
		{"user info", events.AWSEvents{QueueURL: "http://u:p@127.0.0.1:5000/123456789012/q"}, "http://127.0.0.1:5000", "aws.events.queue_url:"},
		{"ttl too long", events.AWSEvents{QueueURL: q, DegradedTTL: events.Duration(2 * time.Hour)}, "", "aws.events.degraded_ttl:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := blockConn()
			c.AWS.Endpoint = tc.endpoint
			ev := tc.ev
			c.AWS.Events = &ev
			err := Kind.Validate(&c)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				ttl, ok := Kind.(provider.EventsKind).Events(&c)
				if !ok || ttl != ev.TTL() {
					t.Fatalf("Events = %s %v", ttl, ok)
				}
				return
			}
			if !errors.Is(err, events.ErrBadRequest) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	c := blockConn()
	if _, ok := Kind.(provider.EventsKind).Events(&c); ok {
		t.Fatal("Events without aws.events")
	}
}
