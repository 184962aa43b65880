package aws

import (
	"regexp"
	"strings"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// Kind is the AWS provider's entry in the provider table: the aws block of a
// connection and the factory of its providers.
var Kind provider.Kind = kind{}

type kind struct{}

var (
	regionRE     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	roleARNRE    = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)
	sessionRE    = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

func (kind) Name() string { return events.ProviderAWS }

func (kind) HasBlock(c *events.Connection) bool { return c.AWS != nil }

func (kind) Validate(c *events.Connection) error {
	if c.AWS == nil {
		return events.Errorf(events.CodeBadRequest, "aws: required with provider aws")
	}
	if err := validate(c.AWS); err != nil {
		return err
	}
	return validateTokens(c.Tokens, c.AWS)
}

// validateTokens checks the connection's token policy against what AWS
// can vend: no OAuth scopes (AWS credentials are narrowed by a session
// policy to the connection's secrets instead), and an assumed role lasts at
// most 12h.
func validateTokens(t *events.TokenPolicy, a *events.AWSConfig) error {
	if t == nil {
		return nil
	}
	if len(t.Scopes) > 0 {
		return events.Errorf(events.CodeBadRequest, "tokens.scopes: only for provider gcp (AWS credentials are narrowed to the connection's secrets)")
	}
	if a.RoleARN != "" && t.MaxDuration.D() > maxAssumeRoleSession {
		return events.Errorf(events.CodeBadRequest, "tokens.max_duration: at most 12h for an assumed role")
	}
	return nil
}

// validate checks the aws block.
func validate(a *events.AWSConfig) error {
	if a.Region == "" {
		return events.Errorf(events.CodeBadRequest, "aws.region: required")
	}
	if !regionRE.MatchString(a.Region) {
		return events.Errorf(events.CodeBadRequest, "aws.region: %q is not an AWS region", events.Clip(a.Region, 40))
	}
	switch a.Auth {
	case events.AWSAuthAccessKey:
		if a.AccessKeyID == "" {
			return events.Errorf(events.CodeBadRequest, "aws.access_key_id: required with auth access_key")
		}
		if a.SecretAccessKey == "" {
			return events.Errorf(events.CodeBadRequest, "aws.secret_access_key: required with auth access_key")
		}
		if len(a.AccessKeyID) < 16 || len(a.AccessKeyID) > 128 || strings.ContainsAny(a.AccessKeyID, " \t\r\n") {
			return events.Errorf(events.CodeBadRequest, "aws.access_key_id: not an access key id")
		}
		if len(a.SecretAccessKey) > 1024 || len(a.SessionToken) > 8192 {
			return events.Errorf(events.CodeBadRequest, "aws.secret_access_key, aws.session_token: too long")
		}
	case events.AWSAuthTaskRole, events.AWSAuthDefault:
		if a.AccessKeyID != "" || a.SecretAccessKey != "" || a.SessionToken != "" {
			return events.Errorf(events.CodeBadRequest, "aws.access_key_id: keys are only allowed with auth access_key")
		}
	case "":
		return events.Errorf(events.CodeBadRequest, "aws.auth: required (access_key, task_role or default)")
	default:
		return events.Errorf(events.CodeBadRequest, "aws.auth: %q is not one of access_key, task_role, default", events.Clip(a.Auth, 40))
	}
	if a.RoleARN != "" && !roleARNRE.MatchString(a.RoleARN) {
		return events.Errorf(events.CodeBadRequest, "aws.role_arn: %q is not an IAM role ARN", events.Clip(a.RoleARN, 80))
	}
	if a.RoleARN == "" && (a.ExternalID != "" || a.SessionName != "" || a.Duration != 0) {
		return events.Errorf(events.CodeBadRequest, "aws.role_arn: required with external_id, session_name or duration")
	}
	if a.ExternalID != "" && (len(a.ExternalID) < 2 || len(a.ExternalID) > 1224 || !externalIDRE.MatchString(a.ExternalID)) {
		return events.Errorf(events.CodeBadRequest, "aws.external_id: 2 to 1224 characters of [\\w+=,.@:/-]")
	}
	if a.SessionName != "" && !sessionRE.MatchString(a.SessionName) {
		return events.Errorf(events.CodeBadRequest, "aws.session_name: 2 to 64 characters of [\\w+=,.@-]")
	}
	if a.Duration != 0 && (a.Duration.D() < 15*time.Minute || a.Duration.D() > 12*time.Hour) {
		return events.Errorf(events.CodeBadRequest, "aws.duration: between 15m and 12h")
	}
	return provider.CheckEndpoint("aws.endpoint", a.Endpoint)
}

// secretField is a sensitive field of the block: its wire name and where it is.
type secretField struct {
	name string
	v    *string
}

// sensitive lists the block's sensitive fields.
func sensitive(a *events.AWSConfig) []secretField {
	return []secretField{
		{"aws.secret_access_key", &a.SecretAccessKey},
		{"aws.session_token", &a.SessionToken},
	}
}

func (kind) Redact(c events.Connection) events.Connection {
	if c.AWS == nil {
		return c
	}
	a := *c.AWS
	for _, f := range sensitive(&a) {
		if *f.v != "" {
			*f.v = events.Redacted
		}
	}
	c.AWS = &a
	return c
}

func (kind) Redacted(c *events.Connection) []string {
	if c.AWS == nil {
		return nil
	}
	var out []string
	for _, f := range sensitive(c.AWS) {
		if *f.v == events.Redacted {
			out = append(out, f.name)
		}
	}
	return out
}

func (kind) KeepRedacted(c, prev *events.Connection) error {
	if c.AWS == nil {
		return nil
	}
	var pa events.AWSConfig
	if prev != nil && prev.AWS != nil {
		pa = *prev.AWS
	}
	stored := sensitive(&pa)
	for i, f := range sensitive(c.AWS) {
		if *f.v != events.Redacted {
			continue
		}
		if *stored[i].v == "" {
			return events.Errorf(events.CodeBadRequest, "%s: is %q but no value is stored", f.name, events.Redacted)
		}
		*f.v = *stored[i].v
	}
	return nil
}

func (kind) Routing(c *events.Connection) []provider.Field {
	var a events.AWSConfig
	if c.AWS != nil {
		a = *c.AWS
	}
	return []provider.Field{
		{Name: "aws.auth", Value: a.Auth},
		{Name: "aws.region", Value: a.Region},
		{Name: "aws.endpoint", Value: a.Endpoint},
		{Name: "aws.role_arn", Value: a.RoleARN},
	}
}

func (kind) Factory(env provider.Env) provider.Factory {
	return Factory(WithLogger(env.Log))
}

// Endpoints lists the endpoint override, where SigV4-signed requests (and
// the session token) go.
func (kind) Endpoints(c *events.Connection) []provider.Field {
	if c.AWS == nil || c.AWS.Endpoint == "" {
		return nil
	}
	return []provider.Field{{Name: "aws.endpoint", Value: c.AWS.Endpoint}}
}
