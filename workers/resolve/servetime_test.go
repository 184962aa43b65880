package resolve

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

// holdingConns is fakeConns whose next Connection read, once held, waits
// for the test: the lane's stage reads the connection (opening its sealed
// record, in the registry), so the lane's goroutine is busy meanwhile and
// the requests behind it wait in the lane.
type holdingConns struct {
	*fakeConns
	next atomic.Pointer[connHold]
}

type connHold struct {
	entered, release chan struct{}
	once             sync.Once
}

func (h *connHold) let() { h.once.Do(func() { close(h.release) }) }

// holdNext makes the next Connection read wait until let is called.
func (c *holdingConns) holdNext(t *testing.T) *connHold {
	h := &connHold{entered: make(chan struct{}), release: make(chan struct{})}
	c.next.Store(h)
	t.Cleanup(h.let)
	return h
}

func (c *holdingConns) Connection(name string) (events.Connection, bool) {
	if h := c.next.Swap(nil); h != nil {
		close(h.entered)
		<-h.release
	}
	return c.fakeConns.Connection(name)
}

// rotatingProvider serves each secret at the version set last; while held,
// its reads of db1 wait for the test.
type rotatingProvider struct {
	mu      sync.Mutex
	version int
	hold    chan struct{}
	held    int // reads of db1 that waited on hold
}

func (p *rotatingProvider) rotate() {
	p.mu.Lock()
	p.version++
	p.mu.Unlock()
}

func (p *rotatingProvider) holdDB1(t *testing.T) (let func()) {
	p.mu.Lock()
	p.hold = make(chan struct{})
	h := p.hold
	p.mu.Unlock()
	var once sync.Once
	let = func() {
		once.Do(func() {
			p.mu.Lock()
			p.hold = nil
			p.mu.Unlock()
			close(h)
		})
	}
	t.Cleanup(let)
	return let
}

func (p *rotatingProvider) heldReads() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

func (p *rotatingProvider) Resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	p.mu.Lock()
	h := p.hold
	if h != nil && req.Secret == "db1" {
		p.held++
	}
	p.mu.Unlock()
	if h != nil && req.Secret == "db1" {
		select {
		case <-h:
		case <-ctx.Done():
			return provider.Secret{}, events.ErrUnavailable
		}
	}
	p.mu.Lock()
	v := strconv.Itoa(p.version)
	p.mu.Unlock()
	return provider.Secret{Version: "v" + v, Data: []byte(`{"login":"u","password":"p` + v + `"}`)}, nil
}

// laneRequest is a request as srv.Request is: it knows its arrival time,
// and its reply (or error) goes to replies.
type laneRequest struct {
	fakeRequest
	arrived time.Time
	replies chan laneReply
}

type laneReply struct {
	body []byte
	code string // an error's
}

func (r *laneRequest) Arrived() time.Time { return r.arrived }

func (r *laneRequest) Respond(body []byte, _ ...micro.RespondOpt) error {
	r.replies <- laneReply{body: body}
	return nil
}

func (r *laneRequest) Error(code, desc string, body []byte, _ ...micro.RespondOpt) error {
	r.replies <- laneReply{body: body, code: code + " " + desc}
	return nil
}

var _ micro.Request = (*laneRequest)(nil)

func newLaneRequest(t *testing.T, in events.ResolveRequest) *laneRequest {
	return &laneRequest{fakeRequest: *newRequest(t, "bio", "c1", in), arrived: time.Now(), replies: make(chan laneReply, 1)}
}

// newServeTimeWorker is a worker for connection c1 (TTL ttl, 0: the
// default) behind the resolve endpoint's handler, on the store's real clock:
// the clock of a request's arrival (srv.Request), as in production.
func newServeTimeWorker(t *testing.T, ttl time.Duration) (*Worker, micro.Handler, *holdingConns, *rotatingProvider) {
	t.Helper()
	conns := &holdingConns{fakeConns: &fakeConns{by: map[string]events.Connection{}}}
	conns.set(events.Connection{Name: "c1", Provider: "fake", Groups: []string{"bio"}, Secrets: []string{"db*"},
		Cache: &events.CachePolicy{TTL: events.Duration(ttl)}})
	store := cache.New(cache.Options{})
	t.Cleanup(store.Close)
	p := &rotatingProvider{version: 1}
	runner := endpoint.NewRunner(zerolog.Nop(), 10*time.Second, 16)
	w := New(Config{Connections: conns, Cache: store, Runner: runner, Factories: map[string]provider.Factory{
		"fake": func(context.Context, events.Connection) (provider.Resolver, error) { return p, nil },
	}})
	t.Cleanup(w.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := runner.Wait(ctx); err != nil {
			t.Errorf("requests still running: %v", err)
		}
	})
	return w, w.dispatched(events.OpResolve, w.fastResolve, w.handleResolve), conns, p
}

const serveTimeWait = 10 * time.Second

func waitEntered(t *testing.T, h *connHold) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(serveTimeWait):
		t.Fatal("the lane's stage never read the connection")
	}
}

func replyOf(t *testing.T, r *laneRequest) *events.ResolveReply {
	t.Helper()
	var got laneReply
	select {
	case got = <-r.replies:
	case <-time.After(serveTimeWait):
		t.Fatalf("no reply to %s", r.data)
	}
	if got.code != "" {
		t.Fatalf("%s: error %s: %s", r.data, got.code, got.body)
	}
	var out events.ResolveReply
	if err := json.Unmarshal(got.body, &out); err != nil {
		t.Fatalf("%s: %v: %s", r.data, err, got.body)
	}
	return &out
}

func noReplyYet(t *testing.T, r *laneRequest) {
	t.Helper()
	select {
	case got := <-r.replies:
		t.Fatalf("%s was answered while its lane was busy (not queued in the lane?): %s %s", r.data, got.code, got.body)
	default:
	}
}

// checkNew fails unless out is db1's value after the rotation (v2), not
// the v1 cached before it; fetched says it must be read from the provider
// (not cached) too.
func checkNew(t *testing.T, out *events.ResolveReply, fetched bool) {
	t.Helper()
	if out.Version != "v2" || string(out.Credentials["password"]) != `"p2"` || (fetched && out.Cached) {
		t.Fatalf("the request that waited in its lane got version %q (cached %v, password %s), want v2%s: "+
			"the cached value was judged at the request's arrival, not when it was served",
			out.Version, out.Cached, out.Credentials["password"], map[bool]string{true: " read from the provider"}[fetched])
	}
}

// TestLaneHitJudgedWhenServed: a resolve that waits in its connection's
// lane (behind a request whose stage is busy) is judged against the cache
// when the lane serves it, not at its arrival: a value whose TTL ran out,
// or that a rotation's Refresh marked outdated, while it waited is not
// served (02f103e). The requests go through the resolve endpoint's handler;
// the one that waits has a body never answered before, so the inline path
// does not know it and it goes to the lane.
func TestLaneHitJudgedWhenServed(t *testing.T) {
	// db1 is cached at v1; the request a holds the lane's goroutine in its
	// stage; b, for db1, arrives behind it, before the change.
	a := events.ResolveRequest{Secret: "db2", Keys: []string{"password"}}
	b := events.ResolveRequest{Secret: "db1", Keys: []string{"password"}}

	t.Run("ttl", func(t *testing.T) {
		const ttl = 300 * time.Millisecond
		w, h, conns, p := newServeTimeWorker(t, ttl)
		warm(t, w, "bio", "c1", events.ResolveRequest{Secret: "db1"})
		warmed := time.Now() // db1's value expires by warmed+ttl
		p.rotate()           // the cloud's value is v2 from now on

		hold := conns.holdNext(t)
		ra := newLaneRequest(t, a)
		h.Handle(ra)
		waitEntered(t, hold)
		rb := newLaneRequest(t, b)
		if !rb.arrived.Before(warmed.Add(ttl)) {
			t.Skipf("the request arrived %v after db1 was cached, past its TTL %v: too slow to test", rb.arrived.Sub(warmed), ttl)
		}
		h.Handle(rb)
		noReplyYet(t, rb)
		// The TTL runs out, on the store's clock (the real one), while b
		// waits.
		testenv.Eventually(t, serveTimeWait, "db1's TTL to run out", func() bool { return time.Now().After(warmed.Add(ttl)) })
		noReplyYet(t, rb)
		hold.let()

		// Only b reads db1: it is read from the provider.
		checkNew(t, replyOf(t, rb), true)
		if out := replyOf(t, ra); out.Version != "v2" {
			t.Fatalf("db2: %+v", out)
		}
	})

	t.Run("refresh", func(t *testing.T) {
		w, h, conns, p := newServeTimeWorker(t, 0) // the default TTL: nothing expires
		warm(t, w, "bio", "c1", events.ResolveRequest{Secret: "db1"})
		// db2 too: the request holding the lane is then a hit, admitted
		// nowhere, so the one admission seen below is b's.
		warm(t, w, "bio", "c1", events.ResolveRequest{Secret: "db2"})
		admit := w.bulkheadFor("c1").admit

		hold := conns.holdNext(t)
		ra := newLaneRequest(t, a)
		h.Handle(ra)
		waitEntered(t, hold)
		rb := newLaneRequest(t, b)
		h.Handle(rb)
		noReplyYet(t, rb)

		// A rotation event while b waits: db1 changed in the cloud, and
		// its re-read is held at the provider.
		p.rotate()
		let := p.holdDB1(t)
		var f endpoint.Fields
		body, _ := json.Marshal(events.InvalidateRequest{Connection: "c1", Secret: "db1", Refresh: true})
		if _, err := w.handleInvalidate(context.Background(), &fakeRequest{data: body}, &f); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, serveTimeWait, "the rotation's re-read of db1", func() bool { return p.heldReads() > 0 })
		noReplyYet(t, rb)
		hold.let()

		// a, db2 unchanged, is answered from the cache by the lane.
		if out := replyOf(t, ra); out.Version != "v1" || !out.Cached {
			t.Fatalf("db2: %+v", out)
		}
		// b either is answered at once (from the cache: the outdated v1)
		// or, missing, is admitted to the bulkhead and waits for the
		// re-read.
		testenv.Eventually(t, serveTimeWait, "b to be answered or admitted", func() bool { return len(rb.replies) > 0 || admit.InUse() > 0 })
		let()
		// Joining the re-read, or finding the value it stored (b may get
		// to the cache after the re-read is over): v2 either way.
		checkNew(t, replyOf(t, rb), false)
	})
}
