package events

import (
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Rotation events: the "events" blocks of the aws and gcp connection blocks
// (aws.events, gcp.events). With one set, workers consume the cloud's change
// events for the connection's secrets and invalidate them as they change, so
// a long cache TTL still serves a rotated value within seconds.

// DefaultDegradedTTL is the cache TTL used for a connection's secrets while
// its event consumer cannot receive (events.degraded_ttl unset).
const DefaultDegradedTTL = time.Minute

// Bounds of events.degraded_ttl.
const (
	MinDegradedTTL = time.Second
	MaxDegradedTTL = time.Hour
)

// AWSEvents is aws.events: an SQS queue fed by an EventBridge rule on AWS
// Secrets Manager's CloudTrail events. It is read with the connection's own
// credentials; with aws.endpoint set, SQS calls go there too.
type AWSEvents struct {
	// QueueURL is the queue's URL,
	// https://sqs.REGION.amazonaws.com/ACCOUNT/NAME.
	QueueURL string `json:"queue_url"`
	// DegradedTTL is the cache TTL while the queue cannot be read (default 1m).
	DegradedTTL Duration `json:"degraded_ttl,omitempty"`
}

// GCPEvents is gcp.events: a Pub/Sub subscription on the topic that Secret
// Manager publishes the connection's secrets' events to.
type GCPEvents struct {
	// Subscription is projects/PROJECT/subscriptions/NAME.
	Subscription string `json:"subscription"`
	// Endpoint overrides the Pub/Sub endpoint (emulators, private endpoints):
	// https://host:port is TLS, http://host:port plaintext gRPC.
	Endpoint string `json:"endpoint,omitempty"`
	// DegradedTTL is the cache TTL while the subscription cannot be read (default 1m).
	DegradedTTL Duration `json:"degraded_ttl,omitempty"`
}

// TTL is the degraded-mode cache TTL, defaulted.
func (e *AWSEvents) TTL() time.Duration { return degradedTTL(e.DegradedTTL) }

// TTL is the degraded-mode cache TTL, defaulted.
func (e *GCPEvents) TTL() time.Duration { return degradedTTL(e.DegradedTTL) }

func degradedTTL(d Duration) time.Duration {
	if d == 0 {
		return DefaultDegradedTTL
	}
	return d.D()
}

var (
	// sqsQueuePathRE is the path of a queue URL: /ACCOUNT/NAME (NAME 1 to 80
	// characters of [A-Za-z0-9_-], FIFO queues ending in ".fifo").
	sqsQueuePathRE = regexp.MustCompile(`^/\d{12}/(?:[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo)$`)
	// sqsHostRE is an AWS SQS host: sqs.REGION.amazonaws.com (.com.cn in China),
	// or the legacy REGION.queue.amazonaws.com.
	sqsHostRE = regexp.MustCompile(`^(?:sqs\.([a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?|([a-z]{2}(?:-[a-z]+)+-\d+)\.queue\.amazonaws\.com(?:\.cn)?)$`)
	// pubsubSubscriptionRE is a subscription's resource name.
	pubsubSubscriptionRE = regexp.MustCompile(`^projects/([a-z][a-z0-9-]{4,28}[a-z0-9]|[a-z0-9.:-]{1,100})/subscriptions/([A-Za-z][A-Za-z0-9._~%+-]{2,254})$`)
)

// Validate checks aws.events. region is aws.region and endpoint aws.endpoint:
// without an endpoint the queue must be an https URL of an AWS SQS host in
// the connection's region (SQS calls go to that region); with an endpoint
// (an emulator, a VPC endpoint) any http(s) host is accepted, since the calls
// go to the endpoint and the URL only names the queue.
func (e *AWSEvents) Validate(region, endpoint string) error {
	if e.QueueURL == "" {
		return Errorf(CodeBadRequest, "aws.events.queue_url: required")
	}
	if len(e.QueueURL) > 1024 {
		return Errorf(CodeBadRequest, "aws.events.queue_url: longer than 1024 bytes")
	}
	u, err := url.Parse(e.QueueURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || !sqsQueuePathRE.MatchString(u.Path) {
		return Errorf(CodeBadRequest, "aws.events.queue_url: %q is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)", truncate(e.QueueURL, 120))
	}
	if endpoint == "" {
		m := sqsHostRE.FindStringSubmatch(strings.ToLower(u.Hostname()))
		if u.Scheme != "https" || m == nil || u.Port() != "" {
			return Errorf(CodeBadRequest, "aws.events.queue_url: %q is not an https URL of an AWS SQS host (without aws.endpoint)", truncate(e.QueueURL, 120))
		}
		if r := m[1] + m[2]; r != region {
			return Errorf(CodeBadRequest, "aws.events.queue_url: queue in region %q, connection in %q", r, truncate(region, 40))
		}
	}
	return checkDegradedTTL("aws.events.degraded_ttl", e.DegradedTTL)
}

// Validate checks gcp.events.
func (e *GCPEvents) Validate() error {
	if e.Subscription == "" {
		return Errorf(CodeBadRequest, "gcp.events.subscription: required")
	}
	if !pubsubSubscriptionRE.MatchString(e.Subscription) || strings.HasPrefix(strings.ToLower(pubsubSubscriptionRE.FindStringSubmatch(e.Subscription)[2]), "goog") {
		return Errorf(CodeBadRequest, "gcp.events.subscription: %q is not projects/PROJECT/subscriptions/NAME", truncate(e.Subscription, 120))
	}
	if e.Endpoint != "" {
		u, err := url.Parse(e.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return Errorf(CodeBadRequest, "gcp.events.endpoint: %q is not http(s)://host[:port]", truncate(e.Endpoint, 80))
		}
	}
	return checkDegradedTTL("gcp.events.degraded_ttl", e.DegradedTTL)
}

// SubscriptionProject is the project of gcp.events.subscription ("" when malformed).
func (e *GCPEvents) SubscriptionProject() string {
	m := pubsubSubscriptionRE.FindStringSubmatch(e.Subscription)
	if m == nil {
		return ""
	}
	return m[1]
}

func checkDegradedTTL(field string, d Duration) error {
	if d != 0 && (d.D() < MinDegradedTTL || d.D() > MaxDegradedTTL) {
		return Errorf(CodeBadRequest, "%s: between 1s and 1h", field)
	}
	return nil
}
