package aws

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/cloudbridge/cloudbridge/events"
)

// Environment variables of the ECS/EKS container credentials endpoint, read
// by auth task_role.
const (
	EnvContainerFullURI     = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
	EnvContainerRelativeURI = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
	EnvContainerToken       = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
	EnvContainerTokenFile   = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
)

// ecsHost is the link-local host of the ECS credentials endpoint for
// relative URIs (a variable so tests can point it at a fake).
var ecsHost = "http://169.254.170.2"

// Credential refresh: cached credentials are renewed this long before they
// expire (jittered), so requests never wait on an expired session.
const (
	expiryWindow       = 5 * time.Minute
	expiryWindowJitter = 0.2
)

func newCache(p awssdk.CredentialsProvider) *awssdk.CredentialsCache {
	return awssdk.NewCredentialsCache(p, func(o *awssdk.CredentialsCacheOptions) {
		o.ExpiryWindow = expiryWindow
		o.ExpiryWindowJitterFrac = expiryWindowJitter
	})
}

// stageAssumeRole is the credentials stage of the AssumeRole on top of the base credentials.
const stageAssumeRole = "assume_role"

// credentialsError marks a failure to obtain the connection's credentials.
type credentialsError struct {
	stage string // "access_key", "task_role", "default", "assume_role"
	err   error
}

func (e *credentialsError) Error() string {
	return "obtaining credentials (" + e.stage + "): " + e.err.Error()
}
func (e *credentialsError) Unwrap() error { return e.err }

// staged tags the errors of a credentials provider with its stage.
type staged struct {
	stage string
	p     awssdk.CredentialsProvider
}

// Retrieve implements aws.CredentialsProvider.
func (s staged) Retrieve(ctx context.Context) (awssdk.Credentials, error) {
	c, err := s.p.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{stage: s.stage, err: err}
	}
	return c, nil
}

// HandleFailToRefresh keeps the inner provider's static-stability strategy
// (EC2 role credentials stay usable a little longer when IMDS is down).
func (s staged) HandleFailToRefresh(ctx context.Context, prev awssdk.Credentials, err error) (awssdk.Credentials, error) {
	if h, ok := s.p.(awssdk.HandleFailRefreshCredentialsCacheStrategy); ok {
		return h.HandleFailToRefresh(ctx, prev, err)
	}
	return awssdk.Credentials{}, err
}

// AdjustExpiresBy keeps the inner provider's expiry adjustment strategy.
func (s staged) AdjustExpiresBy(c awssdk.Credentials, d time.Duration) (awssdk.Credentials, error) {
	if a, ok := s.p.(awssdk.AdjustExpiresByCredentialsCacheStrategy); ok {
		return a.AdjustExpiresBy(c, d)
	}
	if c.CanExpire {
		c.Expires = c.Expires.Add(d)
	}
	return c, nil
}

// baseConfig is the SDK config with the connection's own credentials, before
// any AssumeRole.
func (p *Provider) baseConfig(ctx context.Context, retryer func() awssdk.Retryer, hc *http.Client) (awssdk.Config, error) {
	a := p.aws
	cfg := awssdk.Config{Region: a.Region, Retryer: retryer}
	if hc != nil {
		cfg.HTTPClient = hc
	}
	var src awssdk.CredentialsProvider
	switch a.Auth {
	case events.AWSAuthAccessKey:
		src = credentials.NewStaticCredentialsProvider(a.AccessKeyID, a.SecretAccessKey, a.SessionToken)
	case events.AWSAuthTaskRole:
		var err error
		if src, err = taskRoleProvider(retryer); err != nil {
			return awssdk.Config{}, err
		}
	case events.AWSAuthDefault:
		lopts := []func(*config.LoadOptions) error{config.WithRegion(a.Region), config.WithRetryer(retryer)}
		if hc != nil {
			lopts = append(lopts, config.WithHTTPClient(hc))
		}
		dc, err := config.LoadDefaultConfig(ctx, lopts...)
		if err != nil {
			// The error text can quote a shared config file; keep it out of replies.
			return awssdk.Config{}, events.Wrap(events.CodeUnavailable, err,
				"aws: loading the default credential chain failed (check AWS_* environment and shared config files)")
		}
		if dc.Credentials == nil {
			return awssdk.Config{}, events.Errorf(events.CodeUnauthorized, "aws: the default credential chain found no credentials")
		}
		cfg = dc
		cfg.Region = a.Region
		src = dc.Credentials
	default:
		return awssdk.Config{}, events.Errorf(events.CodeBadRequest, "aws.auth: %q is not supported", a.Auth)
	}
	cfg.Credentials = newCache(staged{stage: a.Auth, p: src})
	if a.Endpoint != "" {
		cfg.BaseEndpoint = awssdk.String(a.Endpoint)
	} else {
		cfg.BaseEndpoint = nil
	}
	return cfg, nil
}

// taskRoleProvider is the container credentials endpoint when the ECS/EKS
// environment names one, else EC2 instance metadata with IMDSv2 session
// tokens only (no IMDSv1 fallback).
func taskRoleProvider(retryer func() awssdk.Retryer) (awssdk.CredentialsProvider, error) {
	rel, full := os.Getenv(EnvContainerRelativeURI), os.Getenv(EnvContainerFullURI)
	var endpoint string
	switch {
	case rel != "":
		endpoint = ecsHost + rel
	case full != "":
		if err := checkContainerURL(full); err != nil {
			return nil, err
		}
		endpoint = full
	default:
		return ec2rolecreds.New(func(o *ec2rolecreds.Options) {
			o.Client = imds.New(imds.Options{EnableFallback: awssdk.FalseTernary, Retryer: retryer()})
		}), nil
	}
	return endpointcreds.New(endpoint, func(o *endpointcreds.Options) {
		o.Retryer = retryer()
		if file := os.Getenv(EnvContainerTokenFile); file != "" {
			// Read on every refresh: the agent rotates the file.
			o.AuthorizationTokenProvider = endpointcreds.TokenProviderFunc(func() (string, error) {
				b, err := os.ReadFile(file)
				if err != nil {
					return "", fmt.Errorf("reading %s: %w", EnvContainerTokenFile, err)
				}
				return strings.TrimSpace(string(b)), nil
			})
		} else {
			o.AuthorizationToken = os.Getenv(EnvContainerToken)
		}
	}), nil
}

// checkContainerURL allows what the SDK allows for a full container URI:
// https anywhere, http only to loopback or the ECS/EKS link-local addresses.
func checkContainerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return events.Errorf(events.CodeBadRequest, "aws: %s is not an http(s) URL", EnvContainerFullURI)
	}
	if u.Scheme == "https" {
		return nil
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip != nil && (ip.IsLoopback() || ip.Equal(net.IPv4(169, 254, 170, 2)) || ip.Equal(net.IPv4(169, 254, 170, 23)) ||
		ip.Equal(net.ParseIP("fd00:ec2::23"))) {
		return nil
	}
	return events.Errorf(events.CodeBadRequest, "aws: %s over http must point at loopback or the ECS/EKS agent address", EnvContainerFullURI)
}

// sessionName is the AssumeRole session name: the connection's, else
// "cloudbridge-<conn>" (at most 64 characters).
func (p *Provider) sessionName() string {
	if p.aws.SessionName != "" {
		return p.aws.SessionName
	}
	n := "cloudbridge-" + p.conn
	if len(n) > 64 {
		n = n[:64]
	}
	return n
}

func (p *Provider) roleDuration() time.Duration {
	if d := p.aws.Duration.D(); d > 0 {
		return d
	}
	return DefaultRoleDuration
}

// assumeRoleProvider assumes the connection's role with the base credentials,
// refreshed by its cache before the session expires.
func (p *Provider) assumeRoleProvider(client stscreds.AssumeRoleAPIClient) awssdk.CredentialsProvider {
	ar := stscreds.NewAssumeRoleProvider(client, p.aws.RoleARN, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = p.sessionName()
		o.Duration = p.roleDuration()
		if p.aws.ExternalID != "" {
			o.ExternalID = awssdk.String(p.aws.ExternalID)
		}
	})
	return staged{stage: stageAssumeRole, p: ar}
}
