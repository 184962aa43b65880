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
	resp, err := s.api.Pull(pctx, &pubsubpb.PullRequest{Subscription: s.sub, MaxMessages: rotationMaxMessages})
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded) {
			return nil, nil // an empty poll
		}
		return nil, pubsubError("Pull", err)
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
			return pubsubError("Acknowledge", err)
		}
		return nil
	}
}

// pubsubError names the call and the gRPC code, not the server's text.
func pubsubError(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("pubsub %s: %w", op, err)
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("pubsub %s: %s", op, st.Code())
	}
	return fmt.Errorf("pubsub %s: %w", op, err)
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
