package service

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	awsprov "github.com/cloudbridge/cloudbridge/internal/provider/aws"
	"github.com/cloudbridge/cloudbridge/internal/testenv/moto"
)

// rotationMoto is moto with Secrets Manager secrets and an SQS queue fed by
// an EventBridge rule on Secrets Manager's CloudTrail events, set up as
// docs/rotation-events.md tells users to.
type rotationMoto struct {
	server   *moto.Server
	sm       *secretsmanager.Client
	sqs      *sqs.Client
	eb       *eventbridge.Client
	queue    string
	queueURL string
	arns     map[string]string // secret name → ARN (with AWS's random suffix)
}

// rotationPattern is the EventBridge rule's pattern of docs/rotation-events.md.
const rotationPattern = `{"source":["aws.secretsmanager"],"detail-type":["AWS API Call via CloudTrail","AWS Service Event via CloudTrail"],` +
	`"detail":{"eventSource":["secretsmanager.amazonaws.com"],"eventName":["PutSecretValue","UpdateSecret","UpdateSecretVersionStage","RotationSucceeded","DeleteSecret","RestoreSecret"]}}`

func newRotationMoto(t testing.TB) *rotationMoto {
	t.Helper()
	moto.RequireModules(t, "jsonpath_ng") // EventBridge targets
	srv := moto.Start(t)
	isolateAWS(t)
	conn := events.Connection{Name: "setup", Provider: events.ProviderAWS, AWS: &events.AWSConfig{
		Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: moto.AccessKeyID,
		SecretAccessKey: moto.SecretAccessKey, Endpoint: srv.URL}}
	cfg, err := awsprov.SDKConfig(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	e := &rotationMoto{server: srv, sm: secretsmanager.NewFromConfig(cfg), sqs: sqs.NewFromConfig(cfg),
		eb: eventbridge.NewFromConfig(cfg), queue: "secret-changes", arns: map[string]string{}}
	e.createQueue(t)
	ctx := tctx(t)
	attrs, err := e.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &e.queueURL,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	pattern := rotationPattern
	if _, err := e.eb.PutRule(ctx, &eventbridge.PutRuleInput{Name: awssdk.String("cloudbridge-secret-changes"),
		EventPattern: &pattern, State: ebtypes.RuleStateEnabled}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eb.PutTargets(ctx, &eventbridge.PutTargetsInput{Rule: awssdk.String("cloudbridge-secret-changes"),
		Targets: []ebtypes.Target{{Id: awssdk.String("queue"), Arn: awssdk.String(attrs.Attributes["QueueArn"])}}}); err != nil {
		t.Fatal(err)
	}
	return e
}

// isolateAWS keeps the SDK away from the machine's AWS configuration.
func isolateAWS(t testing.TB) {
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", dir+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(k, "")
	}
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *rotationMoto) createQueue(t testing.TB) {
	t.Helper()
	out, err := e.sqs.CreateQueue(tctx(t), &sqs.CreateQueueInput{QueueName: &e.queue})
	if err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	e.queueURL = awssdk.ToString(out.QueueUrl)
}

func (e *rotationMoto) deleteQueue(t testing.TB) {
	t.Helper()
	if _, err := e.sqs.DeleteQueue(tctx(t), &sqs.DeleteQueueInput{QueueUrl: &e.queueURL}); err != nil {
		t.Fatalf("DeleteQueue: %v", err)
	}
}

// create creates a secret with its first value.
func (e *rotationMoto) create(t testing.TB, name, value string) {
	t.Helper()
	out, err := e.sm.CreateSecret(tctx(t), &secretsmanager.CreateSecretInput{Name: &name, SecretString: &value})
	if err != nil {
		t.Fatalf("CreateSecret %s: %v", name, err)
	}
	e.arns[name] = awssdk.ToString(out.ARN)
}

// rotate puts a new AWSCURRENT value (what a rotation does).
func (e *rotationMoto) rotate(t testing.TB, name, value string) {
	t.Helper()
	if _, err := e.sm.PutSecretValue(tctx(t), &secretsmanager.PutSecretValueInput{SecretId: awssdk.String(e.arns[name]), SecretString: &value}); err != nil {
		t.Fatalf("PutSecretValue %s: %v", name, err)
	}
}

// ctEvent is the CloudTrail record EventBridge delivers for a Secrets
// Manager call: detail-type, detail.
func (e *rotationMoto) ctEvent(name, id, secret string, at time.Time) (string, string) {
	arn := e.arns[secret]
	if arn == "" {
		arn = secret
	}
	detail := map[string]any{
		"eventVersion": "1.08", "eventSource": "secretsmanager.amazonaws.com", "eventName": name,
		"eventTime": at.UTC().Format(time.RFC3339), "awsRegion": "us-east-1", "eventID": id,
		"eventType": "AwsApiCall", "requestParameters": map[string]any{"secretId": arn},
		"responseElements": map[string]any{"arn": arn},
	}
	typ := "AWS API Call via CloudTrail"
	if name == "RotationSucceeded" {
		typ = "AWS Service Event via CloudTrail"
		detail["eventType"] = "AwsServiceEvent"
		detail["additionalEventData"] = map[string]any{"SecretId": arn}
		detail["requestParameters"], detail["responseElements"] = nil, nil
	}
	b, _ := json.Marshal(detail)
	return typ, string(b)
}

// emit puts the CloudTrail-shaped event of a Secrets Manager call on the
// default event bus, as AWS does after the call.
func (e *rotationMoto) emit(t testing.TB, name, id, secret string, at time.Time) {
	t.Helper()
	typ, detail := e.ctEvent(name, id, secret, at)
	out, err := e.eb.PutEvents(tctx(t), &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source: awssdk.String("aws.secretsmanager"), DetailType: &typ, Detail: &detail,
	}}})
	if err != nil {
		t.Fatalf("PutEvents: %v", err)
	}
	if out.FailedEntryCount != 0 {
		t.Fatalf("PutEvents: %d failed", out.FailedEntryCount)
	}
}

// send puts a raw message body on the queue (what a broken producer or a
// hand-written event would do).
func (e *rotationMoto) send(t testing.TB, body string) {
	t.Helper()
	if _, err := e.sqs.SendMessage(tctx(t), &sqs.SendMessageInput{QueueUrl: &e.queueURL, MessageBody: &body}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
}

// envelope is the EventBridge event SQS receives for a detail.
func envelope(id, detailType, detail string) string {
	return `{"version":"0","id":"` + id + `","detail-type":"` + detailType + `","source":"aws.secretsmanager",` +
		`"account":"123456789012","time":"` + time.Now().UTC().Format(time.RFC3339) + `","region":"us-east-1","resources":[],"detail":` + detail + `}`
}

func (e *rotationMoto) inQueue(t testing.TB) int {
	t.Helper()
	out, err := e.sqs.GetQueueAttributes(tctx(t), &sqs.GetQueueAttributesInput{QueueUrl: &e.queueURL,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	b, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return a + b
}

// connection is an AWS connection on moto reading the queue, secrets bio/*
// (a name of its own per test: the metrics are the process's).
func (e *rotationMoto) connection(name string, ttl, degradedTTL time.Duration) events.Connection {
	ev := &events.AWSEvents{QueueURL: e.queueURL}
	if degradedTTL > 0 {
		ev.DegradedTTL = events.Duration(degradedTTL)
	}
	return events.Connection{Name: name, Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"bio/*"},
		Cache: &events.CachePolicy{TTL: events.Duration(ttl)},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: moto.AccessKeyID,
			SecretAccessKey: moto.SecretAccessKey, Endpoint: e.server.URL, Events: ev}}
}

// awsCalls counts one worker's AWS API calls by operation and secret, read
// from the requests (X-Amz-Target and the JSON body's SecretId).
type awsCalls struct {
	mu    sync.Mutex
	calls map[string]int // "GetSecretValue bio/db01" (the secret as sent, an ARN mapped to its name)
	names func(id string) string
}

func newAWSCalls(names func(string) string) *awsCalls {
	return &awsCalls{calls: map[string]int{}, names: names}
}

func (c *awsCalls) RoundTrip(req *http.Request) (*http.Response, error) {
	op := req.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(op, '.'); i >= 0 {
		op = op[i+1:]
	}
	secret := ""
	if req.Body != nil && strings.HasPrefix(req.Header.Get("X-Amz-Target"), "secretsmanager.") {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		var in struct{ SecretId string }
		_ = json.Unmarshal(b, &in)
		secret = c.names(in.SecretId)
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.ContentLength = int64(len(b))
	}
	c.mu.Lock()
	c.calls[op+" "+secret]++
	c.calls[op]++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// n is the count of "Op" or "Op secret".
func (c *awsCalls) n(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[key]
}

// snapshot copies the counts.
func (c *awsCalls) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.calls))
	for k, v := range c.calls {
		out[k] = v
	}
	return out
}

// since is the counts added after snap, zero counts left out.
func (c *awsCalls) since(snap map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range c.snapshot() {
		if d := v - snap[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// name maps an ARN of e's secrets back to its name.
func (e *rotationMoto) name(id string) string {
	for n, arn := range e.arns {
		if id == arn {
			return n
		}
	}
	return id
}

// awsFactory builds the worker's AWS providers with calls (an *awsCalls
// counting every request, or a wrapper of one), and SQS long polls of wait seconds.
func awsFactory(calls http.RoundTripper, wait int32) provider.Factory {
	return awsprov.Factory(awsprov.WithHTTPClient(&http.Client{Transport: calls}), awsprov.WithEventsWait(wait),
		awsprov.WithRetry(2, 50*time.Millisecond))
}

// waitUntil waits for cond, polling, at most within; it reports whether cond held.
func waitUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// serves reports whether w's cache holds value for secret of conn.
func serves(w *worker, conn, secret, value string) bool {
	sec, ok := w.cache.Peek(conn, provider.Request{Secret: secret})
	return ok && string(sec.Data) == value
}

// consuming waits until w runs the consumer of conn.
func consuming(t testing.TB, w *worker, conn string) {
	t.Helper()
	if !waitUntil(10*time.Second, func() bool {
		w.rotations.mu.Lock()
		defer w.rotations.mu.Unlock()
		return w.rotations.running[conn] != nil
	}) {
		t.Fatalf("no consumer of %s", conn)
	}
}

// warm resolves secret until every worker has it cached (requests go to
// one worker of the queue group at a time).
func warm(t testing.TB, c *events.Client, conn, secret string, ws ...*worker) {
	t.Helper()
	for _, w := range ws {
		if !waitUntil(20*time.Second, func() bool {
			_, _ = resolveReq(c, "bio", conn, events.ResolveRequest{Secret: secret})
			_, ok := w.cache.Peek(conn, provider.Request{Secret: secret})
			return ok
		}) {
			t.Fatalf("%s never cached on a worker", secret)
		}
	}
}

// rotationMetric is the value of a rotation metric series of conn on the
// process's registry (the one /metrics serves): a counter's or gauge's value.
func rotationMetric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				total += m.GetCounter().GetValue()
			case m.Gauge != nil:
				total += m.GetGauge().GetValue()
			case m.Histogram != nil:
				total += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return total
}

// scrape is the text of w's /metrics.
func scrape(t testing.TB, w *worker) string {
	t.Helper()
	resp, err := http.Get("http://" + w.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// eventsStep is the events step of a connection test of conn.
func eventsStep(t testing.TB, c *events.Client, conn string) (events.Step, *events.TestReply) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rep, err := c.Test(ctx, "bio", conn, events.TestRequest{})
	if err != nil {
		t.Fatalf("conn test: %v", err)
	}
	for _, s := range rep.Steps {
		if s.Name == events.StepEvents {
			return s, rep
		}
	}
	t.Fatalf("conn test of %s has no events step: %+v", conn, rep.Steps)
	return events.Step{}, nil
}

// churns polls (serving a cached value) until calls has grown by n: the
// value is re-validated again and again, as with a short TTL.
func churns(poll func(), calls func() int, n int, within time.Duration) bool {
	start := calls()
	return waitUntil(within, func() bool { poll(); return calls()-start >= n })
}

// settles polls until calls has not changed for quiet (the value is served
// without re-validation, as with a long TTL), at most within.
func settles(poll func(), calls func() int, quiet, within time.Duration) bool {
	last, since := calls(), time.Now()
	return waitUntil(within, func() bool {
		poll()
		if n := calls(); n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

// resolveOne resolves secret of conn through NATS, failing the test on error.
func resolveOne(t testing.TB, c *events.Client, conn, secret string) *events.ResolveReply {
	t.Helper()
	got, err := resolveReq(c, "bio", conn, events.ResolveRequest{Secret: secret})
	if err != nil {
		t.Fatalf("resolve %s: %v", secret, err)
	}
	return got
}
