package events

import (
	"strings"
	"time"
)

// Audit operations beyond OpResolve, OpTest and OpToken: the third token of
// an audit subject.
const (
	OpInvalidate = "invalidate"
	OpAdmin      = "admin"
)

// ResourceAudit is the admin resource of the audit helpers:
// cloudbridge.v1.admin.audit.fingerprint.
const (
	ResourceAudit   = "audit"
	VerbFingerprint = "fingerprint"
)

// Audit is the subject of the audit event of a request of op (resolve, test,
// token, invalidate) by group on conn: cloudbridge.v1.audit.<op>.<group>.<conn>.
func (s Subjects) Audit(op, group, conn string) string {
	return s.base() + ".audit." + op + "." + group + "." + conn
}

// AuditAdmin is the subject of the audit event of an admin request:
// cloudbridge.v1.audit.admin.<verb>, verb being the admin subject's tokens
// after "admin." joined by "-" (e.g. connections-put, rekey).
func (s Subjects) AuditAdmin(verb string) string { return s.base() + ".audit.admin." + verb }

// AuditWildcard matches every audit event.
func (s Subjects) AuditWildcard() string { return s.base() + ".audit.>" }

// AuditPrefix starts every audit subject (with its trailing dot).
func (s Subjects) AuditPrefix() string { return s.base() + ".audit." }

// AuditStream is the name of the audit stream (subjects AuditWildcard):
// CLOUDBRIDGE_AUDIT for the default prefix.
func (s Subjects) AuditStream() string { return upperPrefix(s) + "_AUDIT" }

// AdminAuditFingerprint is the subject computing the fingerprint of a
// secret's current value.
func (s Subjects) AdminAuditFingerprint() string { return s.Admin(ResourceAudit, VerbFingerprint) }

// Header names of requests and replies.
const (
	// HeaderRequestID names a request; the worker echoes it in the reply and
	// the audit event, and binds a sealed reply to it. Without it the worker
	// makes one up.
	HeaderRequestID = "Cloudbridge-Request-Id"
	// HeaderReplyKey carries the requester's public curve key (X…): the reply
	// body is then sealed to it.
	HeaderReplyKey = "Cloudbridge-Reply-Key"
	// HeaderSenderKey carries the worker's public curve key on a sealed reply.
	HeaderSenderKey = "Cloudbridge-Sender-Key"
	// HeaderNATSRequestInfo is the client info the NATS server adds to a
	// request that came through a service import shared with client info.
	HeaderNATSRequestInfo = "Nats-Request-Info"
)

// Audit outcomes beyond the error codes.
const OutcomeOK = "ok"

// AuditEvent is the value-free record of one request, published on
// Subjects.Audit (or AuditAdmin) and stored in the audit stream. It never
// holds a secret value: Fingerprint lets an auditor check whether a given
// value was served without the log holding it.
type AuditEvent struct {
	Time       time.Time `json:"time"`
	Op         string    `json:"op"`
	Verb       string    `json:"verb,omitempty"`
	Group      string    `json:"group,omitempty"`
	Connection string    `json:"connection,omitempty"`
	Secret     string    `json:"secret,omitempty"`
	// Version is the version served (resolve), or the version asked for.
	Version string `json:"version,omitempty"`
	Cached  bool   `json:"cached,omitempty"`
	Stale   bool   `json:"stale,omitempty"`
	// Outcome is "ok" or the error code of the reply.
	Outcome string `json:"outcome"`
	// Count and Until are set on a summary of throttled refusals only
	// (outcome throttled): the event stands for Count throttled requests on
	// its subject of its Requester (itself, whose fields it carries, and
	// Count-1 more), received from Time to Until, and never carries
	// ReplyKey nor Sealed. An event without Count stands for one request
	// (see README "Audit").
	Count int        `json:"count,omitempty"`
	Until *time.Time `json:"until,omitempty"`
	// LatencyMS is the time from receipt to reply, in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
	// Instance is the micro service instance id of the worker.
	Instance  string     `json:"instance,omitempty"`
	RequestID string     `json:"request_id"`
	Requester *Requester `json:"requester,omitempty"`
	// Token fields: the role assumed or the scopes granted, and the expiry.
	Role    string     `json:"role,omitempty"`
	Scopes  []string   `json:"scopes,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
	// Fingerprint is hex HMAC-SHA256 of the value served, under a key derived
	// from the master key (see README "Audit").
	Fingerprint string `json:"fingerprint,omitempty"`
	// Sealed says the reply body was sealed; ReplyKey is the requester's
	// public curve key it was sealed to.
	Sealed   bool   `json:"sealed,omitempty"`
	ReplyKey string `json:"reply_key,omitempty"`
}

// Requester is what NATS tells of a requester: the client info a service
// import adds (Nats-Request-Info).
type Requester struct {
	Account string `json:"account,omitempty"`
	User    string `json:"user,omitempty"`
	Name    string `json:"name,omitempty"`
	Host    string `json:"host,omitempty"`
	Server  string `json:"server,omitempty"`
}

// FingerprintRequest is the body of cloudbridge.v1.admin.audit.fingerprint.
type FingerprintRequest struct {
	Connection string `json:"connection"`
	Secret     string `json:"secret"`
	Version    string `json:"version,omitempty"`
}

// Validate checks the request.
func (r *FingerprintRequest) Validate() error {
	if err := CheckName("connection", r.Connection); err != nil {
		return err
	}
	if err := CheckSecretName("secret", r.Secret); err != nil {
		return err
	}
	return checkVersionKeys(r.Version, nil)
}

// FingerprintReply is the fingerprint of a secret's current value.
type FingerprintReply struct {
	Connection  string `json:"connection"`
	Secret      string `json:"secret"`
	Version     string `json:"version,omitempty"`
	Fingerprint string `json:"fingerprint"`
}

func upperPrefix(s Subjects) string { return strings.ToUpper(s.prefixName()) }
