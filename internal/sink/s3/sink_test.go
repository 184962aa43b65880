package s3

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

const (
	testKeyID = "AKIDS3SINKTEST0001"
	bucket    = "archive-bucket"
)

var day = time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC)

// env is the fake and a real SDK client signed with the test key.
type env struct {
	srv    *awsfake.Server
	fake   *awsfake.S3
	client *s3.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := awsfake.New(t)
	srv.AddCredentials(awsfake.Credentials{AccessKeyID: testKeyID, SecretAccessKey: "secret"})
	fake := srv.S3()
	fake.CreateBucket(bucket)
	// The checksum settings are those config.LoadDefaultConfig resolves by default.
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testKeyID, "secret", ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported}
	conn := events.Connection{Name: "aws-archive", Provider: events.ProviderAWS, AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, Endpoint: srv.URL()}}
	return &env{srv: srv, fake: fake, client: NewClient(cfg, conn)}
}

func (e *env) sink(block events.S3Sink, truncate bool) *Sink {
	block.Bucket = bucket
	return New(e.client, events.Export{Name: "s3-app", S3: &block, Truncate: truncate})
}

func rec(subject string, seq uint64, received time.Time, body string) logevent.Record {
	return logevent.Record{Event: logevent.Parse([]byte(body), received), Subject: subject, Stream: "CLOUDBRIDGE_LOGS", Seq: seq, Received: received}
}

// readLines reads every object of the bucket back with the SDK (ListObjectsV2,
// GetObject), gunzips it when it says so and parses its lines.
func (e *env) readLines(t *testing.T) map[string][]map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string][]map[string]any{}
	p := s3.NewListObjectsV2Paginator(e.client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("ListObjectsV2: %v", err)
		}
		for _, o := range page.Contents {
			got, err := e.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				t.Fatalf("GetObject %s: %v", *o.Key, err)
			}
			var r io.Reader = got.Body
			if aws.ToString(got.ContentEncoding) == "gzip" {
				zr, err := gzip.NewReader(got.Body)
				if err != nil {
					t.Fatalf("%s: not gzip: %v", *o.Key, err)
				}
				r = zr
			}
			sc := bufio.NewScanner(r)
			sc.Buffer(nil, 64<<20)
			for sc.Scan() {
				var m map[string]any
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Fatalf("%s: line %q: %v", *o.Key, sc.Text(), err)
				}
				out[*o.Key] = append(out[*o.Key], m)
			}
			if err := sc.Err(); err != nil {
				t.Fatalf("%s: %v", *o.Key, err)
			}
			got.Body.Close()
		}
	}
	return out
}

func write(t *testing.T, s *Sink, recs []logevent.Record) []logevent.Outcome {
	t.Helper()
	out := make([]logevent.Outcome, len(recs))
	if err := s.Write(context.Background(), recs, out); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return out
}

// TestObjectsReadBack: a batch becomes objects readable with the SDK: one
// per date prefix, gzip, one JSON object per line with the event whole (or
// the text line), subject, stream, sequence and receive time, in sequence
// order; keys are deterministic, so writing the same batch again (a
// redelivery) overwrites rather than duplicates.
func TestObjectsReadBack(t *testing.T) {
	e := newEnv(t)
	s := e.sink(events.S3Sink{}, false)
	recs := []logevent.Record{
		rec("logs.app.web", 12, day, `{"level":"info","msg":"hello","time":"2026-11-23T23:59:00Z"}`),
		rec("logs.app.web", 11, day, "plain text line\n"),
		rec("logs.app.db", 13, day.Add(23*time.Hour), `{"level":"error",  "msg":"<next day>",
			"n": 1}`),
	}
	out := write(t, s, recs)
	for i, o := range out {
		if o.Status != logevent.Delivered {
			t.Fatalf("record %d: %+v", i, o)
		}
	}
	keys := e.fake.Keys(bucket)
	want := []string{"logs/s3-app/2026/11/24/00000000000000000011-00000000000000000012-", "logs/s3-app/2026/11/25/00000000000000000013-00000000000000000013-"}
	if len(keys) != 2 || !strings.HasPrefix(keys[0], want[0]) || !strings.HasPrefix(keys[1], want[1]) || !strings.HasSuffix(keys[0], ".ndjson.gz") {
		t.Fatalf("keys %q, want prefixes %q", keys, want)
	}
	obj, _ := e.fake.Object(bucket, keys[0])
	if obj.ContentEncoding != "gzip" || obj.ContentType != "application/x-ndjson" || obj.PutBy != testKeyID || obj.Metadata["first-seq"] != "11" || obj.Metadata["events"] != "2" {
		t.Fatalf("object %s: encoding %q type %q by %q metadata %v", keys[0], obj.ContentEncoding, obj.ContentType, obj.PutBy, obj.Metadata)
	}
	for _, op := range []string{awsfake.OpHeadBucket, awsfake.OpHeadObject, awsfake.OpListObjectsV2} {
		if n := e.srv.CallsBy(op, testKeyID); n != 0 {
			t.Errorf("the sink called %s (it needs s3:PutObject only)", op)
		}
	}
	lines := e.readLines(t)
	first := lines[keys[0]]
	if len(first) != 2 || first[0]["seq"] != 11.0 || first[1]["seq"] != 12.0 {
		t.Fatalf("first object lines %v", first)
	}
	if first[0]["message"] != "plain text line" || first[0]["event"] != nil || first[0]["subject"] != "logs.app.web" || first[0]["stream"] != "CLOUDBRIDGE_LOGS" ||
		first[0]["received"] != "2026-11-24T02:00:00Z" || first[0]["time"] != "2026-11-24T02:00:00Z" {
		t.Fatalf("text line %v", first[0])
	}
	ev, _ := first[1]["event"].(map[string]any)
	if ev["msg"] != "hello" || first[1]["level"] != "info" || first[1]["time"] != "2026-11-23T23:59:00Z" || first[1]["message"] != nil {
		t.Fatalf("json line %v", first[1])
	}
	if ev, _ := lines[keys[1]][0]["event"].(map[string]any); ev["msg"] != "<next day>" {
		t.Fatalf("multi-line JSON event %v", lines[keys[1]])
	}

	// The same batch again (a redelivery) writes the same keys.
	again := make([]logevent.Record, len(recs))
	copy(again, recs)
	slices.Reverse(again)
	write(t, e.sink(events.S3Sink{}, false), again)
	if got := e.fake.Keys(bucket); !slices.Equal(got, keys) {
		t.Fatalf("redelivery made keys %q, want %q", got, keys)
	}
	if n := e.srv.Calls(awsfake.OpPutObject); n != 4 {
		t.Fatalf("%d PutObject calls, want 4", n)
	}
	// Other records under the same sequences (another export, a recreated
	// stream) never overwrite.
	other := []logevent.Record{rec("logs.app.web", 11, day, "other"), rec("logs.app.web", 12, day, "records")}
	write(t, e.sink(events.S3Sink{}, false), other)
	if got := e.fake.Keys(bucket); len(got) != 3 {
		t.Fatalf("keys %q, want a third object", got)
	}
}

// TestUncompressedAndPrefix: compression none writes plain NDJSON under the
// block's prefix with {hh}.
func TestUncompressedAndPrefix(t *testing.T) {
	e := newEnv(t)
	s := e.sink(events.S3Sink{Prefix: "raw/{export}/{yyyy}{mm}{dd}-{hh}/", Compression: "none"}, false)
	write(t, s, []logevent.Record{rec("logs.a", 1, day, "a"), rec("logs.a", 2, day, "b")})
	keys := e.fake.Keys(bucket)
	if len(keys) != 1 || !strings.HasPrefix(keys[0], "raw/s3-app/20261124-02/") || !strings.HasSuffix(keys[0], ".ndjson") {
		t.Fatalf("keys %q", keys)
	}
	obj, _ := e.fake.Object(bucket, keys[0])
	if obj.ContentEncoding != "" || bytes.Count(obj.Data, []byte("\n")) != 2 {
		t.Fatalf("object %q encoding %q", obj.Data, obj.ContentEncoding)
	}
}

// TestMaxObjectBytes: lines are cut into objects of at most max_object_bytes
// (uncompressed); an event whose line is larger is dead-lettered as
// too_large, or cut when the export truncates.
func TestMaxObjectBytes(t *testing.T) {
	e := newEnv(t)
	const limit = 4096
	s := e.sink(events.S3Sink{MaxObjectBytes: limit}, false)
	if l := s.Limits(); l.MaxBytes != limit || l.MaxWait != events.DefaultS3MaxWait || l.MaxEvents != MaxObjectEvents {
		t.Fatalf("limits %+v", l)
	}
	var recs []logevent.Record
	for i := range 40 {
		recs = append(recs, rec("logs.a", uint64(i+1), day, `{"msg":"`+strings.Repeat("x", 300)+`"}`))
	}
	huge := rec("logs.a", 100, day, `{"msg":"`+strings.Repeat("\"<", limit)+`"}`)
	recs = append(recs, huge)
	if s.Size(&recs[0]) == 0 || s.Size(&huge) != 0 {
		t.Fatalf("sizes %d %d", s.Size(&recs[0]), s.Size(&huge))
	}
	out := write(t, s, recs)
	if o := out[40]; o.Status != logevent.Dead || o.Reason != events.DeadTooLarge {
		t.Fatalf("huge event: %+v", o)
	}
	total := 0
	for _, k := range e.fake.Keys(bucket) {
		obj, _ := e.fake.Object(bucket, k)
		zr, _ := gzip.NewReader(bytes.NewReader(obj.Data))
		data, _ := io.ReadAll(zr)
		if len(data) > limit {
			t.Errorf("object %s holds %d bytes, over %d", k, len(data), limit)
		}
		total += bytes.Count(data, []byte("\n"))
	}
	if total != 40 || len(e.fake.Keys(bucket)) < 3 {
		t.Fatalf("%d lines in %d objects", total, len(e.fake.Keys(bucket)))
	}

	// Truncated: the huge event fits, cut, as text with the marker.
	e2 := newEnv(t)
	s2 := e2.sink(events.S3Sink{MaxObjectBytes: limit}, true)
	if n := s2.Size(&huge); n == 0 || n > limit {
		t.Fatalf("truncated size %d", n)
	}
	out = write(t, s2, []logevent.Record{huge})
	if out[0].Status != logevent.Delivered || !out[0].Truncated {
		t.Fatalf("truncated outcome %+v", out[0])
	}
	for _, ls := range e2.readLines(t) {
		if msg, _ := ls[0]["message"].(string); !strings.HasSuffix(msg, logevent.TruncateMarker) || ls[0]["truncated"] != true {
			t.Fatalf("truncated line %v", ls[0])
		}
	}
}

// TestFailedPutIsClassified: a failed PutObject leaves its records pending
// (the objects written before it stay delivered) and is classified for the
// runner: SlowDown → retry later, 5xx → retry, a refused request →
// dead-letter, a missing bucket or denied access → retry; the sink never
// retries itself.
func TestFailedPutIsClassified(t *testing.T) {
	tests := []struct {
		code  string
		class sink.Class
		want  error
	}{
		{"SlowDown", sink.RetryLater, events.ErrThrottled},
		{"InternalError", sink.Retry, events.ErrUnavailable},
		{"ServiceUnavailable", sink.Retry, events.ErrUnavailable},
		{"EntityTooLarge", sink.DeadLetter, events.ErrBadRequest},
		{"NoSuchBucket", sink.Retry, events.ErrNotFound},
		{"AccessDenied", sink.Retry, events.ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			e := newEnv(t)
			s := e.sink(events.S3Sink{}, false)
			recs := []logevent.Record{rec("logs.a", 1, day, "day one"), rec("logs.a", 2, day.Add(24*time.Hour), "day two")}
			out := make([]logevent.Outcome, len(recs))
			// The first object goes through; the second call fails.
			if err := s.Write(context.Background(), recs[:1], out[:1]); err != nil {
				t.Fatal(err)
			}
			e.srv.Fail(awsfake.OpPutObject, tt.code, 1)
			err := s.Write(context.Background(), recs, out)
			f := sink.Classify(err)
			if err == nil || f.Class != tt.class || !errors.Is(err, tt.want) || !slices.Equal(f.Records, []int{1}) {
				t.Fatalf("Write = %v: class %v records %v; want %v %v [1]", err, f.Class, f.Records, tt.class, tt.want)
			}
			if strings.Contains(err.Error(), "RequestId") || out[1].Status != logevent.Pending || out[0].Status != logevent.Delivered {
				t.Fatalf("err %q, outcomes %+v", err, out)
			}
			if n := e.srv.Calls(awsfake.OpPutObject); n != 2 {
				t.Fatalf("%d PutObject calls, want 2 (no retry in the sink)", n)
			}
			// Once the fault is gone the retry writes only what is pending.
			if err := s.Write(context.Background(), recs, out); err != nil || out[1].Status != logevent.Delivered {
				t.Fatalf("retry: %v %+v", err, out)
			}
			if keys := e.fake.Keys(bucket); len(keys) != 2 {
				t.Fatalf("keys %q", keys)
			}
		})
	}
}

// TestUnreachable: a connection refused is unavailable (retry).
func TestUnreachable(t *testing.T) {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testKeyID, "secret", "")}
	conn := events.Connection{AWS: &events.AWSConfig{Endpoint: "http://127.0.0.1:1"}}
	s := New(NewClient(cfg, conn), events.Export{Name: "x", S3: &events.S3Sink{Bucket: bucket}})
	out := make([]logevent.Outcome, 1)
	err := s.Write(context.Background(), []logevent.Record{rec("logs.a", 1, day, "m")}, out)
	if f := sink.Classify(err); !errors.Is(err, events.ErrUnavailable) || f.Class != sink.Retry {
		t.Fatalf("Write = %v (%v)", err, f.Class)
	}
}

// TestRedeliveredCopies: copies of a message JetStream redelivered (in the
// same batch, or after the sink archived it) are acked without a second
// line; a stream recreated under the same name (same sequences, later
// receive times) is archived again.
func TestRedeliveredCopies(t *testing.T) {
	e := newEnv(t)
	s := e.sink(events.S3Sink{}, false)
	a, b := rec("logs.a", 1, day, "one"), rec("logs.a", 2, day, "two")
	out := write(t, s, []logevent.Record{a, b, a, b, a})
	for i, o := range out {
		if o.Status != logevent.Delivered {
			t.Fatalf("record %d: %+v", i, o)
		}
	}
	lines := e.readLines(t)
	if len(lines) != 1 {
		t.Fatalf("objects %v", lines)
	}
	for _, ls := range lines {
		if len(ls) != 2 {
			t.Fatalf("%d lines, want 2: %v", len(ls), ls)
		}
	}
	// Later copies: acked, nothing written.
	calls := e.srv.Calls(awsfake.OpPutObject)
	if out := write(t, s, []logevent.Record{b, a}); out[0].Status != logevent.Delivered || out[1].Status != logevent.Delivered {
		t.Fatalf("later copies: %+v", out)
	}
	if n := e.srv.Calls(awsfake.OpPutObject); n != calls {
		t.Fatalf("later copies written again (%d calls)", n-calls)
	}
	// A new stream under the same name: its sequence 1 is another message.
	write(t, s, []logevent.Record{rec("logs.a", 1, day.Add(time.Hour), "new stream")})
	if keys := e.fake.Keys(bucket); len(keys) != 2 {
		t.Fatalf("keys %q, want the new stream's object", keys)
	}
	// A failed put leaves the copies pending with their first copy.
	s2 := e.sink(events.S3Sink{Prefix: "other/"}, false)
	c := rec("logs.c", 7, day, "seven")
	e.srv.Fail(awsfake.OpPutObject, "InternalError", 1)
	recs := []logevent.Record{c, c}
	out = make([]logevent.Outcome, 2)
	if err := s2.Write(context.Background(), recs, out); err == nil || out[0].Status != logevent.Pending || out[1].Status != logevent.Pending {
		t.Fatalf("failed put: %v %+v", err, out)
	}
}

func TestWrittenBounded(t *testing.T) {
	var w written
	for i := range uint64(3 * maxSpans) {
		w.add("S", 2*i+1, int64(i)) // every other sequence: one span each
	}
	if n := len(w.streams["S"]); n < maxSpans || n > maxSpans+maxSpans/8 {
		t.Fatalf("%d spans, want %d to %d", n, maxSpans, maxSpans+maxSpans/8)
	}
	if w.has("S", 1, 0) || !w.has("S", 2*(3*maxSpans-1)+1, 3*maxSpans-1) || w.has("S", 2, 0) {
		t.Fatalf("oldest kept, newest forgotten or a gap taken as archived")
	}
	var v written
	for _, seq := range []uint64{5, 3, 4, 7, 6, 1} {
		v.add("S", seq, int64(seq))
	}
	if got := v.streams["S"]; len(got) != 2 || got[0] != (span{1, 1, 1, 1}) || got[1] != (span{3, 7, 3, 7}) {
		t.Fatalf("spans %+v", got)
	}
	if v.has("S", 2, 2) || !v.has("S", 6, 6) {
		t.Fatalf("has")
	}
}
