// Package gcpfake holds in-process stand-ins for the Google Cloud APIs that
// cloudbridge calls: one gRPC server on 127.0.0.1 serving Secret Manager and
// IAM Credentials (and any other service a test registers on it, such as a
// Cloud Logging fake), and an OAuth2 token endpoint that service-account keys
// point at through their token_uri.
//
// The fakes speak the real wire protocols and enforce the real rules: every
// gRPC call must carry "authorization: Bearer <token>" with a token this fake
// issued, unexpired and scoped for cloud-platform; the token endpoint verifies
// the RS256 signature of the JWT assertion with the service account's public
// key; generateAccessToken checks Token Creator at every hop of the delegation
// chain and a lifetime of at most one hour; Secret Manager payloads carry a
// CRC32C and are limited to 64 KiB.
package gcpfake

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// CloudPlatformScope is the scope Secret Manager, Logging and IAM Credentials accept.
const CloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

// Call is one authenticated gRPC call the fake received.
type Call struct {
	// Method is the short method name, e.g. "AccessSecretVersion".
	Method string
	// Email is the identity whose token authorized the call.
	Email string
	// Token is the bearer token that was presented.
	Token string
	// Resource is the request's name field when it has one, e.g.
	// "projects/P/secrets/S/versions/latest" for AccessSecretVersion.
	Resource string
}

// Option configures the fake.
type Option func(*Server)

// WithService registers another gRPC service on the fake's server before it
// starts, so one endpoint serves Secret Manager, IAM Credentials and, for
// example, a Cloud Logging fake. The registered service gets the same bearer
// check; it can read the caller with Caller(ctx).
func WithService(register func(*grpc.Server)) Option {
	return func(s *Server) { s.register = append(s.register, register) }
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	grpc     *grpc.Server
	addr     string
	oauth    *httptest.Server
	register []func(*grpc.Server)
	tls      bool
	pool     *x509.CertPool

	mu            sync.Mutex
	accounts      map[string]*ServiceAccount
	tokens        map[string]issued
	lifetime      map[string]time.Duration
	grants        map[[2]string]bool
	secrets       map[string]*secret
	faults        map[string][]Fault
	delays        map[string]time.Duration
	calls         []Call
	tokenFetches  map[string]int
	generateCalls map[string]int
	projectNumber map[string]string
}

type issued struct {
	email  string
	scopes []string
	expiry time.Time
}

type callerKey struct{}

// Caller returns the email of the identity that authorized the gRPC call of ctx.
func Caller(ctx context.Context) (string, bool) {
	e, ok := ctx.Value(callerKey{}).(string)
	return e, ok
}

// New starts the fake; it stops when the test ends.
func New(t testenv.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		accounts:      map[string]*ServiceAccount{},
		tokens:        map[string]issued{},
		lifetime:      map[string]time.Duration{},
		grants:        map[[2]string]bool{},
		secrets:       map[string]*secret{},
		faults:        map[string][]Fault{},
		delays:        map[string]time.Duration{},
		tokenFetches:  map[string]int{},
		generateCalls: map[string]int{},
		projectNumber: map[string]string{},
	}
	for _, o := range opts {
		o(s)
	}
	s.oauth = httptest.NewServer(s.tokenHandler())
	t.Cleanup(s.oauth.Close)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gcpfake: listen: %v", err)
	}
	s.addr = lis.Addr().String()
	sopts := []grpc.ServerOption{grpc.UnaryInterceptor(s.authorize)}
	if s.tls {
		creds, err := s.serverTLS()
		if err != nil {
			t.Fatalf("gcpfake: TLS certificate: %v", err)
		}
		sopts = append(sopts, grpc.Creds(creds))
	}
	s.grpc = grpc.NewServer(sopts...)
	secretmanagerpb.RegisterSecretManagerServiceServer(s.grpc, &secretManager{s: s})
	credentialspb.RegisterIAMCredentialsServer(s.grpc, &iamCredentials{s: s})
	for _, r := range s.register {
		r(s.grpc)
	}
	go func() { _ = s.grpc.Serve(lis) }()
	t.Cleanup(s.grpc.Stop)
	return s
}

// Addr is the gRPC server's host:port.
func (s *Server) Addr() string { return s.addr }

// Endpoint is the gRPC endpoint as a connection's gcp.endpoint: http://
// (plaintext), or https:// with WithTLS.
func (s *Server) Endpoint() string {
	if s.tls {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// TokenURL is the OAuth2 token endpoint that service-account keys point at.
func (s *Server) TokenURL() string { return s.oauth.URL + "/token" }

// authorize is the bearer check every gRPC call goes through: the token must
// be one this fake issued, unexpired, with the cloud-platform scope. It
// records the call and puts the caller's email in the context.
func (s *Server) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		return nil, status.Error(codes.Unauthenticated, "Request is missing required authentication credential. Expected OAuth 2 access token.")
	}
	token := strings.TrimPrefix(auth[0], "Bearer ")
	s.mu.Lock()
	tok, ok := s.tokens[token]
	s.mu.Unlock()
	if !ok || time.Now().After(tok.expiry) {
		return nil, status.Error(codes.Unauthenticated, "Request had invalid authentication credentials. Expected OAuth 2 access token.")
	}
	if !contains(tok.scopes, CloudPlatformScope) {
		return nil, status.Error(codes.PermissionDenied, "Request had insufficient authentication scopes.")
	}
	s.mu.Lock()
	resource := ""
	if n, ok := req.(interface{ GetName() string }); ok {
		resource = n.GetName()
	}
	s.calls = append(s.calls, Call{Method: method, Email: tok.email, Token: token, Resource: resource})
	s.mu.Unlock()
	ctx = context.WithValue(ctx, callerKey{}, tok.email)
	if err := s.inject(ctx, method); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Calls returns the authenticated gRPC calls received so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsBy returns how many calls of method the identity email made.
func (s *Server) CallsBy(method, email string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.Method == method && c.Email == email {
			n++
		}
	}
	return n
}

// issue mints an access token for email.
func (s *Server) issue(email string, scopes []string, lifetime time.Duration) (string, time.Time) {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	token := "ya29.fake-" + hex.EncodeToString(b)
	exp := time.Now().Add(lifetime)
	s.mu.Lock()
	s.tokens[token] = issued{email: email, scopes: append([]string(nil), scopes...), expiry: exp}
	s.mu.Unlock()
	return token, exp
}

// TokenInfo reports the identity, scopes and expiry of a token the fake issued.
func (s *Server) TokenInfo(token string) (email string, scopes []string, expiry time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[token]
	return t.email, append([]string(nil), t.scopes...), t.expiry, ok
}

// RevokeTokens makes every token issued so far invalid, as if they expired.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]issued{}
}

// SetTokenLifetime sets the lifetime of tokens issued to email by the token
// endpoint from now on (default one hour).
func (s *Server) SetTokenLifetime(email string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime[email] = d
}

func (s *Server) tokenLifetime(email string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.lifetime[email]; ok {
		return d
	}
	return time.Hour
}

// TokenFetches is how many access tokens the token endpoint granted to email.
func (s *Server) TokenFetches(email string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenFetches[email]
}

// GenerateCalls is how many tokens generateAccessToken minted for target.
func (s *Server) GenerateCalls(target string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.generateCalls[target]
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
