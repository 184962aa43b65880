package events

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Providers.
const (
	ProviderAWS     = "aws"
	ProviderGCP     = "gcp"
	ProviderBuiltin = "builtin"
)

// AWS auth methods.
const (
	AWSAuthAccessKey = "access_key"
	AWSAuthTaskRole  = "task_role"
	AWSAuthDefault   = "default"
)

// GCP auth methods.
const (
	GCPAuthServiceAccountKey = "service_account_key"
	GCPAuthImpersonation     = "impersonation"
	GCPAuthDefault           = "default"
)

// Redacted replaces every sensitive field in connections returned by get and
// list. Putting a connection back with a field still Redacted keeps the
// stored value of that field, unless the put changes a field that routes
// credentials (provider, auth, endpoint, region, role, impersonated account,
// a key's token_uri): that put is a bad_request, and the secrets must be
// given again.
const Redacted = "[redacted]"

// Default cache policy.
const (
	DefaultCacheTTL = 5 * time.Minute
)

// Connection is a provider connection: where secrets come from, with which
// credentials, and who may use it. Each provider with settings has one block,
// a pointer field named like the provider (json "aws" for provider "aws");
// a connection carries its own provider's block and no other.
type Connection struct {
	Name     string `json:"name"`
	Provider string `json:"provider"`
	// Description is free text for humans.
	Description string `json:"description,omitempty"`
	// Groups may use the connection; "*" means any group.
	Groups []string `json:"groups"`
	// Secrets is the allowlist of secret-name globs ('*' and '?'); empty allows none.
	Secrets []string     `json:"secrets"`
	Cache   *CachePolicy `json:"cache,omitempty"`
	// Tokens opts the connection in to token vending; without it (or with
	// enabled false) a token request is forbidden.
	Tokens *TokenPolicy `json:"tokens,omitempty"`
	// Limits bound the connection's upstream work in each worker.
	Limits *Limits    `json:"limits,omitempty"`
	AWS    *AWSConfig `json:"aws,omitempty"`
	GCP    *GCPConfig `json:"gcp,omitempty"`
	// RequireSealed refuses (forbidden) a request without a reply key
	// (Cloudbridge-Reply-Key): every reply of the connection is sealed.
	RequireSealed bool `json:"require_sealed,omitempty"`
}

// CachePolicy is a connection's per-worker cache policy.
type CachePolicy struct {
	// TTL is how long a value is served without asking the provider (default
	// 5m; 0, as "0s", is the default: the stored record omits it).
	TTL Duration `json:"ttl,omitempty"`
	// MaxStale is how long past its TTL a value may still be served while the
	// provider is unavailable (default 0: never).
	MaxStale Duration `json:"max_stale,omitempty"`
}

// TokenPolicy is what a connection lets its groups ask of
// cloudbridge.v1.token.<group>.<conn>.
type TokenPolicy struct {
	// Enabled turns token vending on for the connection.
	Enabled bool `json:"enabled"`
	// MaxDuration caps the lifetime of vended credentials: a longer (or a
	// default longer) request gets MaxDuration. 0: the cloud's limits only.
	MaxDuration Duration `json:"max_duration,omitempty"`
	// Scopes are the OAuth scopes a requester may ask for (GCP only); empty
	// allows only the default, cloud-platform.
	Scopes []string `json:"scopes,omitempty"`
}

// Cap returns d capped at the policy's MaxDuration; def is the lifetime the
// cloud gives when d is 0.
func (p *TokenPolicy) Cap(d, def time.Duration) time.Duration {
	if d == 0 {
		d = def
	}
	if p != nil && p.MaxDuration > 0 && d > p.MaxDuration.D() {
		return p.MaxDuration.D()
	}
	return d
}

// AWSConfig is the aws block of a connection. Its rules (validation,
// redaction, the fields that route credentials) live in internal/provider/aws.
type AWSConfig struct {
	Region          string   `json:"region"`
	Auth            string   `json:"auth"`
	AccessKeyID     string   `json:"access_key_id,omitempty"`
	SecretAccessKey string   `json:"secret_access_key,omitempty"` // sensitive
	SessionToken    string   `json:"session_token,omitempty"`     // sensitive
	RoleARN         string   `json:"role_arn,omitempty"`
	ExternalID      string   `json:"external_id,omitempty"`
	SessionName     string   `json:"session_name,omitempty"`
	Duration        Duration `json:"duration,omitempty"`
	Endpoint        string   `json:"endpoint,omitempty"`
	// Events, when set, consumes the secrets' change events (rotation.go).
	Events *AWSEvents `json:"events,omitempty"`
}

// GCPConfig is the gcp block of a connection. Its rules live in
// internal/provider/gcp.
type GCPConfig struct {
	Project string `json:"project,omitempty"`
	Auth    string `json:"auth"`
	// ServiceAccountKey is the JSON key of a service account (sensitive).
	ServiceAccountKey json.RawMessage `json:"service_account_key,omitempty"`
	Impersonate       string          `json:"impersonate,omitempty"`
	Delegates         []string        `json:"delegates,omitempty"`
	Endpoint          string          `json:"endpoint,omitempty"`
	// Events, when set, consumes the secrets' change events (rotation.go).
	Events *GCPEvents `json:"events,omitempty"`
}

// TTL is the connection's cache TTL, defaulted.
func (c *Connection) TTL() time.Duration {
	if c.Cache == nil || c.Cache.TTL == 0 {
		return DefaultCacheTTL
	}
	return c.Cache.TTL.D()
}

// MaxStale is how long past its TTL a value may be served while the provider is down.
func (c *Connection) MaxStale() time.Duration {
	if c.Cache == nil {
		return 0
	}
	return c.Cache.MaxStale.D()
}

// AllowsGroup reports whether group may use the connection.
func (c *Connection) AllowsGroup(group string) bool {
	for _, g := range c.Groups {
		if g == "*" || g == group {
			return true
		}
	}
	return false
}

// AllowsSecret reports whether the secret name matches the allowlist.
func (c *Connection) AllowsSecret(name string) bool {
	for _, p := range c.Secrets {
		if MatchGlob(p, name) {
			return true
		}
	}
	return false
}

// gcpProjectRE matches a Google Cloud project id (or a legacy domain-scoped one).
var gcpProjectRE = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.:-]{1,100}$`)

// IsGCPProject reports whether s is a Google Cloud project id: the gcp block's
// project and the cloud_logging sink's.
func IsGCPProject(s string) bool { return gcpProjectRE.MatchString(s) }

// Normalize fills in empty lists, so a stored connection always carries
// "groups" and "secrets" arrays.
func (c *Connection) Normalize() {
	if c.Groups == nil {
		c.Groups = []string{}
	}
	if c.Secrets == nil {
		c.Secrets = []string{}
	}
}

// Validate checks the generic part of a connection, with bad_request errors
// naming the field: name, description, groups, secrets and cache. It does not
// look at provider or at the provider blocks (aws, gcp): each provider owns
// its block's rules in its package under internal/provider, and a worker
// checks a connection put with the provider table (internal/provider.Table
// Validate), which runs this first. A connection that passes Validate alone
// may still be refused by a worker.
func (c *Connection) Validate() error {
	if err := CheckName("name", c.Name); err != nil {
		return err
	}
	if len(c.Description) > 1024 {
		return Errorf(CodeBadRequest, "description: longer than 1024 bytes")
	}
	if len(c.Groups) > 256 {
		return Errorf(CodeBadRequest, "groups: more than 256")
	}
	for i, g := range c.Groups {
		if g != "*" {
			if err := CheckName(fieldIdx("groups", i), g); err != nil {
				return err
			}
		}
	}
	if err := noDuplicates("groups", c.Groups); err != nil {
		return err
	}
	if len(c.Secrets) > 256 {
		return Errorf(CodeBadRequest, "secrets: more than 256 patterns")
	}
	for i, p := range c.Secrets {
		if p == "" || len(p) > MaxSecretNameLen || strings.ContainsAny(p, " \t\r\n\x00") {
			return Errorf(CodeBadRequest, "%s: empty, overlong or contains whitespace", fieldIdx("secrets", i))
		}
	}
	if err := noDuplicates("secrets", c.Secrets); err != nil {
		return err
	}
	if c.Tokens != nil {
		if d := c.Tokens.MaxDuration.D(); d != 0 && (d < 15*time.Minute || d > 36*time.Hour) {
			return Errorf(CodeBadRequest, "tokens.max_duration: between 15m and 36h")
		}
		if len(c.Tokens.Scopes) > 64 {
			return Errorf(CodeBadRequest, "tokens.scopes: more than 64")
		}
		for i, s := range c.Tokens.Scopes {
			if s == "" || len(s) > 512 || strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
				return Errorf(CodeBadRequest, "%s: empty, overlong or contains whitespace or control characters", fieldIdx("tokens.scopes", i))
			}
		}
		if err := noDuplicates("tokens.scopes", c.Tokens.Scopes); err != nil {
			return err
		}
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if c.Cache != nil {
		if c.Cache.TTL.D() > 24*time.Hour {
			return Errorf(CodeBadRequest, "cache.ttl: at most 24h")
		}
		if c.Cache.MaxStale.D() > 7*24*time.Hour {
			return Errorf(CodeBadRequest, "cache.max_stale: at most 168h")
		}
	}
	return nil
}

// noDuplicates refuses a list naming one value twice (bad_request naming the
// second occurrence and the value, clipped).
func noDuplicates(field string, list []string) error {
	seen := make(map[string]struct{}, len(list))
	for i, v := range list {
		if _, dup := seen[v]; dup {
			return Errorf(CodeBadRequest, "%s: %q is given twice", fieldIdx(field, i), truncate(v, 80))
		}
		seen[v] = struct{}{}
	}
	return nil
}

func fieldIdx(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}

// QuoteMax is how many bytes of a name an error message quotes (Clip): a
// secret name may be 2,048 bytes, but an error reply and its
// Nats-Service-Error header carry at most this much of it.
const QuoteMax = 80

// Clip shortens s to at most n bytes of valid UTF-8, marking a cut with "…",
// for quoting input in an error message.
func Clip(s string, n int) string { return truncate(s, n) }

// Default limits of a connection's upstream work, per worker.
const (
	DefaultMaxConcurrent = 16
	DefaultMaxQueue      = 128
	maxLimit             = 10000
)

// Limits bound a connection's upstream work in each worker: requests that
// need the provider (a cache miss, a test, a token) run at most MaxConcurrent
// at a time, at most MaxQueue more wait, and past that a request fails at
// once with throttled. Cache hits never count.
type Limits struct {
	// MaxConcurrent is how many requests may call the provider at once (default 16).
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// MaxQueue is how many more may wait for their turn (default 128).
	MaxQueue int `json:"max_queue,omitempty"`
}

// UpstreamLimits are the connection's limits, defaulted.
func (c *Connection) UpstreamLimits() Limits {
	l := Limits{MaxConcurrent: DefaultMaxConcurrent, MaxQueue: DefaultMaxQueue}
	if c.Limits != nil {
		if c.Limits.MaxConcurrent > 0 {
			l.MaxConcurrent = c.Limits.MaxConcurrent
		}
		if c.Limits.MaxQueue > 0 {
			l.MaxQueue = c.Limits.MaxQueue
		}
	}
	return l
}

func (c *Connection) validateLimits() error {
	if c.Limits == nil {
		return nil
	}
	if n := c.Limits.MaxConcurrent; n < 0 || n > maxLimit {
		return Errorf(CodeBadRequest, "limits.max_concurrent: between 1 and %d (0 or absent: default %d)", maxLimit, DefaultMaxConcurrent)
	}
	if n := c.Limits.MaxQueue; n < 0 || n > maxLimit {
		return Errorf(CodeBadRequest, "limits.max_queue: between 1 and %d (0 or absent: default %d)", maxLimit, DefaultMaxQueue)
	}
	return nil
}
