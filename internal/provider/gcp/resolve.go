package gcp

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Resolve reads a secret version from Secret Manager. The payload is returned
// as it is (Binary false): the resolve worker classifies it.
func (p *Provider) Resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	name, err := VersionName(p.projectFor(ctx, req.Secret), req.Secret, req.Version)
	if err != nil {
		return provider.Secret{}, err
	}
	// The token first, so a credentials failure is reported as one.
	if _, err := p.creds.TokenProvider.Token(ctx); err != nil {
		return provider.Secret{}, fmt.Errorf("getting an access token for %s: %w", p.Identity(), classifyTokenError(err))
	}
	resp, err := p.access(ctx, name)
	if err != nil {
		return provider.Secret{}, fmt.Errorf("reading %s: %w", name, err)
	}
	data := resp.GetPayload().GetData()
	if want := resp.GetPayload().DataCrc32C; want != nil && int64(crc32.Checksum(data, castagnoli)) != *want {
		p.log.Warn().Str("secret", name).Msg("Secret Manager payload failed its CRC32C check")
		return provider.Secret{}, fmt.Errorf("reading %s: %w", name,
			events.Errorf(events.CodeUnavailable, "the payload failed its CRC32C check (corrupted in transit)"))
	}
	return provider.Secret{
		Version:   versionOf(resp.GetName()),
		Data:      data,
		FetchedAt: time.Now(),
	}, nil
}

// projectFor is the project completing a short name. With default
// credentials and no gcp.project, it is the credentials' project (on GCE,
// asked of the metadata server once).
func (p *Provider) projectFor(ctx context.Context, secret string) string {
	p.mu.Lock()
	project := p.project
	p.mu.Unlock()
	if project != "" || strings.HasPrefix(secret, "projects/") || p.cfg.Auth != events.GCPAuthDefault {
		return project
	}
	project, err := p.creds.ProjectID(ctx)
	if err != nil || project == "" {
		return ""
	}
	p.mu.Lock()
	p.project = project
	p.mu.Unlock()
	return project
}

// access calls AccessSecretVersion, retrying ResourceExhausted with
// exponential backoff up to the configured number of attempts.
func (p *Provider) access(ctx context.Context, name string) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	bo := p.set.backoff // a copy: the backoff state is per call
	req := &secretmanagerpb.AccessSecretVersionRequest{Name: name}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		resp, err := p.sm.AccessSecretVersion(ctx, req)
		var mapped error
		if err != nil {
			mapped = p.secretError(ctx, err, attempt)
		}
		metrics.ObserveUpstream("gcp", "AccessSecretVersion", start, mapped)
		if err == nil {
			return resp, nil
		}
		if status.Code(err) != codes.ResourceExhausted || attempt >= p.set.attempts {
			return nil, mapped
		}
		pause := bo.Pause()
		p.log.Debug().Str("secret", name).Int("attempt", attempt).Dur("backoff", pause).Msg("Secret Manager throttled; retrying")
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, mapped
		}
	}
}

// secretError maps an AccessSecretVersion failure to a wire error. The
// service's own message is not repeated: it was not written for requesters.
func (p *Provider) secretError(ctx context.Context, err error, attempts int) error {
	switch status.Code(err) {
	case codes.NotFound:
		return events.Wrap(events.CodeNotFound, err, "no such secret or version")
	case codes.FailedPrecondition:
		return events.Wrap(events.CodeNotFound, err, "the version is disabled or destroyed")
	case codes.PermissionDenied:
		return events.Wrap(events.CodeForbidden, err, "permission denied for %s (needs roles/secretmanager.secretAccessor)", p.Identity())
	case codes.Unauthenticated:
		return events.Wrap(events.CodeUnauthorized, err, "Secret Manager rejected the credentials of %s", p.Identity())
	case codes.ResourceExhausted:
		return events.Wrap(events.CodeThrottled, err, "Secret Manager throttled the request (%d attempts)", attempts)
	case codes.InvalidArgument:
		return events.Wrap(events.CodeBadRequest, err, "Secret Manager rejected the secret name")
	}
	return grpcError(ctx, err, "Secret Manager")
}

// grpcError maps the codes every Google API shares.
func grpcError(ctx context.Context, err error, service string) error {
	var we *events.Error
	if errors.As(err, &we) {
		return err
	}
	code := status.Code(err)
	switch {
	case code == codes.DeadlineExceeded || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return events.Wrap(events.CodeTimeout, err, "%s did not answer before the deadline", service)
	case code == codes.Canceled:
		return events.Wrap(events.CodeUnavailable, err, "the call to %s was cancelled", service)
	case code == codes.Unavailable:
		return events.Wrap(events.CodeUnavailable, err, "%s is unavailable", service)
	case code == codes.ResourceExhausted:
		return events.Wrap(events.CodeThrottled, err, "%s throttled the request", service)
	case code == codes.Unauthenticated:
		return events.Wrap(events.CodeUnauthorized, err, "%s rejected the credentials", service)
	case code == codes.PermissionDenied:
		return events.Wrap(events.CodeForbidden, err, "%s denied permission", service)
	case code == codes.NotFound:
		return events.Wrap(events.CodeNotFound, err, "%s: not found", service)
	case code == codes.InvalidArgument:
		return events.Wrap(events.CodeBadRequest, err, "%s rejected the request as invalid", service)
	}
	return events.Wrap(events.CodeUnavailable, err, "%s failed (%s)", service, code)
}

// versionOf is the version number at the end of a version's resource name.
func versionOf(name string) string {
	if i := strings.LastIndex(name, "/versions/"); i >= 0 {
		return name[i+len("/versions/"):]
	}
	return ""
}
