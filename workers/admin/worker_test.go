package admin_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/workers/admin"
)

const (
	awsSecretKey   = "wJalrXUtnFEMI-K7MDENG-ADMIN-PLAINTEXT"
	secretPassword = "pw-ADMIN-PLAINTEXT-7d1e"
)

// invalidations records what the worker asked to invalidate.
type invalidations struct {
	mu  sync.Mutex
	got []string
}

func (i *invalidations) SecretChanged(conn, secret string) {
	i.mu.Lock()
	i.got = append(i.got, conn+"/"+secret)
	i.mu.Unlock()
}

func (i *invalidations) list() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]string{}, i.got...)
}

type harness struct {
	t   *testing.T
	nc  *nats.Conn
	kv  map[string]jetstream.KeyValue
	inv *invalidations
	s   events.Subjects
	key seal.Key
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ns := natstest.Server(t)
	wnc := natstest.Connect(t, ns)
	js, err := jetstream.New(wnc)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, seal.KeySize)
	_, _ = rand.Read(raw)
	key, err := seal.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := registry.Open(ctx, js, seal.New(key), registry.Options{LogsSubjects: []string{"logs.>"}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reg.Stop(ctx)
	})
	svc, err := srv.Add(wnc, srv.Config{Name: "cloudbridge", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	inv := &invalidations{}
	runner := endpoint.NewRunner(zerolog.Nop(), 5*time.Second, 16)
	if err := admin.New(events.Subjects{}, reg, inv, runner).Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, nc: natstest.Connect(t, ns), kv: map[string]jetstream.KeyValue{}, inv: inv, key: key}
	for _, what := range []string{"connections", "secrets", "exports"} {
		if h.kv[what], err = js.KeyValue(ctx, events.Subjects{}.Bucket(what)); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *harness) subject(resource, verb string) string {
	if resource == "" {
		return h.s.AdminRekey()
	}
	return h.s.Admin(resource, verb)
}

// req sends body to an admin subject and returns the reply.
func (h *harness) req(resource, verb, body string) *nats.Msg {
	h.t.Helper()
	msg, err := h.nc.Request(h.subject(resource, verb), []byte(body), 10*time.Second)
	if err != nil {
		h.t.Fatalf("%s.%s: %v", resource, verb, err)
	}
	return msg
}

// ok sends a request that must succeed and returns the reply body.
func (h *harness) ok(resource, verb, body string) string {
	h.t.Helper()
	msg := h.req(resource, verb, body)
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		h.t.Fatalf("%s.%s %s: error %s %s", resource, verb, trunc(body), code, msg.Data)
	}
	return string(msg.Data)
}

// fail sends a request that must fail with code, checking the error's wire form.
func (h *harness) fail(resource, verb, body string, code events.Code) string {
	h.t.Helper()
	msg := h.req(resource, verb, body)
	if got := msg.Header.Get(micro.ErrorCodeHeader); got != fmt.Sprint(code.Number()) {
		h.t.Fatalf("%s.%s %s: got %q %s, want %s", resource, verb, trunc(body), got, msg.Data, code)
	}
	var reply struct {
		Error struct {
			Code    events.Code `json:"code"`
			Message string      `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(msg.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reply); err != nil || reply.Error.Code != code || reply.Error.Message == "" ||
		msg.Header.Get(micro.ErrorHeader) != reply.Error.Message {
		h.t.Fatalf("%s.%s: error reply %s (%v), header %q", resource, verb, msg.Data, err, msg.Header.Get(micro.ErrorHeader))
	}
	for _, s := range []string{awsSecretKey, secretPassword} {
		if strings.Contains(string(msg.Data), s) {
			h.t.Fatalf("error reply carries a secret: %s", msg.Data)
		}
	}
	return reply.Error.Message
}

func trunc(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// snapshot is every raw entry of the three buckets: what a bad request must not change.
func (h *harness) snapshot() string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	for _, what := range []string{"connections", "secrets", "exports"} {
		lister, err := h.kv[what].ListKeys(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		for k := range lister.Keys() {
			e, err := h.kv[what].Get(ctx, k)
			if err != nil {
				h.t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s/%s@%d\n", what, k, e.Revision())
		}
	}
	return b.String()
}

const (
	awsConn = `{"name":"cloud","provider":"aws","groups":["bio"],"secrets":["db*"],
		"aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIDEXAMPLEKEYID0001","secret_access_key":"` + awsSecretKey + `"}}`
	builtinConn = `{"name":"local","provider":"builtin","groups":["bio"],"secrets":["*"]}`
	export      = `{"name":"app","connection":"cloud","subjects":["logs.app.>"],"cloudwatch":{"log_group":"g"}}`
)

func TestConnections(t *testing.T) {
	h := newHarness(t)
	put := h.ok("connections", "put", awsConn)
	if strings.Contains(put, awsSecretKey) || !strings.Contains(put, events.Redacted) || !strings.Contains(put, `"name":"cloud"`) {
		t.Fatalf("put reply: %s", put)
	}
	h.ok("connections", "put", builtinConn)
	get := h.ok("connections", "get", `{"name":"cloud"}`)
	if strings.Contains(get, awsSecretKey) || get != put {
		t.Fatalf("get reply %s, put reply %s", get, put)
	}
	var list struct {
		Connections []json.RawMessage `json:"connections"`
	}
	body := h.ok("connections", "list", `{}`)
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Connections) != 2 ||
		string(list.Connections[0]) != put || strings.Contains(body, awsSecretKey) {
		t.Fatalf("list: %s", body)
	}
	if got := h.ok("connections", "list", ``); got != body {
		t.Fatalf("list with an empty body: %s", got)
	}
	// Put back what get returned: the stored secret is kept.
	h.ok("connections", "put", get)
	raw, _ := h.kv["connections"].Get(context.Background(), "cloud")
	if bytes.Contains(raw.Value(), []byte(awsSecretKey)) {
		t.Fatal("connection stored in clear")
	}

	if got := h.ok("connections", "delete", `{"name":"local"}`); got != "{}" {
		t.Fatalf("delete reply %s", got)
	}
	h.fail("connections", "get", `{"name":"local"}`, events.CodeNotFound)
	h.fail("connections", "delete", `{"name":"local"}`, events.CodeNotFound)
	if got := h.ok("connections", "list", `{}`); strings.Contains(got, `"local"`) {
		t.Fatalf("list after delete: %s", got)
	}
	// A redacted field for a new connection has nothing to keep.
	h.fail("connections", "put", strings.Replace(get, `"name":"cloud"`, `"name":"fresh"`, 1), events.CodeBadRequest)
}

// Bad input to every admin subject gets a clear error and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.ok("connections", "put", awsConn)
	h.ok("connections", "put", builtinConn)
	h.ok("secrets", "put", `{"connection":"local","name":"db01","value":{"password":"`+secretPassword+`"}}`)
	h.ok("exports", "put", export)
	before := h.snapshot()
	invBefore := len(h.inv.list())

	huge := `{"name":"` + strings.Repeat("a", events.MaxRequestSize) + `"}`
	bad := []struct {
		resource, verb, body string
		code                 events.Code
	}{
		// connections.put
		{"connections", "put", `{"name":"cloud",`, events.CodeBadRequest},
		{"connections", "put", `not json`, events.CodeBadRequest},
		{"connections", "put", `[]`, events.CodeBadRequest},
		{"connections", "put", `{}`, events.CodeBadRequest},
		{"connections", "put", `{"name":"x","provider":"builtin","groups":[],"secrets":[]} {}`, events.CodeBadRequest},
		{"connections", "put", strings.Replace(builtinConn, `"groups"`, `"groupz"`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(builtinConn, `{`, `{"name":"other",`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(builtinConn, `"name"`, `"NAME"`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(builtinConn, `"local"`, `"Local!"`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(builtinConn, `"local"`, `"`+strings.Repeat("a", 65)+`"`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(builtinConn, `"builtin"`, `"azure"`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(builtinConn, `["bio"]`, `"bio"`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(awsConn, `"us-east-1"`, `"moon"`, 1), events.CodeBadRequest},
		{"connections", "put", strings.Replace(awsConn, `"auth"`, `"auth":"default","x"`, 1), events.CodeBadRequest},
		{"connections", "put", `{"name":"cloud","provider":"builtin","groups":["bio"],"secrets":["*"]}`, events.CodeBadRequest}, // provider change under an export
		{"connections", "put", huge, events.CodeTooLarge},
		// connections.get / delete / list
		{"connections", "get", `{}`, events.CodeBadRequest},
		{"connections", "get", `{"name":"Bad Name"}`, events.CodeBadRequest},
		{"connections", "get", `{"name":"cloud","x":1}`, events.CodeBadRequest},
		{"connections", "get", `{"name":"cloud","name":"local"}`, events.CodeBadRequest},
		{"connections", "get", `{"Name":"cloud"}`, events.CodeBadRequest},
		{"connections", "get", `{"name":7}`, events.CodeBadRequest},
		{"connections", "get", huge, events.CodeTooLarge},
		{"connections", "delete", `{"name":"cloud"}`, events.CodeBadRequest}, // used by an export
		{"connections", "delete", `{"name":"../x"}`, events.CodeBadRequest},
		{"connections", "delete", `{"name":"local","name":"cloud"}`, events.CodeBadRequest},
		{"connections", "delete", `{"name":"nope"}`, events.CodeNotFound},
		{"connections", "list", `{"x":1}`, events.CodeBadRequest},
		{"connections", "list", `[`, events.CodeBadRequest},
		// secrets
		{"secrets", "put", `{"connection":"local","name":"db02"}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"local","name":"db02","value":null}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"local","name":"db02","value":12}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"local","name":"db02","value":[1]}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"local","name":"db 02","value":"x"}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"Local","name":"db02","value":"x"}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"local","name":"db02","value":"x","extra":1}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"local","name":"db01","name":"db02","value":"x"}`, events.CodeBadRequest},
		{"secrets", "put", `{"connection":"cloud","name":"db02","value":"x"}`, events.CodeBadRequest}, // not builtin
		{"secrets", "put", `{"connection":"nope","name":"db02","value":"x"}`, events.CodeNotFound},
		{"secrets", "put", `{"connection":"local","name":"db02","value":"` + strings.Repeat("v", events.MaxBuiltinSecretSize) + `"}`, events.CodeTooLarge},
		{"secrets", "put", `{"connection":"local","name":"db02","value":"` + strings.Repeat("v", events.MaxRequestSize) + `"}`, events.CodeTooLarge},
		{"secrets", "list", `{}`, events.CodeBadRequest},
		{"secrets", "list", `{"connection":"nope"}`, events.CodeNotFound},
		{"secrets", "list", `{"connection":"local","name":"db01"}`, events.CodeBadRequest},
		{"secrets", "delete", `{"connection":"local"}`, events.CodeBadRequest},
		{"secrets", "delete", `{"connection":"local","name":"missing"}`, events.CodeNotFound},
		{"secrets", "delete", `{"connection":"local","name":"db01","x":0}`, events.CodeBadRequest},
		// exports
		{"exports", "put", `{"name":"e2","connection":"local","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`, events.CodeBadRequest},
		{"exports", "put", `{"name":"e2","connection":"nope","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`, events.CodeNotFound},
		{"exports", "put", `{"name":"e2","connection":"cloud","subjects":["elsewhere.>"],"cloudwatch":{"log_group":"g"}}`, events.CodeBadRequest},
		{"exports", "put", `{"name":"e2","connection":"cloud","subjects":["logs.>"]}`, events.CodeBadRequest},
		{"exports", "put", `{"name":"e2","connection":"cloud","subjects":["logs.>"],"cloudwatch":{"log_group":"g"},"cloud_logging":{"project":"p","log_id":"l"}}`, events.CodeBadRequest},
		{"exports", "put", `{"name":"e2","connection":"cloud","subjects":["logs.>"],"cloudwatch":{"log_group":"g","lg":1}}`, events.CodeBadRequest},
		{"exports", "put", `{"name":"e2","connection":"cloud","subjects":["logs.>"],"cloudwatch":{"log_group":"g","log_group":"h"}}`, events.CodeBadRequest},
		{"exports", "put", `{"name":"E2","connection":"cloud","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`, events.CodeBadRequest},
		{"exports", "put", `{"name":"e2","connection":"cloud","subjects":["logs.>"],"min_level":"loud","cloudwatch":{"log_group":"g"}}`, events.CodeBadRequest},
		{"exports", "put", huge, events.CodeTooLarge},
		{"exports", "get", `{"name":"nope"}`, events.CodeNotFound},
		{"exports", "get", `{"name":""}`, events.CodeBadRequest},
		{"exports", "delete", `{"name":"nope"}`, events.CodeNotFound},
		{"exports", "delete", `{"name":"a.b"}`, events.CodeBadRequest},
		{"exports", "list", `{"exports":[]}`, events.CodeBadRequest},
		// rekey
		{"", "", `{"force":true}`, events.CodeBadRequest},
		{"", "", `"x"`, events.CodeBadRequest},
	}
	for _, b := range bad {
		h.fail(b.resource, b.verb, b.body, b.code)
	}
	if after := h.snapshot(); after != before {
		t.Fatalf("bad requests changed the buckets:\nbefore\n%safter\n%s", before, after)
	}
	if n := len(h.inv.list()); n != invBefore {
		t.Fatalf("bad requests invalidated: %v", h.inv.list())
	}
}

func TestSecrets(t *testing.T) {
	h := newHarness(t)
	h.ok("connections", "put", builtinConn)
	for _, v := range []string{`{"password":"` + secretPassword + `"}`, `"plain-` + secretPassword + `"`} {
		if got := h.ok("secrets", "put", `{"connection":"local","name":"db01","value":`+v+`}`); got != "{}" {
			t.Fatalf("put reply %s", got)
		}
	}
	h.ok("secrets", "put", `{"connection":"local","name":"app/db00","value":"x"}`)
	if got := h.ok("secrets", "list", `{"connection":"local"}`); got != `{"names":["app/db00","db01"]}` {
		t.Fatalf("list: %s", got)
	}
	raw, err := h.kv["secrets"].Get(context.Background(), "local.db01")
	if err != nil || bytes.Contains(raw.Value(), []byte(secretPassword)) {
		t.Fatalf("stored secret: %v %s", err, raw.Value())
	}
	if got := h.ok("secrets", "delete", `{"connection":"local","name":"db01"}`); got != "{}" {
		t.Fatalf("delete reply %s", got)
	}
	if got := h.ok("secrets", "list", `{"connection":"local"}`); got != `{"names":["app/db00"]}` {
		t.Fatalf("list after delete: %s", got)
	}
	// Every change through this worker drops the cached entries of the secret.
	want := "local/db01,local/db01,local/app/db00,local/db01"
	if got := strings.Join(h.inv.list(), ","); got != want {
		t.Fatalf("invalidations %s, want %s", got, want)
	}
	// A connection with no secrets lists an empty array, not null.
	h.ok("connections", "put", strings.Replace(builtinConn, `"local"`, `"empty"`, 1))
	if got := h.ok("secrets", "list", `{"connection":"empty"}`); got != `{"names":[]}` {
		t.Fatalf("empty list: %s", got)
	}
}

func TestExports(t *testing.T) {
	h := newHarness(t)
	if got := h.ok("exports", "list", `{}`); got != `{"exports":[]}` {
		t.Fatalf("empty list: %s", got)
	}
	h.ok("connections", "put", awsConn)
	if put := h.ok("exports", "put", export); !sameJSON(put, export) {
		t.Fatalf("put reply %s", put)
	}
	if got := h.ok("exports", "get", `{"name":"app"}`); !sameJSON(got, export) {
		t.Fatalf("get %s", got)
	}
	if got := h.ok("exports", "list", ``); !sameJSON(got, `{"exports":[`+export+`]}`) {
		t.Fatalf("list %s", got)
	}
	changed := strings.Replace(export, `"g"`, `"g2"`, 1)
	h.ok("exports", "put", changed)
	if got := h.ok("exports", "get", `{"name":"app"}`); !sameJSON(got, changed) {
		t.Fatalf("get after update %s", got)
	}
	if got := h.ok("exports", "delete", `{"name":"app"}`); got != "{}" {
		t.Fatalf("delete %s", got)
	}
	h.fail("exports", "get", `{"name":"app"}`, events.CodeNotFound)
	h.ok("connections", "delete", `{"name":"cloud"}`)
}

func TestRekey(t *testing.T) {
	h := newHarness(t)
	var reply events.RekeyReply
	if err := json.Unmarshal([]byte(h.ok("", "", `{}`)), &reply); err != nil || reply.Resealed != 0 || reply.Current != h.key.ID() {
		t.Fatalf("rekey on empty buckets: %+v %v", reply, err)
	}
	h.ok("connections", "put", builtinConn)
	h.ok("secrets", "put", `{"connection":"local","name":"db01","value":"x"}`)
	// Everything is already under the current key.
	if got := h.ok("", "", ``); got != `{"resealed":0,"failed":[],"current":"`+h.key.ID()+`"}` {
		t.Fatalf("rekey: %s", got)
	}
	// A record sealed under a key this worker lacks is skipped and named;
	// rekey goes on and reports the rest.
	other := make([]byte, seal.KeySize)
	_, _ = rand.Read(other)
	ok, _ := seal.NewKey(other)
	env, err := seal.New(ok).Seal([]byte(`"x"`), []byte("cloudbridge/v1/cloudbridge_secrets/local.db02"))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(map[string]any{"v": 1, "sealed": env})
	if _, err := h.kv["secrets"].Put(context.Background(), "local.db02", rec); err != nil {
		t.Fatal(err)
	}
	if got := h.ok("", "", `{}`); got != `{"resealed":0,"failed":["local.db02"],"current":"`+h.key.ID()+`"}` {
		t.Fatalf("rekey past an unreadable record: %s", got)
	}
	// An admin repairs it: the unreadable secret can be deleted.
	h.ok("secrets", "delete", `{"connection":"local","name":"db02"}`)
	if got := h.ok("", "", `{}`); got != `{"resealed":0,"failed":[],"current":"`+h.key.ID()+`"}` {
		t.Fatalf("rekey after the repair: %s", got)
	}
}

// Every admin endpoint is registered on its subject and discoverable.
func TestDiscovery(t *testing.T) {
	h := newHarness(t)
	msg, err := h.nc.Request("$SRV.INFO.cloudbridge", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	subjects := map[string]bool{}
	for _, ep := range info.Endpoints {
		subjects[ep.Subject] = true
	}
	want := []string{h.s.AdminRekey()}
	for _, r := range []string{"connections", "secrets", "exports"} {
		for _, v := range []string{"put", "list", "delete"} {
			want = append(want, h.s.Admin(r, v))
		}
		if r != "secrets" {
			want = append(want, h.s.Admin(r, "get"))
		}
	}
	for _, s := range want {
		if !subjects[s] {
			t.Fatalf("%s not in $SRV.INFO: %v", s, subjects)
		}
	}
	if len(info.Endpoints) != len(want) {
		t.Fatalf("%d endpoints, want %d", len(info.Endpoints), len(want))
	}
	if h.s.Admin("connections", "put") != "cloudbridge.v1.admin.connections.put" || h.s.AdminRekey() != "cloudbridge.v1.admin.rekey" {
		t.Fatal("admin subjects moved")
	}
}

// sameJSON compares two JSON texts by value.
func sameJSON(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}
