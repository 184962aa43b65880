package resolve

import (
	"context"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func (w *Worker) handleToken(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.TokenRequest
	c, err := w.accept(ctx, events.OpToken, req, f, &in)
	if err != nil {
		return nil, err
	}
	if c.Tokens == nil || !c.Tokens.Enabled {
		return nil, events.Errorf(events.CodeForbidden, "connection %q does not vend tokens (an admin may opt it in with \"tokens\": {\"enabled\": true})", c.Name)
	}
	b, err := w.provider(ctx, c)
	if err != nil {
		return nil, err
	}
	t, ok := b.raw.(provider.Tokener)
	if !ok {
		return nil, events.Errorf(events.CodeBadRequest, "connection %q (provider %s) does not vend cloud credentials", c.Name, c.Provider)
	}
	release, err := b.bulkhead.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	out, err := t.Token(ctx, in)
	if err != nil {
		return nil, err
	}
	auditToken(f, c, in, out, w.cfg.Fingerprint)
	return out, nil
}

// auditToken fills the audit fields of vended credentials: the role or the
// scopes, the expiry, and the fingerprint of the secret part.
func auditToken(f *endpoint.Fields, c events.Connection, in events.TokenRequest, out *events.TokenReply, fingerprint func([]byte) string) {
	if c.AWS != nil {
		f.Audit.Role = c.AWS.RoleARN
	}
	if out == nil {
		return
	}
	switch {
	case out.AWS != nil:
		f.Audit.Expires = out.AWS.Expiration
		f.Audit.Fingerprint = fingerprint([]byte(out.AWS.SecretAccessKey))
	case out.GCP != nil:
		f.Audit.Scopes = in.Scopes
		if len(f.Audit.Scopes) == 0 {
			f.Audit.Scopes = []string{"https://www.googleapis.com/auth/cloud-platform"}
		}
		f.Audit.Expires = out.GCP.Expiry
		f.Audit.Fingerprint = fingerprint([]byte(out.GCP.AccessToken))
	}
}

func (w *Worker) handleInvalidate(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.InvalidateRequest
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	f.Conn, f.Audit.Secret = in.Connection, in.Secret
	w.cfg.Cache.Invalidate(in.Connection, in.Secret)
	return events.Empty{}, nil
}
