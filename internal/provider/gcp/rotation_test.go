package gcp

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

func notification(id, typ, secretID string) *pubsubpb.PubsubMessage {
	attrs := map[string]string{"eventType": typ, "dataFormat": "JSON"}
	if secretID != "" {
		attrs["secretId"] = secretID
	}
	if strings.HasPrefix(typ, "SECRET_VERSION_") {
		attrs["versionId"] = secretID + "/versions/3"
	}
	return &pubsubpb.PubsubMessage{MessageId: id, Attributes: attrs, Data: []byte(`{"name":"` + secretID + `"}`),
		PublishTime: timestamppb.New(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))}
}

func TestParseRotationEvents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		msg       *pubsubpb.PubsubMessage
		typ       string
		secret    string
		kind      rotation.Kind
		malformed bool
	}{
		{"version add", notification("1", "SECRET_VERSION_ADD", "projects/123456/secrets/biodb01"), "SECRET_VERSION_ADD", "biodb01", rotation.Changed, false},
		{"version disable", notification("2", "SECRET_VERSION_DISABLE", "projects/bio-prod/secrets/biodb01"), "SECRET_VERSION_DISABLE", "biodb01", rotation.Changed, false},
		{"version enable", notification("3", "SECRET_VERSION_ENABLE", "projects/bio-prod/secrets/biodb01"), "SECRET_VERSION_ENABLE", "biodb01", rotation.Changed, false},
		{"version destroy", notification("4", "SECRET_VERSION_DESTROY", "projects/bio-prod/secrets/biodb01"), "SECRET_VERSION_DESTROY", "biodb01", rotation.Changed, false},
		{"update", notification("5", "SECRET_UPDATE", "projects/bio-prod/secrets/biodb01"), "SECRET_UPDATE", "biodb01", rotation.Changed, false},
		{"delete", notification("6", "SECRET_DELETE", "projects/bio-prod/secrets/biodb01"), "SECRET_DELETE", "biodb01", rotation.Deleted, false},
		{"regional", notification("7", "SECRET_UPDATE", "projects/bio-prod/locations/europe-west1/secrets/biodb01"), "SECRET_UPDATE", "biodb01", rotation.Changed, false},
		{"rotate is not a change", notification("8", "SECRET_ROTATE", "projects/bio-prod/secrets/biodb01"), "SECRET_ROTATE", "", "", false},
		{"unknown type", notification("9", "SOMETHING_NEW", "projects/bio-prod/secrets/biodb01"), "other", "", "", false},
		{"no eventType", &pubsubpb.PubsubMessage{MessageId: "10"}, rotation.TypeMalformed, "", "", true},
		{"no secretId", notification("11", "SECRET_UPDATE", ""), rotation.TypeMalformed, "", "", true},
		{"bad secretId", notification("12", "SECRET_UPDATE", "projects/x/topics/y"), rotation.TypeMalformed, "", "", true},
		{"nil", nil, rotation.TypeMalformed, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ParseRotationEvent(tc.msg)
			if m.Type != tc.typ || (m.Err != nil) != tc.malformed {
				t.Fatalf("type %q err %v, want %q malformed=%v", m.Type, m.Err, tc.typ, tc.malformed)
			}
			if tc.secret == "" {
				if len(m.Changes) != 0 {
					t.Fatalf("changes %+v", m.Changes)
				}
				return
			}
			if len(m.Changes) != 1 {
				t.Fatalf("changes %+v", m.Changes)
			}
			c := m.Changes[0]
			if c.Secret != tc.secret || c.Kind != tc.kind || c.ID != m.ID || c.EventTime.IsZero() || !strings.HasPrefix(c.Resource, "projects/") {
				t.Errorf("change %+v", c)
			}
		})
	}
}

// pubsubEnv is Google's in-memory Pub/Sub server with a topic and a
// subscription, as Secret Manager's event notifications are set up.
type pubsubEnv struct {
	srv   *pstest.Server
	topic string
	sub   string
}

func newPubsubEnv(t *testing.T, opts ...pstest.ServerReactorOption) *pubsubEnv {
	srv := pstest.NewServer(opts...)
	t.Cleanup(func() { _ = srv.Close() })
	e := &pubsubEnv{srv: srv, topic: "projects/bio-prod/topics/secret-changes", sub: "projects/bio-prod/subscriptions/secret-changes"}
	ctx := ctxT(t)
	if _, err := srv.GServer.CreateTopic(ctx, &pubsubpb.Topic{Name: e.topic}); err != nil {
		t.Fatal(err)
	}
	e.createSub(t)
	return e
}

func (e *pubsubEnv) createSub(t *testing.T) {
	t.Helper()
	if _, err := e.srv.GServer.CreateSubscription(ctxT(t), &pubsubpb.Subscription{Name: e.sub, Topic: e.topic, AckDeadlineSeconds: 10}); err != nil {
		t.Fatal(err)
	}
}

func (e *pubsubEnv) publish(typ, secret string) string {
	attrs := map[string]string{"eventType": typ, "secretId": "projects/bio-prod/secrets/" + secret, "dataFormat": "JSON"}
	if strings.HasPrefix(typ, "SECRET_VERSION_") {
		attrs["versionId"] = attrs["secretId"] + "/versions/2"
	}
	return e.srv.Publish(e.topic, []byte(`{}`), attrs)
}

func (e *pubsubEnv) acked(id string) bool {
	m := e.srv.Message(id)
	return m != nil && m.Acks > 0
}

type changeLog struct {
	mu      sync.Mutex
	changes []rotation.Change
}

func (l *changeLog) handle(_ context.Context, c rotation.Change) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, c)
	return nil
}

func (l *changeLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []string
	for _, c := range l.changes {
		s = append(s, c.Secret+":"+string(c.Kind))
	}
	return s
}

func startRotation(t *testing.T, e *pubsubEnv) (*RotationSource, *rotation.Runner, *changeLog) {
	t.Helper()
	env := newEnv(t)
	p := newProvider(t, env.keyConn("gcp-sm-bio", env.reader))
	src, err := NewRotationSource(ctxT(t), p, events.GCPEvents{Subscription: e.sub, Endpoint: "http://" + e.srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	src.timeout = time.Second
	log := &changeLog{}
	r := rotation.Start(rotation.Config{Connection: "gcp-sm-bio", Source: src, Handle: log.handle,
		Allowed:    func(s string) bool { return strings.HasPrefix(s, "biodb") },
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return src, r, log
}

// TestRotationEventsThroughPubSub: notifications published on the topic
// reach the runner through the subscription, with the connection's own
// token; changes of allowed secrets are handled, SECRET_ROTATE and foreign
// secrets are not, and every message is acknowledged.
func TestRotationEventsThroughPubSub(t *testing.T) {
	e := newPubsubEnv(t)
	_, _, log := startRotation(t, e)
	ids := []string{
		e.publish("SECRET_VERSION_ADD", "biodb01"),
		e.publish("SECRET_ROTATE", "biodb01"),
		e.publish("SECRET_VERSION_ADD", "chemdb01"), // outside the allowlist
		e.publish("SECRET_DELETE", "biodb02"),
	}
	testenv.Eventually(t, 10*time.Second, "every message acked", func() bool {
		for _, id := range ids {
			if !e.acked(id) {
				return false
			}
		}
		return true
	})
	got := log.list()
	sort.Strings(got) // Pub/Sub does not keep order
	if strings.Join(got, ",") != "biodb01:changed,biodb02:deleted" {
		t.Errorf("changes %s", got)
	}
}

// TestRotationSubscriptionDisappears: a deleted subscription marks the
// runner degraded; a recreated one recovers it and events flow again.
func TestRotationSubscriptionDisappears(t *testing.T) {
	e := newPubsubEnv(t)
	_, r, log := startRotation(t, e)
	e.publish("SECRET_VERSION_ADD", "biodb01")
	testenv.Eventually(t, 10*time.Second, "the first change", func() bool { return len(log.list()) == 1 })
	if _, err := e.srv.GServer.DeleteSubscription(ctxT(t), &pubsubpb.DeleteSubscriptionRequest{Subscription: e.sub}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "degraded", r.Degraded)
	if h := r.Health(); h.Cause == nil || !strings.Contains(h.Cause.Error(), "NotFound") {
		t.Errorf("health %+v", h)
	}
	e.createSub(t)
	testenv.Eventually(t, 10*time.Second, "recovery", func() bool { return !r.Degraded() })
	e.publish("SECRET_VERSION_ADD", "biodb01")
	testenv.Eventually(t, 10*time.Second, "the change after recovery", func() bool { return len(log.list()) == 2 })
}

// TestRotationPullErrorClasses: a Pull the server fails makes the runner
// degraded with a cause whose class (what conn test's events step reports)
// follows the gRPC code, and whose text names the call and the code, not the
// server's message.
func TestRotationPullErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want events.Code
	}{
		{codes.PermissionDenied, events.CodeForbidden},
		{codes.Unauthenticated, events.CodeUnauthorized},
		{codes.NotFound, events.CodeNotFound},
		{codes.ResourceExhausted, events.CodeThrottled},
		{codes.InvalidArgument, events.CodeBadRequest},
		{codes.FailedPrecondition, events.CodeUnavailable},
		// Codes the client library would retry until the pull's deadline,
		// which would look like empty polls: a service that is down.
		{codes.Unavailable, events.CodeUnavailable},
		{codes.Internal, events.CodeUnavailable},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			e := newPubsubEnv(t, pstest.WithErrorInjection("Pull", tc.code, "server text sk-live-0000"))
			_, r, _ := startRotation(t, e)
			testenv.Eventually(t, 10*time.Second, "degraded", r.Degraded)
			h := r.Health()
			if got := rotation.CauseClass(h.Cause); got != tc.want {
				t.Errorf("cause %v: class %s, want %s", h.Cause, got, tc.want)
			}
			if msg := h.Cause.Error(); msg != "pubsub Pull: "+tc.code.String() {
				t.Errorf("cause text %q", msg)
			}
		})
	}
}

func TestNewRotationSourceRejectsBadBlocks(t *testing.T) {
	env := newEnv(t)
	p := newProvider(t, env.keyConn("gcp-sm-bio", env.reader))
	for _, ev := range []events.GCPEvents{
		{},
		{Subscription: "secret-changes"},
		{Subscription: "projects/bio-prod/subscriptions/x", Endpoint: "ftp://h"},
	} {
		if _, err := NewRotationSource(ctxT(t), p, ev); events.CodeOf(err) != events.CodeBadRequest {
			t.Errorf("%+v: %v, want bad_request", ev, err)
		}
	}
}
