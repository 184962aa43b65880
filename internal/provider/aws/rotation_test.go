package aws

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
)

const testARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db/app-AbC123"

// cloudTrail builds the EventBridge event of a Secrets Manager call as
// EventBridge delivers it to an SQS target.
func cloudTrail(name, id string, detail map[string]any) string {
	d := map[string]any{
		"eventVersion": "1.08", "eventSource": "secretsmanager.amazonaws.com", "eventName": name,
		"eventTime": "2026-12-01T10:00:00Z", "awsRegion": "us-east-1", "eventID": id,
		"eventType": "AwsApiCall", "recipientAccountId": "123456789012",
	}
	for k, v := range detail {
		d[k] = v
	}
	typ := "AWS API Call via CloudTrail"
	if name == "RotationSucceeded" {
		typ, d["eventType"] = "AWS Service Event via CloudTrail", "AwsServiceEvent"
	}
	b, _ := json.Marshal(map[string]any{
		"version": "0", "id": "eb-" + id, "detail-type": typ, "source": "aws.secretsmanager",
		"account": "123456789012", "time": "2026-12-01T10:00:01Z", "region": "us-east-1",
		"resources": []string{}, "detail": d,
	})
	return string(b)
}

func TestParseRotationEvents(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, body string
		typ        string
		secrets    []string
		kind       rotation.Kind
		malformed  bool
	}{
		{"put by name", cloudTrail("PutSecretValue", "e1", map[string]any{"requestParameters": map[string]any{"secretId": "db/app"}}),
			"PutSecretValue", []string{"db/app"}, rotation.Changed, false},
		{"put by ARN, response ARN preferred", cloudTrail("PutSecretValue", "e2", map[string]any{
			"requestParameters": map[string]any{"secretId": "db/app-xyz"}, "responseElements": map[string]any{"arn": testARN}}),
			"PutSecretValue", []string{"db/app"}, rotation.Changed, false},
		{"older aRN spelling", cloudTrail("UpdateSecretVersionStage", "e3", map[string]any{
			"requestParameters": map[string]any{"aRN": testARN}}),
			"UpdateSecretVersionStage", []string{"db/app", "db/app-AbC123"}, rotation.Changed, false},
		{"rotation: additionalEventData.SecretId", cloudTrail("RotationSucceeded", "e4", map[string]any{
			"additionalEventData": map[string]any{"SecretId": testARN}, "requestParameters": nil}),
			"RotationSucceeded", []string{"db/app"}, rotation.Changed, false},
		{"caller's full ARN: both readings", cloudTrail("DeleteSecret", "e5", map[string]any{
			"requestParameters": map[string]any{"secretId": testARN, "recoveryWindowInDays": 7}}),
			"DeleteSecret", []string{"db/app", "db/app-AbC123"}, rotation.Deleted, false},
		{"caller's partial ARN", cloudTrail("RestoreSecret", "e6", map[string]any{
			"requestParameters": map[string]any{"secretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod"}}),
			"RestoreSecret", []string{"prod"}, rotation.Restored, false},
		{"failed call changes nothing", cloudTrail("PutSecretValue", "e7", map[string]any{
			"errorCode": "AccessDenied", "requestParameters": map[string]any{"secretId": "db/app"}}),
			"PutSecretValue", nil, "", false},
		{"read is not a change", cloudTrail("GetSecretValue", "e8", map[string]any{"requestParameters": map[string]any{"secretId": "db/app"}}),
			"other", nil, "", false},
		{"another service", `{"id":"x","source":"aws.s3","detail":{"eventSource":"s3.amazonaws.com","eventName":"PutObject"}}`,
			"other", nil, "", false},
		{"no secret id", cloudTrail("PutSecretValue", "e9", map[string]any{"requestParameters": map[string]any{}}),
			rotation.TypeMalformed, nil, "", true},
		{"secret id not a string", cloudTrail("PutSecretValue", "e10", map[string]any{"requestParameters": map[string]any{"secretId": 7}}),
			rotation.TypeMalformed, nil, "", true},
		{"bad ARN", cloudTrail("PutSecretValue", "e11", map[string]any{"requestParameters": map[string]any{"secretId": "arn:aws:s3:::bucket"}}),
			rotation.TypeMalformed, nil, "", true},
		{"not JSON", `{"detail": `, rotation.TypeMalformed, nil, "", true},
		{"S3 test event", `{"Service":"Amazon S3","Event":"s3:TestEvent"}`, rotation.TypeMalformed, nil, "", true},
		{"wrong types", `{"detail":{"eventName":5}}`, rotation.TypeMalformed, nil, "", true},
		{"empty", ``, rotation.TypeMalformed, nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ParseRotationEvent([]byte(tc.body))
			if m.Type != tc.typ || (m.Err != nil) != tc.malformed {
				t.Fatalf("type %q err %v, want %q malformed=%v", m.Type, m.Err, tc.typ, tc.malformed)
			}
			if m.Err != nil && strings.Contains(m.Err.Error(), "db/app") {
				t.Errorf("error quotes the document: %v", m.Err)
			}
			var got []string
			for _, c := range m.Changes {
				got = append(got, c.Secret)
				if c.Kind != tc.kind || !c.EventTime.Equal(at) || c.ID == "" || c.ID != m.ID {
					t.Errorf("change %+v", c)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.secrets, ",") {
				t.Errorf("secrets %v, want %v", got, tc.secrets)
			}
		})
	}
}

func TestSecretNames(t *testing.T) {
	for _, tc := range []struct {
		id   string
		full bool
		want string
	}{
		{"db/app", false, "db/app"},
		{testARN, true, "db/app"},
		{testARN, false, "db/app,db/app-AbC123"},
		{"arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x-ABCDEF", true, "x"},
		{"arn:aws:secretsmanager:us-east-1:123456789012:secret:short", true, ""},
		{"arn:aws:iam::123456789012:role/x", false, ""},
		{"has space", false, ""},
		{"", false, ""},
		{strings.Repeat("a", 3000), false, ""},
	} {
		if got := strings.Join(SecretNames(tc.id, tc.full), ","); got != tc.want {
			t.Errorf("SecretNames(%.40q, %v) = %q, want %q", tc.id, tc.full, got, tc.want)
		}
	}
}

func FuzzParseRotationEvent(f *testing.F) {
	f.Add([]byte(cloudTrail("PutSecretValue", "e1", map[string]any{"requestParameters": map[string]any{"secretId": testARN}})))
	f.Add([]byte(`{"detail":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := ParseRotationEvent(b)
		if m.Err == nil && m.Type == rotation.TypeMalformed {
			t.Fatal("malformed without a cause")
		}
	})
}

// fakeSQS records calls and answers from a script.
type fakeSQS struct {
	mu      sync.Mutex
	in      []*sqs.ReceiveMessageInput
	out     *sqs.ReceiveMessageOutput
	err     error
	deleted []string
}

func (f *fakeSQS) ReceiveMessage(_ context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.in = append(f.in, in)
	return f.out, f.err
}

func (f *fakeSQS) DeleteMessage(_ context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, awssdk.ToString(in.ReceiptHandle))
	return &sqs.DeleteMessageOutput{}, nil
}

func TestRotationSourceLongPollsAndDeletes(t *testing.T) {
	const q = "https://sqs.us-east-1.amazonaws.com/123456789012/secret-changes"
	f := &fakeSQS{out: &sqs.ReceiveMessageOutput{Messages: []sqstypes.Message{
		{MessageId: awssdk.String("m1"), ReceiptHandle: awssdk.String("h1"),
			Body: awssdk.String(cloudTrail("PutSecretValue", "e1", map[string]any{"requestParameters": map[string]any{"secretId": "db/app"}}))},
		{MessageId: awssdk.String("m2"), ReceiptHandle: awssdk.String("h2"), Body: awssdk.String("garbage")},
	}}}
	s := newRotationSource(f, q)
	msgs, err := s.Receive(context.Background())
	if err != nil || len(msgs) != 2 {
		t.Fatalf("Receive: %d, %v", len(msgs), err)
	}
	in := f.in[0]
	if awssdk.ToString(in.QueueUrl) != q || in.WaitTimeSeconds != 20 || in.MaxNumberOfMessages != 10 {
		t.Errorf("ReceiveMessage input %+v", in)
	}
	if msgs[0].ID != "e1" || msgs[1].ID != "m2" || msgs[1].Err == nil {
		t.Errorf("messages %+v", msgs)
	}
	for _, m := range msgs {
		if err := m.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Join(f.deleted, ",") != "h1,h2" {
		t.Errorf("deleted %v", f.deleted)
	}

	f.err = &sqstypes.QueueDoesNotExist{Message: awssdk.String("The specified queue does not exist")}
	if _, err := s.Receive(context.Background()); err == nil || !strings.Contains(err.Error(), "queue does not exist") {
		t.Errorf("Receive on a missing queue: %v", err)
	}
	f.err = context.Canceled
	if _, err := s.Receive(context.Background()); !errors.Is(err, context.Canceled) {
		t.Errorf("Receive cancelled: %v", err)
	}
}

// TestRotationSourceErrorsCarryTheirClass: a failed SQS call comes back as a
// wire error of the provider's mapping, which rotation.CauseClass reports
// (conn test's events step), its message naming the call and AWS's code,
// never the SDK's text.
func TestRotationSourceErrorsCarryTheirClass(t *testing.T) {
	const marker = "SDK-TEXT-MARKER"
	f := &fakeSQS{}
	s := newRotationSource(f, "https://sqs.us-east-1.amazonaws.com/123456789012/q")
	for _, c := range []struct {
		err  error
		want events.Code
	}{
		{&smithy.GenericAPIError{Code: "AccessDenied", Message: marker}, events.CodeForbidden},
		{&smithy.GenericAPIError{Code: "KmsAccessDenied", Message: marker}, events.CodeForbidden},
		{&sqstypes.QueueDoesNotExist{Message: awssdk.String(marker)}, events.CodeNotFound},
		{&smithy.GenericAPIError{Code: "AWS.SimpleQueueService.NonExistentQueue", Message: marker}, events.CodeNotFound},
		{&smithy.GenericAPIError{Code: "ExpiredToken", Message: marker}, events.CodeUnauthorized},
		{&smithy.GenericAPIError{Code: "InvalidClientTokenId", Message: marker}, events.CodeUnauthorized},
		{&smithy.GenericAPIError{Code: "ThrottlingException", Message: marker}, events.CodeThrottled},
		{&smithy.GenericAPIError{Code: "OverLimit", Message: marker}, events.CodeThrottled},
		{&smithy.GenericAPIError{Code: "InternalFailure", Message: marker, Fault: smithy.FaultServer}, events.CodeUnavailable},
		{context.DeadlineExceeded, events.CodeTimeout},
	} {
		f.mu.Lock()
		f.err = c.err
		f.mu.Unlock()
		_, err := s.Receive(context.Background())
		if got := events.CodeOf(err); got != c.want {
			t.Errorf("%v: code %s (%v), want %s", c.err, got, err, c.want)
		}
		if got := rotation.CauseClass(err); got != c.want {
			t.Errorf("%v: CauseClass %s, want %s", c.err, got, c.want)
		}
		if msg := err.Error(); strings.Contains(msg, marker) || !strings.Contains(msg, "ReceiveMessage") {
			t.Errorf("%v: message %q", c.err, msg)
		}
	}
}
