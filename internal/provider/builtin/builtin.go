// Package builtin is the provider of builtin connections: secrets kept in
// cloudbridge's own sealed store.
package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// Store is what the provider needs of the registry.
type Store = provider.SecretStore

// Kind is the builtin provider's entry in the provider table. A builtin
// connection has no block and nothing sensitive: its secrets are records of
// their own, sealed by the registry.
var Kind provider.Kind = kind{}

type kind struct{}

func (kind) Name() string                                 { return events.ProviderBuiltin }
func (kind) HasBlock(*events.Connection) bool             { return false }
func (kind) Redact(c events.Connection) events.Connection { return c }
func (kind) Redacted(*events.Connection) []string         { return nil }
func (kind) KeepRedacted(_, _ *events.Connection) error   { return nil }
func (kind) Routing(*events.Connection) []provider.Field  { return nil }

// Validate refuses a token policy: a builtin connection vends no cloud
// credentials.
func (kind) Validate(c *events.Connection) error {
	if c.Tokens != nil {
		return events.Errorf(events.CodeBadRequest, "tokens: not allowed with provider builtin (it vends no cloud credentials)")
	}
	return nil
}

func (kind) Factory(env provider.Env) provider.Factory {
	return func(_ context.Context, c events.Connection) (provider.Resolver, error) {
		if env.Secrets == nil {
			return nil, events.Errorf(events.CodeInternal, "connection %q: no built-in store", c.Name)
		}
		return New(env.Secrets, c.Name), nil
	}
}

// Provider resolves the built-in secrets of one connection.
type Provider struct {
	store Store
	conn  string
}

// New returns the provider of connection conn.
func New(store Store, conn string) *Provider { return &Provider{store: store, conn: conn} }

// Resolve reads a secret. Its version counts the secret's puts (1, 2, 3…);
// the store keeps only the current one.
func (p *Provider) Resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	if err := events.CheckBuiltinSecretName("secret", req.Secret); err != nil {
		return provider.Secret{}, fmt.Errorf("secret %q: %w", events.Clip(req.Secret, events.QuoteMax), events.ErrNotFound)
	}
	st, err := p.store.Secret(ctx, p.conn, req.Secret)
	if err != nil {
		return provider.Secret{}, err
	}
	version := strconv.FormatUint(st.Version, 10)
	if req.Version != "" && req.Version != version {
		return provider.Secret{}, events.Errorf(events.CodeNotFound,
			"secret %q: version %q not found (the built-in store keeps only the current version, %s)", events.Clip(req.Secret, events.QuoteMax), events.Clip(req.Version, events.QuoteMax), version)
	}
	data := st.Value
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return provider.Secret{}, fmt.Errorf("decoding secret %q: %w", req.Secret, err)
		}
		data = []byte(s)
	}
	return provider.Secret{Version: version, Data: data, FetchedAt: time.Now()}, nil
}
