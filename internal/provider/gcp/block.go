package gcp

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// Kind is the GCP provider's entry in the provider table: the gcp block of a
// connection and the factory of its providers.
var Kind provider.Kind = kind{}

type kind struct{}

var saEmailRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,99}@[a-z0-9.-]+\.iam\.gserviceaccount\.com$|^[0-9]+-compute@developer\.gserviceaccount\.com$`)

// maxKeyBytes bounds a service-account JSON key.
const maxKeyBytes = 16 << 10

// privateKeyField is the sensitive field of the block.
const privateKeyField = "gcp.service_account_key.private_key"

func (kind) Name() string { return events.ProviderGCP }

func (kind) HasBlock(c *events.Connection) bool { return c.GCP != nil }

func (kind) Validate(c *events.Connection) error {
	if c.GCP == nil {
		return events.Errorf(events.CodeBadRequest, "gcp: required with provider gcp")
	}
	if err := validate(c.GCP); err != nil {
		return err
	}
	return validateTokens(c.Tokens, c.GCP)
}

// validateTokens checks the connection's token policy against what Google
// issues: access tokens last at most 1h, and only impersonation can ask for
// less (keys and default credentials get one-hour tokens).
func validateTokens(t *events.TokenPolicy, g *events.GCPConfig) error {
	if t == nil || t.MaxDuration == 0 {
		return nil
	}
	if t.MaxDuration.D() > MaxTokenLifetime {
		return events.Errorf(events.CodeBadRequest, "tokens.max_duration: at most 1h for GCP access tokens")
	}
	if t.MaxDuration.D() < MaxTokenLifetime && g.Auth != events.GCPAuthImpersonation {
		return events.Errorf(events.CodeBadRequest, "tokens.max_duration: under 1h needs auth impersonation (Google issues one-hour tokens to keys and default credentials)")
	}
	return nil
}

// validate checks the gcp block.
func validate(g *events.GCPConfig) error {
	if g.Project != "" && !events.IsGCPProject(g.Project) {
		return events.Errorf(events.CodeBadRequest, "gcp.project: %q is not a project id", events.Clip(g.Project, 40))
	}
	switch g.Auth {
	case events.GCPAuthServiceAccountKey:
		if len(g.ServiceAccountKey) == 0 {
			return events.Errorf(events.CodeBadRequest, "gcp.service_account_key: required with auth service_account_key")
		}
		if g.Impersonate != "" || len(g.Delegates) > 0 {
			return events.Errorf(events.CodeBadRequest, "gcp.impersonate: only allowed with auth impersonation")
		}
	case events.GCPAuthImpersonation:
		if g.Impersonate == "" {
			return events.Errorf(events.CodeBadRequest, "gcp.impersonate: required with auth impersonation")
		}
	case events.GCPAuthDefault:
		if len(g.ServiceAccountKey) > 0 {
			return events.Errorf(events.CodeBadRequest, "gcp.service_account_key: not allowed with auth default")
		}
		if g.Impersonate != "" || len(g.Delegates) > 0 {
			return events.Errorf(events.CodeBadRequest, "gcp.impersonate: only allowed with auth impersonation")
		}
	case "":
		return events.Errorf(events.CodeBadRequest, "gcp.auth: required (service_account_key, impersonation or default)")
	default:
		return events.Errorf(events.CodeBadRequest, "gcp.auth: %q is not one of service_account_key, impersonation, default", events.Clip(g.Auth, 40))
	}
	if len(g.ServiceAccountKey) > 0 {
		if err := validateKey(g.ServiceAccountKey); err != nil {
			return err
		}
	}
	if g.Impersonate != "" && !saEmailRE.MatchString(g.Impersonate) {
		return events.Errorf(events.CodeBadRequest, "gcp.impersonate: %q is not a service-account email", events.Clip(g.Impersonate, 80))
	}
	if len(g.Delegates) > 16 {
		return events.Errorf(events.CodeBadRequest, "gcp.delegates: more than 16")
	}
	for i, d := range g.Delegates {
		if !saEmailRE.MatchString(d) {
			return events.Errorf(events.CodeBadRequest, "gcp.delegates[%d]: %q is not a service-account email", i, events.Clip(d, 80))
		}
	}
	return provider.CheckEndpoint("gcp.endpoint", g.Endpoint)
}

// ServiceAccountKey is the part of a service-account JSON key that
// cloudbridge reads.
type ServiceAccountKey struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id,omitempty"`
	PrivateKeyID string `json:"private_key_id,omitempty"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	ClientID     string `json:"client_id,omitempty"`
	TokenURI     string `json:"token_uri,omitempty"`
}

// ParseServiceAccountKey reads the identifying fields of a JSON key.
func ParseServiceAccountKey(raw json.RawMessage) (*ServiceAccountKey, error) {
	var k ServiceAccountKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "gcp.service_account_key: not a JSON object")
	}
	return &k, nil
}

// validateKey checks a key's shape on put; checkKey (auth.go) parses its
// private key when the provider is built.
func validateKey(raw json.RawMessage) error {
	if len(raw) > maxKeyBytes {
		return events.Errorf(events.CodeBadRequest, "gcp.service_account_key: larger than 16 KiB")
	}
	k, err := ParseServiceAccountKey(raw)
	if err != nil {
		return err
	}
	if k.Type != "service_account" {
		return events.Errorf(events.CodeBadRequest, "gcp.service_account_key.type: must be \"service_account\"")
	}
	if k.ClientEmail == "" {
		return events.Errorf(events.CodeBadRequest, "gcp.service_account_key.client_email: required")
	}
	if k.PrivateKey == "" {
		return events.Errorf(events.CodeBadRequest, "%s: required", privateKeyField)
	}
	if k.PrivateKey != events.Redacted && !strings.Contains(k.PrivateKey, "PRIVATE KEY") {
		return events.Errorf(events.CodeBadRequest, "%s: not a PEM private key", privateKeyField)
	}
	if k.TokenURI != "" {
		if err := provider.CheckEndpoint("gcp.service_account_key.token_uri", k.TokenURI); err != nil {
			return err
		}
	}
	return nil
}

// Redact keeps the key's identifying fields and replaces its private key; a
// key that is not a JSON object becomes the string "[redacted]".
func (kind) Redact(c events.Connection) events.Connection {
	if c.GCP == nil {
		return c
	}
	g := *c.GCP
	if len(g.ServiceAccountKey) > 0 {
		g.ServiceAccountKey = redactKey(g.ServiceAccountKey)
	}
	c.GCP = &g
	return c
}

func redactKey(raw json.RawMessage) json.RawMessage {
	k, err := ParseServiceAccountKey(raw)
	if err != nil {
		b, _ := json.Marshal(events.Redacted)
		return b
	}
	out := ServiceAccountKey{Type: k.Type, ProjectID: k.ProjectID, PrivateKeyID: k.PrivateKeyID,
		ClientEmail: k.ClientEmail, ClientID: k.ClientID, TokenURI: k.TokenURI, PrivateKey: events.Redacted}
	b, _ := json.Marshal(out)
	return b
}

func (kind) Redacted(c *events.Connection) []string {
	if c.GCP == nil || len(c.GCP.ServiceAccountKey) == 0 {
		return nil
	}
	if k, err := ParseServiceAccountKey(c.GCP.ServiceAccountKey); err == nil && k.PrivateKey == events.Redacted {
		return []string{privateKeyField}
	}
	return nil
}

// KeepRedacted puts the stored key back whole when the put's key has its
// private key redacted (the other fields of a redacted key are the stored
// key's; changing its token_uri is refused by the table's routing check).
func (kind) KeepRedacted(c, prev *events.Connection) error {
	if c.GCP == nil || len(c.GCP.ServiceAccountKey) == 0 {
		return nil
	}
	k, err := ParseServiceAccountKey(c.GCP.ServiceAccountKey)
	if err != nil {
		return err
	}
	if k.PrivateKey != events.Redacted {
		return nil
	}
	if prev == nil || prev.GCP == nil || len(prev.GCP.ServiceAccountKey) == 0 {
		return events.Errorf(events.CodeBadRequest, "%s: is %q but no key is stored", privateKeyField, events.Redacted)
	}
	g := *c.GCP
	g.ServiceAccountKey = prev.GCP.ServiceAccountKey
	c.GCP = &g
	return nil
}

func (kind) Routing(c *events.Connection) []provider.Field {
	var g events.GCPConfig
	if c.GCP != nil {
		g = *c.GCP
	}
	tokenURI := ""
	if len(g.ServiceAccountKey) > 0 {
		if k, err := ParseServiceAccountKey(g.ServiceAccountKey); err == nil {
			tokenURI = k.TokenURI
		}
	}
	return []provider.Field{
		{Name: "gcp.auth", Value: g.Auth},
		{Name: "gcp.endpoint", Value: g.Endpoint},
		{Name: "gcp.impersonate", Value: g.Impersonate},
		{Name: "gcp.delegates", Value: strings.Join(g.Delegates, ",")},
		{Name: "gcp.service_account_key.token_uri", Value: tokenURI},
	}
}

func (kind) Factory(env provider.Env) provider.Factory {
	return func(ctx context.Context, c events.Connection) (provider.Resolver, error) {
		p, err := New(ctx, c, WithLogger(env.Log))
		if err != nil {
			return nil, err // not a typed nil *Provider
		}
		return p, nil
	}
}

// Endpoints lists the endpoint override (bearer tokens go there) and the
// key's token_uri (signed assertions go there).
func (kind) Endpoints(c *events.Connection) []provider.Field {
	if c.GCP == nil {
		return nil
	}
	var out []provider.Field
	if c.GCP.Endpoint != "" {
		out = append(out, provider.Field{Name: "gcp.endpoint", Value: c.GCP.Endpoint})
	}
	if len(c.GCP.ServiceAccountKey) > 0 {
		if k, err := ParseServiceAccountKey(c.GCP.ServiceAccountKey); err == nil && k.TokenURI != "" {
			out = append(out, provider.Field{Name: "gcp.service_account_key.token_uri", Value: k.TokenURI})
		}
	}
	return out
}
