package resolve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func (w *Worker) handleResolve(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.ResolveRequest
	c, err := w.accept(ctx, events.OpResolve, req, f, &in)
	f.Audit.Secret, f.Audit.Version = in.Secret, in.Version
	if err != nil {
		return nil, err
	}
	if err := checkSecretAllowed(c, in.Secret); err != nil {
		return nil, err
	}
	b, err := w.provider(ctx, c)
	if err != nil {
		return nil, err
	}
	sec, err := b.cached.Resolve(ctx, provider.Request{Secret: in.Secret, Version: in.Version, Fresh: in.Fresh})
	if err != nil {
		return nil, err
	}
	out, err := Shape(c.Name, in.Secret, sec, in.Keys)
	if err != nil {
		return nil, err
	}
	auditServed(f, sec, w.cfg.Fingerprint(sec.Data))
	return out, nil
}

// auditServed fills the audit fields of a served value.
func auditServed(f *endpoint.Fields, sec provider.Secret, fingerprint string) {
	f.Audit.Version = sec.Version
	f.Audit.Cached, f.Audit.Stale = sec.Cached, sec.Stale
	f.Audit.Fingerprint = fingerprint
}

// handleFingerprint answers cloudbridge.v1.admin.audit.fingerprint: the
// fingerprint of a secret's current value, read fresh from the provider, as
// audit events carry it. The value itself is never sent.
func (w *Worker) handleFingerprint(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.FingerprintRequest
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	f.Conn, f.Audit.Secret, f.Audit.Version = in.Connection, in.Secret, in.Version
	c, err := w.cfg.Connections.LookupConnection(ctx, in.Connection)
	if errors.Is(err, events.ErrNotFound) {
		return nil, events.Errorf(events.CodeNotFound, "connection %q: not found", in.Connection)
	}
	if err != nil {
		return nil, err
	}
	b, err := w.provider(ctx, c)
	if err != nil {
		return nil, err
	}
	release, err := b.bulkhead.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	sec, err := b.raw.Resolve(ctx, provider.Request{Secret: in.Secret, Version: in.Version, Fresh: true})
	if err != nil {
		return nil, err
	}
	f.Audit.Version = sec.Version
	return &events.FingerprintReply{Connection: c.Name, Secret: in.Secret, Version: sec.Version, Fingerprint: w.cfg.Fingerprint(sec.Data)}, nil
}

// Shape builds the resolve reply: a JSON-object secret becomes credentials
// (narrowed to keys), UTF-8 text a value, anything else binary.
func Shape(conn, secret string, sec provider.Secret, keys []string) (*events.ResolveReply, error) {
	out := &events.ResolveReply{Connection: conn, Secret: secret, Version: sec.Version,
		Cached: sec.Cached, Stale: sec.Stale, FetchedAt: sec.FetchedAt.UTC()}
	creds, isObject := credentials(sec)
	switch {
	case isObject:
		if len(keys) > 0 {
			narrowed := make(map[string]json.RawMessage, len(keys))
			for _, k := range keys {
				v, ok := creds[k]
				if !ok {
					return nil, events.Errorf(events.CodeNotFound, "secret %q has no key %q", events.Clip(secret, events.QuoteMax), events.Clip(k, events.QuoteMax))
				}
				narrowed[k] = v
			}
			creds = narrowed
		}
		out.Credentials = creds
	case len(keys) > 0:
		return nil, events.Errorf(events.CodeNotFound, "secret %q is not a JSON object, so it has no key %q", events.Clip(secret, events.QuoteMax), events.Clip(keys[0], events.QuoteMax))
	case !sec.Binary && utf8.Valid(sec.Data):
		s := string(sec.Data)
		out.Value = &s
	default:
		out.Binary = append([]byte(nil), sec.Data...)
	}
	return out, nil
}

func credentials(sec provider.Secret) (map[string]json.RawMessage, bool) {
	if sec.Binary {
		return nil, false
	}
	d := bytes.TrimSpace(sec.Data)
	if len(d) < 2 || d[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(d, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

// Keys lists the keys of a JSON-object secret, for test reports.
func Keys(sec provider.Secret) ([]string, bool) {
	m, ok := credentials(sec)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out, true
}
