// Package cloudwatch is the CloudWatch Logs sink of log export: it turns
// batches of log records into PutLogEvents calls that obey every limit in
// docs/cloud-limits.md, creates missing groups and streams when asked to,
// reads rejectedLogEventsInfo into per-record outcomes and classifies failed
// calls (internal/sink); it never retries: the export runner does.
package cloudwatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// Kind registers the cloudwatch block (internal/sink/all).
var Kind = sink.Kind{Block: "cloudwatch", New: open}

// open builds the sink of an export with a cloudwatch block from its aws connection.
func open(ctx context.Context, exp events.Export, conn events.Connection, c sink.Clients) (sink.Sink, error) {
	cfg, err := c.AWSConfig(ctx, exp, conn)
	if err != nil {
		return nil, err
	}
	s := New(NewClient(cfg, conn), exp, zerolog.Nop())
	s.creates = createLimiter(conn.Name)
	return s, nil
}

// The limits of PutLogEvents (docs/cloud-limits.md).
const (
	// MaxBatchBytes is the most bytes in one call, counting EventOverhead per event.
	MaxBatchBytes = 1_048_576
	// EventOverhead is what CloudWatch adds to each event's UTF-8 message bytes.
	EventOverhead = 26
	// MaxBatchEvents is the most events in one call.
	MaxBatchEvents = 10_000
	// MaxMessageBytes is the largest message that fits in a call on its own.
	MaxMessageBytes = MaxBatchBytes - EventOverhead
	// MaxSpan is the widest time span of one call.
	MaxSpan = 24 * time.Hour
)

// API is the part of the CloudWatch Logs client the sink uses.
type API interface {
	PutLogEvents(ctx context.Context, in *cloudwatchlogs.PutLogEventsInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutLogEventsOutput, error)
	CreateLogGroup(ctx context.Context, in *cloudwatchlogs.CreateLogGroupInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.CreateLogGroupOutput, error)
	CreateLogStream(ctx context.Context, in *cloudwatchlogs.CreateLogStreamInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.CreateLogStreamOutput, error)
	PutRetentionPolicy(ctx context.Context, in *cloudwatchlogs.PutRetentionPolicyInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutRetentionPolicyOutput, error)
}

// NewClient builds the CloudWatch Logs client for a connection. The SDK's own
// retries are off: the export worker retries with backoff itself, so that
// retries show in metrics and the messages' ack deadlines are extended.
// PutLogEvents bodies are written by putLogEventsProtocol (body.go).
func NewClient(cfg aws.Config, conn events.Connection) *cloudwatchlogs.Client {
	return cloudwatchlogs.NewFromConfig(cfg, func(o *cloudwatchlogs.Options) {
		o.Retryer = aws.NopRetryer{}
		if o.Protocol != nil {
			o.Protocol = putLogEventsProtocol{o.Protocol}
		}
		if conn.AWS != nil && conn.AWS.Endpoint != "" && o.BaseEndpoint == nil {
			o.BaseEndpoint = aws.String(conn.AWS.Endpoint)
		}
	})
}

// Sink writes log records of one export block to CloudWatch Logs.
type Sink struct {
	api      API
	export   string
	cfg      events.CloudWatchSink
	truncate bool
	log      zerolog.Logger
	creates  *rate.Limiter // paces CreateLogStream under CloudWatch's quota

	mu       sync.Mutex
	names    *lru.Cache[string, streamKey] // subject → its group and stream (bounded)
	admitted map[streamKey]struct{}        // the streams written, at most max_streams
	overflow streamKey                     // where the events of further streams go
	// known are the streams (admitted ones and overflow) a call of this
	// sink has stored events in: a stream not known yet gets a small first
	// call (probe), one at a time (probing).
	known   map[streamKey]struct{}
	probing map[streamKey]chan struct{} // closed when the stream's probe returns

	mOverflow, mCreated prometheus.Counter
	mStreams            prometheus.Gauge
}

// streamKey is a log group and stream.
type streamKey struct{ group, stream string }

// maxNames bounds the memo of names per subject.
const maxNames = 4096

// key is the group and stream of subject's events: its own while it is one
// of the first max_streams the sink writes, else the overflow stream
// (overflow true).
func (s *Sink) key(subject string) (k streamKey, overflow bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.names.Get(subject)
	if !ok {
		k = streamKey{GroupName(s.cfg.LogGroup, subject, s.export), StreamName(s.cfg.LogStream, subject, s.export)}
		s.names.Add(subject, k)
	}
	if _, ok := s.admitted[k]; ok || k == s.overflow {
		return k, false
	}
	if len(s.admitted) < s.cfg.MaxStreams {
		s.admitted[k] = struct{}{}
		s.mStreams.Set(float64(len(s.admitted)))
		return k, false
	}
	return s.overflow, true
}

// New returns the sink of export exp (which has a cloudwatch block).
func New(api API, exp events.Export, log zerolog.Logger) *Sink {
	cfg := events.CloudWatchSink{}
	if exp.CloudWatch != nil {
		cfg = *exp.CloudWatch
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = events.DefaultMaxStreams
	}
	if cfg.OverflowStream == "" {
		cfg.OverflowStream = events.DefaultOverflowStream
	}
	names, _ := lru.New[string, streamKey](maxNames)
	return &Sink{api: api, export: exp.Name, cfg: cfg, truncate: exp.Truncate, log: log,
		creates: rate.NewLimiter(CreateStreamRate, CreateStreamBurst), names: names, admitted: map[streamKey]struct{}{},
		known: map[streamKey]struct{}{}, probing: map[streamKey]chan struct{}{},
		overflow:  streamKey{GroupName(cfg.LogGroup, "", exp.Name), StreamName(cfg.OverflowStream, "", exp.Name)},
		mOverflow: OverflowEvents.WithLabelValues(exp.Name), mCreated: StreamsCreated.WithLabelValues(exp.Name),
		mStreams: StreamsWritten.WithLabelValues(exp.Name)}
}

// CreateLogStream pacing: CloudWatch allows 50 calls a second per account
// and region (docs/cloud-limits.md); the sinks of one connection share a
// limiter a fifth under it.
const (
	CreateStreamRate  = rate.Limit(40)
	CreateStreamBurst = 10
)

var createLimiters sync.Map // connection name → *rate.Limiter

// createLimiter is the CreateLogStream limiter shared by the sinks of a connection.
func createLimiter(conn string) *rate.Limiter {
	l, _ := createLimiters.LoadOrStore(conn, rate.NewLimiter(CreateStreamRate, CreateStreamBurst))
	return l.(*rate.Limiter)
}

// The sink's collectors, registered on the registry served on /metrics.
var (
	OverflowEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_cloudwatch_overflow_events_total",
		Help: "Log events written to the overflow stream because their stream was beyond cloudwatch.max_streams, by export.",
	}, []string{"export"})
	StreamsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_cloudwatch_streams_created_total", Help: "Log streams created, by export.",
	}, []string{"export"})
	StreamsWritten = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cloudbridge_export_cloudwatch_streams", Help: "Log streams this worker writes for the export (at most cloudwatch.max_streams, overflow aside).",
	}, []string{"export"})
)

func init() { metrics.Registry.MustRegister(OverflowEvents, StreamsCreated, StreamsWritten) }

// Limits are the per-call limits of PutLogEvents.
func (s *Sink) Limits() logevent.Limits {
	return logevent.Limits{MaxEvents: MaxBatchEvents, MaxBytes: MaxBatchBytes}
}

// Size is what a record counts against MaxBatchBytes: its message bytes (as
// sent, after truncation) plus the 26-byte overhead.
func (s *Sink) Size(r *logevent.Record) int {
	n := len(r.Message)
	if n > MaxMessageBytes {
		if !s.truncate {
			return 0 // dead-lettered, never sent
		}
		n = MaxMessageBytes
	}
	return n + EventOverhead
}

// Close releases nothing: the client has no resources of its own.
func (s *Sink) Close() error { return nil }

type item struct {
	idx    int
	stream int // index of its log stream in the order of the batch's streams
	ts     int64
	msg    []byte
	over   bool // in the overflow stream
}

// Write sends the records still Pending in out, grouped by log stream, sorted
// by time and cut into calls within the limits. It sets the outcome of each
// record a successful call carried; at the first failed call it returns a
// *sink.Failure classifying it, and the records not yet carried stay Pending.
func (s *Sink) Write(ctx context.Context, recs []logevent.Record, out []logevent.Outcome) error {
	return s.WriteEach(ctx, recs, out, nil)
}

// WriteEach is Write, calling accepted (when not nil) after each successful
// PutLogEvents (sink.CallReporter).
func (s *Sink) WriteEach(ctx context.Context, recs []logevent.Record, out []logevent.Outcome, accepted func(idx []int)) error {
	// Most batches have one log stream, or a few: the stream of a subject is
	// looked up once per run of records of that subject, not per record,
	// and the items of every stream share one slice, sorted by stream (in
	// the order of their first record) and then by time.
	var order []streamKey
	streams := map[streamKey]int{} // → its index in order
	items := make([]item, 0, len(recs))
	var last string
	var stream int
	var over, known bool
	for i := range recs {
		if out[i].Status != logevent.Pending {
			continue
		}
		r := &recs[i]
		msg := r.Message
		if len(msg) > MaxMessageBytes {
			if !s.truncate {
				out[i] = logevent.Outcome{Status: logevent.Dead, Reason: events.DeadTooLarge,
					Detail: "event larger than CloudWatch's 1 MB event limit"}
				continue
			}
			msg = logevent.Truncate(msg, MaxMessageBytes)
			out[i].Truncated = true
		}
		if len(msg) == 0 {
			out[i] = logevent.Outcome{Status: logevent.Dead, Reason: events.DeadInvalid, Detail: "empty message"}
			continue
		}
		if !known || r.Subject != last {
			var k streamKey
			k, over = s.key(r.Subject)
			last, known = r.Subject, true
			var ok bool
			if stream, ok = streams[k]; !ok {
				stream = len(order)
				streams[k] = stream
				order = append(order, k)
			}
		}
		items = append(items, item{idx: i, stream: stream, ts: r.Time.UnixMilli(), msg: msg, over: over})
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := cmp.Compare(a.stream, b.stream); c != 0 {
			return c
		}
		return cmp.Compare(a.ts, b.ts)
	})
	var idx []int
	for len(items) > 0 {
		k := order[items[0].stream]
		n := chunk(items)
		probing, err := s.claim(ctx, k)
		if err != nil {
			return sink.Fail(err, indexes(items[:n]))
		}
		if probing {
			n = probe(items[:n])
		}
		err = s.put(ctx, k, items[:n], out)
		if probing {
			s.probed(k)
		}
		if err != nil {
			return err
		}
		if accepted != nil {
			idx = idx[:0]
			for _, it := range items[:n] {
				idx = append(idx, it.idx)
			}
			accepted(idx)
		}
		items = items[n:]
	}
	return nil
}

// chunk is how many of the sorted items fit one call: ≤ 10,000 events,
// ≤ 1,048,576 bytes with the overhead, a span of ≤ 24 h, one log stream.
func chunk(items []item) int {
	bytes := 0
	first := items[0].ts
	for i, it := range items {
		b := len(it.msg) + EventOverhead
		if i == MaxBatchEvents || bytes+b > MaxBatchBytes || time.Duration(it.ts-first)*time.Millisecond > MaxSpan || it.stream != items[0].stream {
			return i
		}
		bytes += b
	}
	return len(items)
}

// The first call to a log stream the sink has not stored events in yet (at
// its start, or once a call found the stream missing) carries at most
// probeEvents events and probeBytes bytes, the rest of the batch following
// in full calls once it went through. A new stream's first call fails with
// ResourceNotFoundException; so does every call to a stream that is missing
// and not created (create off): those calls then carry tens of kilobytes,
// not a megabyte the cloud reads, verifies and refuses (and the worker
// builds and signs for nothing). The cost is one more small call per stream
// and sink, which stores its events.
const (
	probeEvents = 64
	probeBytes  = 64 << 10
)

// probe is how many of a call's items the first call to a stream not known
// yet carries: the first probeEvents, within probeBytes; at least one.
func probe(items []item) int {
	bytes := 0
	for i, it := range items {
		bytes += len(it.msg) + EventOverhead
		if i == probeEvents || (i > 0 && bytes > probeBytes) {
			return i
		}
	}
	return len(items)
}

// claim reports whether the next call to k is its probe (k is not known,
// and no other call is probing it: this one does, until probed). While
// another call probes k, it waits for that call's outcome (two batches
// delivered side by side start with one small call, not two); ctx's error
// when ctx ends first.
func (s *Sink) claim(ctx context.Context, k streamKey) (bool, error) {
	for {
		s.mu.Lock()
		if _, ok := s.known[k]; ok {
			s.mu.Unlock()
			return false, nil
		}
		wait, ok := s.probing[k]
		if !ok {
			s.probing[k] = make(chan struct{})
			s.mu.Unlock()
			return true, nil
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return false, fmt.Errorf("waiting for the first call to a log stream: %w", ctx.Err())
		}
	}
}

// probed ends the probe of k that claim handed out: whatever its outcome,
// the calls waiting for it go on (a failed probe is claimed by the next).
func (s *Sink) probed(k streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.probing[k]; ok {
		close(ch)
		delete(s.probing, k)
	}
}

// setKnown records whether k is known to exist: after a call stored events
// in it (true), or found it missing (false).
func (s *Sink) setKnown(k streamKey, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if known {
		s.known[k] = struct{}{}
	} else {
		delete(s.known, k)
	}
}

func (s *Sink) put(ctx context.Context, k streamKey, items []item, out []logevent.Outcome) error {
	group, stream := k.group, k.stream
	in := &cloudwatchlogs.PutLogEventsInput{
		LogGroupName:  aws.String(group),
		LogStreamName: aws.String(stream),
		LogEvents:     make([]types.InputLogEvent, len(items)),
	}
	ts := make([]int64, len(items))
	msgs := make([]string, len(items))
	for i, it := range items {
		// The message's bytes are not copied: they are the JetStream
		// message's (or a truncated copy), which nothing writes to, and the
		// string lives only as long as this call.
		ts[i], msgs[i] = it.ts, unsafe.String(unsafe.SliceData(it.msg), len(it.msg))
		in.LogEvents[i] = types.InputLogEvent{Timestamp: &ts[i], Message: &msgs[i]}
	}
	start := time.Now()
	res, err := s.api.PutLogEvents(ctx, in)
	if err != nil && isCode(err, "ResourceNotFoundException") {
		s.setKnown(k, false) // the next calls to it probe again
		if s.cfg.Create {
			// Not a retry: the group or stream is created, then the call is made.
			if cerr := s.ensure(ctx, group, stream); cerr != nil {
				metrics.ObserveUpstream(events.ProviderAWS, "PutLogEvents", start, cerr)
				return sink.Fail(cerr, indexes(items))
			}
			res, err = s.api.PutLogEvents(ctx, in)
		}
	}
	err = classify("putting log events", err)
	metrics.ObserveUpstream(events.ProviderAWS, "PutLogEvents", start, err)
	if err != nil {
		return sink.Fail(err, indexes(items))
	}
	s.setKnown(k, true)
	tooOld, expired, tooNew := -1, -1, len(items)
	if info := res.RejectedLogEventsInfo; info != nil {
		if info.TooOldLogEventEndIndex != nil {
			tooOld = int(*info.TooOldLogEventEndIndex)
		}
		if info.ExpiredLogEventEndIndex != nil {
			expired = int(*info.ExpiredLogEventEndIndex)
		}
		if info.TooNewLogEventStartIndex != nil {
			tooNew = int(*info.TooNewLogEventStartIndex)
		}
	}
	over := 0
	for i, it := range items {
		o := &out[it.idx]
		switch {
		case i < expired:
			o.Status, o.Reason, o.Detail = logevent.Dead, events.DeadExpired, "older than the log group's retention"
		case i < tooOld:
			o.Status, o.Reason, o.Detail = logevent.Dead, events.DeadTooOld, "older than 14 days"
		case i >= tooNew:
			o.Status, o.Detail = logevent.RetryLater, "more than 2 hours in the future"
		default:
			o.Status = logevent.Delivered
			if it.over {
				over++
			}
		}
	}
	if over > 0 {
		s.mOverflow.Add(float64(over))
	}
	return nil
}

func indexes(items []item) []int {
	idx := make([]int, len(items))
	for i, it := range items {
		idx[i] = it.idx
	}
	return idx
}

// ensure creates the group (with its retention) and the stream, tolerating
// that another worker created them first.
func (s *Sink) ensure(ctx context.Context, group, stream string) error {
	err := s.createStream(ctx, group, stream)
	if err == nil || isCode(err, "ResourceAlreadyExistsException") {
		return nil
	}
	if !isCode(err, "ResourceNotFoundException") {
		return classify("creating log stream", err)
	}
	_, err = s.api.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: &group})
	if err != nil && !isCode(err, "ResourceAlreadyExistsException") {
		return classify("creating log group", err)
	}
	if err == nil {
		s.log.Info().Str("export", s.export).Str("log_group", group).Msg("created log group")
	}
	if s.cfg.RetentionDays > 0 {
		days := int32(s.cfg.RetentionDays)
		if _, err := s.api.PutRetentionPolicy(ctx, &cloudwatchlogs.PutRetentionPolicyInput{LogGroupName: &group, RetentionInDays: &days}); err != nil {
			return classify("setting retention", err)
		}
	}
	err = s.createStream(ctx, group, stream)
	if err != nil && !isCode(err, "ResourceAlreadyExistsException") {
		return classify("creating log stream", err)
	}
	return nil
}

// createStream calls CreateLogStream once a token of the pacing limiter is
// free. A throttled call is classified like any other (retry later by the
// runner: the records stay pending, nothing is lost).
func (s *Sink) createStream(ctx context.Context, group, stream string) error {
	if err := s.creates.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting to create log stream: %w", ctx.Err())
		}
		// The wait would outlast ctx's deadline: as if CloudWatch throttled.
		return events.Errorf(events.CodeThrottled, "creating log stream: paced under CloudWatch's CreateLogStream quota")
	}
	_, err := s.api.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: &group, LogStreamName: &stream})
	if err == nil {
		s.mCreated.Inc()
		s.log.Debug().Str("export", s.export).Str("log_group", group).Str("log_stream", stream).Msg("created log stream")
	}
	return err
}

func isCode(err error, code string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == code
}

// classify translates an SDK error into an events sentinel with a message
// free of request ids: throttled and unavailable are worth retrying.
func classify(doing string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", doing, err)
	}
	var ee *events.Error
	if errors.As(err, &ee) {
		return err // already translated
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := events.CodeInternal
		switch ae.ErrorCode() {
		case "ThrottlingException", "LimitExceededException", "RequestLimitExceeded", "TooManyRequestsException":
			code = events.CodeThrottled
		case "ServiceUnavailableException", "InternalFailure", "InternalServerError", "ServiceUnavailable":
			code = events.CodeUnavailable
		case "ResourceNotFoundException":
			code = events.CodeNotFound
		case "AccessDeniedException", "AccessDenied":
			code = events.CodeForbidden
		case "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException", "IncompleteSignature":
			code = events.CodeUnauthorized
		case "InvalidParameterException", "SerializationException", "ValidationException":
			code = events.CodeBadRequest
		default:
			if st := httpStatus(err); st >= 500 {
				code = events.CodeUnavailable
			}
		}
		// The cloud's own text stays in the cause (events.Detail, for the
		// log): it never reaches a dead letter or a requester.
		return events.Wrap(code, err, "%s: cloudwatch %s", doing, ae.ErrorCode())
	}
	if st := httpStatus(err); st >= 500 {
		return events.Wrap(events.CodeUnavailable, err, "%s: cloudwatch answered HTTP %d", doing, st)
	}
	return events.Wrap(events.CodeUnavailable, err, "%s: cloudwatch unreachable", doing)
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return http.StatusOK
}
