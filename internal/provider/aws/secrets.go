package aws

import (
	"context"
	"regexp"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// StageCurrent is the staging label read when a request names no version.
const StageCurrent = "AWSCURRENT"

var versionIDRE = regexp.MustCompile(`^[a-zA-Z0-9-]{32,64}$`)

// IsVersionID reports whether a request's version is a Secrets Manager
// version id (32 to 64 characters of [a-zA-Z0-9-], a UUID in practice)
// rather than a staging label such as AWSCURRENT, AWSPREVIOUS or a custom one.
func IsVersionID(v string) bool { return versionIDRE.MatchString(v) }

func subject(req provider.Request) string {
	if req.Version == "" {
		return req.Secret
	}
	return req.Secret + " (version " + req.Version + ")"
}

func checkRequest(req provider.Request) error {
	if req.Secret == "" {
		return events.Errorf(events.CodeBadRequest, "secret: required")
	}
	if len(req.Secret) > events.MaxSecretNameLen {
		return events.Errorf(events.CodeBadRequest, "secret: longer than %d bytes", events.MaxSecretNameLen)
	}
	if len(req.Version) > 256 {
		return events.Errorf(events.CodeBadRequest, "version: longer than 256 bytes")
	}
	return nil
}

// Resolve reads a secret by name or ARN with GetSecretValue. Version is a
// staging label (default AWSCURRENT) or a version id. A SecretString comes
// back as Data, a SecretBinary as Data with Binary set; Version is the AWS
// version id.
func (p *Provider) Resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	if err := checkRequest(req); err != nil {
		return provider.Secret{}, err
	}
	in := &secretsmanager.GetSecretValueInput{SecretId: awssdk.String(req.Secret)}
	switch {
	case req.Version == "":
	case IsVersionID(req.Version):
		in.VersionId = awssdk.String(req.Version)
	default:
		in.VersionStage = awssdk.String(req.Version)
	}
	start := time.Now()
	out, err := p.sm.GetSecretValue(ctx, in)
	err = mapError(ctx, "GetSecretValue", subject(req), err)
	metrics.ObserveUpstream("aws", "GetSecretValue", start, err)
	if err != nil {
		return provider.Secret{}, err
	}
	s := provider.Secret{Version: awssdk.ToString(out.VersionId), FetchedAt: time.Now()}
	switch {
	case out.SecretString != nil:
		s.Data = []byte(*out.SecretString)
	case out.SecretBinary != nil:
		s.Data, s.Binary = out.SecretBinary, true
	default:
		return provider.Secret{}, events.Errorf(events.CodeNotFound, "aws: GetSecretValue %s: the version holds no value", subject(req))
	}
	return s, nil
}

// CurrentVersion returns the version id that holds the requested staging
// label (default AWSCURRENT) according to DescribeSecret, which is cheaper
// than reading the value. A request for a version id returns it unchanged
// without calling AWS: a version's value never changes.
func (p *Provider) CurrentVersion(ctx context.Context, req provider.Request) (string, error) {
	if err := checkRequest(req); err != nil {
		return "", err
	}
	if IsVersionID(req.Version) {
		return req.Version, nil
	}
	stage := req.Version
	if stage == "" {
		stage = StageCurrent
	}
	start := time.Now()
	out, err := p.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: awssdk.String(req.Secret)})
	err = mapError(ctx, "DescribeSecret", req.Secret, err)
	metrics.ObserveUpstream("aws", "DescribeSecret", start, err)
	if err != nil {
		return "", err
	}
	for id, stages := range out.VersionIdsToStages {
		for _, st := range stages {
			if st == stage {
				return id, nil
			}
		}
	}
	return "", events.Errorf(events.CodeNotFound, "aws: DescribeSecret %s: no version has staging label %s", req.Secret, stage)
}
