package service

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

func TestWalkthroughOnTwoWorkers(t *testing.T) {
	srv := natstest.Server(t)
	key := newMasterKey(t)
	w1 := startWorker(t, joinedConfig(srv.ClientURL(), key))
	w2 := startWorker(t, joinedConfig(srv.ClientURL(), key))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)

	for i := 0; i < 60; i++ {
		got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
		if err != nil {
			t.Fatalf("resolve %d: %v", i, err)
		}
		if u, _ := got.String("login"); u != "user01" {
			t.Fatalf("login = %q", u)
		}
		if p, _ := got.String("password"); p != "password01" {
			t.Fatalf("password = %q", p)
		}
		if got.Connection != "local-bio" || got.Secret != "biodb01" || got.FetchedAt.IsZero() {
			t.Fatalf("reply = %+v", got)
		}
	}
	// Both workers answered: the micro stats of each count resolve requests.
	for _, w := range []*worker{w1, w2} {
		var n int
		for _, ep := range w.svc.Stats().Endpoints {
			if ep.Name == "resolve" {
				n = ep.NumRequests
			}
		}
		if n == 0 {
			t.Fatalf("worker %s answered no resolve: not sharing the queue group", w.ServiceID())
		}
	}
	// Both are discoverable through $SRV.
	info, err := nc.Request("$SRV.PING.cloudbridge", nil, time.Second)
	if err != nil || !strings.Contains(string(info.Data), `"name":"cloudbridge"`) {
		t.Fatalf("$SRV.PING: %v %s", err, info.Data)
	}

	// A registry change through one worker is in force on both: bio is removed.
	chem := localBio
	chem.Groups = []string{"chem"}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, chem, nil)
	for _, w := range []*worker{w1, w2} {
		natstest.Eventually(t, time.Second, "the change to reach every worker", func() bool {
			got, ok := w.reg.Connection("local-bio")
			return ok && got.AllowsGroup("chem") && !got.AllowsGroup("bio")
		})
	}
	for i := 0; i < 20; i++ {
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrForbidden) {
			t.Fatalf("after the change, bio got %v, want forbidden", err)
		}
		if _, err := resolveReq(c, "chem", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			t.Fatalf("after the change, chem got %v", err)
		}
	}
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	w := startWorker(t, embeddedConfig(dir))
	_, c := connect(t, w.ClientURL())
	walkthrough(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	w2 := startWorker(t, embeddedConfig(dir))
	_, c2 := connect(t, w2.ClientURL())
	got, err := resolveReq(c2, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatalf("resolve after restart: %v", err)
	}
	if p, _ := got.String("password"); p != "password01" || got.Cached {
		t.Fatalf("after restart: password %q cached %v", p, got.Cached)
	}
	var names events.SecretNames
	adminReq(t, c2, events.ResourceSecrets, events.VerbList, events.SecretListRequest{Connection: "local-bio"}, &names)
	if len(names.Names) != 1 || names.Names[0] != "biodb01" {
		t.Fatalf("names = %v", names.Names)
	}
}

func TestNoPlaintextAtRestOrInLogs(t *testing.T) {
	dir := t.TempDir()
	w := startWorker(t, embeddedConfig(dir))
	_, c := connect(t, w.ClientURL())
	walkthrough(t, c)
	aws := events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEY000001", SecretAccessKey: "password01-aws-secret-key"}}
	var stored events.Connection
	adminReq(t, c, events.ResourceConnections, events.VerbPut, aws, &stored)
	if stored.AWS.SecretAccessKey != events.Redacted {
		t.Fatalf("put reply not redacted: %q", stored.AWS.SecretAccessKey)
	}
	for i := 0; i < 3; i++ {
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01", Fresh: i == 1}); err != nil {
			t.Fatal(err)
		}
	}
	var list events.ConnectionList
	adminReq(t, c, events.ResourceConnections, events.VerbList, events.Empty{}, &list)
	b, _ := json.Marshal(list)
	if strings.Contains(string(b), "password01") {
		t.Fatalf("list leaks a secret: %s", b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), "password01") {
			t.Errorf("%s contains the secret in clear", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("only %d files under the data dir: the store was not written", files)
	}
	logs := w.logs.String()
	if !strings.Contains(logs, `"endpoint":"resolve"`) {
		t.Fatalf("debug logs were not captured: %s", logs)
	}
	if strings.Contains(logs, "password01") {
		t.Fatalf("logs contain the secret:\n%s", logs)
	}
}

// rawRequest sends body to subject and returns the reply.
func rawRequest(t *testing.T, nc *nats.Conn, subject string, body []byte) *nats.Msg {
	t.Helper()
	msg, err := nc.Request(subject, body, 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return msg
}

func TestErrorCodes(t *testing.T) {
	srv := natstest.Server(t)
	cloud := &fakeCloud{}
	cfg := joinedConfig(srv.ClientURL(), newMasterKey(t))
	cfg.RequestTimeout = 300 * time.Millisecond
	w := startWorker(t, cfg, WithProvider(events.ProviderAWS, cloud.factory))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "cloud", Provider: events.ProviderAWS,
		Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEY000001", SecretAccessKey: "k"}}, nil)
	s := events.Subjects{}
	big := `{"secret":"` + strings.Repeat("a", events.MaxRequestSize) + `"}`
	cases := []struct {
		name    string
		subject string
		body    string
		code    events.Code
		msg     string
	}{
		{"malformed JSON", s.Resolve("bio", "local-bio"), `{"secret":`, events.CodeBadRequest, "JSON"},
		{"not an object", s.Resolve("bio", "local-bio"), `["biodb01"]`, events.CodeBadRequest, "object"},
		{"unknown field", s.Resolve("bio", "local-bio"), `{"secret":"biodb01","sekret":1}`, events.CodeBadRequest, "sekret"},
		{"missing secret", s.Resolve("bio", "local-bio"), `{}`, events.CodeBadRequest, "secret"},
		{"wrong type", s.Resolve("bio", "local-bio"), `{"secret":42}`, events.CodeBadRequest, "secret"},
		{"trailing data", s.Resolve("bio", "local-bio"), `{"secret":"biodb01"} {}`, events.CodeBadRequest, "after"},
		{"invalid group name", "cloudbridge.v1.resolve.Bio.local-bio", `{"secret":"biodb01"}`, events.CodeBadRequest, "group"},
		{"too large", s.Resolve("bio", "local-bio"), big, events.CodeTooLarge, "limit"},
		{"unknown connection", s.Resolve("bio", "nope"), `{"secret":"biodb01"}`, events.CodeNotFound, "nope"},
		{"group not allowed", s.Resolve("chem", "local-bio"), `{"secret":"biodb01"}`, events.CodeForbidden, "chem"},
		{"secret outside allowlist", s.Resolve("bio", "local-bio"), `{"secret":"other"}`, events.CodeForbidden, "allowlist"},
		{"unknown secret", s.Resolve("bio", "local-bio"), `{"secret":"biodb99"}`, events.CodeNotFound, "biodb99"},
		{"missing key", s.Resolve("bio", "local-bio"), `{"secret":"biodb01","keys":["host"]}`, events.CodeNotFound, "host"},
		{"unknown version", s.Resolve("bio", "local-bio"), `{"secret":"biodb01","version":"77"}`, events.CodeNotFound, "version"},
		{"cloud rejects credentials", s.Resolve("bio", "cloud"), `{"secret":"unauthorized"}`, events.CodeUnauthorized, "rejected"},
		{"cloud denies", s.Resolve("bio", "cloud"), `{"secret":"denied"}`, events.CodeForbidden, "denied"},
		{"cloud throttles", s.Resolve("bio", "cloud"), `{"secret":"throttled"}`, events.CodeThrottled, "rate"},
		{"cloud down", s.Resolve("bio", "cloud"), `{"secret":"down"}`, events.CodeUnavailable, "cloud"},
		{"upstream past deadline", s.Resolve("bio", "cloud"), `{"secret":"slow"}`, events.CodeTimeout, "deadline"},
		{"provider panics", s.Resolve("bio", "cloud"), `{"secret":"panic"}`, events.CodeInternal, "internal"},
		{"provider bug", s.Resolve("bio", "cloud"), `{"secret":"bug"}`, events.CodeInternal, "internal"},
		{"token from builtin", s.Token("bio", "local-bio"), `{}`, events.CodeBadRequest, "does not vend"},
		{"test unknown connection", s.Test("bio", "nope"), `{}`, events.CodeNotFound, "nope"},
		{"test group not allowed", s.Test("chem", "local-bio"), `{}`, events.CodeForbidden, "chem"},
		{"admin unknown field", s.Admin("connections", "put"), `{"name":"x","provider":"builtin","groups":[],"secrets":[],"extra":1}`, events.CodeBadRequest, "extra"},
		{"admin invalid name", s.Admin("connections", "put"), `{"name":"Bad Name","provider":"builtin","groups":[],"secrets":[]}`, events.CodeBadRequest, "name"},
		{"admin missing provider", s.Admin("connections", "put"), `{"name":"x","groups":[],"secrets":[]}`, events.CodeBadRequest, "provider"},
		{"admin aws without region", s.Admin("connections", "put"), `{"name":"x","provider":"aws","groups":[],"secrets":[],"aws":{"auth":"default"}}`, events.CodeBadRequest, "aws.region"},
		{"admin bad group", s.Admin("connections", "put"), `{"name":"x","provider":"builtin","groups":["BIO"],"secrets":[]}`, events.CodeBadRequest, "groups[0]"},
		{"admin get unknown", s.Admin("connections", "get"), `{"name":"nope"}`, events.CodeNotFound, "nope"},
		{"admin delete unknown", s.Admin("connections", "delete"), `{"name":"nope"}`, events.CodeNotFound, "nope"},
		{"admin get without name", s.Admin("connections", "get"), `{}`, events.CodeBadRequest, "name"},
		{"secret put on cloud connection", s.Admin("secrets", "put"), `{"connection":"cloud","name":"a","value":"b"}`, events.CodeBadRequest, "builtin"},
		{"secret put unknown connection", s.Admin("secrets", "put"), `{"connection":"nope","name":"a","value":"b"}`, events.CodeNotFound, "nope"},
		{"secret put number value", s.Admin("secrets", "put"), `{"connection":"local-bio","name":"a","value":5}`, events.CodeBadRequest, "value"},
		{"secret put bad name", s.Admin("secrets", "put"), `{"connection":"local-bio","name":"a b","value":"x"}`, events.CodeBadRequest, "name"},
		{"secret delete unknown", s.Admin("secrets", "delete"), `{"connection":"local-bio","name":"zzz"}`, events.CodeNotFound, "zzz"},
		{"secret list unknown connection", s.Admin("secrets", "list"), `{"connection":"nope"}`, events.CodeNotFound, "nope"},
		{"export without sink", s.Admin("exports", "put"), `{"name":"e","connection":"cloud","subjects":["logs.>"]}`, events.CodeBadRequest, "sink"},
		{"export wrong provider", s.Admin("exports", "put"), `{"name":"e","connection":"local-bio","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`, events.CodeBadRequest, "aws"},
		{"export outside the logs stream", s.Admin("exports", "put"), `{"name":"e","connection":"cloud","subjects":["audit.>"],"cloudwatch":{"log_group":"g"}}`, events.CodeBadRequest, "outside"},
		{"export get unknown", s.Admin("exports", "get"), `{"name":"nope"}`, events.CodeNotFound, "nope"},
		{"invalidate bad body", s.Invalidate(), `{"conn":"x"}`, events.CodeBadRequest, "conn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := rawRequest(t, nc, tc.subject, []byte(tc.body))
			if got := msg.Header.Get(micro.ErrorCodeHeader); got != strconv.Itoa(tc.code.Number()) {
				t.Fatalf("%s header = %q, want %d (body %s)", micro.ErrorCodeHeader, got, tc.code.Number(), msg.Data)
			}
			if msg.Header.Get(micro.ErrorHeader) == "" {
				t.Fatalf("no %s header", micro.ErrorHeader)
			}
			var body events.ErrorReply
			if err := json.Unmarshal(msg.Data, &body); err != nil || body.Error == nil {
				t.Fatalf("body %s: %v", msg.Data, err)
			}
			if body.Error.Code != tc.code {
				t.Fatalf("code = %s, want %s (%s)", body.Error.Code, tc.code, body.Error.Message)
			}
			if !strings.Contains(body.Error.Message, tc.msg) {
				t.Fatalf("message %q does not mention %q", body.Error.Message, tc.msg)
			}
			if strings.Contains(body.Error.Message, "password01") {
				t.Fatalf("message leaks a secret: %q", body.Error.Message)
			}
		})
	}
	// Nothing the bad requests did changed the registry, and the worker still answers.
	var list events.ConnectionList
	adminReq(t, c, events.ResourceConnections, events.VerbList, events.Empty{}, &list)
	if len(list.Connections) != 2 {
		t.Fatalf("connections after bad input: %+v", list.Connections)
	}
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatalf("worker unhealthy after bad input: %v", err)
	}
	if logs := w.logs.String(); strings.Contains(logs, "password01") {
		t.Fatalf("a panic or bug logged its payload:\n%s", logs)
	}
}

func TestReplyShapes(t *testing.T) {
	srv := natstest.Server(t)
	cloud := &fakeCloud{}
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)), WithProvider(events.ProviderAWS, cloud.factory))
	_, c := connect(t, srv.ClientURL())
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "cloud", Provider: events.ProviderAWS,
		Groups: []string{"*"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthDefault}}, nil)
	got, err := resolveReq(c, "anyone", "cloud", events.ResolveRequest{Secret: "db", Keys: []string{"port"}})
	if err != nil || len(got.Credentials) != 1 || string(got.Credentials["port"]) != "5432" {
		t.Fatalf("keys narrowing: %+v %v", got, err)
	}
	got, err = resolveReq(c, "anyone", "cloud", events.ResolveRequest{Secret: "text"})
	if err != nil || got.Value == nil || *got.Value != "plain-password" || got.Credentials != nil {
		t.Fatalf("text: %+v %v", got, err)
	}
	got, err = resolveReq(c, "anyone", "cloud", events.ResolveRequest{Secret: "binary"})
	if err != nil || string(got.Binary) != "\xff\x00\x01" || got.Value != nil {
		t.Fatalf("binary: %+v %v", got, err)
	}
	if _, err := resolveReq(c, "anyone", "cloud", events.ResolveRequest{Secret: "text", Keys: []string{"a"}}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("keys on text: %v", err)
	}
}

func TestCacheThroughNATS(t *testing.T) {
	srv := natstest.Server(t)
	cloud := &fakeCloud{gate: make(chan struct{})}
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)), WithProvider(events.ProviderAWS, cloud.factory))
	nc, c := connect(t, srv.ClientURL())
	conn := events.Connection{Name: "cloud", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		Cache: &events.CachePolicy{TTL: events.Duration(time.Hour), MaxStale: events.Duration(time.Hour)},
		AWS:   &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthDefault}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)

	// 100 concurrent cold resolves: one provider call.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"})
			errs <- err
		}()
	}
	natstest.Eventually(t, 5*time.Second, "the provider call", func() bool { return cloud.calls.Load() >= 1 })
	natstest.Eventually(t, 5*time.Second, "all requests to be waiting", func() bool {
		return w.svc.Pending("resolve") >= 100
	})
	cloud.mu.Lock()
	close(cloud.gate)
	cloud.gate = nil
	cloud.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := cloud.calls.Load(); n != 1 {
		t.Fatalf("100 concurrent cold resolves made %d provider calls, want 1", n)
	}

	// Stale while the provider is down, past the TTL.
	conn.Cache.TTL = events.Duration(100 * time.Millisecond)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	if _, err := resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	cloud.setDown(true)
	natstest.Eventually(t, 5*time.Second, "a stale reply", func() bool {
		got, err := resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"})
		return err == nil && got.Stale && got.Cached
	})
	cloud.setDown(false)

	// Invalidate drops entries on every worker: the next resolve calls the provider.
	conn.Cache.TTL = events.Duration(time.Hour)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil) // a registry change drops entries too
	if _, err := resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	before := cloud.calls.Load()
	got, err := resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"})
	if err != nil || !got.Cached || cloud.calls.Load() != before {
		t.Fatalf("not cached after registry change: %+v %v", got, err)
	}
	body, _ := json.Marshal(events.InvalidateRequest{Connection: "cloud", Secret: "db"})
	if _, err := nc.Request(events.Subjects{}.Invalidate(), body, time.Second); err != nil {
		t.Fatal(err)
	}
	got, err = resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"})
	if err != nil || got.Cached || cloud.calls.Load() != before+1 {
		t.Fatalf("after invalidate: cached=%v calls=%d (want %d) err=%v", got.Cached, cloud.calls.Load(), before+1, err)
	}
	// A registry change drops entries.
	conn.Description = "changed"
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	got, err = resolveReq(c, "bio", "cloud", events.ResolveRequest{Secret: "db"})
	if err != nil || got.Cached || cloud.calls.Load() != before+2 {
		t.Fatalf("after registry change: cached=%v calls=%d err=%v", got.Cached, cloud.calls.Load(), err)
	}
}

func TestBuiltinSecretChangeSeenEverywhere(t *testing.T) {
	srv := natstest.Server(t)
	key := newMasterKey(t)
	startWorker(t, joinedConfig(srv.ClientURL(), key))
	startWorker(t, joinedConfig(srv.ClientURL(), key))
	_, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	for i := 0; i < 10; i++ { // warm both caches
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			t.Fatal(err)
		}
	}
	adminReq(t, c, events.ResourceSecrets, events.VerbPut,
		events.SecretPut{Connection: "local-bio", Name: "biodb01", Value: []byte(`{"login":"user01","password":"rotated"}`)}, nil)
	natstest.Eventually(t, time.Second, "every worker to serve the new value", func() bool {
		for i := 0; i < 10; i++ {
			got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
			if p, _ := got.String("password"); err != nil || p != "rotated" {
				return false
			}
		}
		return true
	})
	adminReq(t, c, events.ResourceSecrets, events.VerbDelete, events.SecretRef{Connection: "local-bio", Name: "biodb01"}, nil)
	natstest.Eventually(t, time.Second, "every worker to forget the secret", func() bool {
		for i := 0; i < 10; i++ {
			if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrNotFound) {
				return false
			}
		}
		return true
	})
}

// Deleting a connection takes effect at once, even for a cached secret, and
// takes its built-in secrets with it.
func TestDeleteConnectionDropsEverything(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	for i := 0; i < 3; i++ { // warm the cache and the fast path
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			t.Fatal(err)
		}
	}
	adminReq(t, c, events.ResourceConnections, events.VerbDelete, events.NameRequest{Name: "local-bio"}, nil)
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("resolve right after delete: %v, want not_found", err)
	}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, localBio, nil)
	var names events.SecretNames
	adminReq(t, c, events.ResourceSecrets, events.VerbList, events.SecretListRequest{Connection: "local-bio"}, &names)
	if len(names.Names) != 0 {
		t.Fatalf("secrets survived their connection: %v", names.Names)
	}
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("a recreated connection resolved an old secret: %v", err)
	}
}

// A configured prefix moves every subject, and two deployments with
// different prefixes share one NATS without seeing each other.
func TestPrefixSeparatesDeployments(t *testing.T) {
	srv := natstest.Server(t)
	key := newMasterKey(t)
	acme := joinedConfig(srv.ClientURL(), key)
	acme.Prefix = "acme.cb"
	acme.LogsSubjects = []string{"acme-logs.>"} // streams may not overlap
	startWorker(t, acme)
	startWorker(t, joinedConfig(srv.ClientURL(), key))
	nc, def := connect(t, srv.ClientURL())
	c := events.NewClient(nc, "acme.cb")
	walkthrough(t, c)
	got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatalf("resolve under the acme.cb prefix: %v", err)
	}
	if p, _ := got.String("password"); p != "password01" {
		t.Fatalf("password %q", p)
	}
	if _, err := resolveReq(def, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("the default deployment sees acme's connection: %v", err)
	}
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	for name, subject := range map[string]string{"ACME_CB_LOGS": "acme-logs.>", "ACME_CB_DEAD": "acme.cb.v1.dead.>",
		"CLOUDBRIDGE_LOGS": "logs.>", "CLOUDBRIDGE_DEAD": "cloudbridge.v1.dead.>"} {
		si, err := js.StreamInfo(name)
		if err != nil || len(si.Config.Subjects) != 1 || si.Config.Subjects[0] != subject {
			t.Fatalf("stream %s: %v %v", name, si, err)
		}
	}
}
