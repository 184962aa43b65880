package aws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
)

// SQS long-polling parameters of the rotation source.
const (
	rotationWaitSeconds = 20 // the longest SQS long poll
	rotationMaxMessages = 10 // the most SQS returns at once
)

// sqsAPI is the part of the SQS client the rotation source uses.
type sqsAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

// RotationSource is a rotation.Source reading the SQS queue of aws.events:
// EventBridge events wrapping the CloudTrail records of Secrets Manager API
// calls. Each message is deleted after it was handled. Several workers may
// read one queue: a message goes to one of them, the invalidation it causes
// is broadcast by the consumer.
type RotationSource struct {
	queueURL string
	sqs      sqsAPI
	wait     int32 // long-poll seconds (tests shorten it)
}

var _ rotation.Source = (*RotationSource)(nil)

// NewRotationSource reads ev.QueueURL with the connection's SDK
// configuration cfg (see SDKConfig: its credentials, region, retryer and
// aws.endpoint, to which SQS calls then go too).
func NewRotationSource(cfg awssdk.Config, ev events.AWSEvents) *RotationSource {
	return newRotationSource(sqs.NewFromConfig(cfg), ev.QueueURL)
}

func newRotationSource(api sqsAPI, queueURL string) *RotationSource {
	return &RotationSource{queueURL: queueURL, sqs: api, wait: rotationWaitSeconds}
}

// Receive long-polls the queue (20 s, up to 10 messages) and parses each message.
func (s *RotationSource) Receive(ctx context.Context) ([]rotation.Message, error) {
	out, err := s.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:            awssdk.String(s.queueURL),
		MaxNumberOfMessages: rotationMaxMessages,
		WaitTimeSeconds:     s.wait,
	})
	if err != nil {
		return nil, sqsError(ctx, "ReceiveMessage", err)
	}
	msgs := make([]rotation.Message, 0, len(out.Messages))
	for _, m := range out.Messages {
		rm := ParseRotationEvent([]byte(awssdk.ToString(m.Body)))
		if rm.ID == "" {
			rm.ID = awssdk.ToString(m.MessageId)
		}
		if handle := awssdk.ToString(m.ReceiptHandle); handle != "" {
			rm.Ack = s.deleter(handle)
		}
		msgs = append(msgs, rm)
	}
	return msgs, nil
}

func (s *RotationSource) deleter(handle string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := s.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: awssdk.String(s.queueURL), ReceiptHandle: awssdk.String(handle)})
		if err != nil {
			return sqsError(ctx, "DeleteMessage", err)
		}
		return nil
	}
}

// sqsError translates a failed SQS call of the rotation source into a wire
// error: its code is the provider's mapping of AWS errors (mapError; the
// SQS-specific codes first: a missing queue is not_found, a KMS key the
// queue's encryption cannot use forbidden, a throttle throttled), which
// rotation.CauseClass reads, and its message names the call and AWS's error
// code, never the SDK's text (kept as the cause, for the log and errors.Is).
func sqsError(ctx context.Context, op string, err error) error {
	var nf *sqstypes.QueueDoesNotExist
	code := apiCode(err)
	switch {
	case errors.As(err, &nf) || code == "AWS.SimpleQueueService.NonExistentQueue":
		return events.Wrap(events.CodeNotFound, err, "aws: %s: the queue does not exist (%s)", op, orName(code, "QueueDoesNotExist"))
	case code == "KmsNotFound":
		return events.Wrap(events.CodeNotFound, err, "aws: %s: the queue's KMS key does not exist (%s)", op, code)
	case code == "KmsAccessDenied" || code == "KmsDisabled" || code == "KmsInvalidState" || code == "KmsInvalidKeyUsage" || code == "KmsOptInRequired":
		return events.Wrap(events.CodeForbidden, err, "aws: %s: the queue's KMS key cannot be used (%s)", op, code)
	case code == "OverLimit" || code == "KmsThrottled" || code == "RequestThrottled":
		return events.Wrap(events.CodeThrottled, err, "aws: %s: throttled by AWS (%s)", op, code)
	case code == "InvalidSecurity":
		return events.Wrap(events.CodeUnauthorized, err, "aws: %s: AWS rejected the request's signature or transport (%s)", op, code)
	}
	return mapError(ctx, op, "", err)
}

func orName(code, name string) string {
	if code == "" {
		return name
	}
	return code
}

// Secrets Manager API calls that change what a secret resolves to.
var rotationKinds = map[string]rotation.Kind{
	"PutSecretValue":           rotation.Changed,
	"UpdateSecretVersionStage": rotation.Changed,
	"RotationSucceeded":        rotation.Changed,
	// UpdateSecret with a new SecretString/SecretBinary makes a new AWSCURRENT version.
	"UpdateSecret":  rotation.Changed,
	"DeleteSecret":  rotation.Deleted,
	"RestoreSecret": rotation.Restored,
}

// cloudTrailEvent is the part of an EventBridge event ("AWS API Call via
// CloudTrail" or "AWS Service Event via CloudTrail") that the source reads.
type cloudTrailEvent struct {
	ID         string    `json:"id"`
	Source     string    `json:"source"`
	DetailType string    `json:"detail-type"`
	Time       time.Time `json:"time"`
	Detail     *struct {
		EventID             string                     `json:"eventID"`
		EventName           string                     `json:"eventName"`
		EventSource         string                     `json:"eventSource"`
		EventTime           time.Time                  `json:"eventTime"`
		ErrorCode           string                     `json:"errorCode"`
		RequestParameters   map[string]json.RawMessage `json:"requestParameters"`
		ResponseElements    map[string]json.RawMessage `json:"responseElements"`
		AdditionalEventData map[string]json.RawMessage `json:"additionalEventData"`
	} `json:"detail"`
}

// ParseRotationEvent reads one SQS message body: an EventBridge event with a
// CloudTrail record of Secrets Manager. It never fails: a body that cannot
// be read comes back with Err set, an event that is not a change with no
// Changes.
func ParseRotationEvent(body []byte) rotation.Message {
	var ev cloudTrailEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ev); err != nil {
		return malformed("not an EventBridge event: %v", jsonProblem(err))
	}
	if ev.Detail == nil {
		return rotation.Message{ID: ev.ID, Type: rotation.TypeMalformed, Err: errors.New("event has no detail")}
	}
	d := ev.Detail
	id := d.EventID
	if id == "" {
		id = ev.ID
	}
	if ev.Source != "aws.secretsmanager" && d.EventSource != "secretsmanager.amazonaws.com" {
		return rotation.Message{ID: id, Type: "other"}
	}
	kind, ok := rotationKinds[d.EventName]
	if !ok {
		return rotation.Message{ID: id, Type: "other"}
	}
	m := rotation.Message{ID: id, Type: d.EventName}
	if d.ErrorCode != "" {
		return m // a failed call changed nothing
	}
	at := d.EventTime
	if at.IsZero() {
		at = ev.Time
	}
	// AWS's own full ARN first (RotationSucceeded's additionalEventData,
	// the response's ARN), then what the caller passed.
	var ids []secretRef
	if v := field(d.AdditionalEventData, "SecretId"); v != "" {
		ids = append(ids, secretRef{v, true})
	}
	if v := field(d.ResponseElements, "arn"); v != "" { // "arn", older "aRN"
		ids = append(ids, secretRef{v, true})
	}
	if v := field(d.RequestParameters, "secretId"); v != "" {
		ids = append(ids, secretRef{v, false})
	}
	if v := field(d.RequestParameters, "arn"); v != "" {
		ids = append(ids, secretRef{v, false})
	}
	if len(ids) == 0 {
		m.Type, m.Err = rotation.TypeMalformed, fmt.Errorf("%s event names no secret", d.EventName)
		return m
	}
	ref := ids[0]
	for _, name := range SecretNames(ref.id, ref.full) {
		m.Changes = append(m.Changes, rotation.Change{Secret: name, Resource: ref.id, Kind: kind, EventTime: at, ID: id})
	}
	if len(m.Changes) == 0 {
		m.Type, m.Err = rotation.TypeMalformed, fmt.Errorf("%s event: secret id is not a name or a Secrets Manager ARN", d.EventName)
	}
	return m
}

type secretRef struct {
	id   string
	full bool // an ARN written by AWS, with its random suffix
}

func malformed(format string, args ...any) rotation.Message {
	return rotation.Message{Type: rotation.TypeMalformed, Err: fmt.Errorf(format, args...)}
}

// jsonProblem describes a decoding error without quoting the document.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at offset %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	default:
		return "invalid JSON"
	}
}

// field is the string value of key in m, matching the key case-insensitively
// (CloudTrail spells "secretId", "SecretId", "arn" and "aRN").
func field(m map[string]json.RawMessage, key string) string {
	for k, raw := range m {
		if strings.EqualFold(k, key) {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				return s
			}
		}
	}
	return ""
}

var (
	secretARNRE    = regexp.MustCompile(`^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(.+)$`)
	arnSuffixRE    = regexp.MustCompile(`^(.+)-[A-Za-z0-9]{6}$`)
	secretNameRE   = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]{1,512}$`)
	maxSecretIDLen = 2048
)

// SecretNames maps a secret id from an event to the names requesters use:
// a plain name is itself; the ARN arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf
// is NAME (AWS appends a hyphen and six random characters). full says the
// ARN was written by AWS and so certainly has the suffix; an ARN a caller
// passed may be partial (no suffix), so both readings are returned when it
// ends like a suffix. Nil when id is neither a name nor such an ARN.
func SecretNames(id string, full bool) []string {
	if id == "" || len(id) > maxSecretIDLen {
		return nil
	}
	m := secretARNRE.FindStringSubmatch(id)
	if m == nil {
		if strings.HasPrefix(id, "arn:") || !secretNameRE.MatchString(id) {
			return nil
		}
		return []string{id}
	}
	rest := m[1]
	s := arnSuffixRE.FindStringSubmatch(rest)
	switch {
	case s != nil && full:
		return []string{s[1]}
	case s != nil:
		return []string{s[1], rest}
	case full:
		return nil // an AWS-written ARN always has the suffix
	default:
		return []string{rest}
	}
}

// validateEvents checks aws.events: its shape (with the connection's region
// and endpoint) and the endpoint check of its queue URL, a field that routes
// the connection's credentials.
func validateEvents(a *events.AWSConfig) error {
	if a.Events == nil {
		return nil
	}
	if err := a.Events.Validate(a.Region, a.Endpoint); err != nil {
		return err
	}
	return provider.CheckEndpoint("aws.events.queue_url", a.Events.QueueURL)
}

func eventsQueueURL(a *events.AWSConfig) string {
	if a.Events == nil {
		return ""
	}
	return a.Events.QueueURL
}

// Events reports whether the connection reads aws.events, and its degraded TTL.
func (kind) Events(c *events.Connection) (time.Duration, bool) {
	if c.AWS == nil || c.AWS.Events == nil {
		return 0, false
	}
	return c.AWS.Events.TTL(), true
}

var (
	_ provider.EventsKind   = kind{}
	_ provider.EventSourcer = (*Provider)(nil)
)

// WithEventsWait sets the long-poll seconds of the rotation source (1 to
// 20, default 20; tests shorten it so a deleted queue is noticed quickly).
func WithEventsWait(seconds int32) Option {
	return func(o *options) {
		if seconds >= 1 && seconds <= rotationWaitSeconds {
			o.eventsWait = seconds
		}
	}
}

// RotationSource is the source of aws.events, read with the connection's
// credentials (after AssumeRole) and, with aws.endpoint set, at that endpoint.
func (p *Provider) RotationSource(context.Context) (rotation.Source, error) {
	if p.aws.Events == nil {
		return nil, events.Errorf(events.CodeBadRequest, "connection %q: no aws.events", p.conn)
	}
	src := NewRotationSource(p.cfg, *p.aws.Events)
	if p.eventsWait > 0 {
		src.wait = p.eventsWait
	}
	return src, nil
}

// probeEvents is the "events" step of the connection test: a short receive
// (1 s) on the queue, which tells that the queue exists and that the
// connection may read it (sqs:ReceiveMessage). A message it happens to
// receive is hidden for one second only (VisibilityTimeout 1), then read by
// the workers' consumers as usual.
func (p *Provider) probeEvents(ctx context.Context) events.Step {
	q := p.aws.Events.QueueURL
	start := time.Now()
	_, err := sqs.NewFromConfig(p.cfg).ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: awssdk.String(q), MaxNumberOfMessages: 1, WaitTimeSeconds: 1, VisibilityTimeout: 1,
	})
	if err != nil {
		err = sqsError(ctx, "ReceiveMessage", err)
		metrics.ObserveUpstream("aws", "ReceiveMessage", start, err)
		return events.FailStep(events.StepEvents, fmt.Errorf("aws.events.queue_url: %w", err))
	}
	metrics.ObserveUpstream("aws", "ReceiveMessage", start, nil)
	return events.PassStep(events.StepEvents, "queue readable (sqs:ReceiveMessage): "+q)
}
