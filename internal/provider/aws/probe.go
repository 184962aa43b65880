package aws

import (
	"context"
	"fmt"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// Probe runs the steps of a connection test before the secret: credentials
// (obtained, and from which source) and identity (the STS GetCallerIdentity
// ARN). A failed step carries its wire error; when no credentials could be
// obtained the identity step fails too, with the same code, without calling
// STS.
func (p *Provider) Probe(ctx context.Context) []events.Step {
	steps := make([]events.Step, 0, 2)
	c, err := p.creds.Retrieve(ctx)
	if err != nil {
		err = mapError(ctx, "credentials", "", err)
		steps = append(steps, events.FailStep(events.StepCredentials, err),
			events.FailStep(events.StepIdentity, events.Errorf(events.CodeOf(err), "aws: GetCallerIdentity: skipped, no credentials")))
		if p.aws.Events != nil {
			steps = append(steps, events.FailStep(events.StepEvents, events.Errorf(events.CodeOf(err), "aws: ReceiveMessage: skipped, no credentials")))
		}
		return steps
	}
	steps = append(steps, events.PassStep(events.StepCredentials, p.describeCredentials(c)))
	start := time.Now()
	out, err := p.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	err = mapError(ctx, "GetCallerIdentity", "", err)
	metrics.ObserveUpstream("aws", "GetCallerIdentity", start, err)
	if err != nil {
		steps = append(steps, events.FailStep(events.StepIdentity, err))
	} else {
		steps = append(steps, events.PassStep(events.StepIdentity, awssdk.ToString(out.Arn)))
	}
	if p.aws.Events != nil {
		steps = append(steps, p.probeEvents(ctx))
	}
	return steps
}

// describeCredentials says where credentials came from, without any key.
func (p *Provider) describeCredentials(c awssdk.Credentials) string {
	d := fmt.Sprintf("auth %s: %s", p.aws.Auth, sourceName(c.Source))
	if p.aws.RoleARN != "" {
		d += ", assumed role " + p.aws.RoleARN
	}
	if c.CanExpire {
		d += ", expires " + c.Expires.UTC().Format(time.RFC3339)
	}
	return d
}

func sourceName(s string) string {
	switch s {
	case "StaticCredentials":
		return "static access keys"
	case "EC2RoleProvider":
		return "EC2 instance metadata (IMDSv2)"
	case "CredentialsEndpointProvider":
		return "container credentials endpoint (ECS/EKS)"
	case "AssumeRoleProvider":
		return "STS AssumeRole"
	case "EnvConfigCredentials":
		return "environment (AWS_ACCESS_KEY_ID)"
	case "":
		return "unknown source"
	}
	return s
}
