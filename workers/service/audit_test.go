package service

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/audit"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/schemas"
)

// request sends body to subject with a request id and returns the reply.
func auditRequest(t *testing.T, nc *nats.Conn, subject, id string, body string) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	m.Header.Set(events.HeaderRequestID, id)
	rep, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatalf("%s (%s): %v", subject, id, err)
	}
	if got := rep.Header.Get(events.HeaderRequestID); got != id {
		t.Fatalf("%s: reply request id %q, want %q", subject, got, id)
	}
	return rep
}

// auditEvents reads every event of the audit stream.
func auditEvents(t *testing.T, js jetstream.JetStream) map[string][]events.AuditEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
	if err != nil {
		t.Fatalf("audit stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]events.AuditEvent{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("audit seq %d: %v", seq, err)
		}
		var ev events.AuditEvent
		if err := events.Decode(m.Data, &ev); err != nil {
			t.Fatalf("audit event %s does not decode strictly: %v", m.Data, err)
		}
		if err := schemas.Validate("audit-event", m.Data); err != nil {
			t.Fatalf("audit event %s does not match its schema: %v", m.Data, err)
		}
		key := ev.RequestID
		out[key] = append(out[key], ev)
		out["subject:"+key] = append(out["subject:"+key], events.AuditEvent{Op: m.Subject})
	}
	return out
}

func countEvents(js jetstream.JetStream) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// fingerprintOf computes a fingerprint as the README describes it: hex
// HMAC-SHA256 under HKDF-SHA256(master key, no salt, info "cloudbridge audit
// fingerprint").
func fingerprintOf(t *testing.T, masterKey string, value []byte) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(masterKey)
	if err != nil {
		t.Fatal(err)
	}
	k, err := hkdf.Key(sha256.New, raw, nil, "cloudbridge audit fingerprint", 32)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, k)
	m.Write(value)
	return hex.EncodeToString(m.Sum(nil))
}

func TestAuditOneValueFreeEventPerRequest(t *testing.T) {
	store := t.TempDir()
	srv := natstest.ServerWith(t, &server.Options{StoreDir: store})
	key := newMasterKey(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), key))
	nc, c := connect(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	walkthrough(t, c) // two admin requests: connection put, secret put
	s := events.Subjects{}
	value := []byte(`{"login":"user01","password":"password01"}`)

	type want struct {
		id, subject, op, outcome, group, conn, secret string
		cached, fingerprint                           bool
	}
	var wants []want
	do := func(subject, body string, wt want) *nats.Msg {
		wt.id = "rq-" + string(rune('a'+len(wants)))
		wt.subject = subject
		wants = append(wants, wt)
		return auditRequest(t, nc, subject, wt.id, body)
	}
	res := s.Resolve("bio", "local-bio")
	do(res, `{"secret":"biodb01"}`, want{op: "resolve", outcome: "ok", group: "bio", conn: "local-bio", secret: "biodb01", fingerprint: true})
	do(res, `{"secret":"biodb01"}`, want{op: "resolve", outcome: "ok", group: "bio", conn: "local-bio", secret: "biodb01", cached: true, fingerprint: true})
	do(res, `{"secret":"biodb01","keys":["login"]}`, want{op: "resolve", outcome: "ok", group: "bio", conn: "local-bio", secret: "biodb01", cached: true, fingerprint: true})
	do(res, `{"secret":"other"}`, want{op: "resolve", outcome: "forbidden", group: "bio", conn: "local-bio", secret: "other"})
	do(res, `{"secret":"biodb01","keys":["nokey"]}`, want{op: "resolve", outcome: "not_found", group: "bio", conn: "local-bio", secret: "biodb01"})
	do(res, `{"secret":`, want{op: "resolve", outcome: "bad_request", group: "bio", conn: "local-bio"})
	do(s.Resolve("chem", "local-bio"), `{"secret":"biodb01"}`, want{op: "resolve", outcome: "forbidden", group: "chem", conn: "local-bio", secret: "biodb01"})
	do(s.Resolve("bio", "nope"), `{"secret":"biodb01"}`, want{op: "resolve", outcome: "not_found", group: "bio", conn: "nope", secret: "biodb01"})
	do(s.Test("bio", "local-bio"), `{"secret":"biodb01"}`, want{op: "test", outcome: "ok", group: "bio", conn: "local-bio", secret: "biodb01"})
	do(s.Token("bio", "local-bio"), `{}`, want{op: "token", group: "bio", conn: "local-bio"})
	do(s.Invalidate(), `{"connection":"local-bio","secret":"biodb01"}`, want{op: "invalidate", outcome: "ok", conn: "local-bio", secret: "biodb01"})
	do(s.Admin(events.ResourceConnections, events.VerbGet), `{"name":"local-bio"}`, want{op: "admin", outcome: "ok", conn: "local-bio"})
	do(s.Admin(events.ResourceSecrets, events.VerbPut), `{"connection":"local-bio","name":"biodb02","value":"`+base64.StdEncoding.EncodeToString([]byte("password02"))+`","bogus":1}`,
		want{op: "admin", outcome: "bad_request"}) // undecodable: no connection known
	fp := do(s.AdminAuditFingerprint(), `{"connection":"local-bio","secret":"biodb01"}`, want{op: "admin", outcome: "ok", conn: "local-bio", secret: "biodb01"})
	var fpr events.FingerprintReply
	if err := json.Unmarshal(fp.Data, &fpr); err != nil || fpr.Fingerprint == "" {
		t.Fatalf("fingerprint reply %s: %v", fp.Data, err)
	}
	if want := fingerprintOf(t, key, value); fpr.Fingerprint != want {
		t.Fatalf("fingerprint %s, want HMAC under the derived key %s", fpr.Fingerprint, want)
	}

	total := uint64(len(wants) + 2)
	natstest.Eventually(t, 5*time.Second, "every audit event stored", func() bool { return countEvents(js) >= total })
	got := auditEvents(t, js)
	if n := countEvents(js); n != total {
		t.Fatalf("%d audit events for %d requests", n, total)
	}
	for _, wt := range wants {
		evs := got[wt.id]
		if len(evs) != 1 {
			t.Fatalf("%s (%s): %d audit events, want 1", wt.id, wt.subject, len(evs))
		}
		ev := evs[0]
		if ev.Op != wt.op || ev.Group != wt.group || ev.Connection != wt.conn || ev.Secret != wt.secret {
			t.Errorf("%s: event %+v, want %+v", wt.id, ev, wt)
		}
		if wt.outcome != "" && ev.Outcome != wt.outcome {
			t.Errorf("%s: outcome %q, want %q", wt.id, ev.Outcome, wt.outcome)
		}
		if ev.Cached != wt.cached {
			t.Errorf("%s: cached %v, want %v", wt.id, ev.Cached, wt.cached)
		}
		if wt.fingerprint != (ev.Fingerprint != "") || (wt.fingerprint && ev.Fingerprint != fpr.Fingerprint) {
			t.Errorf("%s: fingerprint %q, want %v (%s)", wt.id, ev.Fingerprint, wt.fingerprint, fpr.Fingerprint)
		}
		if ev.Instance != w.ServiceID() || ev.Time.IsZero() || ev.LatencyMS < 0 {
			t.Errorf("%s: instance %q (want %q), time %v, latency %v", wt.id, ev.Instance, w.ServiceID(), ev.Time, ev.LatencyMS)
		}
		subj := got["subject:"+wt.id][0].Op
		wantSubj := s.Audit(wt.op, wt.group, wt.conn)
		switch {
		case wt.op == "invalidate":
			wantSubj = s.Audit("invalidate", "_", wt.conn)
		case wt.op == "admin":
			wantSubj = s.AuditAdmin(ev.Verb)
		}
		if subj != wantSubj {
			t.Errorf("%s: subject %s, want %s", wt.id, subj, wantSubj)
		}
	}
	if v := got["rq-a"][0].Version; v == "" {
		t.Errorf("resolve event has no version served")
	}
	if v := got["rq-l"][0].Verb; v != "connections-get" {
		t.Errorf("admin verb %q", v)
	}

	// No value anywhere: not in the stored messages, not in the store files.
	secrets := [][]byte{[]byte("password01"), []byte("user01"), []byte("password02"),
		[]byte(base64.StdEncoding.EncodeToString(value)), []byte(base64.StdEncoding.EncodeToString([]byte("password02")))}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, _ := js.Stream(ctx, s.AuditStream())
	for seq := uint64(1); seq <= total; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		for _, sec := range secrets {
			if bytes.Contains(m.Data, sec) || strings.Contains(m.Subject, string(sec)) {
				t.Fatalf("audit event %d holds a secret value: %s", seq, m.Data)
			}
		}
	}
	var files int
	_ = filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, s.AuditStream()) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		files++
		if bytes.Contains(b, []byte(`"request_id":"rq-a"`)) {
			files += 1000 // the store is readable: the grep below means something
		}
		for _, sec := range secrets {
			if bytes.Contains(b, sec) {
				t.Errorf("store file %s holds a secret value", p)
			}
		}
		return nil
	})
	if files < 1000 {
		t.Fatalf("no readable audit store file under %s (%d files)", store, files)
	}
}

// refuseAudit makes the audit stream refuse every new event for good: a
// sealed stream takes no message (and is not re-created: it exists).
func refuseAudit(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

func TestAuditRequiredRefusesWhenTheStreamRefuses(t *testing.T) {
	srv := natstest.Server(t)
	key := newMasterKey(t)
	cfg := joinedConfig(srv.ClientURL(), key)
	cfg.Audit = "required"
	startWorker(t, cfg)
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	for i := 0; i < 2; i++ { // a miss, then a cache hit
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			t.Fatalf("resolve with the audit stream up: %v", err)
		}
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	refuseAudit(t, js)
	before := audit.Dropped("refused")
	for _, req := range []events.ResolveRequest{{Secret: "biodb01"}, {Secret: "biodb01", Fresh: true}, {Secret: "other"}} {
		_, err := resolveReq(c, "bio", "local-bio", req)
		if !errors.Is(err, events.ErrUnavailable) {
			t.Fatalf("resolve %+v without the audit stream, required mode: %v, want unavailable", req, err)
		}
	}
	if err := c.Request(ctx, c.Subjects().Admin(events.ResourceConnections, events.VerbList), struct{}{}, nil); !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("admin request without the audit stream: %v, want unavailable", err)
	}
	if audit.Dropped("refused") < before+4 {
		t.Fatalf("refused audit events not counted")
	}
}

func TestAuditBestEffortServesAndCountsLoss(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	js, _ := jetstream.New(nc)
	refuseAudit(t, js)
	before := audit.Dropped("publish_failed")
	for i := 0; i < 3; i++ {
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			t.Fatalf("best-effort resolve without the audit stream: %v", err)
		}
	}
	natstest.Eventually(t, 5*time.Second, "lost audit events counted", func() bool { return audit.Dropped("publish_failed") >= before+3 })
}

// A token request's audit event names the role assumed and the expiry, and
// fingerprints the secret access key; neither the key nor the session token
// is in it.
func TestAuditTokenRoleExpiryFingerprint(t *testing.T) {
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	fake := awsfake.New(t)
	user := fake.AddUser("platform-admin")
	role := fake.AddRole("bio-reader", awsfake.RoleOptions{MaxSession: 12 * time.Hour})
	srv := natstest.Server(t)
	key := newMasterKey(t)
	startWorker(t, joinedConfig(srv.ClientURL(), key))
	nc, c := connect(t, srv.ClientURL())
	conn := events.Connection{Name: "aws-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"bio/*"},
		Tokens: &events.TokenPolicy{Enabled: true, MaxDuration: events.Duration(time.Hour)},
		AWS: &events.AWSConfig{Region: "eu-west-1", Auth: events.AWSAuthAccessKey, AccessKeyID: user.AccessKeyID,
			SecretAccessKey: user.SecretAccessKey, Endpoint: fake.URL(), RoleARN: role}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	ctx := t.Context()
	var tok *events.TokenReply
	natstest.Eventually(t, 5*time.Second, "the connection to reach the worker", func() bool {
		var err error
		tok, err = c.Token(ctx, "bio", "aws-bio", events.TokenRequest{})
		return err == nil
	})
	js, _ := jetstream.New(nc)
	var ev events.AuditEvent
	var raw []byte
	natstest.Eventually(t, 5*time.Second, "the token's audit event", func() bool {
		st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctx, events.Subjects{}.Audit(events.OpToken, "bio", "aws-bio"))
		if err != nil || json.Unmarshal(m.Data, &ev) != nil || ev.Outcome != events.OutcomeOK {
			return false
		}
		raw = m.Data
		return true
	})
	if err := schemas.Validate("audit-event", raw); err != nil {
		t.Fatal(err)
	}
	if ev.Role != role || ev.Expires == nil || !ev.Expires.Equal(tok.AWS.Expiration) {
		t.Fatalf("token event %s: want role %s, expires %s", raw, role, tok.AWS.Expiration)
	}
	if want := fingerprintOf(t, key, []byte(tok.AWS.SecretAccessKey)); ev.Fingerprint != want {
		t.Fatalf("token fingerprint %s, want that of the secret access key %s", ev.Fingerprint, want)
	}
	if !ev.Sealed || ev.ReplyKey != c.ReplyKey() {
		t.Fatalf("token event not recorded as sealed to the client's key: %s", raw)
	}
	for _, sec := range []string{tok.AWS.SecretAccessKey, tok.AWS.SessionToken, user.SecretAccessKey} {
		if bytes.Contains(raw, []byte(sec)) {
			t.Fatalf("token audit event holds a credential: %s", raw)
		}
	}
}

// A deleted audit stream is re-created by the running worker when a publish
// finds it missing: in required mode the requests meanwhile are refused,
// then served again with their events stored; in best-effort mode they are
// served throughout.
func TestAuditStreamRecreatedAfterDeletion(t *testing.T) {
	for _, mode := range []string{"required", "best-effort"} {
		t.Run(mode, func(t *testing.T) {
			srv := natstest.Server(t)
			cfg := joinedConfig(srv.ClientURL(), newMasterKey(t))
			cfg.Audit = mode
			startWorker(t, cfg)
			nc, c := connect(t, srv.ClientURL())
			walkthrough(t, c)
			js, _ := jetstream.New(nc)
			ctx := t.Context()
			recreated := audit.Recreated()
			if err := js.DeleteStream(ctx, events.Subjects{}.AuditStream()); err != nil {
				t.Fatal(err)
			}
			resolve := func() error {
				_, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
				return err
			}
			err := resolve()
			switch {
			case mode == "required" && !errors.Is(err, events.ErrUnavailable):
				t.Fatalf("first resolve after the deletion: %v, want unavailable", err)
			case mode == "best-effort" && err != nil:
				t.Fatalf("best-effort resolve after the deletion: %v", err)
			}
			natstest.Eventually(t, 10*time.Second, "the audit stream re-created", func() bool {
				_, err := js.Stream(ctx, events.Subjects{}.AuditStream())
				return err == nil && audit.Recreated() > recreated
			})
			natstest.Eventually(t, 10*time.Second, "a resolve served with its event in the new stream", func() bool {
				if err := resolve(); err != nil {
					return false
				}
				return countEvents(js) > 0
			})
			st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx)
			if err != nil || info.Config.Storage != jetstream.FileStorage || info.Config.MaxAge != cfg.AuditRetention {
				t.Fatalf("re-created stream %+v: %v", info, err)
			}
		})
	}
}

// A request that came through a service import shared with client info
// (share: true) carries the requester's identity, and its audit event has it.
func TestAuditRequesterFromServiceImport(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(`
accounts {
  CB: {
    jetstream: enabled
    users: [{user: worker, password: worker-pw}]
    exports: [{service: "cloudbridge.v1.resolve.>"}]
  }
  APP: {
    users: [{user: app-user, password: app-pw}]
    imports: [{service: {account: CB, subject: "cloudbridge.v1.resolve.>"}, share: true}]
  }
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.ServerWith(t, opts)
	cfg := joinedConfig(srv.ClientURL(), newMasterKey(t))
	cfg.User, cfg.Password = "worker", "worker-pw"
	startWorker(t, cfg)
	admin := natstest.Connect(t, srv, nats.UserInfo("worker", "worker-pw"))
	walkthrough(t, events.NewClient(admin, ""))
	app := natstest.Connect(t, srv, nats.UserInfo("app-user", "app-pw"), nats.Name("bio-etl"))
	appClient := events.NewClient(app, "")
	ctx := t.Context()
	var reply *events.ResolveReply
	natstest.Eventually(t, 5*time.Second, "a resolve through the import", func() bool {
		reply, err = appClient.Resolve(ctx, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
		return err == nil
	})
	if p, _ := reply.String("password"); p != "password01" {
		t.Fatalf("reply through the import: %+v", reply)
	}
	js, _ := jetstream.New(admin)
	var ev events.AuditEvent
	natstest.Eventually(t, 5*time.Second, "the resolve's audit event", func() bool {
		st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctx, events.Subjects{}.Audit(events.OpResolve, "bio", "local-bio"))
		return err == nil && json.Unmarshal(m.Data, &ev) == nil && ev.Outcome == events.OutcomeOK
	})
	rq := ev.Requester
	if rq == nil || rq.Account != "APP" || rq.User != "app-user" || rq.Name != "bio-etl" {
		t.Fatalf("requester %+v, want account APP, user app-user, name bio-etl", rq)
	}
}

// TestAuditSummarisesThrottledFlood: while aws-hang's endpoint hangs under
// 2,000 resolves, its throttled refusals are stored as a few events whose
// counts add up to the throttled replies, which /metrics and $SRV.STATS
// still count one by one; each admitted request that timed out is an event
// of its own. In both modes: required does not make a throttled refusal
// wait (audit's own tests check the summaries Stop flushes).
func TestAuditSummarisesThrottledFlood(t *testing.T) {
	for _, mode := range []string{"best-effort", "required"} {
		t.Run(mode, func(t *testing.T) {
			srv := natstest.Server(t)
			w, _, _ := floodSetup(t, srv.ClientURL(), 3*time.Second, func(s *Service) { s.cfg.Audit = mode })
			snc := natstest.Connect(t, srv)
			js, err := jetstream.New(snc)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := resolveCounts(t, w.HTTPAddr())
			statsBefore := resolveStats(t, snc, w)
			summarised0 := audit.Summarised()
			const n = 2000
			replies, done := flood(t, srv.ClientURL(), n)
			defer done()
			codes := map[string]int{}
			deadline := time.After(60 * time.Second)
			for got := 0; got < n; got++ {
				select {
				case m := <-replies:
					codes[m.Header.Get(events.HeaderErrorCode)]++
				case <-deadline:
					t.Fatalf("only %d of %d flood requests answered: %v", got, n, codes)
				}
			}
			throttled := codes[strconv.Itoa(events.CodeThrottled.Number())]
			timeouts := codes[strconv.Itoa(events.CodeTimeout.Number())]
			if throttled+timeouts != n || throttled < n/2 {
				t.Fatalf("flood replies %v: want throttled and timeouts only, mostly throttled", codes)
			}
			after, _ := resolveCounts(t, w.HTTPAddr())
			if d := after["throttled"] - before["throttled"]; d != float64(throttled) {
				t.Fatalf("cloudbridge_requests_total counted %v throttled, %d replied", d, throttled)
			}
			if d := resolveStats(t, snc, w).NumErrors - statsBefore.NumErrors; d != n {
				t.Fatalf("$SRV.STATS counted %d errors for %d flood requests", d, n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			subject := events.Subjects{}.Audit(events.OpResolve, "bio", "aws-hang")
			got := auditEvents(t, js)
			var recorded, stored, summaries, timedOut int
			for id, evs := range got {
				if strings.HasPrefix(id, "subject:") || got["subject:"+id][0].Op != subject {
					continue
				}
				for _, ev := range evs {
					switch ev.Outcome {
					case string(events.CodeThrottled):
						stored++
						recorded += max(ev.Count, 1)
						if ev.Count > 0 {
							summaries++
						}
					case string(events.CodeTimeout):
						if ev.Count != 0 {
							t.Fatalf("a timed-out request summarised: %+v", ev)
						}
						timedOut++
					default:
						t.Fatalf("flood event with outcome %q", ev.Outcome)
					}
				}
			}
			if recorded != throttled || timedOut != timeouts {
				t.Fatalf("audit events record %d throttled (%d events) and %d timed-out requests; replies: %d and %d",
					recorded, stored, timedOut, throttled, timeouts)
			}
			if stored > throttled/10 || summaries == 0 {
				t.Fatalf("%d throttled refusals stored as %d events (%d summaries): not summarised", throttled, stored, summaries)
			}
			if d := audit.Summarised() - summarised0; d != float64(recorded-(stored-summaries)) {
				t.Fatalf("cloudbridge_audit_summarised_total grew by %v; the summaries stored count %d", d, recorded-(stored-summaries))
			}
			t.Logf("%d throttled refusals stored as %d events (%d summaries); %d timeouts", throttled, stored, summaries, timeouts)
		})
	}
}
