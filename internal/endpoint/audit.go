package endpoint

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/cloudbridge/cloudbridge/events"
)

// AuditFields are what a handler learns for the audit event of its request.
// None of them is a secret value.
type AuditFields struct {
	Secret      string
	Version     string
	Cached      bool
	Stale       bool
	Role        string
	Scopes      []string
	Expires     time.Time
	Fingerprint string
}

// Auditor stores audit events (internal/audit.Publisher).
type Auditor interface {
	// Required reports whether a reply waits for its event to be stored.
	Required() bool
	// Publish records ev; in required mode it returns once it is stored.
	Publish(ctx context.Context, subject, msgID string, ev *events.AuditEvent) error
}

// Audit configures the runner's audit events.
type Audit struct {
	Auditor  Auditor
	Subjects events.Subjects
	// Instance is the worker's micro instance id.
	Instance func() string
}

// SetAudit makes the runner record an audit event of every request. Call it
// before the endpoints are registered.
func (r *Runner) SetAudit(a Audit) { r.audit = &a }

// requestID is the request's id: its Cloudbridge-Request-Id header when it is
// a sane token, else a new one.
func requestID(req micro.Request) (id string, given bool) {
	if h := req.Headers(); h != nil {
		if v := h.Get(events.HeaderRequestID); v != "" && len(v) <= 128 && printable(v) {
			return v, true
		}
	}
	return nuid.Next(), false
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// requester reads the client info NATS adds to requests that came through a
// service import (Nats-Request-Info).
func requester(req micro.Request) *events.Requester {
	h := req.Headers()
	if h == nil {
		return nil
	}
	v := h.Get(events.HeaderNATSRequestInfo)
	if v == "" || len(v) > 8192 {
		return nil
	}
	var ci struct {
		Account string `json:"acc"`
		User    string `json:"user"`
		Name    string `json:"name"`
		Host    string `json:"host"`
		Server  string `json:"server"`
	}
	if json.Unmarshal([]byte(v), &ci) != nil {
		return nil
	}
	rq := &events.Requester{Account: ci.Account, User: ci.User, Name: ci.Name, Host: ci.Host, Server: ci.Server}
	if *rq == (events.Requester{}) {
		return nil
	}
	return rq
}

// opOf maps an endpoint name to its audit op and admin verb: resolve, test,
// token, invalidate as they are; admin-<resource>-<verb> to admin and
// <resource>-<verb>.
func opOf(name string) (op, verb string) {
	if v, ok := strings.CutPrefix(name, "admin-"); ok {
		return events.OpAdmin, v
	}
	return name, ""
}

// token is a subject token for an audit subject: a valid name, else "_".
func token(s string) string {
	if events.ValidName(s) {
		return s
	}
	return "_"
}

// auditEvent builds the event of a request with outcome code.
func (r *Runner) auditEvent(name string, req micro.Request, f *Fields, id string, start time.Time, code string, sealed bool, replyKey string) (subject, msgID string, ev *events.AuditEvent) {
	op, verb := opOf(name)
	ev = &events.AuditEvent{Time: start.UTC(), Op: op, Verb: verb, Group: f.Group, Connection: f.Conn,
		Secret: f.Audit.Secret, Version: f.Audit.Version, Cached: f.Audit.Cached, Stale: f.Audit.Stale,
		Outcome: code, LatencyMS: float64(time.Since(start).Microseconds()) / 1000, RequestID: id,
		Requester: requester(req), Role: f.Audit.Role, Scopes: f.Audit.Scopes, Fingerprint: f.Audit.Fingerprint,
		Sealed: sealed, ReplyKey: replyKey}
	if f.Export != "" && ev.Connection == "" {
		ev.Connection = f.Export
	}
	if !f.Audit.Expires.IsZero() {
		e := f.Audit.Expires.UTC()
		ev.Expires = &e
	}
	if r.audit.Instance != nil {
		ev.Instance = r.audit.Instance()
	}
	if op == events.OpAdmin {
		subject = r.audit.Subjects.AuditAdmin(token(verb))
	} else {
		subject = r.audit.Subjects.Audit(op, token(f.Group), token(f.Conn))
	}
	// One event per request, whichever workers saw it: the requester's id,
	// else its reply inbox (unique per request), else the id made here.
	switch {
	case req.Reply() != "":
		msgID = op + ":" + req.Reply()
	default:
		msgID = op + ":" + id
	}
	return subject, msgID, ev
}
