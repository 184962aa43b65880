package aws

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/moto"
)

// motoEnv is moto with an SQS queue fed by an EventBridge rule on Secrets
// Manager events, as docs/rotation-events.md sets them up.
type motoEnv struct {
	server   *moto.Server
	cfg      awssdk.Config
	sqs      *sqs.Client
	eb       *eventbridge.Client
	queue    string
	queueURL string
}

func newMotoEnv(t *testing.T) *motoEnv {
	moto.RequireModules(t, "jsonpath_ng") // EventBridge targets
	srv := moto.Start(t)                  // before isolate, which moves HOME
	isolate(t)
	conn := events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, AWS: &events.AWSConfig{
		Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: moto.AccessKeyID,
		SecretAccessKey: moto.SecretAccessKey, Endpoint: srv.URL,
	}}
	cfg, err := SDKConfig(ctxT(t), conn)
	if err != nil {
		t.Fatal(err)
	}
	e := &motoEnv{server: srv, cfg: cfg, sqs: sqs.NewFromConfig(cfg), eb: eventbridge.NewFromConfig(cfg),
		queue: "secret-changes-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	e.createQueue(t)
	ctx := ctxT(t)
	arn, err := e.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &e.queueURL,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	pattern := `{"source":["aws.secretsmanager"],"detail-type":["AWS API Call via CloudTrail","AWS Service Event via CloudTrail"],` +
		`"detail":{"eventSource":["secretsmanager.amazonaws.com"],"eventName":["PutSecretValue","UpdateSecret","UpdateSecretVersionStage","RotationSucceeded","DeleteSecret","RestoreSecret"]}}`
	if _, err := e.eb.PutRule(ctx, &eventbridge.PutRuleInput{Name: awssdk.String("cloudbridge-secret-changes"),
		EventPattern: &pattern, State: ebtypes.RuleStateEnabled}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eb.PutTargets(ctx, &eventbridge.PutTargetsInput{Rule: awssdk.String("cloudbridge-secret-changes"),
		Targets: []ebtypes.Target{{Id: awssdk.String("queue"), Arn: awssdk.String(arn.Attributes["QueueArn"])}}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *motoEnv) createQueue(t *testing.T) {
	t.Helper()
	out, err := e.sqs.CreateQueue(ctxT(t), &sqs.CreateQueueInput{QueueName: &e.queue})
	if err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	e.queueURL = awssdk.ToString(out.QueueUrl)
}

// emit publishes the CloudTrail-shaped event of a Secrets Manager call.
func (e *motoEnv) emit(t *testing.T, name, id, secretID string) {
	t.Helper()
	detail := map[string]any{
		"eventVersion": "1.08", "eventSource": "secretsmanager.amazonaws.com", "eventName": name,
		"eventTime": time.Now().UTC().Format(time.RFC3339), "awsRegion": "us-east-1", "eventID": id,
		"requestParameters": map[string]any{"secretId": secretID},
	}
	typ := "AWS API Call via CloudTrail"
	if name == "RotationSucceeded" {
		typ = "AWS Service Event via CloudTrail"
		detail["additionalEventData"] = map[string]any{"SecretId": secretID}
		detail["requestParameters"] = nil
	}
	b, _ := json.Marshal(detail)
	out, err := e.eb.PutEvents(ctxT(t), &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source: awssdk.String("aws.secretsmanager"), DetailType: &typ, Detail: awssdk.String(string(b)),
	}}})
	if err != nil {
		t.Fatalf("PutEvents: %v\n%s", err, tail(e.server.Output()))
	}
	if out.FailedEntryCount != 0 {
		t.Fatalf("PutEvents: %d failed", out.FailedEntryCount)
	}
}

func (e *motoEnv) inQueue(t *testing.T) int {
	t.Helper()
	out, err := e.sqs.GetQueueAttributes(ctxT(t), &sqs.GetQueueAttributesInput{QueueUrl: &e.queueURL,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	b, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return a + b
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

func startRunner(t *testing.T, src rotation.Source, log *changeLog) *rotation.Runner {
	t.Helper()
	r := rotation.Start(rotation.Config{Connection: "aws-sm-bio", Source: src, Handle: log.handle,
		Allowed:    func(s string) bool { return strings.HasPrefix(s, "db/") },
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return r
}

// TestRotationEventsThroughEventBridgeAndSQS: Secrets Manager events put on
// EventBridge reach the queue through the rule, and the source yields the
// right changes (foreign secrets dropped) and deletes every message.
func TestRotationEventsThroughEventBridgeAndSQS(t *testing.T) {
	e := newMotoEnv(t)
	src := NewRotationSource(e.cfg, events.AWSEvents{QueueURL: e.queueURL})
	log := &changeLog{}
	startRunner(t, src, log)

	t0 := time.Now()
	e.emit(t, "PutSecretValue", "ct-1", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db/app-AbC123")
	testenv.Eventually(t, 5*time.Second, "the first change", func() bool { return len(log.list()) >= 1 })
	t.Logf("PutEvents to handled change: %s", time.Since(t0).Round(time.Millisecond))
	e.emit(t, "PutSecretValue", "ct-2", "other/secret") // outside the allowlist
	e.emit(t, "RotationSucceeded", "ct-3", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db/rotated-x1Y2z3")
	e.emit(t, "DeleteSecret", "ct-4", "db/gone")
	testenv.Eventually(t, 10*time.Second, "the changes (db/app in both readings of the caller's ARN)", func() bool { return len(log.list()) >= 4 })
	got := strings.Join(log.list(), ",")
	for _, want := range []string{"db/app:changed", "db/rotated:changed", "db/gone:deleted"} {
		if !strings.Contains(got, want) {
			t.Errorf("changes %s: missing %s", got, want)
		}
	}
	if strings.Contains(got, "other/") {
		t.Errorf("foreign secret handled: %s", got)
	}
	testenv.Eventually(t, 10*time.Second, "the queue to be empty", func() bool { return e.inQueue(t) == 0 })
}

// TestRotationQueueDisappears: a deleted queue marks the runner degraded; a
// recreated one recovers it and events flow again.
func TestRotationQueueDisappears(t *testing.T) {
	e := newMotoEnv(t)
	src := NewRotationSource(e.cfg, events.AWSEvents{QueueURL: e.queueURL})
	src.wait = 1 // short polls, so a deleted queue is noticed quickly
	log := &changeLog{}
	r := startRunner(t, src, log)
	e.emit(t, "PutSecretValue", "ct-1", "db/app")
	testenv.Eventually(t, 10*time.Second, "the first change", func() bool { return len(log.list()) == 1 })
	if r.Degraded() {
		t.Fatal("degraded while receiving")
	}
	if _, err := e.sqs.DeleteQueue(ctxT(t), &sqs.DeleteQueueInput{QueueUrl: &e.queueURL}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "degraded", r.Degraded)
	if h := r.Health(); h.Cause == nil || !strings.Contains(h.Cause.Error(), "ReceiveMessage") {
		t.Errorf("health %+v", h)
	}
	e.createQueue(t) // same name, same URL; the rule's target still points at it
	testenv.Eventually(t, 15*time.Second, "recovery", func() bool { return !r.Degraded() })
	e.emit(t, "PutSecretValue", "ct-2", "db/app")
	testenv.Eventually(t, 10*time.Second, "the change after recovery", func() bool { return len(log.list()) == 2 })
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}
