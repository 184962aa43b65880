// Package provider defines what a secret provider is: a small interface that
// resolves a reference under a context. Caching, retries and metrics are
// wrappers of the same interface; optional interfaces add the test probe, the
// cheap version check and short-lived credentials.
package provider

import (
	"context"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
)

// Request asks a provider for one secret.
type Request struct {
	// Secret is a name, an ARN or a full resource name.
	Secret string
	// Version is a stage, version id, number or alias; empty for the current one.
	Version string
	// Fresh bypasses any cache.
	Fresh bool
}

// Secret is a resolved secret value.
type Secret struct {
	// Version is the provider's version id of the value.
	Version string
	// Data is the payload: a secret string's bytes or a binary secret.
	Data []byte
	// Binary is true when the provider said the payload is binary
	// (AWS SecretBinary); otherwise it is classified by content.
	Binary bool
	// FetchedAt is when the value came from the provider.
	FetchedAt time.Time
	// Cached and Stale are set by the cache.
	Cached bool
	Stale  bool
}

// Resolver resolves secrets. Errors wrap the sentinels of package events
// (events.ErrNotFound, events.ErrUnavailable, …) with messages safe to send
// to a requester: no secret values, keys or cloud request ids.
type Resolver interface {
	Resolve(ctx context.Context, req Request) (Secret, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, req Request) (Secret, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, req Request) (Secret, error) { return f(ctx, req) }

// VersionChecker is implemented by providers that can tell a secret's current
// version more cheaply than reading it (AWS DescribeSecret). When a cached
// value's TTL runs out, the cache asks for the version and re-reads only when
// it changed.
type VersionChecker interface {
	CurrentVersion(ctx context.Context, req Request) (string, error)
}

// Prober is implemented by providers whose test has steps before the secret:
// "credentials" (obtained, and from where) and "identity" (who we are).
type Prober interface {
	Probe(ctx context.Context) []events.Step
}

// Tokener is implemented by providers that vend short-lived cloud credentials.
type Tokener interface {
	Token(ctx context.Context, req events.TokenRequest) (*events.TokenReply, error)
}

// Closer is implemented by providers that hold resources (connections,
// background refreshers) to release when their connection changes or the
// worker stops.
type Closer interface {
	Close() error
}

// Factory builds the provider of a connection. The connection carries its
// sensitive fields in clear (unsealed by the registry).
type Factory func(ctx context.Context, conn events.Connection) (Resolver, error)
