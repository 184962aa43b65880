package gcp

import (
	"context"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"

	"github.com/cloudbridge/cloudbridge/events"
)

// sdkText is a phrase of the server's error message: it must never reach a step.
const sdkText = "server-internal-detail-xyzzy"

func probeProvider(t *testing.T, srv *pstest.Server, sub string) *Provider {
	t.Helper()
	env := newEnv(t)
	conn := env.keyConn("gcp-sm-bio", env.reader)
	conn.GCP.Events = &events.GCPEvents{Subscription: sub, Endpoint: "http://" + srv.Addr}
	return newProvider(t, conn, WithEventsPullTimeout(2*time.Second))
}

// TestProbeEventsStep: the events step of conn test is one immediate Pull
// of the subscription with the connection's token; it passes when the
// subscription is readable (a message it gets is handed back at once, not
// lost), fails not_found when it is gone and forbidden when the identity
// lacks roles/pubsub.subscriber; no step quotes the server's text.
func TestProbeEventsStep(t *testing.T) {
	t.Run("reachable", func(t *testing.T) {
		e := newPubsubEnv(t)
		p := probeProvider(t, e.srv, e.sub)
		id := e.publish("SECRET_VERSION_ADD", "biodb01")
		st := p.probeEvents(ctxT(t))
		if !st.OK || st.Name != events.StepEvents || !strings.Contains(st.Detail, e.sub) {
			t.Fatalf("step %+v", st)
		}
		// Handed back (ack deadline 0): the next pull gets it, unacknowledged.
		resp, err := e.srv.GServer.Pull(ctxT(t), &pubsubpb.PullRequest{Subscription: e.sub, MaxMessages: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.ReceivedMessages) != 1 || resp.ReceivedMessages[0].Message.MessageId != id || e.acked(id) {
			t.Fatalf("after the probe: %d messages, acked %v", len(resp.ReceivedMessages), e.acked(id))
		}
	})
	t.Run("missing subscription", func(t *testing.T) {
		e := newPubsubEnv(t)
		p := probeProvider(t, e.srv, "projects/bio-prod/subscriptions/gone")
		st := p.probeEvents(ctxT(t))
		if st.OK || st.Error == nil || st.Error.Code != events.CodeNotFound || !strings.Contains(st.Error.Message, "gcp.events.subscription") {
			t.Fatalf("step %+v", st)
		}
	})
	t.Run("permission denied", func(t *testing.T) {
		srv := pstest.NewServer(pstest.WithErrorInjection("Pull", codes.PermissionDenied, sdkText))
		t.Cleanup(func() { _ = srv.Close() })
		p := probeProvider(t, srv, "projects/bio-prod/subscriptions/secret-changes")
		st := p.probeEvents(ctxT(t))
		if st.OK || st.Error == nil || st.Error.Code != events.CodeForbidden {
			t.Fatalf("step %+v", st)
		}
		if strings.Contains(st.Error.Message, sdkText) {
			t.Errorf("message %q quotes the server", st.Error.Message)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		env := newEnv(t)
		conn := env.keyConn("gcp-sm-bio", env.reader)
		conn.GCP.Events = &events.GCPEvents{Subscription: "projects/bio-prod/subscriptions/secret-changes", Endpoint: "http://127.0.0.1:1"}
		p := newProvider(t, conn)
		// A refused connection fails the Pull at once (unavailable): the
		// client library does not retry it until the deadline (timeout).
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st := p.probeEvents(ctx)
		if st.OK || st.Error == nil || st.Error.Code != events.CodeUnavailable {
			t.Fatalf("step %+v", st)
		}
	})
}
