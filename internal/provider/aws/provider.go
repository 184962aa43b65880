// Package aws is cloudbridge's AWS provider: it resolves secrets from AWS
// Secrets Manager with a connection's own credentials (access keys, the
// ECS/EC2 task role, the SDK default chain, each optionally assuming a role),
// checks versions cheaply with DescribeSecret, runs the connection test and
// vends short-lived credentials through STS.
package aws

import (
	"context"
	"errors"
	"net/http"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// Defaults of the SDK retryer used for every call of a connection.
const (
	// DefaultMaxAttempts bounds the attempts of one call, the first included.
	DefaultMaxAttempts = 4
	// DefaultMaxBackoff caps the jittered backoff between attempts.
	DefaultMaxBackoff = 2 * time.Second
	// DefaultRoleDuration is the AssumeRole session length when the
	// connection sets none (AWS's default maximum for a role).
	DefaultRoleDuration = time.Hour
)

// secretsAPI is the part of the Secrets Manager client the provider uses.
type secretsAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	DescribeSecret(ctx context.Context, in *secretsmanager.DescribeSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
}

// stsAPI is the part of the STS client the provider uses.
type stsAPI interface {
	GetCallerIdentity(ctx context.Context, in *sts.GetCallerIdentityInput, optFns ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error)
	AssumeRole(ctx context.Context, in *sts.AssumeRoleInput, optFns ...func(*sts.Options)) (*sts.AssumeRoleOutput, error)
	GetSessionToken(ctx context.Context, in *sts.GetSessionTokenInput, optFns ...func(*sts.Options)) (*sts.GetSessionTokenOutput, error)
}

// Provider reads one connection's secrets from AWS Secrets Manager. It
// implements provider.Resolver, VersionChecker, Prober, Tokener and Closer.
// It is safe for concurrent use.
type Provider struct {
	conn string
	aws  events.AWSConfig
	log  zerolog.Logger
	// tokens and secrets narrow vended credentials: the lifetime cap, and
	// the secrets an assumed role's session policy lets them read.
	tokens  *events.TokenPolicy
	secrets []string

	cfg     awssdk.Config // final credentials (after AssumeRole)
	creds   *awssdk.CredentialsCache
	base    *awssdk.CredentialsCache // before AssumeRole; == creds without a role
	sm      secretsAPI
	sts     stsAPI // signed with creds
	stsBase stsAPI // signed with base
}

var (
	_ provider.Resolver       = (*Provider)(nil)
	_ provider.VersionChecker = (*Provider)(nil)
	_ provider.Prober         = (*Provider)(nil)
	_ provider.Tokener        = (*Provider)(nil)
	_ provider.Closer         = (*Provider)(nil)
)

type options struct {
	log         zerolog.Logger
	maxAttempts int
	maxBackoff  time.Duration
	httpClient  *http.Client
}

// Option configures New.
type Option func(*options)

// WithLogger sets the logger (default zerolog.Nop()).
func WithLogger(l zerolog.Logger) Option { return func(o *options) { o.log = l } }

// WithRetry sets the SDK retryer's attempts per call (first included) and its
// maximum jittered backoff; throttling and 5xx replies are retried within
// these bounds before the call fails. Defaults: DefaultMaxAttempts,
// DefaultMaxBackoff.
func WithRetry(maxAttempts int, maxBackoff time.Duration) Option {
	return func(o *options) {
		if maxAttempts > 0 {
			o.maxAttempts = maxAttempts
		}
		if maxBackoff > 0 {
			o.maxBackoff = maxBackoff
		}
	}
}

// WithHTTPClient sets the HTTP client for AWS API calls (default: the SDK's).
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// noRetryCredentials stops the retryer of a signed call from retrying a
// failure to obtain its credentials.
var noRetryCredentials = retry.IsErrorRetryableFunc(func(err error) awssdk.Ternary {
	var ce *credentialsError
	if errors.As(err, &ce) {
		return awssdk.FalseTernary
	}
	return awssdk.UnknownTernary
})

// New builds the provider of an AWS connection: its credentials (one cache
// per connection, never shared), and its Secrets Manager and STS clients.
// Errors are bad_request for an invalid connection and unavailable when the
// default chain cannot be loaded. No AWS call is made.
func New(ctx context.Context, conn events.Connection, opts ...Option) (*Provider, error) {
	if conn.Provider != events.ProviderAWS || conn.AWS == nil {
		return nil, events.Errorf(events.CodeBadRequest, "connection %q: not an aws connection", conn.Name)
	}
	if err := validate(conn.AWS); err != nil {
		return nil, err
	}
	o := options{log: zerolog.Nop(), maxAttempts: DefaultMaxAttempts, maxBackoff: DefaultMaxBackoff}
	for _, fn := range opts {
		fn(&o)
	}
	p := &Provider{conn: conn.Name, aws: *conn.AWS, log: o.log.With().Str("conn", conn.Name).Logger(),
		tokens: conn.Tokens, secrets: append([]string(nil), conn.Secrets...)}
	retryer := func() awssdk.Retryer {
		return retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = o.maxAttempts
			so.MaxBackoff = o.maxBackoff
			// A credentials source retries on its own (IMDS, the container
			// endpoint and STS have their retryers); retrying the signed
			// call around it would multiply the attempts.
			so.Retryables = append([]retry.IsErrorRetryable{noRetryCredentials}, so.Retryables...)
		})
	}
	baseCfg, err := p.baseConfig(ctx, retryer, o.httpClient)
	if err != nil {
		return nil, err
	}
	p.base = baseCfg.Credentials.(*awssdk.CredentialsCache)
	stsBase := sts.NewFromConfig(baseCfg)
	p.stsBase = stsBase
	p.cfg = baseCfg
	p.creds = p.base
	if p.aws.RoleARN != "" {
		p.creds = newCache(p.assumeRoleProvider(stsBase))
		p.cfg = baseCfg.Copy()
		p.cfg.Credentials = p.creds
	}
	p.sm = secretsmanager.NewFromConfig(p.cfg)
	p.sts = sts.NewFromConfig(p.cfg)
	p.log.Debug().Str("auth", p.aws.Auth).Bool("assume_role", p.aws.RoleARN != "").
		Bool("endpoint_override", p.aws.Endpoint != "").Msg("aws provider ready")
	return p, nil
}

// Config returns the connection's SDK configuration: region, its own cached
// credentials (after AssumeRole), the retryer and, when the connection sets
// an endpoint, BaseEndpoint. Other AWS clients of the connection (CloudWatch
// Logs) are built from it with NewFromConfig.
func (p *Provider) Config() awssdk.Config { return p.cfg.Copy() }

// Close drops the cached credentials. It never fails.
func (p *Provider) Close() error {
	p.creds.Invalidate()
	p.base.Invalidate()
	return nil
}

// Factory returns a provider.Factory building AWS providers with opts.
func Factory(opts ...Option) provider.Factory {
	return func(ctx context.Context, conn events.Connection) (provider.Resolver, error) {
		p, err := New(ctx, conn, opts...)
		if err != nil {
			return nil, err // not a typed nil *Provider
		}
		return p, nil
	}
}

// SDKConfig builds the SDK configuration of an AWS connection (region, its
// own credentials cache, AssumeRole, endpoint override) for other AWS clients
// such as CloudWatch Logs; it fits workers/export.NewSinkFactory.
func SDKConfig(ctx context.Context, conn events.Connection, opts ...Option) (awssdk.Config, error) {
	p, err := New(ctx, conn, opts...)
	if err != nil {
		return awssdk.Config{}, err
	}
	return p.Config(), nil
}
