package service

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// attackerListener is an HTTP listener of the attacker's, counting every
// request that reaches it.
func attackerListener(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func putConn(c *events.Client, conn events.Connection) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Request(ctx, c.Subjects().Admin(events.ResourceConnections, events.VerbPut), conn, nil)
}

func awsConn(endpoint string) events.Connection {
	return events.Connection{Name: "cloud", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		Tokens: &events.TokenPolicy{Enabled: true},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEY000001",
			SecretAccessKey: "stored-secret-key", SessionToken: "stored-session-token", Endpoint: endpoint}}
}

// TestEndpointOutsideAllowlistRefusedAtPut: an admin (or a stolen admin
// credential) pointing a connection at a listener of the attacker's or at
// the instance metadata address is refused at put, with the field and the
// flag named, and the listener never hears from the worker.
func TestEndpointOutsideAllowlistRefusedAtPut(t *testing.T) {
	evil, hits := attackerListener(t)
	cfg := embeddedConfig(t.TempDir())
	cfg.AllowEndpoints = provider.DefaultAllowEndpoints // the default: no loopback
	w := startWorker(t, cfg)
	_, c := connect(t, w.ClientURL())

	key := `{"type":"service_account","client_email":"r@bio-prod.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nX\n-----END PRIVATE KEY-----\n","token_uri":"` + evil.URL + `/token"}`
	for _, tc := range []struct {
		field string
		conn  events.Connection
	}{
		{"aws.endpoint", awsConn(evil.URL)},
		{"aws.endpoint", awsConn("http://169.254.169.254/latest")},
		{"aws.endpoint", awsConn("https://amazonaws.com.attacker.example")},
		{"gcp.endpoint", events.Connection{Name: "g", Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
			GCP: &events.GCPConfig{Auth: events.GCPAuthDefault, Endpoint: evil.URL}}},
		{"gcp.service_account_key.token_uri", events.Connection{Name: "g", Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
			GCP: &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: []byte(key)}}},
	} {
		err := putConn(c, tc.conn)
		var werr *events.Error
		if !errors.As(err, &werr) || werr.Code != events.CodeBadRequest ||
			!strings.HasPrefix(werr.Message, tc.field+": ") || !strings.Contains(werr.Message, "--allow-endpoints") {
			t.Errorf("put with %s outside the allowlist: %v", tc.field, err)
		}
	}
	var list events.ConnectionList
	adminReq(t, c, events.ResourceConnections, events.VerbList, events.Empty{}, &list)
	if len(list.Connections) != 0 {
		t.Fatalf("refused puts stored %d connections", len(list.Connections))
	}
	// The clouds' own endpoints (a VPC endpoint) are fine.
	if err := putConn(c, awsConn("https://vpce-1.secretsmanager.us-east-1.vpce.amazonaws.com")); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the attacker's listener got %d requests", n)
	}
}

// TestStoredEndpointOutsideAllowlistRefusedAtUse: a connection stored while
// the allowlist was wider (or written to the bucket directly) is refused at
// use, resolve and token alike, and its credentials never leave.
func TestStoredEndpointOutsideAllowlistRefusedAtUse(t *testing.T) {
	evil, hits := attackerListener(t)
	srv := natstest.Server(t)
	key := newMasterKey(t)
	wide := startWorker(t, joinedConfig(srv.ClientURL(), key)) // allows 127.0.0.1
	_, c := connect(t, srv.ClientURL())
	if err := putConn(c, awsConn(evil.URL)); err != nil {
		t.Fatal(err)
	}
	stopWorker(t, wide)

	cfg := joinedConfig(srv.ClientURL(), key)
	cfg.AllowEndpoints = []string{"*.amazonaws.com"}
	narrow := startWorker(t, cfg)
	_, err := resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"})
	var werr *events.Error
	if !errors.As(err, &werr) || werr.Code != events.CodeForbidden || !strings.Contains(werr.Message, "aws.endpoint") ||
		!strings.Contains(werr.Message, "--allow-endpoints") {
		t.Fatalf("resolve of a stored connection outside the allowlist: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = c.Request(ctx, c.Subjects().Op(events.OpToken, "bio", "cloud"), events.TokenRequest{}, nil)
	if !errors.Is(err, events.ErrForbidden) {
		t.Fatalf("token of a stored connection outside the allowlist: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the attacker's listener got %d requests", n)
	}
	if !strings.Contains(narrow.logs.String(), "outside the endpoint allowlist") {
		t.Fatalf("refusal not logged:\n%s", narrow.logs.String())
	}
	if strings.Contains(narrow.logs.String(), "stored-secret-key") {
		t.Fatal("a secret reached the log")
	}
}
