package aws

import (
	"context"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// AWS's limits on session durations.
const (
	minSession           = 15 * time.Minute
	maxAssumeRoleSession = 12 * time.Hour
	maxSessionToken      = 36 * time.Hour
	// DefaultTokenDuration is the lifetime of vended credentials when the
	// request names none.
	DefaultTokenDuration = time.Hour
)

// Token vends short-lived credentials for the connection: a fresh AssumeRole
// session when role_arn is set, else GetSessionToken for long-term access
// keys, else the current temporary credentials of the task role or default
// chain (their own lifetime; the requested duration does not apply). The
// duration must be between 15m and 12h for AssumeRole (and within the role's
// maximum) or 36h for GetSessionToken.
func (p *Provider) Token(ctx context.Context, req events.TokenRequest) (*events.TokenReply, error) {
	d := req.Duration.D()
	if d == 0 {
		d = DefaultTokenDuration
		if p.aws.RoleARN != "" && p.aws.Duration != 0 {
			d = p.aws.Duration.D()
		}
	}
	if d < minSession {
		return nil, events.Errorf(events.CodeBadRequest, "duration: at least 15m for AWS credentials")
	}
	if p.aws.RoleARN != "" {
		if d > maxAssumeRoleSession {
			return nil, events.Errorf(events.CodeBadRequest, "duration: at most 12h for an assumed role")
		}
		return p.assumeRoleToken(ctx, d)
	}
	c, err := p.base.Retrieve(ctx)
	if err != nil {
		return nil, mapError(ctx, "credentials", "", err)
	}
	if c.SessionToken != "" {
		// Already temporary (task role, or keys given with a session token).
		return reply(c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.Expires), nil
	}
	if d > maxSessionToken {
		return nil, events.Errorf(events.CodeBadRequest, "duration: at most 36h for GetSessionToken")
	}
	start := time.Now()
	out, err := p.stsBase.GetSessionToken(ctx, &sts.GetSessionTokenInput{DurationSeconds: awssdk.Int32(int32(d / time.Second))})
	err = mapError(ctx, "GetSessionToken", "", err)
	metrics.ObserveUpstream("aws", "GetSessionToken", start, err)
	if err != nil {
		return nil, err
	}
	return fromSTS(out.Credentials)
}

func (p *Provider) assumeRoleToken(ctx context.Context, d time.Duration) (*events.TokenReply, error) {
	in := &sts.AssumeRoleInput{
		RoleArn:         awssdk.String(p.aws.RoleARN),
		RoleSessionName: awssdk.String(p.sessionName()),
		DurationSeconds: awssdk.Int32(int32(d / time.Second)),
	}
	if p.aws.ExternalID != "" {
		in.ExternalId = awssdk.String(p.aws.ExternalID)
	}
	start := time.Now()
	out, err := p.stsBase.AssumeRole(ctx, in)
	err = mapError(ctx, "AssumeRole", p.aws.RoleARN, err)
	metrics.ObserveUpstream("aws", "AssumeRole", start, err)
	if err != nil {
		return nil, err
	}
	return fromSTS(out.Credentials)
}

func fromSTS(c *types.Credentials) (*events.TokenReply, error) {
	if c == nil {
		return nil, events.Errorf(events.CodeUnavailable, "aws: STS returned no credentials")
	}
	return reply(awssdk.ToString(c.AccessKeyId), awssdk.ToString(c.SecretAccessKey),
		awssdk.ToString(c.SessionToken), awssdk.ToTime(c.Expiration)), nil
}

func reply(id, key, token string, exp time.Time) *events.TokenReply {
	return &events.TokenReply{Provider: events.ProviderAWS, AWS: &events.AWSCredentials{
		AccessKeyID: id, SecretAccessKey: key, SessionToken: token, Expiration: exp.UTC()}}
}
