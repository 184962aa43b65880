package gcp

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

const bigqueryScope = "https://www.googleapis.com/auth/bigquery"

// Compile-time checks of the interfaces the worker relies on.
var (
	_ provider.Resolver = (*Provider)(nil)
	_ provider.Prober   = (*Provider)(nil)
	_ provider.Tokener  = (*Provider)(nil)
	_ provider.Closer   = (*Provider)(nil)
)

func TestToken(t *testing.T) {
	tests := []struct {
		name     string
		adc      bool
		conn     func(e *env) events.Connection
		req      events.TokenRequest
		email    string
		scopes   []string
		lifetime time.Duration
		code     events.Code
	}{
		{name: "key default scope", conn: func(e *env) events.Connection { return e.keyConn("k", e.reader) },
			email: "reader@bio-prod.iam.gserviceaccount.com", scopes: []string{CloudPlatformScope}, lifetime: time.Hour},
		{name: "key bigquery scope", conn: func(e *env) events.Connection { return e.keyConn("k", e.reader) },
			req:   events.TokenRequest{Scopes: []string{bigqueryScope}},
			email: "reader@bio-prod.iam.gserviceaccount.com", scopes: []string{bigqueryScope}, lifetime: time.Hour},
		{name: "impersonation with duration and scopes",
			conn: func(e *env) events.Connection { return e.impersonationConn("i", e.reader.Email, e.writer) },
			req: events.TokenRequest{Scopes: []string{bigqueryScope, CloudPlatformScope},
				Duration: events.Duration(10 * time.Minute)},
			email: "reader@bio-prod.iam.gserviceaccount.com", scopes: []string{bigqueryScope, CloudPlatformScope},
			lifetime: 10 * time.Minute},
		{name: "impersonation default", conn: func(e *env) events.Connection { return e.impersonationConn("i", e.reader.Email, e.writer) },
			email: "reader@bio-prod.iam.gserviceaccount.com", scopes: []string{CloudPlatformScope}, lifetime: time.Hour},
		{name: "adc bigquery", adc: true, conn: func(e *env) events.Connection { return e.defaultConn("d") },
			req:   events.TokenRequest{Scopes: []string{bigqueryScope}},
			email: "worker@ops-prod.iam.gserviceaccount.com", scopes: []string{bigqueryScope}, lifetime: time.Hour},
		{name: "longer than an hour", conn: func(e *env) events.Connection { return e.keyConn("k", e.reader) },
			req: events.TokenRequest{Duration: events.Duration(2 * time.Hour)}, code: events.CodeBadRequest},
		{name: "empty scope", conn: func(e *env) events.Connection { return e.keyConn("k", e.reader) },
			req: events.TokenRequest{Scopes: []string{""}}, code: events.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.adc {
				e.useADC(t)
			}
			e.fake.GrantTokenCreator(e.writer.Email, e.reader.Email)
			p := newProvider(t, tt.conn(e))
			reply, err := p.Token(ctxT(t), tt.req)
			if tt.code != "" {
				wantCode(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if reply.Provider != "gcp" || reply.GCP == nil || reply.GCP.TokenType != "Bearer" || reply.AWS != nil {
				t.Fatalf("reply %+v", reply)
			}
			email, scopes, expiry, ok := e.fake.TokenInfo(reply.GCP.AccessToken)
			if !ok || email != tt.email {
				t.Fatalf("token of %q (known %v), want %s", email, ok, tt.email)
			}
			slices.Sort(scopes)
			want := slices.Sorted(slices.Values(tt.scopes))
			if !slices.Equal(scopes, want) {
				t.Fatalf("scopes %v, want %v", scopes, want)
			}
			if d := reply.GCP.Expiry.Sub(expiry); d > time.Second || d < -time.Second {
				t.Fatalf("expiry %v, token expires %v", reply.GCP.Expiry, expiry)
			}
			if left := time.Until(reply.GCP.Expiry); left > tt.lifetime || left < tt.lifetime-time.Minute {
				t.Fatalf("token valid for %v, want about %v", left, tt.lifetime)
			}
			// The same request is served from the cache.
			again, err := p.Token(ctxT(t), tt.req)
			if err != nil || again.GCP.AccessToken != reply.GCP.AccessToken {
				t.Fatalf("second token request not cached: %v", err)
			}
		})
	}
}

func TestTokenFailure(t *testing.T) {
	e := newEnv(t)
	e.fake.RevokeKey(e.reader.Email)
	p := newProvider(t, e.keyConn("k", e.reader))
	_, err := p.Token(ctxT(t), events.TokenRequest{Scopes: []string{bigqueryScope}})
	wantCode(t, err, events.CodeUnauthorized)
	noLeak(t, "error", err.Error(), e.reader.PrivateKeyPEM())
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(e *env)
		conn     func(e *env) events.Connection
		credOK   bool
		credCode events.Code
		detail   []string
		identity []string
	}{
		{name: "key", conn: func(e *env) events.Connection { return e.keyConn("k", e.reader) },
			credOK: true, detail: []string{"service-account key"}, identity: []string{"reader@bio-prod.iam.gserviceaccount.com"}},
		{name: "revoked key", setup: func(e *env) { e.fake.RevokeKey(e.reader.Email) },
			conn:     func(e *env) events.Connection { return e.keyConn("k", e.reader) },
			credCode: events.CodeUnauthorized, identity: []string{"reader@bio-prod.iam.gserviceaccount.com"}},
		{name: "impersonation", setup: func(e *env) { e.fake.GrantTokenCreator(e.writer.Email, e.reader.Email) },
			conn:   func(e *env) events.Connection { return e.impersonationConn("i", e.reader.Email, e.writer) },
			credOK: true, detail: []string{"generateAccessToken", "succeeded"},
			identity: []string{"reader@bio-prod.iam.gserviceaccount.com", "impersonated by writer@bio-prod.iam.gserviceaccount.com"}},
		{name: "impersonation denied",
			conn:     func(e *env) events.Connection { return e.impersonationConn("i", e.reader.Email, e.writer) },
			credCode: events.CodeForbidden, identity: []string{"reader@bio-prod.iam.gserviceaccount.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			p := newProvider(t, tt.conn(e))
			steps := p.Probe(ctxT(t))
			if len(steps) != 2 || steps[0].Name != events.StepCredentials || steps[1].Name != events.StepIdentity {
				t.Fatalf("steps %+v", steps)
			}
			if steps[0].OK != tt.credOK {
				t.Fatalf("credentials step %+v, want ok=%v", steps[0], tt.credOK)
			}
			if !tt.credOK && (steps[0].Error == nil || steps[0].Error.Code != tt.credCode) {
				t.Fatalf("credentials step error %+v, want %s", steps[0].Error, tt.credCode)
			}
			for _, d := range tt.detail {
				if !strings.Contains(steps[0].Detail, d) {
					t.Fatalf("credentials detail %q lacks %q", steps[0].Detail, d)
				}
			}
			if !steps[1].OK {
				t.Fatalf("identity step %+v", steps[1])
			}
			for _, d := range tt.identity {
				if !strings.Contains(steps[1].Detail, d) {
					t.Fatalf("identity detail %q lacks %q", steps[1].Detail, d)
				}
			}
		})
	}
}

// ClientOptions and TokenSource let another Google client (the Cloud Logging
// sink) act as the connection, against the same endpoint.
func TestClientOptionsAndTokenSource(t *testing.T) {
	e := newEnv(t)
	p := newProvider(t, e.keyConn("k", e.reader))
	ctx := ctxT(t)
	c, err := secretmanager.NewClient(ctx, p.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{
		Name: "projects/bio-prod/secrets/biodb01/versions/latest"})
	if err != nil || !strings.Contains(string(resp.GetPayload().GetData()), "user01") {
		t.Fatalf("access with ClientOptions: %v", err)
	}
	if n := e.fake.CallsBy(gcpfake.MethodAccessSecretVersion, e.reader.Email); n != 1 {
		t.Fatalf("calls by reader = %d", n)
	}
	tok, err := p.TokenSource().Token()
	if err != nil {
		t.Fatal(err)
	}
	if email, _, _, ok := e.fake.TokenInfo(tok.AccessToken); !ok || email != e.reader.Email {
		t.Fatalf("TokenSource token of %q", email)
	}
	if e.fake.TokenFetches(e.reader.Email) != 1 {
		t.Fatalf("TokenSource did not share the connection's cache: %d fetches", e.fake.TokenFetches(e.reader.Email))
	}
}

// An https:// endpoint is TLS; the bearer token rides on it as usual.
func TestHTTPSEndpoint(t *testing.T) {
	f := gcpfake.New(t, gcpfake.WithTLS())
	sa := f.AddServiceAccount("reader@bio-prod.iam.gserviceaccount.com")
	f.MustAddVersion(project, "biodb01", []byte("pw"))
	if !strings.HasPrefix(f.Endpoint(), "https://") {
		t.Fatalf("endpoint %s", f.Endpoint())
	}
	conn := events.Connection{Name: "tls", Provider: "gcp", Groups: []string{"*"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Project: project, Auth: events.GCPAuthServiceAccountKey,
			ServiceAccountKey: sa.KeyJSON(), Endpoint: f.Endpoint()}}

	p := newProvider(t, conn, WithTLSConfig(&tls.Config{RootCAs: f.CertPool(), MinVersion: tls.VersionTLS12}))
	s, err := p.Resolve(ctxT(t), provider.Request{Secret: "biodb01"})
	if err != nil || string(s.Data) != "pw" {
		t.Fatalf("resolve over TLS: %q %v", s.Data, err)
	}

	// Without trusting the certificate, the call fails as unavailable.
	untrusted := newProvider(t, conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = untrusted.Resolve(ctx, provider.Request{Secret: "biodb01"})
	if err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
	if c := events.CodeOf(err); c != events.CodeUnavailable && c != events.CodeTimeout {
		t.Fatalf("untrusted certificate: %s %v", c, err)
	}
}

func TestNewRejectsBadConnections(t *testing.T) {
	e := newEnv(t)
	badPEM := []byte(`{"type":"service_account","client_email":"x@bio-prod.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`)
	tests := []struct {
		name string
		conn events.Connection
		code events.Code
	}{
		{"no gcp block", events.Connection{Name: "x", Provider: "gcp"}, events.CodeBadRequest},
		{"bad private key", events.Connection{Name: "x", Provider: "gcp",
			GCP: &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: badPEM}}, events.CodeBadRequest},
		{"key not JSON", events.Connection{Name: "x", Provider: "gcp",
			GCP: &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: []byte(`"nope"`)}}, events.CodeBadRequest},
		{"bad endpoint", events.Connection{Name: "x", Provider: "gcp",
			GCP: &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: e.reader.KeyJSON(), Endpoint: "ftp://x"}}, events.CodeBadRequest},
		{"endpoint with path", events.Connection{Name: "x", Provider: "gcp",
			GCP: &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: e.reader.KeyJSON(), Endpoint: "http://127.0.0.1:1/v1"}}, events.CodeBadRequest},
		{"unknown auth", events.Connection{Name: "x", Provider: "gcp", GCP: &events.GCPConfig{Auth: "magic"}}, events.CodeBadRequest},
		{"default without ADC", events.Connection{Name: "x", Provider: "gcp", GCP: &events.GCPConfig{Auth: events.GCPAuthDefault}}, events.CodeUnavailable},
		{"impersonation without ADC", events.Connection{Name: "x", Provider: "gcp",
			GCP: &events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: "r@bio-prod.iam.gserviceaccount.com"}}, events.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(context.Background(), tt.conn)
			if p != nil {
				p.Close()
			}
			wantCode(t, err, tt.code)
			noLeak(t, "error", err.Error(), e.reader.PrivateKeyPEM())
		})
	}
}
