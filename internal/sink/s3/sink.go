// Package s3 is the S3 archive sink of log export: it writes batches of log
// records as objects, one JSON object per line (NDJSON, gzip-compressed by
// default), under a key prefix with date placeholders, one PutObject per
// prefix and batch. An object's key is made of the first and last stream
// sequence it holds and a hash of its content, so a redelivered batch
// overwrites its object rather than adding a copy. The sink classifies
// failed calls (internal/sink); it never retries: the export runner does.
package s3

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// Kind registers the s3 block (internal/sink/all).
var Kind = sink.Kind{Block: "s3", New: open}

// open builds the sink of an export with an s3 block from its aws connection.
func open(ctx context.Context, exp events.Export, conn events.Connection, c sink.Clients) (sink.Sink, error) {
	cfg, err := c.AWSConfig(ctx, exp, conn)
	if err != nil {
		return nil, err
	}
	return New(NewClient(cfg, conn), exp), nil
}

// MaxObjectEvents is the most records in one batch (and so in one object).
const MaxObjectEvents = 100_000

// API is the part of the S3 client the sink uses: PutObject only (the IAM
// permission s3:PutObject).
type API interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// NewClient builds the S3 client for a connection. The SDK's own retries are
// off (the export runner retries); a connection with an endpoint is
// addressed path-style (http://endpoint/bucket/key).
func NewClient(cfg aws.Config, conn events.Connection) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.Retryer = aws.NopRetryer{}
		if conn.AWS != nil && conn.AWS.Endpoint != "" && o.BaseEndpoint == nil {
			o.BaseEndpoint = aws.String(conn.AWS.Endpoint)
			o.UsePathStyle = true
		}
	})
}

// Sink writes log records of one export block as S3 objects.
type Sink struct {
	api      API
	export   string
	cfg      events.S3Sink
	gzip     bool
	truncate bool
	bufs     sync.Pool // *bytes.Buffer for encoding lines
	done     written   // sequences archived by this sink
}

// New returns the sink of export exp (which has an s3 block), with the
// block's defaults filled in.
func New(api API, exp events.Export) *Sink {
	cfg := events.S3Sink{}
	if exp.S3 != nil {
		cfg = *exp.S3
	}
	if cfg.Prefix == "" {
		cfg.Prefix = events.DefaultS3Prefix
	}
	if cfg.Format == "" {
		cfg.Format = events.DefaultS3Format
	}
	if cfg.Compression == "" {
		cfg.Compression = events.DefaultS3Compression
	}
	if cfg.MaxObjectBytes == 0 {
		cfg.MaxObjectBytes = events.DefaultS3MaxObjectBytes
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = events.Duration(events.DefaultS3MaxWait)
	}
	s := &Sink{api: api, export: exp.Name, cfg: cfg, gzip: cfg.Compression == "gzip", truncate: exp.Truncate}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	return s
}

// Limits: a batch is one object per prefix: at most max_object_bytes of
// lines (uncompressed), written after at most max_wait.
func (s *Sink) Limits() logevent.Limits {
	return logevent.Limits{MaxEvents: MaxObjectEvents, MaxBytes: s.cfg.MaxObjectBytes, MaxWait: s.cfg.MaxWait.D()}
}

// Size is the record's line in bytes (with its newline); 0 for a line over
// max_object_bytes that is not truncated (dead-lettered, never sent).
func (s *Sink) Size(r *logevent.Record) int {
	b := s.bufs.Get().(*bytes.Buffer)
	defer s.bufs.Put(b)
	b.Reset()
	n, _, ok := s.line(b, r)
	if !ok {
		return 0
	}
	return n
}

// Close releases nothing: the client has no resources of its own.
func (s *Sink) Close() error { return nil }

// line is one record in an object.
type line struct {
	// Time is the event's time (its own, or the receive time).
	Time  time.Time `json:"time"`
	Level string    `json:"level,omitempty"`
	// Subject, Stream and Seq say where it came from: the subject it was
	// published on and its sequence in the JetStream stream.
	Subject  string    `json:"subject"`
	Stream   string    `json:"stream"`
	Seq      uint64    `json:"seq"`
	Received time.Time `json:"received"`
	// Event is a JSON event, whole; Message a text line (or a JSON event
	// cut to fit, with Truncated).
	Event     json.RawMessage `json:"event,omitempty"`
	Message   string          `json:"message,omitempty"`
	Truncated bool            `json:"truncated,omitempty"`
}

// line appends r's line to b: its length, whether the message was cut, and
// false when it does not fit max_object_bytes (and is not cut).
func (s *Sink) line(b *bytes.Buffer, r *logevent.Record) (n int, truncated, ok bool) {
	l := line{Time: r.Time.UTC(), Level: r.Level, Subject: r.Subject, Stream: r.Stream, Seq: r.Seq, Received: r.Received.UTC()}
	if r.JSON {
		l.Event = r.Message
	} else {
		l.Message = string(r.Message)
	}
	start := b.Len()
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&l); err != nil {
		return 0, false, false
	}
	n = b.Len() - start
	if n <= s.cfg.MaxObjectBytes {
		return n, false, true
	}
	if !s.truncate {
		b.Truncate(start)
		return 0, false, false
	}
	// Cut the message (as text) until the line fits: escaping makes the
	// encoded text longer than its bytes, so shrink by the excess.
	l.Event, l.Truncated = nil, true
	msg := r.Message
	keep := len(msg) - (n - s.cfg.MaxObjectBytes)
	for range 8 {
		b.Truncate(start)
		l.Message = string(logevent.Truncate(msg, max(keep, 0)))
		if err := enc.Encode(&l); err != nil {
			return 0, false, false
		}
		n = b.Len() - start
		if n <= s.cfg.MaxObjectBytes {
			return n, true, true
		}
		keep -= n - s.cfg.MaxObjectBytes
	}
	b.Truncate(start)
	return 0, false, false
}

// item is a record bound for an object.
type item struct {
	idx int
	seq uint64
}

// Write writes the records still Pending in out as objects, one per key
// prefix (the prefix's dates are those of the records' receive time), in
// sequence order. It sets the outcome of the records of each object written;
// at the first failed PutObject it returns a *sink.Failure classifying it,
// and the records not yet written stay Pending.
func (s *Sink) Write(ctx context.Context, recs []logevent.Record, out []logevent.Outcome) error {
	byPrefix := map[string][]item{}
	var order []string
	type streamSeq struct {
		stream string
		seq    uint64
	}
	first := map[streamSeq]int{} // the record of each sequence in the batch
	copies := map[int][]int{}    // the later copies of a record's message
	for i := range recs {
		if out[i].Status != logevent.Pending {
			continue
		}
		r := &recs[i]
		if s.done.has(r.Stream, r.Seq, r.Received.UnixNano()) {
			out[i].Status = logevent.Delivered // a redelivered copy of an archived message
			continue
		}
		if r.Seq != 0 {
			k := streamSeq{r.Stream, r.Seq}
			if j, ok := first[k]; ok {
				copies[j] = append(copies[j], i) // delivered when the first copy is
				continue
			}
			first[k] = i
		}
		p := Prefix(s.cfg.Prefix, s.export, recs[i].Received)
		if _, ok := byPrefix[p]; !ok {
			order = append(order, p)
		}
		byPrefix[p] = append(byPrefix[p], item{idx: i, seq: recs[i].Seq})
	}
	sort.Strings(order)
	body := s.bufs.Get().(*bytes.Buffer)
	defer s.bufs.Put(body)
	for _, p := range order {
		items := byPrefix[p]
		sort.SliceStable(items, func(a, b int) bool { return items[a].seq < items[b].seq })
		for len(items) > 0 {
			body.Reset()
			var carried []item
			for len(items) > 0 {
				it := items[0]
				mark := body.Len()
				n, cut, ok := s.line(body, &recs[it.idx])
				if !ok {
					out[it.idx] = logevent.Outcome{Status: logevent.Dead, Reason: events.DeadTooLarge,
						Detail: fmt.Sprintf("event larger than the export's s3.max_object_bytes (%d)", s.cfg.MaxObjectBytes)}
					for _, c := range copies[it.idx] {
						out[c] = out[it.idx]
					}
					items = items[1:]
					continue
				}
				if len(carried) > 0 && mark+n > s.cfg.MaxObjectBytes {
					body.Truncate(mark)
					break
				}
				out[it.idx].Truncated = cut
				carried = append(carried, it)
				items = items[1:]
			}
			if len(carried) == 0 {
				continue
			}
			if err := s.put(ctx, p, body.Bytes(), carried); err != nil {
				return err
			}
			for _, it := range carried {
				out[it.idx].Status = logevent.Delivered
				r := &recs[it.idx]
				s.done.add(r.Stream, r.Seq, r.Received.UnixNano())
				for _, c := range copies[it.idx] {
					out[c] = out[it.idx]
				}
			}
		}
	}
	return nil
}

// Key is the key of an object under prefix holding the lines of data, whose
// first and last stream sequences are first and last:
// <prefix><first>-<last>-<hash>.ndjson[.gz], the sequences zero-padded to 20
// digits (keys sort in stream order) and the hash the first 16 hex digits of
// the SHA-256 of the lines, so that the same records make the same key and
// different records never do.
func Key(prefix string, first, last uint64, data []byte, gzipped bool) string {
	sum := sha256.Sum256(data)
	k := fmt.Sprintf("%s%020d-%020d-%s.ndjson", prefix, first, last, hex.EncodeToString(sum[:8]))
	if gzipped {
		k += ".gz"
	}
	return k
}

// Prefix fills the placeholders of a prefix template: {export}, and {yyyy},
// {mm}, {dd}, {hh} from t in UTC.
func Prefix(tmpl, export string, t time.Time) string {
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	t = t.UTC()
	return strings.NewReplacer("{export}", export, "{yyyy}", fmt.Sprintf("%04d", t.Year()),
		"{mm}", fmt.Sprintf("%02d", int(t.Month())), "{dd}", fmt.Sprintf("%02d", t.Day()),
		"{hh}", fmt.Sprintf("%02d", t.Hour())).Replace(tmpl)
}

func (s *Sink) put(ctx context.Context, prefix string, lines []byte, items []item) error {
	first, last := items[0].seq, items[len(items)-1].seq
	key := Key(prefix, first, last, lines, s.gzip)
	data := lines
	in := &s3.PutObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), ContentType: aws.String("application/x-ndjson"),
		Metadata: map[string]string{"export": s.export, "first-seq": strconv.FormatUint(first, 10),
			"last-seq": strconv.FormatUint(last, 10), "events": strconv.Itoa(len(items))}}
	if s.gzip {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write(lines)
		_ = zw.Close()
		data = zb.Bytes()
		in.ContentEncoding = aws.String("gzip")
	}
	in.Body = bytes.NewReader(data)
	in.ContentLength = aws.Int64(int64(len(data)))
	start := time.Now()
	_, err := s.api.PutObject(ctx, in)
	err = classify("putting object", err)
	metrics.ObserveUpstream(events.ProviderAWS, "PutObject", start, err)
	if err != nil {
		idx := make([]int, len(items))
		for i, it := range items {
			idx[i] = it.idx
		}
		return sink.Fail(err, idx)
	}
	return nil
}

// classify translates an SDK error into an events sentinel with a message
// free of request ids: SlowDown is throttled; 5xx and timeouts unavailable;
// a request S3 refuses for good (bad name, too large) bad_request.
func classify(doing string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", doing, err)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := events.CodeInternal
		switch ae.ErrorCode() {
		case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException":
			code = events.CodeThrottled
		case "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed":
			code = events.CodeUnavailable
		case "NoSuchBucket":
			code = events.CodeNotFound
		case "AccessDenied", "AllAccessDisabled", "AccountProblem":
			code = events.CodeForbidden
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
			code = events.CodeUnauthorized
		case "InvalidBucketName", "KeyTooLongError", "EntityTooLarge", "InvalidArgument", "MetadataTooLarge":
			code = events.CodeBadRequest
		default:
			if st := httpStatus(err); st >= 500 {
				code = events.CodeUnavailable
			}
		}
		return events.Errorf(code, "%s: s3 %s: %s", doing, ae.ErrorCode(), ae.ErrorMessage())
	}
	if st := httpStatus(err); st >= 500 {
		return events.Errorf(events.CodeUnavailable, "%s: s3 answered HTTP %d", doing, st)
	}
	return events.Errorf(events.CodeUnavailable, "%s: s3 unreachable", doing)
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return http.StatusOK
}
