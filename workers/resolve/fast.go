package resolve

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// The fast path answers a cached resolve on the subscription's goroutine,
// with the checks of the regular path (strict decoding, group, allowlist)
// from memos: request bodies already decoded and validated, and replies
// already rendered for the cached value. Anything else (a miss, an error, a
// stale value, fresh) goes to the regular path.

// memoLimit bounds each memo; a full memo is emptied.
const memoLimit = 4096

// maxMemoBody is the largest request body worth memoizing.
const maxMemoBody = 512

type fastPath struct {
	mu      sync.RWMutex
	bodies  map[string]events.ResolveRequest
	replies map[replyKey]renderedReply
}

// replyKey names a rendered reply: the request's connection, secret,
// version and keys (each prefixed with its length, so no two lists of keys
// share an encoding).
type replyKey struct {
	conn, secret, version, keys string
}

type renderedReply struct {
	version     string
	fetched     time.Time
	body        []byte
	fingerprint string
}

func newFastPath() *fastPath {
	return &fastPath{bodies: map[string]events.ResolveRequest{}, replies: map[replyKey]renderedReply{}}
}

// remember notes body as a valid request decoded into in (only the bodies of
// requests the cache answered: a flood of distinct bodies must not push them out).
func (p *fastPath) remember(body []byte, in events.ResolveRequest) {
	if len(body) > maxMemoBody {
		return
	}
	p.mu.Lock()
	if _, ok := p.bodies[string(body)]; !ok {
		if len(p.bodies) >= memoLimit {
			clear(p.bodies)
		}
		p.bodies[string(body)] = in
	}
	p.mu.Unlock()
}

// known returns a request body already decoded and found valid.
func (p *fastPath) known(body []byte) (events.ResolveRequest, bool) {
	if len(body) > maxMemoBody {
		return events.ResolveRequest{}, false
	}
	p.mu.RLock()
	in, ok := p.bodies[string(body)]
	p.mu.RUnlock()
	return in, ok
}

// rendered returns the reply body for sec, rendering it once per value.
func (p *fastPath) rendered(conn string, in events.ResolveRequest, sec provider.Secret, fingerprint func([]byte) string) (renderedReply, bool) {
	key := replyKey{conn: conn, secret: in.Secret, version: in.Version, keys: joinKeys(in.Keys)}
	p.mu.RLock()
	r, ok := p.replies[key]
	p.mu.RUnlock()
	if ok && r.version == sec.Version && r.fetched.Equal(sec.FetchedAt) {
		return r, true
	}
	out, err := Shape(conn, in.Secret, sec, in.Keys)
	if err != nil {
		return renderedReply{}, false
	}
	body, err := events.Marshal(out)
	if err != nil {
		return renderedReply{}, false
	}
	p.mu.Lock()
	if len(p.replies) >= memoLimit {
		clear(p.replies)
	}
	r = renderedReply{version: sec.Version, fetched: sec.FetchedAt, body: body, fingerprint: fingerprint(sec.Data)}
	p.replies[key] = r
	p.mu.Unlock()
	return r, true
}

// joinKeys encodes a list of keys unambiguously: ["a\x00b"] and ["a","b"]
// differ.
func joinKeys(keys []string) string {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(strconv.Itoa(len(k)))
		b.WriteByte(':')
		b.WriteString(k)
	}
	return b.String()
}

// forget drops the rendered replies of a connection.
func (p *fastPath) forget(conn string) {
	p.mu.Lock()
	for k := range p.replies {
		if k.conn == conn {
			delete(p.replies, k)
		}
	}
	p.mu.Unlock()
}

// fastResolve answers a cached resolve inline, on the subscription's
// goroutine, or declines: only a body already known (memoized when the cache
// answered it before) is considered, so a request costs no decoding here.
func (w *Worker) fastResolve(req micro.Request, f *endpoint.Fields) ([]byte, bool) {
	in, ok := w.fast.known(req.Data())
	if !ok {
		return nil, false
	}
	group, name, err := w.cfg.Subjects.ParseOp(events.OpResolve, req.Subject())
	if err != nil {
		return nil, false
	}
	return w.hit(req, f, group, name, in)
}

// hit answers a valid resolve request from the cache, with the checks of the
// regular path (group, allowlist, sealing), or declines.
func (w *Worker) hit(req micro.Request, f *endpoint.Fields, group, name string, in events.ResolveRequest) ([]byte, bool) {
	if in.Fresh {
		return nil, false
	}
	c, ok := w.cfg.Connections.Connection(name)
	if !ok || !c.AllowsGroup(group) || !c.AllowsSecret(in.Secret) || (c.RequireSealed && !sealedRequest(req)) {
		return nil, false
	}
	sec, ok := w.cfg.Cache.Peek(name, provider.Request{Secret: in.Secret, Version: in.Version})
	if !ok {
		return nil, false
	}
	r, ok := w.fast.rendered(name, in, sec, w.cfg.Fingerprint)
	if !ok {
		return nil, false
	}
	f.Group, f.Conn = group, name
	f.Audit.Secret = in.Secret
	auditServed(f, sec, r.fingerprint)
	return r.body, true
}
