package endpoint_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

const secretText = "hunter2-PLAINTEXT-in-an-error"

type harness struct {
	t      *testing.T
	ns     *server.Server
	nc     *nats.Conn // the requester
	wnc    *nats.Conn // the worker's connection
	svc    *srv.Service
	runner *endpoint.Runner
	logs   *testenv.Buffer
}

var endpointSeq atomic.Int64

// uniqueName gives each endpoint its own metric labels, so tests sharing the
// process-wide collectors do not see each other's counts.
func uniqueName(t *testing.T) string {
	return fmt.Sprintf("test-%d", endpointSeq.Add(1))
}

func newHarness(t *testing.T, timeout time.Duration, maxInFlight int) *harness {
	t.Helper()
	ns := natstest.Server(t)
	wnc := natstest.Connect(t, ns)
	logs := &testenv.Buffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	svc, err := srv.Add(wnc, srv.Config{Name: "endpointtest", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return &harness{t: t, ns: ns, nc: natstest.Connect(t, ns), wnc: wnc, svc: svc,
		runner: endpoint.NewRunner(log, timeout, maxInFlight), logs: logs}
}

func (h *harness) add(name, subject string, handler micro.Handler) {
	h.t.Helper()
	if err := h.svc.AddEndpoint(name, handler, srv.WithSubject(subject)); err != nil {
		h.t.Fatal(err)
	}
	// AddEndpoint subscribes on the worker's connection; a round trip there
	// makes sure the server has the subscription before a request is sent.
	if err := h.wnc.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

// stats are endpoint name's $SRV.STATS counts.
func (h *harness) stats(name string) micro.EndpointStats {
	h.t.Helper()
	for _, e := range h.svc.Stats().Endpoints {
		if e.Name == name {
			return *e
		}
	}
	h.t.Fatalf("no endpoint %s in $SRV.STATS", name)
	return micro.EndpointStats{}
}

func (h *harness) request(subject string, body []byte) *nats.Msg {
	h.t.Helper()
	msg, err := h.nc.Request(subject, body, 10*time.Second)
	if err != nil {
		h.t.Fatalf("request %s: %v", subject, err)
	}
	return msg
}

// wantError checks the whole wire form of an error reply.
func wantError(t *testing.T, msg *nats.Msg, code events.Code) string {
	t.Helper()
	if got := msg.Header.Get(micro.ErrorCodeHeader); got != fmt.Sprint(code.Number()) {
		t.Fatalf("%s = %q, want %d (body %s)", micro.ErrorCodeHeader, got, code.Number(), msg.Data)
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(msg.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body %s: %v", msg.Data, err)
	}
	if body.Error.Code != string(code) || body.Error.Message == "" {
		t.Fatalf("error body %s, want code %s", msg.Data, code)
	}
	if h := msg.Header.Get(micro.ErrorHeader); h != body.Error.Message {
		t.Fatalf("%s = %q, body message %q", micro.ErrorHeader, h, body.Error.Message)
	}
	return body.Error.Message
}

func wantOK(t *testing.T, msg *nats.Msg) {
	t.Helper()
	if msg.Header.Get(micro.ErrorCodeHeader) != "" || msg.Header.Get(micro.ErrorHeader) != "" {
		t.Fatalf("success carries error headers: %v %s", msg.Header, msg.Data)
	}
}

func counter(name, code string) float64 {
	return testutil.ToFloat64(metrics.Requests.WithLabelValues(name, code))
}

// waitCounts waits for the request counters of endpoint name to reach want
// (metrics are recorded just after the reply is sent), then checks they stay
// exact: every code not in want is zero.
func waitCounts(t *testing.T, name string, want map[string]float64) {
	t.Helper()
	var sum float64
	for _, n := range want {
		sum += n
	}
	natstest.Eventually(t, 5*time.Second, fmt.Sprintf("request counts %v", want), func() bool {
		for code, n := range want {
			if counter(name, code) < n {
				return false
			}
		}
		return float64(observations(t, name)) >= sum
	})
	var total uint64
	for _, c := range append([]events.Code{"ok"}, events.Codes()...) {
		got := counter(name, string(c))
		if got != want[string(c)] {
			t.Fatalf("%s requests counted %v, want %v", c, got, want[string(c)])
		}
		total += uint64(got)
	}
	if obs := observations(t, name); obs != total {
		t.Fatalf("%d latency observations for %d requests", obs, total)
	}
}

func observations(t *testing.T, name string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.RequestDuration.WithLabelValues(name).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// The prelude every handler gets: the request, a deadline of the runner's
// timeout, fields for the log; the reply is the handler's value as JSON.
func TestHandlerPreludeAndReply(t *testing.T) {
	h := newHarness(t, 3*time.Second, 4)
	name := uniqueName(t)
	type reply struct {
		Echo        string  `json:"echo"`
		Subject     string  `json:"subject"`
		DeadlineSec float64 `json:"deadline_sec"`
	}
	h.add(name, "t.prelude", h.runner.Handler(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return nil, errors.New("no deadline")
		}
		f.Conn, f.Group, f.Export = "c1", "g1", "x1"
		return reply{Echo: string(req.Data()), Subject: req.Subject(), DeadlineSec: time.Until(dl).Seconds()}, nil
	}))
	msg := h.request("t.prelude", []byte(`{"secret":"`+secretText+`"}`))
	wantOK(t, msg)
	var got reply
	if err := json.Unmarshal(msg.Data, &got); err != nil {
		t.Fatalf("%s: %v", msg.Data, err)
	}
	if got.Echo != `{"secret":"`+secretText+`"}` || got.Subject != "t.prelude" || got.DeadlineSec <= 0 || got.DeadlineSec > 3 {
		t.Fatalf("reply %+v", got)
	}
	waitCounts(t, name, map[string]float64{"ok": 1})
	// One log event for the outcome, with the fields and without the payload.
	natstest.Eventually(t, 5*time.Second, "the outcome log", func() bool { return strings.Contains(h.logs.String(), `"endpoint":"`+name+`"`) })
	logs := h.logs.String()
	for _, want := range []string{`"conn":"c1"`, `"group":"g1"`, `"export":"x1"`, `"subject":"t.prelude"`, `"code":"ok"`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("log lacks %s: %s", want, logs)
		}
	}
	if strings.Contains(logs, secretText) {
		t.Fatalf("payload logged: %s", logs)
	}
}

func TestErrorReplies(t *testing.T) {
	h := newHarness(t, 3*time.Second, 4)
	cases := []struct {
		name    string
		err     error
		panics  bool
		code    events.Code
		message string // exact, when set
	}{
		{name: "wire", err: events.Errorf(events.CodeNotFound, "connection %q: not found", "x"), code: events.CodeNotFound, message: `connection "x": not found`},
		{name: "wrapped-sentinel", err: fmt.Errorf("group g: %w", events.ErrForbidden), code: events.CodeForbidden, message: "group g: forbidden"},
		{name: "each-code-too", err: events.ErrThrottled, code: events.CodeThrottled},
		{name: "plain", err: errors.New("driver said " + secretText), code: events.CodeInternal, message: "internal error"},
		{name: "panic", panics: true, code: events.CodeInternal, message: "internal error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := uniqueName(t)
			subject := "t.err." + tc.name
			h.add(name, subject, h.runner.Handler(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
				if tc.panics {
					panic("boom " + secretText)
				}
				return nil, tc.err
			}))
			msg := h.request(subject, nil)
			got := wantError(t, msg, tc.code)
			if tc.message != "" && got != tc.message {
				t.Fatalf("message %q, want %q", got, tc.message)
			}
			if strings.Contains(string(msg.Data), secretText) || strings.Contains(msg.Header.Get(micro.ErrorHeader), secretText) {
				t.Fatalf("reply leaks the error text: %s", msg.Data)
			}
			waitCounts(t, name, map[string]float64{string(tc.code): 1})
		})
	}
	// The worker still serves after a panic.
	name := uniqueName(t)
	h.add(name, "t.after", h.runner.Handler(name, func(context.Context, micro.Request, *endpoint.Fields) (any, error) {
		return events.Empty{}, nil
	}))
	msg := h.request("t.after", nil)
	wantOK(t, msg)
	if string(msg.Data) != "{}" {
		t.Fatalf("reply %s", msg.Data)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "recovered panic") || !strings.Contains(logs, `"panic":"string"`) {
		t.Fatalf("panic not logged by type: %s", logs)
	}
	if strings.Contains(logs, "boom") {
		t.Fatalf("panic value logged: %s", logs)
	}
}

// A reply that cannot be encoded is an internal error, not a hang.
func TestUnencodableReplyIsInternal(t *testing.T) {
	h := newHarness(t, 3*time.Second, 4)
	name := uniqueName(t)
	h.add(name, "t.enc", h.runner.Handler(name, func(context.Context, micro.Request, *endpoint.Fields) (any, error) {
		return map[string]any{"f": func() {}}, nil
	}))
	wantError(t, h.request("t.enc", nil), events.CodeInternal)
}

// Bodies are decoded with events.Decode: over the limit is too_large, bad
// JSON bad_request, and the limit itself is accepted.
func TestRequestBodies(t *testing.T) {
	h := newHarness(t, 3*time.Second, 4)
	name := uniqueName(t)
	h.add(name, "t.body", h.runner.Handler(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		var in struct {
			Pad string `json:"pad"`
		}
		if err := events.Decode(req.Data(), &in); err != nil {
			return nil, err
		}
		return map[string]int{"len": len(in.Pad)}, nil
	}))
	body := func(n int) []byte { // a valid body of exactly n bytes
		return []byte(`{"pad":"` + strings.Repeat("a", n-len(`{"pad":""}`)) + `"}`)
	}
	wantOK(t, h.request("t.body", body(events.MaxRequestSize)))
	msg := h.request("t.body", body(events.MaxRequestSize+1))
	if m := wantError(t, msg, events.CodeTooLarge); strings.Contains(m, "aaaa") {
		t.Fatalf("message echoes the body: %s", m)
	}
	wantError(t, h.request("t.body", body(900<<10)), events.CodeTooLarge)
	wantError(t, h.request("t.body", []byte(`{"pad":`)), events.CodeBadRequest)
	wantError(t, h.request("t.body", []byte(`{"pad":"x","other":1}`)), events.CodeBadRequest)
	waitCounts(t, name, map[string]float64{"too_large": 2, "bad_request": 2, "ok": 1})
}

// Each request runs under the runner's deadline.
func TestDeadline(t *testing.T) {
	h := newHarness(t, 200*time.Millisecond, 4)
	name := uniqueName(t)
	h.add(name, "t.slow", h.runner.Handler(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("waiting for the cloud: %w", events.ErrTimeout)
	}))
	wantError(t, h.request("t.slow", nil), events.CodeTimeout)
	waitCounts(t, name, map[string]float64{"timeout": 1})
}

// Handlers run concurrently up to maxInFlight; past it a request fails at
// once with throttled (no queue behind a busy endpoint), and the admitted
// ones all finish.
func TestBoundedConcurrency(t *testing.T) {
	const max = 3
	h := newHarness(t, 10*time.Second, max)
	name := uniqueName(t)
	var running, peak atomic.Int32
	gate := make(chan struct{})
	h.add(name, "t.conc", h.runner.Handler(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return events.Empty{}, nil
	}))
	var wg sync.WaitGroup
	errs := make(chan error, max)
	for i := 0; i < max; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := h.nc.Request("t.conc", nil, 10*time.Second)
			if err == nil && msg.Header.Get(micro.ErrorCodeHeader) != "" {
				err = fmt.Errorf("error reply %s", msg.Data)
			}
			errs <- err
		}()
	}
	natstest.Eventually(t, 5*time.Second, "the runner to fill", func() bool { return running.Load() == max })
	// The bound is reached: the next request is refused at once.
	for i := 0; i < 5; i++ {
		wantError(t, h.request("t.conc", nil), events.CodeThrottled)
	}
	if running.Load() > max {
		t.Fatalf("%d running, bound %d", running.Load(), max)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if peak.Load() != max {
		t.Fatalf("peak %d, bound %d", peak.Load(), max)
	}
	waitCounts(t, name, map[string]float64{"ok": max, "throttled": 5})
}

// Wait drains requests in flight, and gives up at its deadline.
func TestWaitDrains(t *testing.T) {
	h := newHarness(t, 10*time.Second, 4)
	name := uniqueName(t)
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	h.add(name, "t.drain", h.runner.Handler(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		started <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return events.Empty{}, nil
	}))
	sub, err := h.nc.SubscribeSync("t.drain.reply")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nc.PublishRequest("t.drain", "t.drain.reply", nil); err != nil {
		t.Fatal(err)
	}
	<-started
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.runner.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a request in flight: %v", err)
	}
	close(gate)
	long, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := h.runner.Wait(long); err != nil {
		t.Fatalf("Wait after the request ended: %v", err)
	}
	// The reply was sent before Wait returned.
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(msg.Data) != "{}" {
		t.Fatalf("reply: %v", err)
	}
}

// fastOnly is a handler whose fast answers every request inline.
func fastOnly(r *endpoint.Runner, name string, fast endpoint.FastFunc) micro.Handler {
	return r.Dispatched(name, fast, func(micro.Request, *endpoint.Fields) (string, error) { return "", nil }, nil, nil, nil)
}

// Fast answers what it can inline; the rest goes to the regular handler.
func TestFast(t *testing.T) {
	h := newHarness(t, 3*time.Second, 4)
	name := uniqueName(t)
	var slowCalls atomic.Int32
	fast := func(req micro.Request, f *endpoint.Fields) ([]byte, bool) {
		if string(req.Data()) == "hit" {
			f.Conn = "fastconn"
			return []byte(`{"fast":true}`), true
		}
		return nil, false
	}
	slow := func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		slowCalls.Add(1)
		if string(req.Data()) == "bad" {
			return nil, events.Errorf(events.CodeBadRequest, "bad")
		}
		return map[string]bool{"fast": false}, nil
	}
	admit := func(micro.Request, *endpoint.Fields) ([]byte, func(), error) { return nil, func() {}, nil }
	noLane := func(micro.Request, *endpoint.Fields) (string, error) { return "", nil }
	full := func(string) error { return events.Errorf(events.CodeThrottled, "full") }
	h.add(name, "t.fast", h.runner.Dispatched(name, fast, noLane, admit, full, slow))
	msg := h.request("t.fast", []byte("hit"))
	wantOK(t, msg)
	if string(msg.Data) != `{"fast":true}` || slowCalls.Load() != 0 {
		t.Fatalf("hit: %s, slow calls %d", msg.Data, slowCalls.Load())
	}
	msg = h.request("t.fast", []byte("miss"))
	if string(msg.Data) != `{"fast":false}` || slowCalls.Load() != 1 {
		t.Fatalf("miss: %s, slow calls %d", msg.Data, slowCalls.Load())
	}
	wantError(t, h.request("t.fast", []byte("bad")), events.CodeBadRequest)
	waitCounts(t, name, map[string]float64{"ok": 2, "bad_request": 1})
	natstest.Eventually(t, 5*time.Second, "the fast path's outcome log", func() bool {
		return strings.Contains(h.logs.String(), `"conn":"fastconn"`)
	})
}

// Inline handlers run on the subscription's goroutine, one at a time, in order.
func TestInlineKeepsOrder(t *testing.T) {
	h := newHarness(t, 3*time.Second, 4)
	name := uniqueName(t)
	var mu sync.Mutex
	var order []string
	var running atomic.Int32
	h.add(name, "t.inline", h.runner.Inline(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		if running.Add(1) != 1 {
			return nil, errors.New("inline handlers overlapped")
		}
		defer running.Add(-1)
		mu.Lock()
		order = append(order, string(req.Data()))
		mu.Unlock()
		return events.Empty{}, nil
	}))
	sub, err := h.nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		if err := h.nc.PublishRequest("t.inline", sub.Subject, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantOK(t, msg)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, s := range order {
		if s != fmt.Sprint(i) {
			t.Fatalf("order %v", order)
		}
	}
}

// A request without a reply subject is handled and counted, and nothing is sent.
func TestNoReplySubject(t *testing.T) {
	h := newHarness(t, 3*time.Second, 4)
	name := uniqueName(t)
	h.add(name, "t.noreply", h.runner.Handler(name, func(context.Context, micro.Request, *endpoint.Fields) (any, error) {
		return nil, events.ErrNotFound
	}))
	if err := h.nc.Publish("t.noreply", nil); err != nil {
		t.Fatal(err)
	}
	waitCounts(t, name, map[string]float64{"not_found": 1})
}

// TestLanes: requests of one lane queue behind each other only: while lane
// "jam" is stuck (its stage blocks, as a flood would keep it busy), lane
// "free" and the inline path answer at once; past its queue's bound a jammed
// lane's requests fail at once with the lane's throttled error (its reply
// rendered once, the whole wire form checked), their outcome naming the
// connection laneOf found; every request gets its answer once the jam clears,
// and Wait covers the queued ones.
func TestLanes(t *testing.T) {
	h := newHarness(t, 30*time.Second, 4)
	name := uniqueName(t)
	gate := make(chan struct{})
	var gateOnce sync.Once
	open := func() { gateOnce.Do(func() { close(gate) }) }
	t.Cleanup(open)
	fast := func(req micro.Request, f *endpoint.Fields) ([]byte, bool) {
		if string(req.Data()) == "hit" {
			return []byte(`"inline"`), true
		}
		return nil, false
	}
	laneOf := func(req micro.Request, f *endpoint.Fields) (string, error) {
		f.Conn = req.Subject()[strings.LastIndex(req.Subject(), ".")+1:]
		return f.Conn, nil
	}
	stage := func(req micro.Request, f *endpoint.Fields) ([]byte, func(), error) {
		if strings.HasSuffix(req.Subject(), ".jam") {
			<-gate
		}
		if string(req.Data()) == "lanehit" {
			return []byte(`"lane"`), nil, nil
		}
		return nil, func() {}, nil
	}
	full := func(lane string) error { return events.Errorf(events.CodeThrottled, "lane %s is full", lane) }
	fn := func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) { return "ran", nil }
	h.add(name, "t.lane.*", h.runner.Dispatched(name, fast, laneOf, stage, full, fn))

	// Jam lane "jam" past its bound: one in its stage, LaneDepth queued.
	replies := make(chan *nats.Msg, 2*endpoint.LaneDepth)
	inbox := nats.NewInbox()
	sub, err := h.nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	const extra = 50
	total := endpoint.LaneDepth + 1 + extra
	for i := 0; i < total; i++ {
		if err := h.nc.PublishRequest("t.lane.jam", fmt.Sprintf("%s.%d", inbox, i), []byte("miss")); err != nil {
			t.Fatal(err)
		}
	}
	// The surplus fails at once; the rest waits for the jam.
	throttled := 0
	deadline := time.After(20 * time.Second)
	for throttled < extra {
		select {
		case m := <-replies:
			if msg := wantError(t, m, events.CodeThrottled); msg != "lane jam is full" {
				t.Fatalf("throttled message %q", msg)
			}
			throttled++
		case <-deadline:
			t.Fatalf("%d of %d surplus requests throttled", throttled, extra)
		}
	}
	// The refused requests' outcome names the connection their lane
	// found (the throttled log is sampled: the first one is there).
	natstest.Eventually(t, 5*time.Second, "the refused request's log naming its connection", func() bool {
		for _, line := range strings.Split(h.logs.String(), "\n") {
			if strings.Contains(line, `"code":"throttled"`) && strings.Contains(line, `"conn":"jam"`) {
				return true
			}
		}
		return false
	})
	// Other lanes and the inline path are not behind the jam.
	if m := h.request("t.lane.free", []byte("lanehit")); string(m.Data) != `"lane"` {
		t.Fatalf("lane hit on a free lane: %s", m.Data)
	}
	if m := h.request("t.lane.free", []byte("miss")); string(m.Data) != `"ran"` {
		t.Fatalf("admitted request on a free lane: %s", m.Data)
	}
	if m := h.request("t.lane.jam", []byte("hit")); string(m.Data) != `"inline"` {
		t.Fatalf("inline hit on the jammed lane: %s", m.Data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.runner.Wait(ctx); err == nil {
		t.Fatal("Wait returned while requests were queued in a lane")
	}
	open()
	for got := 0; got < total-extra; got++ {
		select {
		case m := <-replies:
			wantOK(t, m)
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d queued requests answered after the jam cleared", got, total-extra)
		}
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := h.runner.Wait(wctx); err != nil {
		t.Fatalf("Wait after the jam cleared: %v", err)
	}
	waitCounts(t, name, map[string]float64{"ok": float64(total - extra + 3), "throttled": extra})
}

// Rendered keeps an error's text, code and identity; an error that is not an
// *events.Error stays as it is (its wire form is internal).
func TestRendered(t *testing.T) {
	err := endpoint.Rendered(events.Errorf(events.CodeThrottled, "connection %q is busy", "c"))
	if !errors.Is(err, events.ErrThrottled) || err.Error() != `connection "c" is busy` {
		t.Fatalf("rendered: %v", err)
	}
	if we := events.AsWire(err); we.Code != events.CodeThrottled || we.Message != `connection "c" is busy` {
		t.Fatalf("wire form of a rendered error: %+v", we)
	}
	plain := errors.New("plain")
	if endpoint.Rendered(plain) != plain {
		t.Fatal("a foreign error was rendered")
	}
}

// A request whose LaneFunc found it wrong is replied with that error by its
// lane, and its stage (and handler) never run.
func TestLaneErrorRepliedWithoutStage(t *testing.T) {
	h := newHarness(t, 5*time.Second, 4)
	name := uniqueName(t)
	var staged atomic.Int32
	laneOf := func(req micro.Request, f *endpoint.Fields) (string, error) {
		if strings.HasSuffix(req.Subject(), ".bad") {
			return "", events.Errorf(events.CodeBadRequest, "subject %s is wrong", req.Subject())
		}
		return "", nil
	}
	stage := func(micro.Request, *endpoint.Fields) ([]byte, func(), error) {
		staged.Add(1)
		return []byte(`"staged"`), nil, nil
	}
	full := func(string) error { return events.Errorf(events.CodeThrottled, "full") }
	h.add(name, "t.lerr.*", h.runner.Dispatched(name, nil, laneOf, stage, full, nil))
	if msg := wantError(t, h.request("t.lerr.bad", nil), events.CodeBadRequest); !strings.Contains(msg, "t.lerr.bad is wrong") {
		t.Fatalf("error %q, want the LaneFunc's", msg)
	}
	if staged.Load() != 0 {
		t.Fatal("the stage ran for a request its LaneFunc refused")
	}
	if m := h.request("t.lerr.good", nil); string(m.Data) != `"staged"` || staged.Load() != 1 {
		t.Fatalf("good subject: %s, staged %d", m.Data, staged.Load())
	}
}

// Reply header maps are reused: a success after error replies (each with a
// request id, so each reply has headers) carries no error header, and each
// reply its own request id.
func TestReusedHeadersCarryNoErrorOfAnEarlierReply(t *testing.T) {
	h := newHarness(t, 5*time.Second, 4)
	name := uniqueName(t)
	// Inline: no bound to throttle the next request while a reply's
	// goroutine has yet to give back its place.
	h.add(name, "t.reuse", h.runner.Inline(name, func(_ context.Context, req micro.Request, _ *endpoint.Fields) (any, error) {
		if string(req.Data()) == "bad" {
			return nil, events.Errorf(events.CodeBadRequest, "bad")
		}
		return "ok", nil
	}))
	for i := 0; i < 50; i++ {
		body := "bad"
		if i%3 == 2 {
			body = "good"
		}
		m := nats.NewMsg("t.reuse")
		m.Data = []byte(body)
		id := fmt.Sprintf("req-%d", i)
		m.Header.Set(events.HeaderRequestID, id)
		rep, err := h.nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if body == "bad" {
			wantError(t, rep, events.CodeBadRequest)
		} else {
			wantOK(t, rep)
		}
		if got := rep.Header.Values(events.HeaderRequestID); len(got) != 1 || got[0] != id {
			t.Fatalf("reply %d: request id %v, want %s", i, got, id)
		}
	}
}
