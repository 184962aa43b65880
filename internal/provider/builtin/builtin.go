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
	"github.com/cloudbridge/cloudbridge/internal/registry"
)

// Store is what the provider needs of the registry.
type Store interface {
	Secret(ctx context.Context, conn, name string) (registry.StoredSecret, error)
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
		return provider.Secret{}, fmt.Errorf("secret %q: %w", req.Secret, events.ErrNotFound)
	}
	st, err := p.store.Secret(ctx, p.conn, req.Secret)
	if err != nil {
		return provider.Secret{}, err
	}
	version := strconv.FormatUint(st.Version, 10)
	if req.Version != "" && req.Version != version {
		return provider.Secret{}, events.Errorf(events.CodeNotFound,
			"secret %q: version %q not found (the built-in store keeps only the current version, %s)", req.Secret, req.Version, version)
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
