package endpoint

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
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
	// Required reports whether a reply waits for its event to be stored
	// (but a throttled refusal's: see Publish).
	Required() bool
	// Publish records ev. In required mode it returns once ev is stored (or
	// the error saying it was not), except for the event of a throttled
	// refusal, which it only queues (internal/audit summarises them), never
	// waiting for the stream: finish replies to a throttled refusal on the
	// subscription's goroutine in both modes. Otherwise it never waits.
	// It takes ev: the runner never uses ev again (Audit.NewEvent may
	// reuse it).
	Publish(ctx context.Context, subject, msgID string, ev *events.AuditEvent) error
}

// Audit configures the runner's audit events.
type Audit struct {
	Auditor  Auditor
	Subjects events.Subjects
	// Instance is the worker's micro instance id.
	Instance func() string
	// NewEvent, when set, is where the events come from
	// (internal/audit.NewEvent: reused once published); else each is new.
	NewEvent func() *events.AuditEvent
	// MaxWaiting bounds the replies waiting at once for their event to be
	// stored (required mode; default DefaultAuditWaits): past it a request
	// is refused at once with unavailable.
	MaxWaiting int
}

// auditWaitsFull counts the requests refused because MaxWaiting replies
// already waited for their audit event.
var auditWaitsFull = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "cloudbridge_audit_waits_full_total",
	Help: "Requests refused (unavailable) because too many replies already waited for their audit event to be stored (serve --audit required).",
})

func init() { metrics.Registry.MustRegister(auditWaitsFull) }

// AuditWaitsFull is the count of requests refused for the audit's backlog,
// for tests.
func AuditWaitsFull() float64 {
	var m dto.Metric
	_ = auditWaitsFull.Write(&m)
	return m.GetCounter().GetValue()
}

// AuditWaiting is the number of replies waiting for their audit event to be
// stored (required mode): the places of Audit.MaxWaiting taken.
func (r *Runner) AuditWaiting() int { return len(r.auditWaits) }

// SetAudit makes the runner record an audit event of every request. Call it
// before the endpoints are registered.
func (r *Runner) SetAudit(a Audit) {
	if a.MaxWaiting <= 0 {
		a.MaxWaiting = DefaultAuditWaits
	}
	r.audit = &a
	r.subjects.reset() // of the former Subjects, if any
	r.auditWaits = make(chan struct{}, a.MaxWaiting)
}

// requestID is the request's Cloudbridge-Request-Id header when it is a sane
// token, else "".
func requestID(req micro.Request) string {
	if h := req.Headers(); h != nil {
		if v := h.Get(events.HeaderRequestID); v != "" && len(v) <= 128 && printable(v) {
			return v
		}
	}
	return ""
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

// publishAudit records the event of a request with outcome code, taking d
// (the duration counted in /metrics and $SRV.STATS) as its latency (failed:
// nothing was served, so no fingerprint).
func (r *Runner) publishAudit(name string, req micro.Request, f *Fields, id string, start time.Time, d time.Duration, code, replyKey string, sealed, failed bool) error {
	subject, msgID, ev := r.auditEvent(name, req, f, id, start, d, code, sealed, replyKey)
	if failed {
		ev.Fingerprint = ""
	}
	return r.audit.Auditor.Publish(context.Background(), subject, msgID, ev)
}

// auditEvent builds the event of a request with outcome code; msgID is set
// for invalidate only, the one broadcast (the stream's duplicate detection
// stores it once whichever workers saw it).
func (r *Runner) auditEvent(name string, req micro.Request, f *Fields, id string, start time.Time, d time.Duration, code string, sealed bool, replyKey string) (subject, msgID string, ev *events.AuditEvent) {
	op, verb := opOf(name)
	if r.audit.NewEvent != nil {
		ev = r.audit.NewEvent()
	} else {
		ev = new(events.AuditEvent)
	}
	*ev = events.AuditEvent{Time: start.UTC(), Op: op, Verb: verb, Group: f.Group, Connection: f.Conn,
		Secret: f.Audit.Secret, Version: f.Audit.Version, Cached: f.Audit.Cached, Stale: f.Audit.Stale,
		Outcome: code, LatencyMS: float64(d.Microseconds()) / 1000, RequestID: id,
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
		subject = r.subjects.get(r.audit.Subjects, op, token(f.Group), token(f.Conn))
	}
	// One event per request, whichever workers saw it: its reply inbox
	// (unique per request), else its id.
	if op == events.OpInvalidate {
		if req.Reply() != "" {
			msgID = op + ":" + req.Reply()
		} else {
			msgID = op + ":" + id
		}
	}
	return subject, msgID, ev
}

// maxCachedSubjects bounds subjectCache: the groups and connections named
// by requests (their subject's tokens, whatever a requester sends), past
// which a subject is built for each event.
const maxCachedSubjects = 4096

// subjectCache holds the audit subjects of (op, group, connection) built by
// events.Subjects.Audit, so an event does not build its subject string again
// (a cached resolve's, a flood's throttled refusals'), up to
// maxCachedSubjects of them. A hit takes no lock (sync.Map).
type subjectCache struct {
	set atomic.Pointer[subjectSet]
}

// subjectSet is one generation of the cache: reset starts a new one.
type subjectSet struct {
	m sync.Map // subjectKey → string
	n atomic.Int64
}

type subjectKey struct{ op, group, conn string }

func (c *subjectCache) reset() { c.set.Store(nil) }

// len is how many subjects are cached.
func (c *subjectCache) len() int {
	if set := c.set.Load(); set != nil {
		return int(set.n.Load())
	}
	return 0
}

// get is s.Audit(op, group, conn), cached.
func (c *subjectCache) get(s events.Subjects, op, group, conn string) string {
	set := c.set.Load()
	if set != nil {
		if subject, ok := set.m.Load(subjectKey{op, group, conn}); ok {
			return subject.(string)
		}
	} else {
		set = new(subjectSet)
		if !c.set.CompareAndSwap(nil, set) {
			set = c.set.Load()
		}
	}
	subject := s.Audit(op, group, conn)
	if set == nil { // reset meanwhile
		return subject
	}
	// A place is taken first, so the bound holds under concurrent misses;
	// given back when full or when another miss stored the key first.
	stored := false
	if set.n.Add(1) <= maxCachedSubjects {
		// The key's own copies: not the request subject they were cut from.
		_, loaded := set.m.LoadOrStore(subjectKey{op, strings.Clone(group), strings.Clone(conn)}, subject)
		stored = !loaded
	}
	if !stored {
		set.n.Add(-1)
	}
	return subject
}
