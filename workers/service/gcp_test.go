package service

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// A GCP connection through the whole worker: put (sealed, redacted), test,
// resolve through impersonation, and a BigQuery token.
func TestGCPEndToEnd(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	fake := gcpfake.New(t)
	worker := fake.AddServiceAccount("worker@ops-prod.iam.gserviceaccount.com")
	fake.AddServiceAccount("reader@bio-prod.iam.gserviceaccount.com")
	keyHolder := fake.AddServiceAccount("keyholder@bio-prod.iam.gserviceaccount.com")
	fake.GrantTokenCreator("worker@ops-prod.iam.gserviceaccount.com", "reader@bio-prod.iam.gserviceaccount.com")
	fake.MustAddVersion("bio-prod", "biodb01", []byte(`{"login":"user01","password":"password01"}`))
	adc := filepath.Join(dir, "adc.json")
	if err := os.WriteFile(adc, worker.KeyJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", adc)

	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	imp := events.Connection{Name: "gcp-bio", Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
		Tokens: &events.TokenPolicy{Enabled: true, Scopes: []string{"https://www.googleapis.com/auth/bigquery"}},
		GCP: &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthImpersonation,
			Impersonate: "reader@bio-prod.iam.gserviceaccount.com", Endpoint: fake.Endpoint()}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, imp, nil)
	key := events.Connection{Name: "gcp-key", Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey,
			ServiceAccountKey: keyHolder.KeyJSON(), Endpoint: fake.Endpoint()}}
	var stored events.Connection
	adminReq(t, c, events.ResourceConnections, events.VerbPut, key, &stored)
	if strings.Contains(string(stored.GCP.ServiceAccountKey), "PRIVATE KEY") {
		t.Fatal("the put reply carries the private key")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	report, err := c.Test(ctx, "bio", "gcp-bio", events.TestRequest{Secret: "biodb01", Keys: []string{"password"}})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK || len(report.Steps) != 4 {
		b, _ := json.Marshal(report)
		t.Fatalf("test report: %s", b)
	}
	got, err := c.Resolve(ctx, "bio", "gcp-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := got.String("password"); p != "password01" {
		t.Fatalf("password %q", p)
	}
	if n := fake.CallsBy("AccessSecretVersion", "reader@bio-prod.iam.gserviceaccount.com"); n < 1 {
		t.Fatalf("Secret Manager saw %d calls as the impersonated account", n)
	}
	tok, err := c.Token(ctx, "bio", "gcp-bio", events.TokenRequest{Scopes: []string{"https://www.googleapis.com/auth/bigquery"}})
	if err != nil || tok.Provider != "gcp" || tok.GCP == nil || tok.GCP.AccessToken == "" || tok.GCP.TokenType != "Bearer" {
		t.Fatalf("token: %+v %v", tok, err)
	}
	if email, scopes, _, ok := fake.TokenInfo(tok.GCP.AccessToken); !ok || email != "reader@bio-prod.iam.gserviceaccount.com" || len(scopes) != 1 {
		t.Fatalf("token belongs to %s with scopes %v", email, scopes)
	}
	// The key connection's calls carry its own identity, not the worker's.
	if _, err := c.Resolve(ctx, "bio", "gcp-key", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatalf("resolve with the key connection: %v", err)
	}
	if n := fake.CallsBy("AccessSecretVersion", "keyholder@bio-prod.iam.gserviceaccount.com"); n < 1 {
		t.Fatal("the key connection's call did not carry its own identity")
	}
	if strings.Contains(w.logs.String(), "password01") || strings.Contains(w.logs.String(), "PRIVATE KEY") {
		t.Fatal("logs contain a secret")
	}
}
