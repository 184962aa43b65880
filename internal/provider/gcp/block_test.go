package gcp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

const blockKey = `{"type":"service_account","client_email":"r@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nSECRETKEY\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}`

func blockConn(g *events.GCPConfig) events.Connection {
	return events.Connection{Name: "g", Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"}, GCP: g}
}

func TestKindValidate(t *testing.T) {
	const email = "r@p.iam.gserviceaccount.com"
	key := json.RawMessage(blockKey)
	cases := []struct {
		name  string
		g     *events.GCPConfig
		field string
	}{
		{"key", &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: key}, ""},
		{"no block", nil, "gcp"},
		{"bad project", &events.GCPConfig{Project: "A", Auth: events.GCPAuthDefault}, "gcp.project"},
		{"no auth", &events.GCPConfig{}, "gcp.auth"},
		{"unknown auth", &events.GCPConfig{Auth: "oauth"}, "gcp.auth"},
		{"key missing", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey}, "gcp.service_account_key"},
		{"key with impersonate", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: key, Impersonate: email}, "gcp.impersonate"},
		{"key wrong type", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`{"type":"user","client_email":"a","private_key":"b"}`)}, "gcp.service_account_key.type"},
		{"key not an object", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`"x"`)}, "gcp.service_account_key"},
		{"key too big", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`"` + strings.Repeat("x", 17<<10) + `"`)}, "gcp.service_account_key"},
		{"key without email", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----"}`)}, "gcp.service_account_key.client_email"},
		{"key not PEM", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`{"type":"service_account","client_email":"a@b","private_key":"hunter2"}`)}, "gcp.service_account_key.private_key"},
		{"key redacted is valid", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`{"type":"service_account","client_email":"a@b","private_key":"[redacted]"}`)}, ""},
		{"key bad token_uri", &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`{"type":"service_account","client_email":"a@b","private_key":"[redacted]","token_uri":"file:///etc/passwd"}`)}, "gcp.service_account_key.token_uri"},
		{"impersonation", &events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: email, Delegates: []string{email}}, ""},
		{"impersonation without target", &events.GCPConfig{Auth: events.GCPAuthImpersonation}, "gcp.impersonate"},
		{"impersonate not an account", &events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: "me@gmail.com"}, "gcp.impersonate"},
		{"bad delegate", &events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: email, Delegates: []string{email, "nobody"}}, "gcp.delegates[1]"},
		{"too many delegates", &events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: email, Delegates: make([]string, 17)}, "gcp.delegates"},
		{"default with key", &events.GCPConfig{Auth: events.GCPAuthDefault, ServiceAccountKey: key}, "gcp.service_account_key"},
		{"default with impersonate", &events.GCPConfig{Auth: events.GCPAuthDefault, Impersonate: email}, "gcp.impersonate"},
		{"bad endpoint", &events.GCPConfig{Auth: events.GCPAuthDefault, Endpoint: "grpc://x"}, "gcp.endpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := blockConn(tc.g)
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
			if strings.Contains(err.Error(), "SECRETKEY") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error quotes the key: %v", err)
			}
		})
	}
}

func TestKindRedactAndKeep(t *testing.T) {
	stored := blockConn(&events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(blockKey)})
	red := Kind.Redact(stored)
	b, _ := json.Marshal(red)
	if strings.Contains(string(b), "SECRETKEY") || !strings.Contains(string(b), "r@p.iam.gserviceaccount.com") || !strings.Contains(string(b), "oauth2.googleapis.com") {
		t.Fatalf("redacted: %s", b)
	}
	if !strings.Contains(string(stored.GCP.ServiceAccountKey), "SECRETKEY") {
		t.Fatal("Redact changed the original")
	}
	if got := Kind.Redacted(&red); len(got) != 1 || got[0] != "gcp.service_account_key.private_key" {
		t.Fatalf("Redacted = %v", got)
	}
	if err := Kind.KeepRedacted(&red, &stored); err != nil {
		t.Fatal(err)
	}
	if string(red.GCP.ServiceAccountKey) != blockKey {
		t.Fatal("KeepRedacted did not restore the key")
	}
	if len(Kind.Redacted(&red)) != 0 {
		t.Fatal("still redacted after KeepRedacted")
	}
	// A key that is not an object is redacted whole.
	odd := blockConn(&events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(`["SECRETKEY"]`)})
	if r := Kind.Redact(odd); string(r.GCP.ServiceAccountKey) != `"[redacted]"` {
		t.Fatalf("odd key redacted to %s", r.GCP.ServiceAccountKey)
	}
	// Redacted with nothing stored.
	c := Kind.Redact(stored)
	err := Kind.KeepRedacted(&c, nil)
	if !errors.Is(err, events.ErrBadRequest) || !strings.HasPrefix(err.Error(), "gcp.service_account_key.private_key:") {
		t.Fatalf("redacted with nothing stored: %v", err)
	}
	// Impersonation and ADC connections hold nothing sensitive.
	imp := blockConn(&events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: "r@p.iam.gserviceaccount.com"})
	if len(Kind.Redacted(&imp)) != 0 || Kind.KeepRedacted(&imp, nil) != nil {
		t.Fatal("impersonation connection has sensitive fields")
	}
}

func TestKindRouting(t *testing.T) {
	c := blockConn(&events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: "r@p.iam.gserviceaccount.com",
		Delegates: []string{"a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"}, Endpoint: "https://e.example",
		ServiceAccountKey: json.RawMessage(blockKey),
		Events:            &events.GCPEvents{Subscription: "projects/bio-prod/subscriptions/s1", Endpoint: "http://127.0.0.1:8085"}})
	var got []string
	for _, f := range Kind.Routing(&c) {
		got = append(got, f.Name+"="+f.Value)
	}
	want := "gcp.auth=impersonation gcp.endpoint=https://e.example gcp.impersonate=r@p.iam.gserviceaccount.com " +
		"gcp.delegates=a@p.iam.gserviceaccount.com,b@p.iam.gserviceaccount.com gcp.service_account_key.token_uri=https://oauth2.googleapis.com/token gcp.events.endpoint=http://127.0.0.1:8085"
	if strings.Join(got, " ") != want {
		t.Fatalf("Routing = %v", got)
	}
	if n := len(Kind.Routing(&events.Connection{})); n != 6 {
		t.Fatalf("Routing without a block lists %d fields, want the same 6", n)
	}
}

// TestEventsBlock: gcp.events is validated with the block, its endpoint
// passes the endpoint check, and Events reports it.
func TestEventsBlock(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   events.GCPEvents
		want string
	}{
		{"valid", events.GCPEvents{Subscription: "projects/bio-prod/subscriptions/secret-changes"}, ""},
		{"emulator", events.GCPEvents{Subscription: "projects/bio-prod/subscriptions/secret-changes", Endpoint: "http://127.0.0.1:8085"}, ""},
		{"no subscription", events.GCPEvents{}, "gcp.events.subscription: required"},
		{"topic", events.GCPEvents{Subscription: "projects/bio-prod/topics/t"}, "gcp.events.subscription:"},
		{"bad endpoint", events.GCPEvents{Subscription: "projects/bio-prod/subscriptions/sub1", Endpoint: "grpc://h"}, "gcp.events.endpoint:"},
		{"user info", events.GCPEvents{Subscription: "projects/bio-prod/subscriptions/sub1", Endpoint: "https://u:p@h"}, "gcp.events.endpoint:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev
			c := blockConn(&events.GCPConfig{Auth: events.GCPAuthDefault, Events: &ev})
			err := Kind.Validate(&c)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if ttl, ok := Kind.(provider.EventsKind).Events(&c); !ok || ttl != events.DefaultDegradedTTL {
					t.Fatalf("Events = %s %v", ttl, ok)
				}
				return
			}
			if !errors.Is(err, events.ErrBadRequest) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
