// Package gcp is the Google Cloud provider: it resolves secrets from Google
// Secret Manager, vends OAuth2 access tokens (for BigQuery connections) and
// hands the connection's credentials to the Cloud Logging sink.
//
// A connection authenticates with a service-account JSON key, by impersonating
// a service account through IAM Credentials generateAccessToken (the caller
// being the key on the connection or the worker's Application Default
// Credentials), or with Application Default Credentials. Each connection has
// one token cache, refreshed before expiry, with concurrent requests waiting
// on one shared fetch.
package gcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/oauth2adapt"
	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/googleapis/gax-go/v2"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"

	"github.com/cloudbridge/cloudbridge/events"
)

// CloudPlatformScope is the default OAuth scope: Secret Manager, Logging and
// IAM Credentials all accept it.
const CloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

// MaxTokenLifetime is the longest access token cloudbridge vends: the limit of
// generateAccessToken without the org policy, and the lifetime of the tokens
// Google's token endpoint issues.
const MaxTokenLifetime = time.Hour

// secretAccessor is the part of the Secret Manager client the provider uses.
type secretAccessor interface {
	AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest, opts ...gax.CallOption) (*secretmanagerpb.AccessSecretVersionResponse, error)
	Close() error
}

// tokenGenerator is the part of the IAM Credentials client the provider uses.
type tokenGenerator interface {
	GenerateAccessToken(ctx context.Context, req *credentialspb.GenerateAccessTokenRequest, opts ...gax.CallOption) (*credentialspb.GenerateAccessTokenResponse, error)
	Close() error
}

// Option configures a Provider.
type Option func(*settings)

type settings struct {
	log          zerolog.Logger
	earlyRefresh time.Duration
	attempts     int
	backoff      gax.Backoff
	tlsConfig    *tls.Config
}

// WithLogger sets the logger (default zerolog.Nop()).
func WithLogger(l zerolog.Logger) Option { return func(s *settings) { s.log = l } }

// WithEarlyRefresh sets how long before expiry a cached token is refreshed
// (default 5 minutes).
func WithEarlyRefresh(d time.Duration) Option { return func(s *settings) { s.earlyRefresh = d } }

// WithRetry sets how often a throttled (ResourceExhausted) Secret Manager call
// is tried in all, and the exponential backoff between tries (default 4 tries,
// 250ms doubling up to 4s, with jitter).
func WithRetry(attempts int, initial, max time.Duration) Option {
	return func(s *settings) {
		s.attempts = attempts
		s.backoff = gax.Backoff{Initial: initial, Max: max, Multiplier: 2}
	}
}

// WithTLSConfig sets the TLS configuration for an https:// endpoint (for
// example a private CA); the default uses the system roots.
func WithTLSConfig(c *tls.Config) Option { return func(s *settings) { s.tlsConfig = c } }

// Provider is the provider of one GCP connection. It is safe for concurrent use.
type Provider struct {
	// tokens narrows vended tokens: the scopes a requester may ask for and
	// the lifetime cap (nil: no narrowing; the worker refuses token
	// requests of a connection without it).
	tokens   *events.TokenPolicy
	cfg      events.GCPConfig
	log      zerolog.Logger
	set      settings
	endpoint endpoint

	creds       *auth.Credentials // the connection's own identity, cloud-platform scope
	identity    string            // the service-account email in use
	caller      string            // impersonation: the caller's identity
	callerCreds *auth.Credentials // impersonation: the caller's credentials
	project     string            // default project for short names; may be empty
	key         []byte            // the service-account key, if any

	sm  secretAccessor
	iam tokenGenerator

	mu        sync.Mutex
	scoped    map[string]auth.TokenProvider
	closeOnce sync.Once
	closeErr  error
}

// New builds the provider of a GCP connection (sensitive fields in clear). It
// reads credentials and dials lazily: no call leaves the process until a
// secret, a token or a probe is asked for.
func New(ctx context.Context, conn events.Connection, opts ...Option) (*Provider, error) {
	set := settings{log: zerolog.Nop(), earlyRefresh: 5 * time.Minute, attempts: 4,
		backoff: gax.Backoff{Initial: 250 * time.Millisecond, Max: 4 * time.Second, Multiplier: 2}}
	for _, o := range opts {
		o(&set)
	}
	if set.attempts < 1 {
		set.attempts = 1
	}
	if conn.GCP == nil {
		return nil, events.Errorf(events.CodeBadRequest, "gcp: required with provider gcp")
	}
	if err := validate(conn.GCP); err != nil {
		return nil, err
	}
	ep, err := parseEndpoint(conn.GCP.Endpoint)
	if err != nil {
		return nil, err
	}
	p := &Provider{
		tokens:   conn.Tokens,
		cfg:      *conn.GCP,
		log:      set.log.With().Str("conn", conn.Name).Logger(),
		set:      set,
		endpoint: ep,
		project:  conn.GCP.Project,
		scoped:   map[string]auth.TokenProvider{},
	}
	dialCtx := context.WithoutCancel(ctx)
	switch conn.GCP.Auth {
	case events.GCPAuthServiceAccountKey:
		err = p.initKey()
	case events.GCPAuthImpersonation:
		err = p.initImpersonation(dialCtx)
	case events.GCPAuthDefault:
		err = p.initDefault(dialCtx)
	default:
		err = events.Errorf(events.CodeBadRequest, "gcp.auth: %q is not supported", conn.GCP.Auth)
	}
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	sm, err := secretmanager.NewClient(dialCtx, clientOptions(ep, p.creds, set.tlsConfig)...)
	if err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("creating Secret Manager client: %w", events.Wrap(events.CodeInternal, err, "cannot create the Secret Manager client"))
	}
	// Retries are ours (ResourceExhausted only, bounded); the client's own
	// default would retry for minutes.
	sm.CallOptions.AccessSecretVersion = nil
	p.sm = sm
	return p, nil
}

// Close releases the provider's gRPC connections. Calls after the first
// return the first's result; the provider must not be used after Close.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.sm != nil {
			errs = append(errs, p.sm.Close())
		}
		if p.iam != nil {
			errs = append(errs, p.iam.Close())
		}
		if err := errors.Join(errs...); err != nil {
			p.closeErr = fmt.Errorf("closing gcp clients: %w", err)
		}
	})
	return p.closeErr
}

// Identity is the service-account email the connection acts as (the target
// for impersonation), or a description of the credentials when no email is known.
func (p *Provider) Identity() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.identity
}

// Credentials are the connection's credentials, scoped for cloud-platform,
// with the connection's token cache.
func (p *Provider) Credentials() *auth.Credentials { return p.creds }

// TokenSource is the connection's token cache as an oauth2.TokenSource
// (cloud-platform scope).
func (p *Provider) TokenSource() oauth2.TokenSource {
	return oauth2adapt.TokenSourceFromTokenProvider(p.creds.TokenProvider)
}

// ClientOptions are the options for a Google Cloud gRPC client (Cloud
// Logging, for example) acting as this connection: the connection's endpoint
// if set (plaintext with the token as bearer metadata for http://, TLS for
// https://) and its credentials.
func (p *Provider) ClientOptions() []option.ClientOption {
	return clientOptions(p.endpoint, p.creds, p.set.tlsConfig)
}

// Project is the connection's project: gcp.project, else the key's or the
// impersonated account's project; empty when unknown.
func (p *Provider) Project() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.project
}

// endpoint is a parsed gcp.endpoint.
type endpoint struct {
	scheme string // "", "http" or "https"
	host   string // host:port
}

func parseEndpoint(s string) (endpoint, error) {
	if s == "" {
		return endpoint{}, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return endpoint{}, events.Errorf(events.CodeBadRequest, "gcp.endpoint: %q is not http(s)://host[:port]", s)
	}
	host := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			host += ":443"
		} else {
			host += ":80"
		}
	}
	return endpoint{scheme: u.Scheme, host: host}, nil
}
