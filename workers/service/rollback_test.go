package service

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestReplayedRecordKeepsAccessRevoked is the replay attack: someone with KV
// write access puts an old connection value back into the bucket to restore
// a revoked group's access. Every worker that saw the newer record keeps
// refusing the group, logs and counts the refusal, and an admin can repair
// the record.
func TestReplayedRecordKeepsAccessRevoked(t *testing.T) {
	srv := natstest.Server(t)
	key := newMasterKey(t)
	w1 := startWorker(t, joinedConfig(srv.ClientURL(), key))
	w2 := startWorker(t, joinedConfig(srv.ClientURL(), key))
	nc, c := connect(t, srv.ClientURL())
	conn := events.Connection{Name: "local-bio", Provider: events.ProviderBuiltin, Groups: []string{"bio", "chem"}, Secrets: []string{"*"}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	adminReq(t, c, events.ResourceSecrets, events.VerbPut, events.SecretPut{Connection: "local-bio", Name: "biodb01", Value: []byte(`"password01"`)}, nil)

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, c.Subjects().Bucket("connections"))
	if err != nil {
		t.Fatal(err)
	}
	v1, err := kv.Get(ctx, "local-bio")
	if err != nil {
		t.Fatal(err)
	}
	// v2 revokes chem; both workers see it (the worker that took the put
	// has it when it replies; the other one once its watcher applies it).
	conn.Groups = []string{"bio"}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	natstest.Eventually(t, 5*time.Second, "both workers to apply the revocation", func() bool {
		for _, w := range []*worker{w1, w2} {
			if got, ok := w.reg.Connection("local-bio"); !ok || got.AllowsGroup("chem") {
				return false
			}
		}
		return true
	})
	for i := 0; i < 4; i++ {
		if _, err := resolveReq(c, "chem", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrForbidden) {
			t.Fatalf("chem after revocation: %v", err)
		}
	}
	// The replay.
	if _, err := kv.Put(ctx, "local-bio", v1.Value()); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "both workers to refuse the replayed record", func() bool {
		return strings.Contains(w1.logs.String(), "older than one already seen") &&
			strings.Contains(w2.logs.String(), "older than one already seen")
	})
	for i := 0; i < 8; i++ { // both workers answer in turn
		if rep, err := resolveReq(c, "chem", "local-bio", events.ResolveRequest{Secret: "biodb01", Fresh: i%2 == 0}); err == nil {
			t.Fatalf("chem resolved %+v after the replay", rep)
		}
	}
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatalf("bio after the replay: %v", err)
	}
	for _, w := range []*worker{w1, w2} {
		_, body := httpGet(t, "http://"+w.HTTPAddr()+"/metrics")
		if !strings.Contains(body, `cloudbridge_registry_rollback_refused_total{bucket="`+c.Subjects().Bucket("connections")+`"}`) {
			t.Fatalf("no rollback metric in /metrics")
		}
	}
	// The admin repairs the record by putting it again.
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	var got events.Connection
	adminReq(t, c, events.ResourceConnections, events.VerbGet, events.NameRequest{Name: "local-bio"}, &got)
	if got.AllowsGroup("chem") {
		t.Fatalf("after repair: %v", got.Groups)
	}
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01", Fresh: true}); err != nil {
		t.Fatalf("bio after the repair: %v", err)
	}
}

// TestTamperedRecordIsRepairable: a record that cannot be opened (tampered
// in the bucket) is refused at use, named by rekey (which re-seals the
// rest), and an admin can replace it and delete it through the wire.
func TestTamperedRecordIsRepairable(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	for _, name := range []string{"good", "bad"} {
		adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: name, Provider: events.ProviderBuiltin,
			Groups: []string{"bio"}, Secrets: []string{"*"}}, nil)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, c.Subjects().Bucket("connections"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "bad")
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	rec["public"] = json.RawMessage(`{"name":"bad","provider":"builtin","groups":["*"]}`)
	var env struct {
		KID   string `json:"kid"`
		Nonce []byte `json:"nonce"`
		Data  []byte `json:"data"`
	}
	_ = json.Unmarshal(rec["sealed"], &env)
	env.Data[0] ^= 1
	rec["sealed"], _ = json.Marshal(env)
	tampered, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, "bad", tampered); err != nil {
		t.Fatal(err)
	}
	var rep events.RekeyReply
	natstest.Eventually(t, 5*time.Second, "the tampered record to be refused", func() bool {
		_, err := resolveReq(c, "bio", "bad", events.ResolveRequest{Secret: "x"})
		return errors.Is(err, events.ErrUnavailable) || errors.Is(err, events.ErrNotFound)
	})
	if err := c.Request(ctx, c.Subjects().AdminRekey(), events.Empty{}, &rep); err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Failed, ",") != "bad" || rep.Current == "" {
		t.Fatalf("rekey = %+v, want bad named as failed", rep)
	}
	// Replace it …
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "bad", Provider: events.ProviderBuiltin,
		Groups: []string{"chem"}, Secrets: []string{"*"}}, nil)
	var got events.Connection
	adminReq(t, c, events.ResourceConnections, events.VerbGet, events.NameRequest{Name: "bad"}, &got)
	if !got.AllowsGroup("chem") || got.AllowsGroup("bio") {
		t.Fatalf("after the repair: %+v", got.Groups)
	}
	// … and delete a tampered one.
	if _, err := kv.Put(ctx, "bad", tampered); err != nil {
		t.Fatal(err)
	}
	adminReq(t, c, events.ResourceConnections, events.VerbDelete, events.NameRequest{Name: "bad"}, nil)
	if _, err := kv.Get(ctx, "bad"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := resolveReq(c, "bio", "good", events.ResolveRequest{Secret: "x"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("the good connection: %v", err)
	}
}
