// Package cloudlogging is the Google Cloud Logging sink of log export: it
// writes batches of log records with WriteLogEntries (partialSuccess), one
// entry per record with severity from its level, jsonPayload for JSON events
// and textPayload otherwise, labels subject and export, the block's monitored
// resource, and insertId = stream name + sequence so a redelivery does not
// duplicate an entry. It classifies failed calls (internal/sink) and never
// retries: the export runner does.
package cloudlogging

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"time"

	logging "cloud.google.com/go/logging/apiv2"
	"cloud.google.com/go/logging/apiv2/loggingpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/api/monitoredres"
	ltype "google.golang.org/genproto/googleapis/logging/type"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// Kind registers the cloud_logging block (internal/sink/all).
var Kind = sink.Kind{Block: "cloud_logging", New: open}

// open builds the sink of an export with a cloud_logging block from its gcp connection.
func open(ctx context.Context, exp events.Export, conn events.Connection, c sink.Clients) (sink.Sink, error) {
	opts, err := c.GCPOptions(ctx, exp, conn)
	if err != nil {
		return nil, err
	}
	client, err := NewClient(ctx, conn, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating cloud logging client for export %s: %w", exp.Name, err)
	}
	return New(client, exp), nil
}

// The limits of WriteLogEntries (docs/cloud-limits.md).
const (
	// MaxRequestBytes is the most bytes in one request.
	MaxRequestBytes = 10 << 20
	// MaxEntryBytes is the largest entry.
	MaxEntryBytes = 256 << 10
	// MaxEntries bounds entries per request.
	MaxEntries = 10_000
	// requestHeadroom keeps room in a request for the log name, resource and framing.
	requestHeadroom = 64 << 10
	// entryOverhead estimates what an entry adds to its message (labels,
	// insertId, timestamp, severity, framing), for batch sizing.
	entryOverhead = 160
)

// API is the part of the Cloud Logging client the sink uses.
type API interface {
	WriteLogEntries(ctx context.Context, req *loggingpb.WriteLogEntriesRequest, opts ...gax.CallOption) (*loggingpb.WriteLogEntriesResponse, error)
}

// NewClient creates the Cloud Logging client from a connection's client
// options (credentials, endpoint).
func NewClient(ctx context.Context, conn events.Connection, opts ...option.ClientOption) (*logging.Client, error) {
	c, err := logging.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating logging client for connection %s: %w", conn.Name, err)
	}
	return c, nil
}

// noRetry turns off the client's own retries: the export worker retries with
// backoff itself, visible in metrics.
var noRetry = gax.WithRetry(func() gax.Retryer { return nil })

// Sink writes log records of one export block to Cloud Logging.
type Sink struct {
	api      API
	export   string
	logName  string
	resource *monitoredres.MonitoredResource
	truncate bool
}

// New returns the sink of export exp (which has a cloud_logging block).
func New(api API, exp events.Export) *Sink {
	cfg := events.CloudLoggingSink{}
	if exp.CloudLogging != nil {
		cfg = *exp.CloudLogging
	}
	res := &monitoredres.MonitoredResource{Type: "global", Labels: map[string]string{"project_id": cfg.Project}}
	if cfg.Resource != nil {
		res = &monitoredres.MonitoredResource{Type: cfg.Resource.Type, Labels: cfg.Resource.Labels}
	}
	return &Sink{
		api:      api,
		export:   exp.Name,
		logName:  "projects/" + cfg.Project + "/logs/" + url.PathEscape(cfg.LogID),
		resource: res,
		truncate: exp.Truncate,
	}
}

// LogName is the full log name entries are written to.
func (s *Sink) LogName() string { return s.logName }

// Limits size batches below the request limit.
func (s *Sink) Limits() logevent.Limits {
	return logevent.Limits{MaxEvents: MaxEntries, MaxBytes: MaxRequestBytes - requestHeadroom}
}

// Size estimates a record's share of a request; Write measures exactly and
// splits a request that would still exceed the limit.
func (s *Sink) Size(r *logevent.Record) int {
	n := len(r.Message) + len(r.Message)/4 + 2*len(r.Subject) + entryOverhead
	if n > MaxEntryBytes {
		if !s.truncate {
			return 0
		}
		n = MaxEntryBytes
	}
	return n
}

// Close closes the client when it has a Close method.
func (s *Sink) Close() error {
	if c, ok := s.api.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Severity maps a normalized level to a Cloud Logging severity.
func Severity(level string) ltype.LogSeverity {
	switch level {
	case logevent.LevelTrace, logevent.LevelDebug:
		return ltype.LogSeverity_DEBUG
	case logevent.LevelInfo:
		return ltype.LogSeverity_INFO
	case logevent.LevelWarn:
		return ltype.LogSeverity_WARNING
	case logevent.LevelError:
		return ltype.LogSeverity_ERROR
	case logevent.LevelFatal:
		return ltype.LogSeverity_CRITICAL
	}
	return ltype.LogSeverity_DEFAULT
}

// InsertID is the entry's insertId: the stream name and the sequence, unique
// per message, identical on redelivery.
func InsertID(stream string, seq uint64) string {
	return stream + "-" + strconv.FormatUint(seq, 10)
}

func (s *Sink) entry(r *logevent.Record) *loggingpb.LogEntry {
	e := &loggingpb.LogEntry{
		Timestamp: timestamppb.New(r.Time),
		Severity:  Severity(r.Level),
		InsertId:  InsertID(r.Stream, r.Seq),
		Labels:    map[string]string{"subject": r.Subject, "export": s.export},
	}
	if r.JSON {
		st := &structpb.Struct{}
		if protojson.Unmarshal(r.Message, st) == nil {
			e.Payload = &loggingpb.LogEntry_JsonPayload{JsonPayload: st}
			return e
		}
	}
	e.Payload = &loggingpb.LogEntry_TextPayload{TextPayload: string(r.Message)}
	return e
}

// Write sends the records still Pending in out in requests of at most
// MaxRequestBytes with partialSuccess, and sets the outcome of each record a
// successful call carried; at the first failed call it returns a
// *sink.Failure classifying it, and the records not yet carried stay Pending.
func (s *Sink) Write(ctx context.Context, recs []logevent.Record, out []logevent.Outcome) error {
	return s.WriteEach(ctx, recs, out, nil)
}

// WriteEach is Write, calling accepted (when not nil) after each successful
// entries.write (sink.CallReporter).
func (s *Sink) WriteEach(ctx context.Context, recs []logevent.Record, out []logevent.Outcome, accepted func(idx []int)) error {
	var entries []*loggingpb.LogEntry
	var idx []int
	done := func() {
		if accepted != nil {
			accepted(idx)
		}
	}
	size := 0
	for i := range recs {
		if out[i].Status != logevent.Pending {
			continue
		}
		e := s.entry(&recs[i])
		n := proto.Size(e)
		if n > MaxEntryBytes {
			if !s.truncate {
				out[i] = logevent.Outcome{Status: logevent.Dead, Reason: events.DeadTooLarge, Detail: "entry larger than Cloud Logging's 256 KiB entry limit"}
				continue
			}
			over := n - MaxEntryBytes
			cut := len(recs[i].Message) - over - 1024
			e.Payload = &loggingpb.LogEntry_TextPayload{TextPayload: string(logevent.Truncate(recs[i].Message, max(cut, 0)))}
			out[i].Truncated = true
			n = proto.Size(e)
		}
		if len(entries) > 0 && (size+n+8 > MaxRequestBytes-requestHeadroom || len(entries) == MaxEntries) {
			if err := s.write(ctx, entries, idx, out); err != nil {
				return err
			}
			done()
			entries, idx, size = entries[:0], idx[:0], 0
		}
		entries = append(entries, e)
		idx = append(idx, i)
		size += n + 8
	}
	if len(entries) == 0 {
		return nil
	}
	if err := s.write(ctx, entries, idx, out); err != nil {
		return err
	}
	done()
	return nil
}

func (s *Sink) write(ctx context.Context, entries []*loggingpb.LogEntry, idx []int, out []logevent.Outcome) error {
	req := &loggingpb.WriteLogEntriesRequest{
		LogName:        s.logName,
		Resource:       s.resource,
		Entries:        entries,
		PartialSuccess: true,
	}
	start := time.Now()
	_, err := s.api.WriteLogEntries(ctx, req, noRetry)
	defer func() { metrics.ObserveUpstream(events.ProviderGCP, "WriteLogEntries", start, err) }()
	if err == nil {
		for _, i := range idx {
			out[i].Status = logevent.Delivered
		}
		return nil
	}
	if ctx.Err() != nil {
		return sink.Fail(fmt.Errorf("writing log entries: %w", ctx.Err()), slices.Clone(idx))
	}
	st, _ := status.FromError(err)
	if partial := partialErrors(st); partial != nil {
		for pos, i := range idx {
			if e, bad := partial.LogEntryErrors[int32(pos)]; bad {
				out[i] = logevent.Outcome{Status: logevent.Dead, Reason: events.DeadRejected,
					Detail: "cloud logging refused the entry: " + codes.Code(e.GetCode()).String()}
			} else {
				out[i].Status = logevent.Delivered
			}
		}
		err = nil
		return nil
	}
	err = classify(st)
	f := sink.Fail(err, slices.Clone(idx))
	f.After = retryAfter(st)
	return f
}

// retryAfter is the server's RetryInfo delay, 0 when it gave none.
func retryAfter(st *status.Status) time.Duration {
	if st == nil {
		return 0
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return max(ri.GetRetryDelay().AsDuration(), 0)
		}
	}
	return 0
}

func partialErrors(st *status.Status) *loggingpb.WriteLogEntriesPartialErrors {
	if st == nil {
		return nil
	}
	for _, d := range st.Details() {
		if p, ok := d.(*loggingpb.WriteLogEntriesPartialErrors); ok {
			return p
		}
	}
	return nil
}

// classify translates a gRPC status into an events sentinel.
func classify(st *status.Status) error {
	code := events.CodeUnavailable
	switch st.Code() {
	case codes.ResourceExhausted:
		code = events.CodeThrottled
	case codes.Unavailable, codes.Internal, codes.DeadlineExceeded, codes.Aborted, codes.Unknown:
		code = events.CodeUnavailable
	case codes.PermissionDenied:
		code = events.CodeForbidden
	case codes.Unauthenticated:
		code = events.CodeUnauthorized
	case codes.NotFound:
		code = events.CodeNotFound
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		code = events.CodeBadRequest
	}
	// The cloud's own text stays in the cause (events.Detail, for the log).
	return events.Wrap(code, st.Err(), "writing log entries: cloud logging %s", st.Code())
}
