package gcp

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

// Each auth method resolves a secret, and the Secret Manager call carries the
// token of the identity the method stands for.
func TestResolveAuthMethods(t *testing.T) {
	const mid = "mid@bio-prod.iam.gserviceaccount.com"
	tests := []struct {
		name     string
		adc      bool
		conn     func(e *env) events.Connection
		grants   [][2]string
		identity string
	}{
		{name: "service_account_key", conn: func(e *env) events.Connection { return e.keyConn("gcp-key", e.reader) },
			identity: "reader@bio-prod.iam.gserviceaccount.com"},
		{name: "impersonation with key caller",
			conn: func(e *env) events.Connection {
				return e.impersonationConn("gcp-imp", "reader@bio-prod.iam.gserviceaccount.com", e.writer)
			},
			grants:   [][2]string{{"writer@bio-prod.iam.gserviceaccount.com", "reader@bio-prod.iam.gserviceaccount.com"}},
			identity: "reader@bio-prod.iam.gserviceaccount.com"},
		{name: "impersonation with ADC caller", adc: true,
			conn: func(e *env) events.Connection {
				return e.impersonationConn("gcp-imp-adc", "reader@bio-prod.iam.gserviceaccount.com", nil)
			},
			grants:   [][2]string{{"worker@ops-prod.iam.gserviceaccount.com", "reader@bio-prod.iam.gserviceaccount.com"}},
			identity: "reader@bio-prod.iam.gserviceaccount.com"},
		{name: "impersonation through a delegate", adc: true,
			conn: func(e *env) events.Connection {
				return e.impersonationConn("gcp-imp-del", "reader@bio-prod.iam.gserviceaccount.com", nil, mid)
			},
			grants: [][2]string{{"worker@ops-prod.iam.gserviceaccount.com", mid},
				{mid, "reader@bio-prod.iam.gserviceaccount.com"}},
			identity: "reader@bio-prod.iam.gserviceaccount.com"},
		{name: "default ADC", adc: true, conn: func(e *env) events.Connection { return e.defaultConn("gcp-adc") },
			identity: "worker@ops-prod.iam.gserviceaccount.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.fake.AddServiceAccount(mid)
			if tt.adc {
				e.useADC(t)
			}
			for _, g := range tt.grants {
				e.fake.GrantTokenCreator(g[0], g[1])
			}
			p := newProvider(t, tt.conn(e))
			if p.Identity() != tt.identity {
				t.Fatalf("Identity() = %q, want %q", p.Identity(), tt.identity)
			}
			s, err := p.Resolve(ctxT(t), provider.Request{Secret: "biodb01"})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if string(s.Data) != `{"login":"user01","password":"password01"}` || s.Version != "1" || s.Binary {
				t.Fatalf("got %q version %q binary %v", s.Data, s.Version, s.Binary)
			}
			if n := e.fake.CallsBy(gcpfake.MethodAccessSecretVersion, tt.identity); n != 1 {
				t.Fatalf("AccessSecretVersion calls by %s = %d, want 1 (calls %+v)", tt.identity, n, e.fake.Calls())
			}
			if len(tt.grants) > 0 && e.fake.GenerateCalls(tt.identity) != 1 {
				t.Fatalf("generateAccessToken calls = %d, want 1", e.fake.GenerateCalls(tt.identity))
			}
		})
	}
}

// Two connections with different identities: each call carries its own
// connection's token, and access control follows the identity.
func TestTwoConnectionsUseTheirOwnIdentity(t *testing.T) {
	e := newEnv(t)
	e.fake.AddSecret(project, "reader-only", e.reader.Email)
	e.fake.MustAddVersion(project, "reader-only", []byte("r"))
	e.fake.AddSecret(project, "writer-only", e.writer.Email)
	e.fake.MustAddVersion(project, "writer-only", []byte("w"))
	pr := newProvider(t, e.keyConn("gcp-r", e.reader))
	pw := newProvider(t, e.keyConn("gcp-w", e.writer))
	ctx := ctxT(t)

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 10; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s, err := pr.Resolve(ctx, provider.Request{Secret: "reader-only"})
			if err != nil || string(s.Data) != "r" {
				errs <- fmt.Errorf("reader: %q %v", s.Data, err)
			}
		}()
		go func() {
			defer wg.Done()
			s, err := pw.Resolve(ctx, provider.Request{Secret: "writer-only"})
			if err != nil || string(s.Data) != "w" {
				errs <- fmt.Errorf("writer: %q %v", s.Data, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	_, err := pr.Resolve(ctx, provider.Request{Secret: "writer-only"})
	wantCode(t, err, events.CodeForbidden)
	if got := e.fake.CallsBy(gcpfake.MethodAccessSecretVersion, e.reader.Email); got != 11 {
		t.Fatalf("reader calls = %d, want 11", got)
	}
	if got := e.fake.CallsBy(gcpfake.MethodAccessSecretVersion, e.writer.Email); got != 10 {
		t.Fatalf("writer calls = %d, want 10", got)
	}
	// One token per connection, not one per call.
	if e.fake.TokenFetches(e.reader.Email) != 1 || e.fake.TokenFetches(e.writer.Email) != 1 {
		t.Fatalf("token fetches reader %d writer %d, want 1 each",
			e.fake.TokenFetches(e.reader.Email), e.fake.TokenFetches(e.writer.Email))
	}
}

// Payloads come back byte for byte, whatever they hold; the worker classifies.
func TestPayloads(t *testing.T) {
	e := newEnv(t)
	p := newProvider(t, e.keyConn("gcp", e.reader))
	big := bytes.Repeat([]byte("x"), gcpfake.MaxPayload)
	tests := []struct {
		name string
		data []byte
	}{
		{"json object", []byte(`{"login":"user01","password":"password01"}`)},
		{"text", []byte("just a password")},
		{"binary", []byte{0x00, 0xff, 0xfe, 0x80, 0x01}},
		{"empty", []byte{}},
		{"64 KiB", big},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("payload-%d", i)
			e.fake.MustAddVersion(project, id, tt.data)
			s, err := p.Resolve(ctxT(t), provider.Request{Secret: id})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.Data, tt.data) || s.Binary || s.Version != "1" || s.FetchedAt.IsZero() {
				t.Fatalf("got %d bytes version %q binary %v", len(s.Data), s.Version, s.Binary)
			}
		})
	}
	if _, err := e.fake.AddVersion(project, "too-big", append(big, 'x')); err == nil {
		t.Fatal("the fake accepted a payload over 64 KiB")
	}
}

// Versions by number, alias and latest; short and full names.
func TestVersions(t *testing.T) {
	e := newEnv(t)
	e.fake.SetProjectNumber(project, "123456789012")
	for _, v := range []string{"v1", "v2", "v3"} {
		e.fake.MustAddVersion(project, "rotating", []byte(v))
	}
	e.fake.SetAlias(project, "rotating", "stable", 2)
	p := newProvider(t, e.keyConn("gcp", e.reader))
	tests := []struct {
		secret, version string
		want, wantVer   string
		code            events.Code
	}{
		{secret: "rotating", want: "v3", wantVer: "3"},
		{secret: "rotating", version: "latest", want: "v3", wantVer: "3"},
		{secret: "rotating", version: "1", want: "v1", wantVer: "1"},
		{secret: "rotating", version: "stable", want: "v2", wantVer: "2"},
		{secret: "projects/bio-prod/secrets/rotating", want: "v3", wantVer: "3"},
		{secret: "projects/bio-prod/secrets/rotating/versions/2", want: "v2", wantVer: "2"},
		{secret: "projects/bio-prod/secrets/rotating/versions/2", version: "2", want: "v2", wantVer: "2"},
		{secret: "projects/bio-prod/secrets/rotating/versions/2", version: "3", code: events.CodeBadRequest},
		{secret: "rotating", version: "9", code: events.CodeNotFound},
		{secret: "rotating", version: "nosuchalias", code: events.CodeNotFound},
		{secret: "rotating", version: "-1", code: events.CodeBadRequest},
		{secret: "rotating", version: "a/b", code: events.CodeBadRequest},
		{secret: "nosuch", code: events.CodeNotFound},
		{secret: "bad name!", code: events.CodeBadRequest},
		{secret: "projects/bio-prod/locations/eu/secrets/x", code: events.CodeBadRequest},
		{secret: "projects/bio-prod/topics/x", code: events.CodeBadRequest},
		{secret: "projects//secrets/x", code: events.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.secret+"@"+tt.version, func(t *testing.T) {
			s, err := p.Resolve(ctxT(t), provider.Request{Secret: tt.secret, Version: tt.version})
			if tt.code != "" {
				wantCode(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(s.Data) != tt.want || s.Version != tt.wantVer {
				t.Fatalf("got %q version %q, want %q version %q", s.Data, s.Version, tt.want, tt.wantVer)
			}
		})
	}
}

// Short names need a project: from gcp.project, the key, or the impersonated account.
func TestProjectCompletion(t *testing.T) {
	e := newEnv(t)
	c := e.keyConn("gcp", e.reader)
	c.GCP.Project = "" // the key's project_id, bio-prod
	p := newProvider(t, c)
	if _, err := p.Resolve(ctxT(t), provider.Request{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
	e.fake.GrantTokenCreator(e.writer.Email, e.reader.Email)
	pi := newProvider(t, e.impersonationConn("gcp-imp", e.reader.Email, e.writer))
	if pi.Project() != project {
		t.Fatalf("impersonation project = %q", pi.Project())
	}
	name, err := VersionName("", "biodb01", "")
	if name != "" {
		t.Fatalf("name %q without project", name)
	}
	wantCode(t, err, events.CodeBadRequest)
}

// Every gRPC code maps to its wire code; throttling is retried first.
func TestResolveErrorMapping(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(e *env)
		ctx       func(t *testing.T) context.Context
		secret    string
		code      events.Code
		msg       string
		wantCalls int
	}{
		{name: "not found", secret: "nosuch", code: events.CodeNotFound, wantCalls: 1},
		{name: "permission denied", secret: "locked", code: events.CodeForbidden, msg: "secretAccessor", wantCalls: 1,
			setup: func(e *env) {
				e.fake.AddSecret(project, "locked", e.writer.Email)
				e.fake.MustAddVersion(project, "locked", []byte("x"))
			}},
		{name: "unauthenticated", code: events.CodeUnauthorized, wantCalls: 1,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodAccessSecretVersion, codes.Unauthenticated, 1) }},
		{name: "throttled then ok", wantCalls: 3,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodAccessSecretVersion, codes.ResourceExhausted, 2) }},
		{name: "throttled past retries", code: events.CodeThrottled, wantCalls: 4,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodAccessSecretVersion, codes.ResourceExhausted, 10) }},
		{name: "unavailable", code: events.CodeUnavailable, wantCalls: 1,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodAccessSecretVersion, codes.Unavailable, 1) }},
		{name: "deadline exceeded upstream", code: events.CodeTimeout, wantCalls: 1,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodAccessSecretVersion, codes.DeadlineExceeded, 1) }},
		{name: "slow past our deadline", code: events.CodeTimeout,
			setup: func(e *env) { e.fake.Delay(gcpfake.MethodAccessSecretVersion, 5*time.Second) },
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				t.Cleanup(cancel)
				return ctx
			}, wantCalls: -1},
		{name: "internal error", code: events.CodeUnavailable, wantCalls: 1,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodAccessSecretVersion, codes.Internal, 1) }},
		{name: "disabled version", code: events.CodeNotFound, msg: "disabled or destroyed", wantCalls: 1,
			setup: func(e *env) { e.fake.SetState(project, "biodb01", 1, secretmanagerpb.SecretVersion_DISABLED) }},
		{name: "destroyed version", code: events.CodeNotFound, msg: "disabled or destroyed", wantCalls: 1,
			setup: func(e *env) { e.fake.SetState(project, "biodb01", 1, secretmanagerpb.SecretVersion_DESTROYED) }},
		{name: "crc32c mismatch", code: events.CodeUnavailable, msg: "CRC32C", wantCalls: 1,
			setup: func(e *env) { e.fake.CorruptCRC(project, "biodb01", 1) }},
		{name: "revoked key", code: events.CodeUnauthorized, msg: "invalid_grant", wantCalls: 0,
			setup: func(e *env) { e.fake.RevokeKey(e.reader.Email) }},
		{name: "token endpoint throttles", code: events.CodeThrottled, wantCalls: 0,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodToken, codes.ResourceExhausted, 1) }},
		{name: "token endpoint down", code: events.CodeUnavailable, wantCalls: 0,
			setup: func(e *env) { e.fake.Fail(gcpfake.MethodToken, codes.Unavailable, 1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			var logs testenv.Buffer
			p := newProvider(t, e.keyConn("gcp", e.reader), WithLogger(debugLogger(&logs)))
			ctx := ctxT(t)
			if tt.ctx != nil {
				ctx = tt.ctx(t)
			}
			secret := tt.secret
			if secret == "" {
				secret = "biodb01"
			}
			s, err := p.Resolve(ctx, provider.Request{Secret: secret})
			if tt.code == "" {
				if err != nil || !strings.Contains(string(s.Data), "user01") {
					t.Fatalf("got %q, %v", s.Data, err)
				}
			} else {
				wantCode(t, err, tt.code)
				if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("message %q does not say %q", err, tt.msg)
				}
				noLeak(t, "error", events.AsWire(err).Message, e.reader.PrivateKeyPEM())
			}
			noLeak(t, "log", logs.String(), e.reader.PrivateKeyPEM())
			if tt.wantCalls >= 0 {
				if got := e.fake.CallsBy(gcpfake.MethodAccessSecretVersion, e.reader.Email); got != tt.wantCalls {
					t.Fatalf("AccessSecretVersion calls = %d, want %d", got, tt.wantCalls)
				}
			}
			if tt.name == "crc32c mismatch" && !strings.Contains(logs.String(), "CRC32C") {
				t.Fatalf("CRC32C mismatch not logged: %s", logs.String())
			}
		})
	}
}

// Impersonation failures: missing Token Creator at either hop, unknown target,
// a caller whose key was revoked.
func TestImpersonationErrors(t *testing.T) {
	const mid = "mid@bio-prod.iam.gserviceaccount.com"
	tests := []struct {
		name      string
		setup     func(e *env)
		target    string
		delegates []string
		code      events.Code
	}{
		{name: "no token creator", target: "reader@bio-prod.iam.gserviceaccount.com", code: events.CodeForbidden},
		{name: "delegate hop missing", target: "reader@bio-prod.iam.gserviceaccount.com", delegates: []string{mid},
			setup: func(e *env) { e.fake.GrantTokenCreator(e.writer.Email, mid) }, code: events.CodeForbidden},
		{name: "first hop missing", target: "reader@bio-prod.iam.gserviceaccount.com", delegates: []string{mid},
			setup: func(e *env) { e.fake.GrantTokenCreator(mid, e.reader.Email) }, code: events.CodeForbidden},
		{name: "unknown target", target: "ghost@bio-prod.iam.gserviceaccount.com",
			setup: func(e *env) { e.fake.GrantTokenCreator(e.writer.Email, "ghost@bio-prod.iam.gserviceaccount.com") },
			code:  events.CodeForbidden},
		{name: "caller key revoked", target: "reader@bio-prod.iam.gserviceaccount.com",
			setup: func(e *env) {
				e.fake.GrantTokenCreator(e.writer.Email, e.reader.Email)
				e.fake.RevokeKey(e.writer.Email)
			}, code: events.CodeUnauthorized},
		{name: "iam unavailable", target: "reader@bio-prod.iam.gserviceaccount.com",
			setup: func(e *env) {
				e.fake.GrantTokenCreator(e.writer.Email, e.reader.Email)
				e.fake.Fail(gcpfake.MethodGenerateAccessToken, codes.Unavailable, 1)
			}, code: events.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.fake.AddServiceAccount(mid)
			if tt.setup != nil {
				tt.setup(e)
			}
			p := newProvider(t, e.impersonationConn("gcp-imp", tt.target, e.writer, tt.delegates...))
			_, err := p.Resolve(ctxT(t), provider.Request{Secret: "biodb01"})
			wantCode(t, err, tt.code)
			noLeak(t, "error", err.Error(), e.writer.PrivateKeyPEM())
			if n := len(e.fake.Calls()); n > 0 {
				for _, c := range e.fake.Calls() {
					if c.Method == gcpfake.MethodAccessSecretVersion {
						t.Fatalf("Secret Manager was called without a token: %+v", c)
					}
				}
			}
		})
	}
}

// A token about to expire is refreshed once, with concurrent requests
// waiting on that one refresh.
func TestTokenRefreshedOnceForConcurrentRequests(t *testing.T) {
	e := newEnv(t)
	// First token: 2 minutes, inside the 5-minute early-refresh window.
	e.fake.SetTokenLifetime(e.reader.Email, 2*time.Minute)
	p := newProvider(t, e.keyConn("gcp", e.reader), WithEarlyRefresh(5*time.Minute))
	ctx := ctxT(t)
	tok, err := p.Credentials().TokenProvider.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.fake.TokenFetches(e.reader.Email); n != 1 {
		t.Fatalf("token fetches = %d, want 1", n)
	}
	first := tok.Value
	e.fake.SetTokenLifetime(e.reader.Email, time.Hour)

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Resolve(ctx, provider.Request{Secret: "biodb01"}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := e.fake.TokenFetches(e.reader.Email); got != 2 {
		t.Fatalf("token fetches = %d, want 2 (one refresh shared by %d requests)", got, n)
	}
	calls := e.fake.Calls()
	if len(calls) != n {
		t.Fatalf("%d calls, want %d", len(calls), n)
	}
	for _, c := range calls {
		if c.Token == first {
			t.Fatal("a request used the expiring token")
		}
		if c.Token != calls[0].Token {
			t.Fatal("concurrent requests used different tokens")
		}
	}
	// The fresh token is cached: no more fetches.
	if _, err := p.Resolve(ctx, provider.Request{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.TokenFetches(e.reader.Email); got != 2 {
		t.Fatalf("token fetches = %d after a cached call, want 2", got)
	}
}

// The impersonated token is cached too: one generateAccessToken for many calls.
func TestImpersonatedTokenCached(t *testing.T) {
	e := newEnv(t)
	e.fake.GrantTokenCreator(e.writer.Email, e.reader.Email)
	p := newProvider(t, e.impersonationConn("gcp-imp", e.reader.Email, e.writer))
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Resolve(ctx, provider.Request{Secret: "biodb01"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if g := e.fake.GenerateCalls(e.reader.Email); g != 1 {
		t.Fatalf("generateAccessToken calls = %d, want 1", g)
	}
	if f := e.fake.TokenFetches(e.writer.Email); f != 1 {
		t.Fatalf("caller token fetches = %d, want 1", f)
	}
}

// A refresh that fails inside the early window falls back to the cached,
// still valid token; the next request refreshes.
func TestRefreshFailureUsesValidCachedToken(t *testing.T) {
	e := newEnv(t)
	e.fake.SetTokenLifetime(e.reader.Email, 2*time.Minute)
	var logs testenv.Buffer
	p := newProvider(t, e.keyConn("gcp", e.reader), WithEarlyRefresh(5*time.Minute), WithLogger(debugLogger(&logs)))
	ctx := ctxT(t)
	if _, err := p.Credentials().TokenProvider.Token(ctx); err != nil {
		t.Fatal(err)
	}
	// Two refresh attempts fail: before the call and in its per-RPC credentials.
	e.fake.Fail(gcpfake.MethodToken, codes.Unavailable, 2)
	if _, err := p.Resolve(ctx, provider.Request{Secret: "biodb01"}); err != nil {
		t.Fatalf("resolve with a failing refresh and a valid token: %v", err)
	}
	if e.fake.PendingFaults(gcpfake.MethodToken) != 0 || e.fake.TokenFetches(e.reader.Email) != 1 {
		t.Fatalf("refresh attempts not made or not failed: pending %d, fetches %d",
			e.fake.PendingFaults(gcpfake.MethodToken), e.fake.TokenFetches(e.reader.Email))
	}
	if !strings.Contains(logs.String(), "token refresh failed") {
		t.Fatalf("refresh failure not logged: %s", logs.String())
	}
	noLeak(t, "log", logs.String(), e.reader.PrivateKeyPEM())
	e.fake.SetTokenLifetime(e.reader.Email, time.Hour)
	if _, err := p.Resolve(ctx, provider.Request{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.TokenFetches(e.reader.Email); got != 2 {
		t.Fatalf("token fetches = %d, want 2 (first, then the refresh after the failure)", got)
	}
}
