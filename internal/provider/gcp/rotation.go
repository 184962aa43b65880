package gcp

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
)

// Pull parameters of the rotation source.
const (
	rotationMaxMessages = 100
	// rotationPullTimeout bounds one Pull: Pub/Sub holds a Pull without
	// messages for a while and then answers empty; this ends it on our side.
	rotationPullTimeout = 30 * time.Second
)

// pullAPI is the part of the Pub/Sub subscription client the rotation source uses.
type pullAPI interface {
	Pull(ctx context.Context, req *pubsubpb.PullRequest, opts ...gax.CallOption) (*pubsubpb.PullResponse, error)
	Acknowledge(ctx context.Context, req *pubsubpb.AcknowledgeRequest, opts ...gax.CallOption) error
	ModifyAckDeadline(ctx context.Context, req *pubsubpb.ModifyAckDeadlineRequest, opts ...gax.CallOption) error
}

// RotationSource is a rotation.Source reading the Pub/Sub subscription of
// gcp.events: Secret Manager's event notifications for the connection's
// secrets. It pulls (unary Pull, so that each poll tells whether the
// subscription can be read) and acknowledges each message after it was
// handled. Several workers may read one subscription.
type RotationSource struct {
	sub     string
	api     pullAPI
	timeout time.Duration
	close   func() error
}

var _ rotation.Source = (*RotationSource)(nil)

// NewRotationSource builds the source of gcp.events with the connection's
// own credentials. ev.Endpoint, when set, overrides the Pub/Sub endpoint:
// https://host:port is TLS, http://host:port plaintext gRPC (emulators such
// as pstest), the token still sent as bearer metadata. No call is made.
func NewRotationSource(ctx context.Context, p *Provider, ev events.GCPEvents) (*RotationSource, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	ep, err := parseEndpoint(ev.Endpoint)
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "gcp.events.endpoint: not http(s)://host[:port]")
	}
	return newRotationSource(ctx, ev, clientOptions(ep, p.creds, p.set.tlsConfig))
}

func newRotationSource(ctx context.Context, ev events.GCPEvents, opts []option.ClientOption) (*RotationSource, error) {
	c, err := pubsub.NewClient(ctx, ev.SubscriptionProject(), opts...)
	if err != nil {
		return nil, events.Errorf(events.CodeUnavailable, "gcp.events: cannot create the Pub/Sub client")
	}
	return &RotationSource{sub: ev.Subscription, api: c.SubscriptionAdminClient, timeout: rotationPullTimeout, close: c.Close}, nil
}

// Close closes the Pub/Sub client.
func (s *RotationSource) Close() error {
	if s.close == nil {
		return nil
	}
	return s.close()
}

// Receive pulls up to 100 messages, waiting for the first a bounded time.
func (s *RotationSource) Receive(ctx context.Context) ([]rotation.Message, error) {
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// No retries in the client: it would retry Unavailable, Internal,
	// Unknown and Aborted until pctx ends, and a service that is down would
	// look like empty polls, never degraded. The runner retries, with backoff.
	resp, err := s.api.Pull(pctx, &pubsubpb.PullRequest{Subscription: s.sub, MaxMessages: rotationMaxMessages}, noRetry)
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded) {
			return nil, nil // an empty poll
		}
		return nil, pubsubError(pctx, "Pull", err)
	}
	msgs := make([]rotation.Message, 0, len(resp.ReceivedMessages))
	for _, rm := range resp.ReceivedMessages {
		m := ParseRotationEvent(rm.GetMessage())
		if ackID := rm.GetAckId(); ackID != "" {
			m.Ack = s.acker(ackID)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func (s *RotationSource) acker(ackID string) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := s.api.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: s.sub, AckIds: []string{ackID}}); err != nil {
			return pubsubError(ctx, "Acknowledge", err)
		}
		return nil
	}
}

// noRetry turns off the client library's retries of a call.
var noRetry = gax.WithRetry(func() gax.Retryer { return nil })

// pubsubError translates a failed Pull or Acknowledge: a wire error whose
// code tells the cause as grpcError maps it (rotation.CauseClass reads it:
// the consumer's events step of conn test) and whose message names the call
// and the gRPC code, never the server's text (kept as the cause, for the log).
func pubsubError(ctx context.Context, op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("pubsub %s: %w", op, err)
	}
	code := status.Code(err)
	if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	return events.Wrap(events.CodeOf(grpcError(ctx, err, "Pub/Sub")), err, "pubsub %s: %s", op, code)
}

// Secret Manager event types that change what a secret resolves to.
// SECRET_ROTATE only says "time to rotate": the rotation itself arrives as
// SECRET_VERSION_ADD.
var rotationKinds = map[string]rotation.Kind{
	"SECRET_VERSION_ADD":     rotation.Changed,
	"SECRET_VERSION_ENABLE":  rotation.Changed,
	"SECRET_VERSION_DISABLE": rotation.Changed,
	"SECRET_VERSION_DESTROY": rotation.Changed,
	"SECRET_UPDATE":          rotation.Changed,
	"SECRET_DELETE":          rotation.Deleted,
	"SECRET_CREATE":          rotation.Changed, // a secret that now exists (a requester may have seen not_found)
	"SECRET_ROTATE":          "",
}

var secretResourceRE = regexp.MustCompile(`^projects/([^/]{1,100})/(?:locations/[a-z0-9-]{1,63}/)?secrets/([A-Za-z0-9_-]{1,255})(?:/versions/[^/]{1,64})?$`)

// ParseRotationEvent reads one Secret Manager notification: the attributes
// eventType, secretId (projects/P/secrets/NAME) and versionId. It never
// fails: an unreadable message comes back with Err set, an event that is not
// a change with no Changes.
func ParseRotationEvent(pm *pubsubpb.PubsubMessage) rotation.Message {
	if pm == nil {
		return rotation.Message{Type: rotation.TypeMalformed, Err: errors.New("empty message")}
	}
	attrs := pm.GetAttributes()
	m := rotation.Message{ID: pm.GetMessageId()}
	typ := attrs["eventType"]
	kind, known := rotationKinds[typ]
	switch {
	case typ == "":
		m.Type, m.Err = rotation.TypeMalformed, errors.New("no eventType attribute")
		return m
	case !known:
		m.Type = "other"
		return m
	}
	m.Type = typ
	if kind == "" {
		return m // not a change
	}
	id := attrs["secretId"]
	if id == "" {
		id = attrs["versionId"]
	}
	mm := secretResourceRE.FindStringSubmatch(id)
	if mm == nil {
		m.Type, m.Err = rotation.TypeMalformed, fmt.Errorf("%s: secretId is not projects/P/secrets/NAME", typ)
		return m
	}
	at := pm.GetPublishTime().AsTime()
	if ts, err := time.Parse(time.RFC3339Nano, attrs["timestamp"]); err == nil {
		at = ts
	}
	if pm.GetPublishTime() == nil && attrs["timestamp"] == "" {
		at = time.Time{}
	}
	m.Changes = []rotation.Change{{Secret: mm[2], Resource: "projects/" + mm[1] + "/secrets/" + mm[2], Kind: kind, EventTime: at, ID: m.ID}}
	return m
}

// validateEvents checks gcp.events: its shape, and the endpoint check of its
// endpoint, a field that routes the connection's credentials (its token is
// sent there).
func validateEvents(g *events.GCPConfig) error {
	if g.Events == nil {
		return nil
	}
	if err := g.Events.Validate(); err != nil {
		return err
	}
	return provider.CheckEndpoint("gcp.events.endpoint", g.Events.Endpoint)
}

func eventsEndpoint(g *events.GCPConfig) string {
	if g.Events == nil {
		return ""
	}
	return g.Events.Endpoint
}

// Events reports whether the connection reads gcp.events, and its degraded TTL.
func (kind) Events(c *events.Connection) (time.Duration, bool) {
	if c.GCP == nil || c.GCP.Events == nil {
		return 0, false
	}
	return c.GCP.Events.TTL(), true
}

var (
	_ provider.EventsKind   = kind{}
	_ provider.EventSourcer = (*Provider)(nil)
)

// WithEventsPullTimeout bounds one Pull of the rotation source (default 30s;
// tests shorten it).
func WithEventsPullTimeout(d time.Duration) Option { return func(s *settings) { s.eventsPull = d } }

// RotationSource is the source of gcp.events, read with the connection's
// credentials (its own Pub/Sub client, closed with the source).
func (p *Provider) RotationSource(ctx context.Context) (rotation.Source, error) {
	if p.cfg.Events == nil {
		return nil, events.Errorf(events.CodeBadRequest, "no gcp.events")
	}
	src, err := NewRotationSource(ctx, p, *p.cfg.Events)
	if err != nil {
		return nil, err
	}
	if p.set.eventsPull > 0 {
		src.timeout = p.set.eventsPull
	}
	return src, nil
}

// probeEvents is the "events" step of the connection test: a Pull that
// returns at once (at most one message), which tells that the subscription
// exists and that the connection may read it (pubsub.subscriptions.consume,
// in roles/pubsub.subscriber). A message it receives is handed back at once
// (ack deadline 0), for the workers' consumers to read as usual.
func (p *Provider) probeEvents(ctx context.Context) events.Step {
	src, err := p.RotationSource(ctx)
	if err != nil {
		return events.FailStep(events.StepEvents, err)
	}
	s := src.(*RotationSource)
	defer s.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// noRetry: a service that is down or unreachable fails the step at once
	// (unavailable) instead of being retried until the deadline (timeout).
	//lint:ignore SA1019 ReturnImmediately is what a probe wants: no wait for a message.
	resp, err := s.api.Pull(pctx, &pubsubpb.PullRequest{Subscription: s.sub, MaxMessages: 1, ReturnImmediately: true}, noRetry) //nolint:staticcheck
	if err != nil {
		return events.FailStep(events.StepEvents, fmt.Errorf("gcp.events.subscription: %w", grpcError(pctx, err, "Pub/Sub")))
	}
	var ids []string
	for _, m := range resp.GetReceivedMessages() {
		ids = append(ids, m.GetAckId())
	}
	if len(ids) > 0 {
		_ = s.api.ModifyAckDeadline(pctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: s.sub, AckIds: ids, AckDeadlineSeconds: 0})
	}
	return events.PassStep(events.StepEvents, "subscription readable (pubsub.subscriptions.consume): "+s.sub)
}
