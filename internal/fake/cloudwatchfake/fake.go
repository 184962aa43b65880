// Package cloudwatchfake is an in-process CloudWatch Logs for tests: an
// httptest server speaking AWS JSON 1.1 (X-Amz-Target Logs_20140328.*) that
// enforces the PutLogEvents limits of design.md section 6, answers with AWS's
// error shapes, can inject throttling and 5xx, stores every event so tests can
// count arrivals and duplicates, and records every call's size so tests can
// assert that no call exceeded a limit.
package cloudwatchfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// The limits of PutLogEvents (design.md section 6).
const (
	MaxBatchBytes  = 1_048_576
	EventOverhead  = 26
	MaxBatchEvents = 10_000
	MaxSpan        = 24 * time.Hour
	MaxFuture      = 2 * time.Hour
	MaxAge         = 14 * 24 * time.Hour
)

// Event is a stored log event.
type Event struct {
	Timestamp int64 // milliseconds since the epoch
	Message   string
}

// Call records one API call.
type Call struct {
	Op       string // PutLogEvents, CreateLogGroup, ...
	Group    string
	Stream   string
	Events   int
	Bytes    int // UTF-8 message bytes + 26 per event
	SpanMS   int64
	Ordered  bool
	Accepted int
	// Error is the __type of the error reply, "" on success.
	Error string
	// AccessKeyID is the key id from the SigV4 Authorization header.
	AccessKeyID string
}

// Fake is the fake CloudWatch Logs service.
type Fake struct {
	srv *httptest.Server

	mu            sync.Mutex
	now           func() time.Time
	groups        map[string]*group
	calls         []Call
	throttleUntil time.Time
	throttleNext  int
	failUntil     time.Time
	failNext      int
	failStatus    int
	delay         time.Duration
}

type group struct {
	retentionDays int
	streams       map[string][]Event
}

// New starts a fake; it is closed by Close.
func New() *Fake {
	f := &Fake{now: time.Now, groups: map[string]*group{}, failStatus: http.StatusServiceUnavailable}
	f.srv = httptest.NewServer(f)
	return f
}

// URL is the endpoint to configure as the client's BaseEndpoint.
func (f *Fake) URL() string { return f.srv.URL }

// Close shuts the server down.
func (f *Fake) Close() { f.srv.Close() }

// SetNow replaces the clock used for the too-new / too-old checks.
func (f *Fake) SetNow(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

// ThrottleFor answers every call with ThrottlingException for d.
func (f *Fake) ThrottleFor(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.throttleUntil = time.Now().Add(d)
}

// ThrottleNext answers the next n calls with ThrottlingException.
func (f *Fake) ThrottleNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.throttleNext = n
}

// FailFor answers every call with HTTP status (a 5xx) for d.
func (f *Fake) FailFor(d time.Duration, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failUntil, f.failStatus = time.Now().Add(d), status
}

// FailNext answers the next n calls with HTTP status (a 5xx).
func (f *Fake) FailNext(n, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext, f.failStatus = n, status
}

// SetDelay makes every PutLogEvents take d before it is applied.
func (f *Fake) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// CreateGroup creates a log group (with retention days, 0 = never expire).
func (f *Fake) CreateGroup(name string, retentionDays int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups[name] = &group{retentionDays: retentionDays, streams: map[string][]Event{}}
}

// CreateStream creates a log stream, and its group if needed.
func (f *Fake) CreateStream(groupName, stream string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.groups[groupName]
	if g == nil {
		g = &group{streams: map[string][]Event{}}
		f.groups[groupName] = g
	}
	if _, ok := g.streams[stream]; !ok {
		g.streams[stream] = nil
	}
}

// Events returns a copy of the events stored in a stream.
func (f *Fake) Events(groupName, stream string) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	if g := f.groups[groupName]; g != nil {
		return append([]Event(nil), g.streams[stream]...)
	}
	return nil
}

// Streams lists the streams of a group.
func (f *Fake) Streams(groupName string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	if g := f.groups[groupName]; g != nil {
		for s := range g.streams {
			out = append(out, s)
		}
	}
	return out
}

// Retention is the retention of a group in days (0 if unset or missing).
func (f *Fake) Retention(groupName string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if g := f.groups[groupName]; g != nil {
		return g.retentionDays
	}
	return 0
}

// Count is the number of events stored in all streams.
func (f *Fake) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, g := range f.groups {
		for _, evs := range g.streams {
			n += len(evs)
		}
	}
	return n
}

// AllEvents calls fn for every stored event.
func (f *Fake) AllEvents(fn func(group, stream string, ev Event)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for gn, g := range f.groups {
		for sn, evs := range g.streams {
			for _, ev := range evs {
				fn(gn, sn, ev)
			}
		}
	}
}

// Calls returns a copy of every call recorded.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

type apiError struct {
	status int
	typ    string
	msg    string
}

func (e *apiError) Error() string { return e.typ + ": " + e.msg }

func invalid(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidParameterException", fmt.Sprintf(format, args...)}
}

var credRE = regexp.MustCompile(`Credential=([^/,\s]+)/`)

// ServeHTTP implements the AWS JSON 1.1 protocol.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, "Logs_20140328.")
	if r.Method != http.MethodPost || !ok {
		writeError(w, &apiError{http.StatusBadRequest, "UnknownOperationException", "unknown target " + target})
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, invalid("reading body"))
		return
	}
	call := Call{Op: op}
	if m := credRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		call.AccessKeyID = m[1]
	}
	if op == "PutLogEvents" {
		f.mu.Lock()
		d := f.delay
		f.mu.Unlock()
		if d > 0 {
			time.Sleep(d)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out, aerr := f.handle(op, body, &call)
	if aerr != nil {
		call.Error = aerr.typ
	}
	f.calls = append(f.calls, call)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", "fake-request")
	_ = json.NewEncoder(w).Encode(out)
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", e.typ)
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.typ, "message": e.msg})
}

type putRequest struct {
	LogGroupName  string `json:"logGroupName"`
	LogStreamName string `json:"logStreamName"`
	LogEvents     []struct {
		Timestamp *int64  `json:"timestamp"`
		Message   *string `json:"message"`
	} `json:"logEvents"`
	RetentionInDays int `json:"retentionInDays"`
}

var groupNameRE = regexp.MustCompile(`^[\.\-_/#A-Za-z0-9]{1,512}$`)

func (f *Fake) injected() *apiError {
	now := time.Now()
	switch {
	case f.throttleNext > 0 || now.Before(f.throttleUntil):
		if f.throttleNext > 0 {
			f.throttleNext--
		}
		return &apiError{http.StatusBadRequest, "ThrottlingException", "Rate exceeded"}
	case f.failNext > 0 || now.Before(f.failUntil):
		if f.failNext > 0 {
			f.failNext--
		}
		return &apiError{f.failStatus, "ServiceUnavailableException", "The service is unavailable"}
	}
	return nil
}

func (f *Fake) handle(op string, body []byte, call *Call) (any, *apiError) {
	if e := f.injected(); e != nil {
		return nil, e
	}
	var req putRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", "malformed JSON"}
	}
	call.Group, call.Stream = req.LogGroupName, req.LogStreamName
	if !groupNameRE.MatchString(req.LogGroupName) {
		return nil, invalid("1 validation error detected: Value at 'logGroupName' failed to satisfy constraint")
	}
	switch op {
	case "CreateLogGroup":
		if f.groups[req.LogGroupName] != nil {
			return nil, &apiError{http.StatusBadRequest, "ResourceAlreadyExistsException", "The specified log group already exists"}
		}
		f.groups[req.LogGroupName] = &group{streams: map[string][]Event{}}
		return struct{}{}, nil
	case "PutRetentionPolicy":
		g := f.groups[req.LogGroupName]
		if g == nil {
			return nil, &apiError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log group does not exist."}
		}
		g.retentionDays = req.RetentionInDays
		return struct{}{}, nil
	case "CreateLogStream":
		if err := checkStreamName(req.LogStreamName); err != nil {
			return nil, err
		}
		g := f.groups[req.LogGroupName]
		if g == nil {
			return nil, &apiError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log group does not exist."}
		}
		if _, ok := g.streams[req.LogStreamName]; ok {
			return nil, &apiError{http.StatusBadRequest, "ResourceAlreadyExistsException", "The specified log stream already exists"}
		}
		g.streams[req.LogStreamName] = nil
		return struct{}{}, nil
	case "PutLogEvents":
		return f.put(&req, call)
	}
	return nil, &apiError{http.StatusBadRequest, "UnknownOperationException", "unsupported operation " + op}
}

func checkStreamName(s string) *apiError {
	if s == "" || len(s) > 512 || strings.ContainsAny(s, ":*") || !utf8.ValidString(s) {
		return invalid("1 validation error detected: Value at 'logStreamName' failed to satisfy constraint")
	}
	return nil
}

type rejected struct {
	TooNewLogEventStartIndex *int `json:"tooNewLogEventStartIndex,omitempty"`
	TooOldLogEventEndIndex   *int `json:"tooOldLogEventEndIndex,omitempty"`
	ExpiredLogEventEndIndex  *int `json:"expiredLogEventEndIndex,omitempty"`
}

func (f *Fake) put(req *putRequest, call *Call) (any, *apiError) {
	if err := checkStreamName(req.LogStreamName); err != nil {
		return nil, err
	}
	n := len(req.LogEvents)
	call.Events = n
	call.Ordered = true
	bytes := 0
	var first, last int64
	for i, e := range req.LogEvents {
		if e.Timestamp == nil || e.Message == nil {
			return nil, invalid("log event %d: timestamp and message are required", i)
		}
		if len(*e.Message) == 0 {
			return nil, invalid("1 validation error detected: Value at 'logEvents.%d.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1", i+1)
		}
		bytes += len(*e.Message) + EventOverhead
		ts := *e.Timestamp
		if i == 0 {
			first = ts
		} else if ts < last {
			call.Ordered = false
		}
		last = ts
	}
	call.Bytes = bytes
	if n > 0 {
		call.SpanMS = last - first
	}
	switch {
	case n == 0:
		return nil, invalid("1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length greater than or equal to 1")
	case n > MaxBatchEvents:
		return nil, invalid("1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length less than or equal to 10000")
	case bytes > MaxBatchBytes:
		return nil, invalid("Upload too large: %d bytes exceeds limit of %d", bytes, MaxBatchBytes)
	case !call.Ordered:
		return nil, invalid("Log events in a single PutLogEvents request must be in chronological order.")
	case time.Duration(last-first)*time.Millisecond > MaxSpan:
		return nil, invalid("The batch of log events in a single PutLogEvents request cannot span more than 24 hours.")
	}
	g := f.groups[req.LogGroupName]
	if g == nil {
		return nil, &apiError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log group does not exist."}
	}
	evs, ok := g.streams[req.LogStreamName]
	if !ok {
		return nil, &apiError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log stream does not exist."}
	}
	now := f.now()
	tooNewAt := now.Add(MaxFuture).UnixMilli()
	tooOldAt := now.Add(-MaxAge).UnixMilli()
	expiredAt := int64(-1 << 62)
	if g.retentionDays > 0 {
		expiredAt = now.Add(-time.Duration(g.retentionDays) * 24 * time.Hour).UnixMilli()
	}
	var info rejected
	tooOldEnd, expiredEnd, tooNewStart := 0, 0, n
	for i, e := range req.LogEvents {
		ts := *e.Timestamp
		if ts < expiredAt {
			expiredEnd = i + 1
		}
		if ts < tooOldAt {
			tooOldEnd = i + 1
		}
		if ts > tooNewAt && i < tooNewStart {
			tooNewStart = i
		}
	}
	for i := max(tooOldEnd, expiredEnd); i < tooNewStart; i++ {
		evs = append(evs, Event{Timestamp: *req.LogEvents[i].Timestamp, Message: *req.LogEvents[i].Message})
		call.Accepted++
	}
	g.streams[req.LogStreamName] = evs
	if tooOldEnd > 0 {
		info.TooOldLogEventEndIndex = &tooOldEnd
	}
	if expiredEnd > 0 {
		info.ExpiredLogEventEndIndex = &expiredEnd
	}
	if tooNewStart < n {
		info.TooNewLogEventStartIndex = &tooNewStart
	}
	out := map[string]any{"nextSequenceToken": fmt.Sprintf("%056d", len(evs))}
	if info != (rejected{}) {
		out["rejectedLogEventsInfo"] = info
	}
	return out, nil
}
