package events

import (
	"encoding/json"
	"net/url"
	"regexp"
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
// stored value of that field.
const Redacted = "[redacted]"

// Default cache policy.
const (
	DefaultCacheTTL = 5 * time.Minute
)

// Connection is a provider connection: where secrets come from, with which
// credentials, and who may use it.
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
	// Limits bound the connection's upstream work in each worker.
	Limits *Limits    `json:"limits,omitempty"`
	AWS    *AWSConfig `json:"aws,omitempty"`
	GCP    *GCPConfig `json:"gcp,omitempty"`
}

// CachePolicy is a connection's per-worker cache policy.
type CachePolicy struct {
	// TTL is how long a value is served without asking the provider (default 5m).
	TTL Duration `json:"ttl,omitempty"`
	// MaxStale is how long past its TTL a value may still be served while the
	// provider is unavailable (default 0: never).
	MaxStale Duration `json:"max_stale,omitempty"`
}

// AWSConfig is the aws block of a connection.
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
}

// GCPConfig is the gcp block of a connection.
type GCPConfig struct {
	Project string `json:"project,omitempty"`
	Auth    string `json:"auth"`
	// ServiceAccountKey is the JSON key of a service account (sensitive).
	ServiceAccountKey json.RawMessage `json:"service_account_key,omitempty"`
	Impersonate       string          `json:"impersonate,omitempty"`
	Delegates         []string        `json:"delegates,omitempty"`
	Endpoint          string          `json:"endpoint,omitempty"`
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

var (
	awsRegionRE  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	awsRoleARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)
	saEmailRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,99}@[a-z0-9.-]+\.iam\.gserviceaccount\.com$|^[0-9]+-compute@developer\.gserviceaccount\.com$`)
	gcpProjectRE = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.:-]{1,100}$`)
	sessionRE    = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

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

// Validate checks the connection, with bad_request errors naming the field.
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
	if len(c.Secrets) > 256 {
		return Errorf(CodeBadRequest, "secrets: more than 256 patterns")
	}
	for i, p := range c.Secrets {
		if p == "" || len(p) > MaxSecretNameLen || strings.ContainsAny(p, " \t\r\n\x00") {
			return Errorf(CodeBadRequest, "%s: empty, overlong or contains whitespace", fieldIdx("secrets", i))
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
	switch c.Provider {
	case ProviderAWS:
		if c.GCP != nil {
			return Errorf(CodeBadRequest, "gcp: not allowed with provider aws")
		}
		if c.AWS == nil {
			return Errorf(CodeBadRequest, "aws: required with provider aws")
		}
		return c.AWS.Validate()
	case ProviderGCP:
		if c.AWS != nil {
			return Errorf(CodeBadRequest, "aws: not allowed with provider gcp")
		}
		if c.GCP == nil {
			return Errorf(CodeBadRequest, "gcp: required with provider gcp")
		}
		return c.GCP.Validate()
	case ProviderBuiltin:
		if c.AWS != nil || c.GCP != nil {
			return Errorf(CodeBadRequest, "aws, gcp: not allowed with provider builtin")
		}
		return nil
	case "":
		return Errorf(CodeBadRequest, "provider: required (aws, gcp or builtin)")
	default:
		return Errorf(CodeBadRequest, "provider: %q is not one of aws, gcp, builtin", truncate(c.Provider, 40))
	}
}

// Validate checks the aws block.
func (a *AWSConfig) Validate() error {
	if a.Region == "" {
		return Errorf(CodeBadRequest, "aws.region: required")
	}
	if !awsRegionRE.MatchString(a.Region) {
		return Errorf(CodeBadRequest, "aws.region: %q is not an AWS region", truncate(a.Region, 40))
	}
	switch a.Auth {
	case AWSAuthAccessKey:
		if a.AccessKeyID == "" {
			return Errorf(CodeBadRequest, "aws.access_key_id: required with auth access_key")
		}
		if a.SecretAccessKey == "" {
			return Errorf(CodeBadRequest, "aws.secret_access_key: required with auth access_key")
		}
		if len(a.AccessKeyID) < 16 || len(a.AccessKeyID) > 128 || strings.ContainsAny(a.AccessKeyID, " \t\r\n") {
			return Errorf(CodeBadRequest, "aws.access_key_id: not an access key id")
		}
		if len(a.SecretAccessKey) > 1024 || len(a.SessionToken) > 8192 {
			return Errorf(CodeBadRequest, "aws.secret_access_key, aws.session_token: too long")
		}
	case AWSAuthTaskRole, AWSAuthDefault:
		if a.AccessKeyID != "" || a.SecretAccessKey != "" || a.SessionToken != "" {
			return Errorf(CodeBadRequest, "aws.access_key_id: keys are only allowed with auth access_key")
		}
	case "":
		return Errorf(CodeBadRequest, "aws.auth: required (access_key, task_role or default)")
	default:
		return Errorf(CodeBadRequest, "aws.auth: %q is not one of access_key, task_role, default", truncate(a.Auth, 40))
	}
	if a.RoleARN != "" && !awsRoleARNRE.MatchString(a.RoleARN) {
		return Errorf(CodeBadRequest, "aws.role_arn: %q is not an IAM role ARN", truncate(a.RoleARN, 80))
	}
	if a.RoleARN == "" && (a.ExternalID != "" || a.SessionName != "" || a.Duration != 0) {
		return Errorf(CodeBadRequest, "aws.role_arn: required with external_id, session_name or duration")
	}
	if a.ExternalID != "" && (len(a.ExternalID) < 2 || len(a.ExternalID) > 1224 || !externalIDRE.MatchString(a.ExternalID)) {
		return Errorf(CodeBadRequest, "aws.external_id: 2 to 1224 characters of [\\w+=,.@:/-]")
	}
	if a.SessionName != "" && !sessionRE.MatchString(a.SessionName) {
		return Errorf(CodeBadRequest, "aws.session_name: 2 to 64 characters of [\\w+=,.@-]")
	}
	if a.Duration != 0 && (a.Duration.D() < 15*time.Minute || a.Duration.D() > 12*time.Hour) {
		return Errorf(CodeBadRequest, "aws.duration: between 15m and 12h")
	}
	return checkEndpoint("aws.endpoint", a.Endpoint)
}

// Validate checks the gcp block.
func (g *GCPConfig) Validate() error {
	if g.Project != "" && !gcpProjectRE.MatchString(g.Project) {
		return Errorf(CodeBadRequest, "gcp.project: %q is not a project id", truncate(g.Project, 40))
	}
	switch g.Auth {
	case GCPAuthServiceAccountKey:
		if len(g.ServiceAccountKey) == 0 {
			return Errorf(CodeBadRequest, "gcp.service_account_key: required with auth service_account_key")
		}
		if g.Impersonate != "" || len(g.Delegates) > 0 {
			return Errorf(CodeBadRequest, "gcp.impersonate: only allowed with auth impersonation")
		}
	case GCPAuthImpersonation:
		if g.Impersonate == "" {
			return Errorf(CodeBadRequest, "gcp.impersonate: required with auth impersonation")
		}
	case GCPAuthDefault:
		if len(g.ServiceAccountKey) > 0 {
			return Errorf(CodeBadRequest, "gcp.service_account_key: not allowed with auth default")
		}
		if g.Impersonate != "" || len(g.Delegates) > 0 {
			return Errorf(CodeBadRequest, "gcp.impersonate: only allowed with auth impersonation")
		}
	case "":
		return Errorf(CodeBadRequest, "gcp.auth: required (service_account_key, impersonation or default)")
	default:
		return Errorf(CodeBadRequest, "gcp.auth: %q is not one of service_account_key, impersonation, default", truncate(g.Auth, 40))
	}
	if len(g.ServiceAccountKey) > 0 {
		if err := checkServiceAccountKey(g.ServiceAccountKey); err != nil {
			return err
		}
	}
	if g.Impersonate != "" && !saEmailRE.MatchString(g.Impersonate) {
		return Errorf(CodeBadRequest, "gcp.impersonate: %q is not a service-account email", truncate(g.Impersonate, 80))
	}
	if len(g.Delegates) > 16 {
		return Errorf(CodeBadRequest, "gcp.delegates: more than 16")
	}
	for i, d := range g.Delegates {
		if !saEmailRE.MatchString(d) {
			return Errorf(CodeBadRequest, "%s: %q is not a service-account email", fieldIdx("gcp.delegates", i), truncate(d, 80))
		}
	}
	return checkEndpoint("gcp.endpoint", g.Endpoint)
}

// ServiceAccountKey is the part of a service-account JSON key that cloudbridge reads.
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
		return nil, Errorf(CodeBadRequest, "gcp.service_account_key: not a JSON object")
	}
	return &k, nil
}

func checkServiceAccountKey(raw json.RawMessage) error {
	if len(raw) > 16<<10 {
		return Errorf(CodeBadRequest, "gcp.service_account_key: larger than 16 KiB")
	}
	k, err := ParseServiceAccountKey(raw)
	if err != nil {
		return err
	}
	if k.Type != "service_account" {
		return Errorf(CodeBadRequest, "gcp.service_account_key.type: must be \"service_account\"")
	}
	if k.ClientEmail == "" {
		return Errorf(CodeBadRequest, "gcp.service_account_key.client_email: required")
	}
	if k.PrivateKey == "" {
		return Errorf(CodeBadRequest, "gcp.service_account_key.private_key: required")
	}
	if k.PrivateKey != Redacted && !strings.Contains(k.PrivateKey, "PRIVATE KEY") {
		return Errorf(CodeBadRequest, "gcp.service_account_key.private_key: not a PEM private key")
	}
	if k.TokenURI != "" {
		if err := checkEndpoint("gcp.service_account_key.token_uri", k.TokenURI); err != nil {
			return err
		}
	}
	return nil
}

func checkEndpoint(field, s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return Errorf(CodeBadRequest, "%s: %q is not an http(s) URL", field, truncate(s, 80))
	}
	return nil
}

func fieldIdx(field string, i int) string {
	return field + "[" + itoa(i) + "]"
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}

// Redact returns a copy of the connection with every sensitive field replaced by Redacted.
func (c Connection) Redact() Connection {
	if c.AWS != nil {
		a := *c.AWS
		if a.SecretAccessKey != "" {
			a.SecretAccessKey = Redacted
		}
		if a.SessionToken != "" {
			a.SessionToken = Redacted
		}
		c.AWS = &a
	}
	if c.GCP != nil {
		g := *c.GCP
		if len(g.ServiceAccountKey) > 0 {
			g.ServiceAccountKey = redactKey(g.ServiceAccountKey)
		}
		c.GCP = &g
	}
	return c
}

func redactKey(raw json.RawMessage) json.RawMessage {
	k, err := ParseServiceAccountKey(raw)
	if err != nil {
		b, _ := json.Marshal(Redacted)
		return b
	}
	out := ServiceAccountKey{Type: k.Type, ProjectID: k.ProjectID, PrivateKeyID: k.PrivateKeyID,
		ClientEmail: k.ClientEmail, ClientID: k.ClientID, TokenURI: k.TokenURI, PrivateKey: Redacted}
	b, _ := json.Marshal(out)
	return b
}

// KeepRedacted copies into c every sensitive field that c carries as Redacted
// from prev, the stored connection of the same name, so a connection read with
// get can be edited and put back. A Redacted field with nothing stored is a
// bad_request.
func (c *Connection) KeepRedacted(prev *Connection) error {
	if c.AWS != nil {
		var pa AWSConfig
		if prev != nil && prev.AWS != nil {
			pa = *prev.AWS
		}
		if c.AWS.SecretAccessKey == Redacted {
			if pa.SecretAccessKey == "" {
				return Errorf(CodeBadRequest, "aws.secret_access_key: is %q but no value is stored", Redacted)
			}
			c.AWS.SecretAccessKey = pa.SecretAccessKey
		}
		if c.AWS.SessionToken == Redacted {
			if pa.SessionToken == "" {
				return Errorf(CodeBadRequest, "aws.session_token: is %q but no value is stored", Redacted)
			}
			c.AWS.SessionToken = pa.SessionToken
		}
	}
	if c.GCP != nil && len(c.GCP.ServiceAccountKey) > 0 {
		k, err := ParseServiceAccountKey(c.GCP.ServiceAccountKey)
		if err != nil {
			return err
		}
		if k.PrivateKey == Redacted {
			if prev == nil || prev.GCP == nil || len(prev.GCP.ServiceAccountKey) == 0 {
				return Errorf(CodeBadRequest, "gcp.service_account_key.private_key: is %q but no key is stored", Redacted)
			}
			c.GCP.ServiceAccountKey = prev.GCP.ServiceAccountKey
		}
	}
	return nil
}

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
