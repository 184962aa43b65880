package provider

import (
	"context"
	"net/url"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
)

// Kind is a provider as the rest of the server sees it: the connection block
// it owns (validation, redaction, keep-redacted, the fields that route
// credentials) and the factory of its Resolver. A provider package exports
// one Kind; package internal/provider/all registers it in the Table.
//
// A provider's block is the connection field named like the provider ("aws"
// for provider "aws"); a provider may have none (builtin). Every method but
// Name and Factory looks at that block only.
type Kind interface {
	// Name is the value of a connection's "provider" and the name of its block.
	Name() string
	// HasBlock reports whether c carries this provider's block.
	HasBlock(c *events.Connection) bool
	// Validate checks the block of a connection of this provider (which
	// must carry it if the provider has one): bad_request naming the field,
	// never quoting a sensitive value. A sensitive field given as
	// events.Redacted is valid.
	Validate(c *events.Connection) error
	// Redact returns c with every sensitive field of the block replaced by
	// events.Redacted, without changing the memory c shares with its caller.
	Redact(c events.Connection) events.Connection
	// Redacted names the sensitive fields of the block that c carries as
	// events.Redacted ("aws.secret_access_key").
	Redacted(c *events.Connection) []string
	// KeepRedacted copies into c, from prev (the stored connection of the
	// same name, of the same provider, or nil), every sensitive field c
	// carries as events.Redacted. A Redacted field with nothing stored is a
	// bad_request.
	KeepRedacted(c, prev *events.Connection) error
	// Routing lists the block's fields that decide where the connection's
	// credentials are sent or whose they are (endpoint, region, auth method,
	// role, impersonated account, a key's token_uri), with their values;
	// absent fields have "". The Table adds "provider".
	Routing(c *events.Connection) []Field
	// Factory returns the factory of this provider's resolvers.
	Factory(env Env) Factory
}

// Field is a connection field by its wire name ("aws.endpoint") and its value.
type Field struct {
	Name, Value string
}

// Env is what a worker hands every provider factory.
type Env struct {
	Log zerolog.Logger
	// Secrets is the built-in secret store (the registry).
	Secrets SecretStore
}

// SecretStore reads built-in secrets.
type SecretStore interface {
	Secret(ctx context.Context, conn, name string) (StoredSecret, error)
}

// StoredSecret is a built-in secret's value, its version (1 for the first
// put of the secret, then 2, 3…) and the bucket's revision of it.
type StoredSecret struct {
	Value    []byte
	Version  uint64
	Revision uint64
}

// CheckEndpoint checks an endpoint override of a connection: empty, or an
// http(s) URL with a host and no user info. field names it in the error.
func CheckEndpoint(field, s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return events.Errorf(events.CodeBadRequest, "%s: %q is not an http(s) URL", field, events.Clip(s, 80))
	}
	return nil
}
