package gcpfake

import (
	"context"
	"encoding/json"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	"cloud.google.com/go/logging/apiv2/loggingpb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcinsecure "google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	alice = "alice@bio-prod.iam.gserviceaccount.com"
	bob   = "bob@bio-prod.iam.gserviceaccount.com"
)

func tokenFor(t *testing.T, key []byte, scopes ...string) (*auth.Token, error) {
	t.Helper()
	creds, err := credentials.NewCredentialsFromJSON(credentials.ServiceAccount, key, &credentials.DetectOptions{Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return creds.TokenProvider.Token(context.Background())
}

func httpStatus(err error) int {
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		return ae.Response.StatusCode
	}
	return 0
}

// The token endpoint verifies the assertion's RS256 signature with the
// issuer's public key: bob's key cannot get a token for alice.
func TestTokenEndpointVerifiesAssertion(t *testing.T) {
	s := New(t)
	a := s.AddServiceAccount(alice)
	b := s.AddServiceAccount(bob)

	tok, err := tokenFor(t, a.KeyJSON(), CloudPlatformScope)
	if err != nil {
		t.Fatalf("valid key: %v", err)
	}
	if email, scopes, _, ok := s.TokenInfo(tok.Value); !ok || email != alice || len(scopes) != 1 {
		t.Fatalf("token of %q %v", email, scopes)
	}

	var forged map[string]string
	_ = json.Unmarshal(b.KeyJSON(), &forged)
	forged["client_email"] = alice
	forged["private_key_id"] = a.KeyID
	fj, _ := json.Marshal(forged)

	var wrongAud map[string]string
	_ = json.Unmarshal(a.KeyJSON(), &wrongAud)
	wrongAud["token_uri"] = s.TokenURL() + "?aud=elsewhere"
	wj, _ := json.Marshal(wrongAud)

	tests := []struct {
		name   string
		key    []byte
		scopes []string
	}{
		{"signed with another key", fj, []string{CloudPlatformScope}},
		{"no scope", a.KeyJSON(), nil},
		{"wrong audience", wj, []string{CloudPlatformScope}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tokenFor(t, tt.key, tt.scopes...)
			if httpStatus(err) != 400 {
				t.Fatalf("got %v, want HTTP 400", err)
			}
		})
	}
	s.RevokeKey(alice)
	if _, err := tokenFor(t, a.KeyJSON(), CloudPlatformScope); httpStatus(err) != 400 {
		t.Fatalf("revoked key: %v", err)
	}
	if s.TokenFetches(alice) != 1 {
		t.Fatalf("token fetches %d, want 1", s.TokenFetches(alice))
	}
}

func dial(t *testing.T, s *Server) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(grpcinsecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func withToken(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

// Every gRPC call needs a bearer token the fake issued with cloud-platform scope.
func TestBearerCheck(t *testing.T) {
	s := New(t)
	a := s.AddServiceAccount(alice)
	s.MustAddVersion("bio-prod", "x", []byte("payload"))
	sm := secretmanagerpb.NewSecretManagerServiceClient(dial(t, s))
	req := &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/bio-prod/secrets/x/versions/latest"}

	good, err := tokenFor(t, a.KeyJSON(), CloudPlatformScope)
	if err != nil {
		t.Fatal(err)
	}
	narrow, err := tokenFor(t, a.KeyJSON(), "https://www.googleapis.com/auth/bigquery")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ctx  context.Context
		code codes.Code
	}{
		{"no token", context.Background(), codes.Unauthenticated},
		{"unknown token", withToken("ya29.made-up"), codes.Unauthenticated},
		{"narrow scope", withToken(narrow.Value), codes.PermissionDenied},
		{"good", withToken(good.Value), codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := sm.AccessSecretVersion(tt.ctx, req)
			if status.Code(err) != tt.code {
				t.Fatalf("code %v, want %v", status.Code(err), tt.code)
			}
			if err == nil {
				p := resp.GetPayload()
				if string(p.GetData()) != "payload" || p.DataCrc32C == nil ||
					*p.DataCrc32C != int64(crc32.Checksum(p.GetData(), crc32.MakeTable(crc32.Castagnoli))) {
					t.Fatalf("payload %q crc %v", p.GetData(), p.DataCrc32C)
				}
			}
		})
	}
	if calls := s.Calls(); len(calls) != 1 || calls[0].Email != alice {
		t.Fatalf("calls %+v, want one by alice", calls)
	}
	s.RevokeTokens()
	if _, err := sm.AccessSecretVersion(withToken(good.Value), req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked token: %v", err)
	}
}

// generateAccessToken enforces Token Creator at each hop, scopes and lifetime.
func TestGenerateAccessTokenRules(t *testing.T) {
	s := New(t)
	a := s.AddServiceAccount(alice)
	s.AddServiceAccount(bob)
	const target = "target@bio-prod.iam.gserviceaccount.com"
	s.AddServiceAccount(target)
	s.GrantTokenCreator(alice, bob)
	s.GrantTokenCreator(bob, target)
	iam := credentialspb.NewIAMCredentialsClient(dial(t, s))
	tok, err := tokenFor(t, a.KeyJSON(), CloudPlatformScope)
	if err != nil {
		t.Fatal(err)
	}
	ctx := withToken(tok.Value)
	sa := func(e string) string { return "projects/-/serviceAccounts/" + e }
	tests := []struct {
		name string
		req  *credentialspb.GenerateAccessTokenRequest
		code codes.Code
	}{
		{"direct without grant", &credentialspb.GenerateAccessTokenRequest{Name: sa(target), Scope: []string{CloudPlatformScope}}, codes.PermissionDenied},
		{"via delegate", &credentialspb.GenerateAccessTokenRequest{Name: sa(target), Delegates: []string{sa(bob)}, Scope: []string{CloudPlatformScope}}, codes.OK},
		{"direct hop granted", &credentialspb.GenerateAccessTokenRequest{Name: sa(bob), Scope: []string{CloudPlatformScope}}, codes.OK},
		{"no scope", &credentialspb.GenerateAccessTokenRequest{Name: sa(bob)}, codes.InvalidArgument},
		{"lifetime over 1h", &credentialspb.GenerateAccessTokenRequest{Name: sa(bob), Scope: []string{CloudPlatformScope},
			Lifetime: durationpb.New(2 * time.Hour)}, codes.InvalidArgument},
		{"project instead of -", &credentialspb.GenerateAccessTokenRequest{Name: "projects/bio-prod/serviceAccounts/" + bob,
			Scope: []string{CloudPlatformScope}}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := iam.GenerateAccessToken(ctx, tt.req)
			if status.Code(err) != tt.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tt.code)
			}
			if err == nil {
				email, _, exp, ok := s.TokenInfo(resp.GetAccessToken())
				if !ok || "projects/-/serviceAccounts/"+email != tt.req.Name || !exp.Equal(resp.GetExpireTime().AsTime()) {
					t.Fatalf("token of %q expiring %v", email, exp)
				}
			}
		})
	}
}

type loggingFake struct {
	loggingpb.UnimplementedLoggingServiceV2Server
	callers chan string
}

func (l *loggingFake) WriteLogEntries(ctx context.Context, _ *loggingpb.WriteLogEntriesRequest) (*loggingpb.WriteLogEntriesResponse, error) {
	email, _ := Caller(ctx)
	l.callers <- email
	return &loggingpb.WriteLogEntriesResponse{}, nil
}

// Another service registered on the fake shares its endpoint and bearer check.
func TestWithServiceSharesTheBearerCheck(t *testing.T) {
	lf := &loggingFake{callers: make(chan string, 1)}
	s := New(t, WithService(func(g *grpc.Server) { loggingpb.RegisterLoggingServiceV2Server(g, lf) }))
	a := s.AddServiceAccount(alice)
	tok, err := tokenFor(t, a.KeyJSON(), CloudPlatformScope)
	if err != nil {
		t.Fatal(err)
	}
	lc := loggingpb.NewLoggingServiceV2Client(dial(t, s))
	if _, err := lc.WriteLogEntries(context.Background(), &loggingpb.WriteLogEntriesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	if _, err := lc.WriteLogEntries(withToken(tok.Value), &loggingpb.WriteLogEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := <-lf.callers; got != alice {
		t.Fatalf("caller %q, want %s", got, alice)
	}
	if _, err := s.AddVersion("p1", "big", make([]byte, MaxPayload+1)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("payload over 64 KiB: %v", err)
	}
}

func FuzzParseJWT(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhIn0.c2ln")
	f.Add("a.b.c")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		_, _, signed, _, err := ParseJWT(s)
		if err == nil && len(signed) >= len(s) {
			t.Fatalf("signed part %q not shorter than %q", signed, s)
		}
	})
}
