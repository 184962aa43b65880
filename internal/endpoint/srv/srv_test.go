package srv_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// strict decodes a reply into v, refusing fields v does not have: the
// replies are exactly micro's types.
func strict(t *testing.T, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s into %T: %v", data, v, err)
	}
}

func start(t *testing.T, nc *nats.Conn, cfg srv.Config) *srv.Service {
	t.Helper()
	s, err := srv.Add(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func echo(req micro.Request) { _ = req.Respond(req.Data()) }

// TestControlSubjects: PING, INFO and STATS answer on all three subjects
// (every service, the service's name, the instance), built with
// micro.ControlSubject, in micro's types, with micro's response types, the
// service's identity and its endpoints (queue group, or none where
// disabled).
func TestControlSubjects(t *testing.T) {
	ns := natstest.Server(t)
	wnc, nc := natstest.Connect(t, ns), natstest.Connect(t, ns)
	s := start(t, wnc, srv.Config{Name: "svc", Version: "1.2.3", Description: "a test", QueueGroup: "svc",
		Metadata: map[string]string{"k": "v"}, Data: func(name string, _ micro.EndpointStats) any { return map[string]string{"of": name} }})
	if err := s.AddEndpoint("one", micro.HandlerFunc(echo), srv.WithSubject("t.one")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEndpoint("two", micro.HandlerFunc(echo), srv.WithSubject("t.two.*"), srv.WithQueueGroupDisabled(),
		srv.WithMetadata(map[string]string{"m": "n"})); err != nil {
		t.Fatal(err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	id := micro.ServiceIdentity{Name: "svc", ID: s.ID(), Version: "1.2.3", Metadata: map[string]string{"k": "v"}}
	for _, form := range [][2]string{{"", ""}, {"svc", ""}, {"svc", s.ID()}} {
		ask := func(verb micro.Verb) []byte {
			subject, err := micro.ControlSubject(verb, form[0], form[1])
			if err != nil {
				t.Fatal(err)
			}
			m, err := nc.Request(subject, nil, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", subject, err)
			}
			return m.Data
		}
		var ping micro.Ping
		strict(t, ask(micro.PingVerb), &ping)
		if fmt.Sprint(ping) != fmt.Sprint(micro.Ping{ServiceIdentity: id, Type: micro.PingResponseType}) {
			t.Fatalf("%v PING: %+v", form, ping)
		}
		var info micro.Info
		strict(t, ask(micro.InfoVerb), &info)
		want := micro.Info{ServiceIdentity: id, Type: micro.InfoResponseType, Description: "a test", Endpoints: []micro.EndpointInfo{
			{Name: "one", Subject: "t.one", QueueGroup: "svc"},
			{Name: "two", Subject: "t.two.*", QueueGroup: "", Metadata: map[string]string{"m": "n"}}}}
		if fmt.Sprint(info) != fmt.Sprint(want) {
			t.Fatalf("%v INFO: %+v, want %+v", form, info, want)
		}
		var stats micro.Stats
		strict(t, ask(micro.StatsVerb), &stats)
		if stats.ServiceIdentity.ID != s.ID() || stats.Type != micro.StatsResponseType || stats.Started.IsZero() ||
			time.Since(stats.Started) > time.Minute || len(stats.Endpoints) != 2 {
			t.Fatalf("%v STATS: %+v", form, stats)
		}
		for i, e := range stats.Endpoints {
			if e.Name != want.Endpoints[i].Name || e.Subject != want.Endpoints[i].Subject || e.QueueGroup != want.Endpoints[i].QueueGroup ||
				string(e.Data) != `{"of":"`+e.Name+`"}` {
				t.Fatalf("%v STATS endpoint %d: %+v data %s", form, i, e, e.Data)
			}
		}
	}
	// A nats.go micro service and this one answer the same discovery.
	other, err := micro.AddService(wnc, micro.Config{Name: "other", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Stop() }()
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$SRV.PING", inbox, nil); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("PING replies %v: %v", seen, err)
		}
		var p micro.Ping
		strict(t, m.Data, &p)
		seen[p.Name] = p.Type == micro.PingResponseType
	}
	if !seen["svc"] || !seen["other"] {
		t.Fatalf("PING replies %v", seen)
	}
	if _, err := srv.Add(wnc, srv.Config{Name: "bad name", Version: "1.0.0"}); !errors.Is(err, micro.ErrConfigValidation) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := srv.Add(wnc, srv.Config{Name: "svc", Version: "one"}); !errors.Is(err, micro.ErrConfigValidation) {
		t.Fatalf("bad version: %v", err)
	}
	if err := s.AddEndpoint("bad name", micro.HandlerFunc(echo)); !errors.Is(err, micro.ErrConfigValidation) {
		t.Fatalf("bad endpoint name: %v", err)
	}
}

func stats(t *testing.T, nc *nats.Conn, s *srv.Service, name string) micro.EndpointStats {
	t.Helper()
	subject, _ := micro.ControlSubject(micro.StatsVerb, "svc", s.ID())
	m, err := nc.Request(subject, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st micro.Stats
	strict(t, m.Data, &st)
	for _, e := range st.Endpoints {
		if e.Name == name {
			return *e
		}
	}
	t.Fatalf("no endpoint %s in %s", name, m.Data)
	return micro.EndpointStats{}
}

// TestStatsCountEveryReply: replies sent on the subscription's goroutine and
// from other goroutines after the handler returned, successes and errors,
// are all counted as they are sent, with the time from arrival to reply;
// only the first reply of a request counts.
func TestStatsCountEveryReply(t *testing.T) {
	ns := natstest.Server(t)
	wnc, nc := natstest.Connect(t, ns), natstest.Connect(t, ns)
	s := start(t, wnc, srv.Config{Name: "svc", Version: "1.0.0"})
	const hold = 20 * time.Millisecond
	var wg sync.WaitGroup
	defer wg.Wait()
	h := micro.HandlerFunc(func(req micro.Request) {
		reply := func() {
			switch string(req.Data()) {
			case "ok":
				_ = req.Respond([]byte("fine"))
			case "json":
				_ = req.RespondJSON(map[string]int{"a": 1})
			case "hdr":
				_ = req.(*srv.Request).RespondHeader([]byte("with"), nats.Header{"X": {"1"}})
			case "bare":
				_ = req.(*srv.Request).RespondHeader([]byte("bare"), nil)
			default:
				_ = req.Error("404", "not "+string(req.Data()), []byte(`{}`))
			}
			_ = req.Respond([]byte("again")) // not sent twice in the counts
		}
		if req.Headers().Get("Async") == "" {
			reply()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(hold) // processing time, not synchronization
			reply()
		}()
	})
	if err := s.AddEndpoint("ep", h, srv.WithSubject("t.ep")); err != nil {
		t.Fatal(err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 5
	var asyncTime time.Duration
	for i := 0; i < n; i++ {
		for _, async := range []bool{false, true} {
			for _, body := range []string{"ok", "json", "hdr", "bare", "here", "there"} {
				msg := &nats.Msg{Subject: "t.ep", Data: []byte(body), Header: nats.Header{}}
				if async {
					msg.Header.Set("Async", "1")
				}
				t0 := time.Now()
				m, err := nc.RequestMsg(msg, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if async {
					asyncTime += time.Since(t0)
				}
				wantErr := body != "ok" && body != "json" && body != "hdr" && body != "bare"
				if (m.Header.Get(micro.ErrorCodeHeader) == "404") != wantErr || (m.Header.Get(micro.ErrorHeader) == "not "+body) != wantErr {
					t.Fatalf("%s: reply %v %s", body, m.Header, m.Data)
				}
				if (body == "hdr") != (m.Header.Get("X") == "1") || (body == "bare" && (len(m.Header) != 0 || string(m.Data) != "bare")) {
					t.Fatalf("%s: reply %v %s", body, m.Header, m.Data)
				}
			}
		}
	}
	// Without a reply subject: counted, nothing sent.
	if err := nc.Publish("t.ep", []byte("nowhere")); err != nil {
		t.Fatal(err)
	}
	var st micro.EndpointStats
	natstest.Eventually(t, 5*time.Second, "the request without a reply counted", func() bool {
		st = stats(t, nc, s, "ep")
		return st.NumRequests == 12*n+1
	})
	if p := s.Pending("ep"); p != 0 {
		t.Fatalf("%d requests pending after every reply", p)
	}
	if st.NumRequests != 12*n+1 || st.NumErrors != 4*n+1 || st.LastError != "404:not nowhere" {
		t.Fatalf("stats %+v, want %d requests, %d errors", st, 12*n+1, 4*n+1)
	}
	// The asynchronous replies' time is in: each held at least hold, and no
	// more than the requester waited.
	if st.ProcessingTime < 4*n*hold || st.ProcessingTime > asyncTime+time.Second ||
		st.AverageProcessingTime != st.ProcessingTime/time.Duration(st.NumRequests) {
		t.Fatalf("processing time %s (average %s), want at least %s and at most %s", st.ProcessingTime, st.AverageProcessingTime, 4*n*hold, asyncTime)
	}
}

// TestQueueGroups: an endpoint's instances share its requests (a queue
// subscription), unless its queue group is disabled (every instance gets
// each).
func TestQueueGroups(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Connect(t, ns)
	var svcs []*srv.Service
	for i := 0; i < 2; i++ {
		wnc := natstest.Connect(t, ns)
		s := start(t, wnc, srv.Config{Name: "svc", Version: "1.0.0", QueueGroup: "svc"})
		if err := s.AddEndpoint("shared", micro.HandlerFunc(echo), srv.WithSubject("t.shared")); err != nil {
			t.Fatal(err)
		}
		if err := s.AddEndpoint("all", micro.HandlerFunc(echo), srv.WithSubject("t.all"), srv.WithQueueGroupDisabled()); err != nil {
			t.Fatal(err)
		}
		if err := wnc.Flush(); err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, s)
	}
	const n = 20
	for i := 0; i < n; i++ {
		for _, subject := range []string{"t.shared", "t.all"} {
			if _, err := nc.Request(subject, nil, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	natstest.Eventually(t, 5*time.Second, "every instance counted each t.all request", func() bool {
		return stats(t, nc, svcs[0], "all").NumRequests == n && stats(t, nc, svcs[1], "all").NumRequests == n
	})
	if a, b := stats(t, nc, svcs[0], "shared").NumRequests, stats(t, nc, svcs[1], "shared").NumRequests; a+b != n {
		t.Fatalf("t.shared answered %d+%d times for %d requests", a, b, n)
	}
}

// TestStop: a stopped service answers no $SRV subject and takes no more
// requests; a request it received before still gets its reply; Stop ends
// within its deadline.
func TestStop(t *testing.T) {
	ns := natstest.Server(t)
	wnc, nc := natstest.Connect(t, ns), natstest.Connect(t, ns)
	s, err := srv.Add(wnc, srv.Config{Name: "svc", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan micro.Request, 1)
	if err := s.AddEndpoint("ep", micro.HandlerFunc(func(req micro.Request) { held <- req }), srv.WithSubject("t.ep")); err != nil {
		t.Fatal(err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("t.ep", inbox, []byte("x")); err != nil {
		t.Fatal(err)
	}
	req := <-held
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("Stop took %s", d)
	}
	if err := req.Respond([]byte("late")); err != nil {
		t.Fatalf("reply after Stop: %v", err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "late" {
		t.Fatalf("reply after Stop: %v %v", m, err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, form := range [][2]string{{"", ""}, {"svc", ""}, {"svc", s.ID()}} {
		for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
			subject, _ := micro.ControlSubject(verb, form[0], form[1])
			if _, err := nc.Request(subject, nil, 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
				t.Fatalf("%s after Stop: %v", subject, err)
			}
		}
	}
	if _, err := nc.Request("t.ep", nil, 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("endpoint after Stop: %v", err)
	}
	if err := s.AddEndpoint("late", micro.HandlerFunc(echo)); !errors.Is(err, srv.ErrStopped) {
		t.Fatalf("AddEndpoint after Stop: %v", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// TestStopDeadline: a Stop whose subscriptions cannot drain (their handler
// is stuck) returns at its deadline, with the subscriptions removed.
func TestStopDeadline(t *testing.T) {
	ns := natstest.Server(t)
	wnc, nc := natstest.Connect(t, ns), natstest.Connect(t, ns)
	s, err := srv.Add(wnc, srv.Config{Name: "svc", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	stuck, entered := make(chan struct{}), make(chan struct{}, 1)
	defer close(stuck)
	if err := s.AddEndpoint("ep", micro.HandlerFunc(func(req micro.Request) { entered <- struct{}{}; <-stuck }), srv.WithSubject("t.ep")); err != nil {
		t.Fatal(err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("t.ep", nil); err != nil {
		t.Fatal(err)
	}
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with a stuck handler: %v", err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("t.ep", nil, 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("endpoint after Stop: %v", err)
	}
}

// TestStopEndsWhenTheConnectionCloses: a connection closed while Stop waits
// for a subscription's drain (a handler still busy) closes the subscriptions
// without marking them closed one by one; Stop ends then, not at its
// deadline.
func TestStopEndsWhenTheConnectionCloses(t *testing.T) {
	ns := natstest.Server(t)
	wnc, nc := natstest.Connect(t, ns), natstest.Connect(t, ns)
	s, err := srv.Add(wnc, srv.Config{Name: "svc", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	busy, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	if err := s.AddEndpoint("ep", micro.HandlerFunc(func(micro.Request) { close(busy); <-release }), srv.WithSubject("t.ep")); err != nil {
		t.Fatal(err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("t.ep", []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-busy
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop(ctx) }()
	wnc.Close()
	if err := <-stopped; err != nil {
		t.Fatalf("Stop after the connection closed: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Stop ended at its deadline, not when the connection closed")
	}
}
