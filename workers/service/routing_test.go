package service

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// recordingCloud is a provider that records the configuration of the last
// connection it was built for, its secrets in clear.
type recordingCloud struct {
	mu   sync.Mutex
	last events.AWSConfig
}

func (r *recordingCloud) factory(_ context.Context, c events.Connection) (provider.Resolver, error) {
	r.mu.Lock()
	r.last = *c.AWS
	r.mu.Unlock()
	return provider.ResolverFunc(func(context.Context, provider.Request) (provider.Secret, error) {
		return provider.Secret{Version: "v1", Data: []byte("x"), FetchedAt: time.Now()}, nil
	}), nil
}

func (r *recordingCloud) built() events.AWSConfig {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// TestPutKeepingRedactedCannotMoveCredentials is the exfiltration through
// "[redacted]": getting a connection, changing where its credentials go and
// putting it back must not send the stored secret there.
func TestPutKeepingRedactedCannotMoveCredentials(t *testing.T) {
	cloud := &recordingCloud{}
	w := startWorker(t, embeddedConfig(t.TempDir()), WithProvider(events.ProviderAWS, cloud.factory))
	nc, c := connect(t, w.ClientURL())
	const home = "https://secretsmanager.us-east-1.amazonaws.com"
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "cloud", Provider: events.ProviderAWS,
		Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEY000001",
			SecretAccessKey: "stored-secret-key", Endpoint: home}}, nil)
	resolve := func() {
		t.Helper()
		if _, err := resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db", Fresh: true}); err != nil {
			t.Fatal(err)
		}
	}
	resolve()
	if b := cloud.built(); b.Endpoint != home || b.SecretAccessKey != "stored-secret-key" {
		t.Fatalf("built with %+v", b)
	}

	var got events.Connection
	adminReq(t, c, events.ResourceConnections, events.VerbGet, events.NameRequest{Name: "cloud"}, &got)
	if got.AWS.SecretAccessKey != events.Redacted {
		t.Fatalf("get not redacted: %q", got.AWS.SecretAccessKey)
	}

	attacks := []struct {
		field string
		edit  func(*events.Connection)
	}{
		{"aws.endpoint", func(c *events.Connection) { c.AWS.Endpoint = "http://127.0.0.1:9/latest" }}, // an allowed host: the routing check refuses
		{"aws.region", func(c *events.Connection) { c.AWS.Region = "eu-west-1" }},
		{"aws.role_arn", func(c *events.Connection) { c.AWS.RoleARN = "arn:aws:iam::123456789012:role/attacker" }},
	}
	for _, a := range attacks {
		t.Run(a.field, func(t *testing.T) {
			put := got
			cfg := *got.AWS
			put.AWS = &cfg
			a.edit(&put)
			body, _ := json.Marshal(put)
			msg, err := nc.Request(c.Subjects().Admin(events.ResourceConnections, events.VerbPut), body, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			werr := events.ReplyError(msg)
			want := a.field + ": changed while aws.secret_access_key is [redacted]; give the secret again"
			if werr == nil || werr.Code != events.CodeBadRequest || werr.Message != want {
				t.Fatalf("reply %v, want bad_request %q", werr, want)
			}
			if h := msg.Header.Get(events.HeaderErrorCode); h != "400" {
				t.Fatalf("%s = %q", events.HeaderErrorCode, h)
			}
		})
	}
	// Nothing changed: the stored connection, and where the worker sends the key.
	var after events.Connection
	adminReq(t, c, events.ResourceConnections, events.VerbGet, events.NameRequest{Name: "cloud"}, &after)
	if after.AWS.Endpoint != home || after.AWS.Region != "us-east-1" || after.AWS.RoleARN != "" {
		t.Fatalf("a refused put changed the connection: %+v", after.AWS)
	}
	resolve()
	if b := cloud.built(); b.Endpoint != home || b.SecretAccessKey != "stored-secret-key" {
		t.Fatalf("built with %+v after the refused puts", b)
	}

	// Changing anything else keeps the secret.
	keep := got
	keep.Groups = []string{"bio", "chem"}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, keep, nil)
	natstest.Eventually(t, 5*time.Second, "the connection to be rebuilt with chem", func() bool {
		_, err := resolveReq(c, "chem", "cloud", events.ResolveRequest{Secret: "db", Fresh: true})
		return err == nil
	})
	if b := cloud.built(); b.Endpoint != home || b.SecretAccessKey != "stored-secret-key" {
		t.Fatalf("built with %+v after a put keeping the secret", b)
	}

	// Giving the secret again may move it.
	moved := got
	moved.AWS = &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEY000001",
		SecretAccessKey: "new-secret-key", Endpoint: "https://vpce-1.secretsmanager.us-east-1.vpce.amazonaws.com"}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, moved, nil)
	natstest.Eventually(t, 5*time.Second, "the connection to be rebuilt at the new endpoint", func() bool {
		resolve()
		b := cloud.built()
		return b.Endpoint == moved.AWS.Endpoint && b.SecretAccessKey == "new-secret-key"
	})
}

// TestPutKeepingRedactedKeyCannotMoveToken covers the GCP key's token_uri
// and a provider change, through the typed client.
func TestPutKeepingRedactedKeyCannotMoveToken(t *testing.T) {
	w := startWorker(t, embeddedConfig(t.TempDir()))
	_, c := connect(t, w.ClientURL())
	key := `{"type":"service_account","client_email":"r@bio-prod.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nSTORED\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}`
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "gkey", Provider: events.ProviderGCP,
		Groups: []string{"bio"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(key)}}, nil)
	var got events.Connection
	adminReq(t, c, events.ResourceConnections, events.VerbGet, events.NameRequest{Name: "gkey"}, &got)

	put := func(conn events.Connection) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Request(ctx, c.Subjects().Admin(events.ResourceConnections, events.VerbPut), conn, nil)
	}
	var k map[string]any
	if err := json.Unmarshal(got.GCP.ServiceAccountKey, &k); err != nil || k["private_key"] != events.Redacted {
		t.Fatalf("get: %s", got.GCP.ServiceAccountKey)
	}
	k["token_uri"] = "https://127.0.0.1:9/token" // allowed host: the routing check refuses
	evil := got
	evil.GCP = &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey}
	evil.GCP.ServiceAccountKey, _ = json.Marshal(k)
	err := put(evil)
	var werr *events.Error
	if !errors.As(err, &werr) || werr.Code != events.CodeBadRequest ||
		werr.Message != "gcp.service_account_key.token_uri: changed while gcp.service_account_key.private_key is [redacted]; give the secret again" {
		t.Fatalf("token_uri change: %v", err)
	}
	endpoint := got
	endpoint.GCP = &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey,
		ServiceAccountKey: got.GCP.ServiceAccountKey, Endpoint: "https://attacker.example"}
	if err := put(endpoint); !errors.Is(err, events.ErrBadRequest) {
		t.Fatalf("endpoint change: %v", err)
	}
	// The same key, unchanged, is kept.
	if err := put(got); err != nil {
		t.Fatalf("unchanged put: %v", err)
	}
}
