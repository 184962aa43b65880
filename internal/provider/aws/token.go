package aws

import (
	"context"
	"encoding/json"
	"strings"
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
//
// The connection's tokens.max_duration caps the lifetime (a longer request,
// or a longer default, gets the cap). An assumed role's session carries a
// session policy that lets it read only the secrets the connection's
// allowlist names (AssumeRole's Policy parameter; the effective permissions
// are the role's intersected with it). GetSessionToken accepts no policy:
// its credentials have the keys' own permissions, for their capped lifetime.
func (p *Provider) Token(ctx context.Context, req events.TokenRequest) (*events.TokenReply, error) {
	if len(req.Scopes) > 0 {
		return nil, events.Errorf(events.CodeBadRequest, "scopes: AWS credentials have no OAuth scopes")
	}
	def := DefaultTokenDuration
	if p.aws.RoleARN != "" && p.aws.Duration != 0 {
		def = p.aws.Duration.D()
	}
	d := p.tokens.Cap(req.Duration.D(), def)
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
	policy, err := SessionPolicy(p.aws.Region, p.secrets)
	if err != nil {
		return nil, err
	}
	in.Policy = awssdk.String(policy)
	start := time.Now()
	out, err := p.stsBase.AssumeRole(ctx, in)
	err = mapError(ctx, "AssumeRole", p.aws.RoleARN, err)
	metrics.ObserveUpstream("aws", "AssumeRole", start, err)
	if err != nil {
		return nil, err
	}
	return fromSTS(out.Credentials)
}

// maxSessionPolicy is AWS's limit on a packed inline session policy.
const maxSessionPolicy = 2048

// SessionPolicy is the session policy of vended assumed-role credentials:
// secretsmanager:GetSecretValue and DescribeSecret on the secrets matching
// the connection's allowlist (names become ARNs of the connection's region,
// any account, with Secrets Manager's six-character suffix; ARNs stay), or
// nothing at all for an empty allowlist.
func SessionPolicy(region string, secrets []string) (string, error) {
	type statement struct {
		Effect   string   `json:"Effect"`
		Action   []string `json:"Action"`
		Resource []string `json:"Resource"`
	}
	st := statement{Effect: "Allow", Action: []string{"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}}
	for _, pat := range secrets {
		if strings.HasPrefix(pat, "arn:") {
			st.Resource = append(st.Resource, pat)
			continue
		}
		st.Resource = append(st.Resource, "arn:"+partition(region)+":secretsmanager:"+region+":*:secret:"+pat+"-??????")
	}
	if len(st.Resource) == 0 {
		st = statement{Effect: "Deny", Action: []string{"*"}, Resource: []string{"*"}}
	}
	b, err := json.Marshal(struct {
		Version   string      `json:"Version"`
		Statement []statement `json:"Statement"`
	}{"2012-10-17", []statement{st}})
	if err != nil {
		return "", err
	}
	if len(b) > maxSessionPolicy {
		return "", events.Errorf(events.CodeBadRequest,
			"secrets: the connection's allowlist makes a session policy of %d bytes, over AWS's %d; use fewer or wider patterns to vend credentials", len(b), maxSessionPolicy)
	}
	return string(b), nil
}

// partition is the AWS partition of a region.
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
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
