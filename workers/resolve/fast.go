package resolve

import (
	"hash/maphash"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// The fast path answers a cached resolve on the subscription's goroutine,
// with the checks of the regular path (strict decoding, group, allowlist)
// from memos: request bodies already decoded and validated, and replies
// already rendered for the cached value. Anything else (a miss, an error, a
// stale value, fresh) goes to the regular path.

// memoSlots is the number of entries of each memo (a power of two). A memo
// is a table of atomic pointers, read and written without a lock: a key has
// two slots (two halves of its hash), and an entry whose slots both hold
// others pushes one of them out. So a memo is bounded without ever being
// emptied, and a hit takes no lock shared with other requests.
const memoSlots = 4096

// maxMemoBody is the largest request body worth memoizing.
const maxMemoBody = 512

// maxMemoSubject is the longest request subject worth memoizing.
const maxMemoSubject = 256

type fastPath struct {
	seed maphash.Seed
	// requests are the requests the cache answered before, by subject and
	// body.
	requests [memoSlots]atomic.Pointer[memo]
	// replies are the replies rendered for the values last served, by
	// replyKey.
	replies [memoSlots]atomic.Pointer[renderedReply]
}

// memo is a resolve request (subject and body) already parsed, decoded
// and found valid, with the key of its rendered reply and that key's hash.
type memo struct {
	subject, body string
	group, conn   string
	in            events.ResolveRequest
	key           replyKey
	hash          uint64
	// ref is the request's key in the cache.
	ref *cache.Ref
}

// replyKey names a rendered reply: the request's connection, secret,
// version and keys (each prefixed with its length, so no two lists of keys
// share an encoding).
type replyKey struct {
	conn, secret, version, keys string
}

type renderedReply struct {
	key         replyKey
	version     string
	fetched     time.Time
	body        []byte
	fingerprint string
}

func newFastPath() *fastPath {
	return &fastPath{seed: maphash.MakeSeed()}
}

// slots are the two slots of hash h.
func slots(h uint64) (int, int) {
	return int(h & (memoSlots - 1)), int((h >> 32) & (memoSlots - 1))
}

// requestHash is the memo hash of a request's subject and body.
func (p *fastPath) requestHash(subject string, body []byte) uint64 {
	return maphash.String(p.seed, subject) ^ maphash.Bytes(p.seed, body)*0x9e3779b97f4a7c15
}

// newMemo is the memo of a valid request: subject, parsed as group and conn,
// and body, decoded as in.
func (p *fastPath) newMemo(subject string, body []byte, group, conn string, in events.ResolveRequest, ref *cache.Ref) *memo {
	m := &memo{subject: subject, body: string(body), group: group, conn: conn, in: in, ref: ref,
		key: replyKey{conn: conn, secret: in.Secret, version: in.Version, keys: joinKeys(in.Keys)}}
	m.hash = maphash.Comparable(p.seed, m.key)
	return m
}

// remember notes m, a request the cache answered (only those: a flood of
// distinct bodies must not push them out).
func (p *fastPath) remember(m *memo) {
	if len(m.body) > maxMemoBody || len(m.subject) > maxMemoSubject {
		return
	}
	a, b := slots(p.requestHash(m.subject, []byte(m.body)))
	put(&p.requests, a, b, m, func(o *memo) bool { return o.subject == m.subject && o.body == m.body })
}

// put stores v in slot a or b: the one holding the same key (same), else
// an empty one, else a.
func put[T any](table *[memoSlots]atomic.Pointer[T], a, b int, v *T, same func(*T) bool) {
	oa, ob := table[a].Load(), table[b].Load()
	switch {
	case oa != nil && same(oa):
		table[a].Store(v)
	case ob != nil && same(ob):
		table[b].Store(v)
	case oa == nil || ob != nil:
		table[a].Store(v)
	default:
		table[b].Store(v)
	}
}

// known returns the memo of a request already answered by the cache, or
// nil.
func (p *fastPath) known(subject string, body []byte) *memo {
	if len(body) > maxMemoBody || len(subject) > maxMemoSubject {
		return nil
	}
	a, b := slots(p.requestHash(subject, body))
	if m := p.requests[a].Load(); m != nil && m.subject == subject && m.body == string(body) {
		return m
	}
	if m := p.requests[b].Load(); m != nil && m.subject == subject && m.body == string(body) {
		return m
	}
	return nil
}

// rendered returns the reply body of m for sec, rendering it once per value.
func (p *fastPath) rendered(m *memo, sec provider.Secret, fingerprint func([]byte) string) (*renderedReply, bool) {
	a, b := slots(m.hash)
	for _, i := range [2]int{a, b} {
		if r := p.replies[i].Load(); r != nil && r.key == m.key && r.version == sec.Version && r.fetched.Equal(sec.FetchedAt) {
			return r, true
		}
	}
	out, err := Shape(m.conn, m.in.Secret, sec, m.in.Keys)
	if err != nil {
		return nil, false
	}
	body, err := events.Marshal(out)
	if err != nil {
		return nil, false
	}
	r := &renderedReply{key: m.key, version: sec.Version, fetched: sec.FetchedAt, body: body, fingerprint: fingerprint(sec.Data)}
	put(&p.replies, a, b, r, func(o *renderedReply) bool { return o.key == m.key })
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

// forget drops the rendered replies of a connection, and the cache entries
// its memos hold.
func (p *fastPath) forget(conn string) {
	for i := range p.replies {
		if r := p.replies[i].Load(); r != nil && r.key.conn == conn {
			p.replies[i].CompareAndSwap(r, nil)
		}
	}
	for i := range p.requests {
		if m := p.requests[i].Load(); m != nil && m.conn == conn {
			m.ref.Forget()
		}
	}
}

// fastResolve answers a cached resolve inline, on the subscription's
// goroutine, or declines: only a request already known (memoized when the
// cache answered it before, subject and body) is considered, so a request
// costs no decoding nor subject parsing here.
func (w *Worker) fastResolve(req micro.Request, f *endpoint.Fields) ([]byte, bool) {
	m := w.fast.known(req.Subject(), req.Data())
	if m == nil {
		return nil, false
	}
	return w.hit(req, f, m)
}

// hit answers a valid resolve request m from the cache, with the checks of
// the regular path (group, allowlist, sealing), or declines.
func (w *Worker) hit(req micro.Request, f *endpoint.Fields, m *memo) ([]byte, bool) {
	in := &m.in
	if in.Fresh {
		return nil, false
	}
	c, ok := w.cfg.Connections.Connection(m.conn)
	if !ok || !c.AllowsGroup(m.group) || !c.AllowsSecret(in.Secret) || (c.RequireSealed && !sealedRequest(req)) {
		return nil, false
	}
	sec, ok := w.cfg.Cache.PeekRef(m.ref)
	if !ok {
		return nil, false
	}
	r, ok := w.fast.rendered(m, sec, w.cfg.Fingerprint)
	if !ok {
		return nil, false
	}
	f.Group, f.Conn = m.group, m.conn
	f.Audit.Secret = in.Secret
	auditServed(f, sec, r.fingerprint)
	return r.body, true
}
