package awsfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// CloudWatch Logs operation names (for Calls, Fail and SetLatency on the Server).
const (
	OpCreateLogGroup     = "CreateLogGroup"
	OpCreateLogStream    = "CreateLogStream"
	OpPutRetentionPolicy = "PutRetentionPolicy"
	OpPutLogEvents       = "PutLogEvents"
)

// The limits of PutLogEvents, as CloudWatch Logs documents them.
const (
	LogsMaxBatchBytes  = 1_048_576
	LogsEventOverhead  = 26
	LogsMaxBatchEvents = 10_000
	LogsMaxSpan        = 24 * time.Hour
	LogsMaxFuture      = 2 * time.Hour
	LogsMaxAge         = 14 * 24 * time.Hour
	// LogsCreateStreamTPS is CloudWatch's CreateLogStream quota per account
	// and region, enforced by default (see SetCreateStreamRate).
	LogsCreateStreamTPS = 50
)

// LogEvent is a stored log event.
type LogEvent struct {
	Timestamp int64 // milliseconds since the epoch
	Message   string
}

// LogCall records one CloudWatch Logs API call.
type LogCall struct {
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
	// AccessKeyID is the access key id that signed the call.
	AccessKeyID string
}

// Logs is the CloudWatch Logs part of the fake (AWS JSON 1.1, X-Amz-Target
// Logs_20140328.*), served on the Server's URL. It enforces the
// PutLogEvents limits, answers with AWS's error shapes, can inject
// throttling and 5xx, stores every event so tests can count arrivals and
// duplicates, and records every call's size so tests can assert that no
// call exceeded a limit. Calls are SigV4-verified like every other service
// of the fake; register the test's keys with Server.AddCredentials.
type Logs struct {
	srv *Server

	mu            sync.Mutex
	now           func() time.Time
	groups        map[string]*logGroup
	calls         []LogCall
	throttleUntil time.Time
	throttleNext  int
	failUntil     time.Time
	failNext      int
	failStatus    int
	delay         time.Duration
	createRate    int                     // CreateLogStream per second per account; 0 = unlimited
	createBuckets map[string]*tokenBucket // by account
	// discard, set by SetKeepEvents(false): accepted events are counted in
	// discarded, not stored.
	discard   bool
	discarded int
	// bufs are decodeBufs for the calls' bodies (their arenas reused while
	// discard is set).
	bufs sync.Pool
}

type logGroup struct {
	retentionDays int
	streams       map[string][]LogEvent
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

func newLogs(s *Server) *Logs {
	return &Logs{srv: s, now: time.Now, groups: map[string]*logGroup{}, failStatus: http.StatusServiceUnavailable,
		createRate: LogsCreateStreamTPS, createBuckets: map[string]*tokenBucket{}}
}

// Logs is the CloudWatch Logs service of the fake.
func (s *Server) Logs() *Logs { return s.logs }

// URL is the endpoint to configure as the client's BaseEndpoint (the Server's URL).
func (l *Logs) URL() string { return l.srv.URL() }

// SetNow replaces the clock used for the too-new / too-old checks and the
// CreateLogStream rate limit.
func (l *Logs) SetNow(now func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = now
}

// SetCreateStreamRate sets the CreateLogStream limit per account: perSecond
// calls a second, with a burst of as many; calls past it answer
// ThrottlingException, as CloudWatch does. 0 turns the limit off. The
// default is LogsCreateStreamTPS.
func (l *Logs) SetCreateStreamRate(perSecond int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.createRate = perSecond
	l.createBuckets = map[string]*tokenBucket{}
}

// ThrottleFor answers every call with ThrottlingException for d.
func (l *Logs) ThrottleFor(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.throttleUntil = time.Now().Add(d)
}

// ThrottleNext answers the next n calls with ThrottlingException.
func (l *Logs) ThrottleNext(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.throttleNext = n
}

// FailFor answers every call with HTTP status (a 5xx) for d.
func (l *Logs) FailFor(d time.Duration, status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failUntil, l.failStatus = time.Now().Add(d), status
}

// FailNext answers the next n calls with HTTP status (a 5xx).
func (l *Logs) FailNext(n, status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failNext, l.failStatus = n, status
}

// SetDelay makes every PutLogEvents take d before it is applied (less if
// the client gives up first).
func (l *Logs) SetDelay(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay = d
}

// CreateGroup creates a log group (with retention days, 0 = never expire).
func (l *Logs) CreateGroup(name string, retentionDays int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.groups[name] = &logGroup{retentionDays: retentionDays, streams: map[string][]LogEvent{}}
}

// CreateStream creates a log stream, and its group if needed.
func (l *Logs) CreateStream(groupName, stream string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[groupName]
	if g == nil {
		g = &logGroup{streams: map[string][]LogEvent{}}
		l.groups[groupName] = g
	}
	if _, ok := g.streams[stream]; !ok {
		g.streams[stream] = nil
	}
}

// SetKeepEvents sets whether accepted events are stored (the default) or
// only counted: with false, every call is read, verified and checked as
// before and its accepted events count in Count, but Events and AllEvents
// see none of them, and the fake's memory stays the same
// however many it takes (for benchmarks: a real CloudWatch keeps the events
// off the machine under test).
func (l *Logs) SetKeepEvents(keep bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.discard = !keep
}

// Events returns a copy of the events stored in a stream.
func (l *Logs) Events(groupName, stream string) []LogEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.groups[groupName]; g != nil {
		return append([]LogEvent(nil), g.streams[stream]...)
	}
	return nil
}

// Streams lists the streams of a group.
func (l *Logs) Streams(groupName string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	if g := l.groups[groupName]; g != nil {
		for s := range g.streams {
			out = append(out, s)
		}
	}
	return out
}

// Retention is the retention of a group in days (0 if unset or missing).
func (l *Logs) Retention(groupName string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.groups[groupName]; g != nil {
		return g.retentionDays
	}
	return 0
}

// Count is the number of events stored in all streams, and of those only
// counted (SetKeepEvents).
func (l *Logs) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.discarded
	for _, g := range l.groups {
		for _, evs := range g.streams {
			n += len(evs)
		}
	}
	return n
}

// AllEvents calls fn for every stored event.
func (l *Logs) AllEvents(fn func(group, stream string, ev LogEvent)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for gn, g := range l.groups {
		for sn, evs := range g.streams {
			for _, ev := range evs {
				fn(gn, sn, ev)
			}
		}
	}
}

// Calls returns a copy of every call recorded.
func (l *Logs) Calls() []LogCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LogCall(nil), l.calls...)
}

type logsError struct {
	status int
	typ    string
	msg    string
}

func (e *logsError) Error() string { return e.typ + ": " + e.msg }

func logsInvalid(format string, args ...any) *logsError {
	return &logsError{http.StatusBadRequest, "InvalidParameterException", fmt.Sprintf(format, args...)}
}

func logsFault(code string) *logsError {
	status := http.StatusBadRequest
	switch code {
	case "ServiceUnavailableException", "ServiceUnavailable":
		status = http.StatusServiceUnavailable
	case "InternalFailure", "InternalServerError":
		status = http.StatusInternalServerError
	}
	return &logsError{status, code, "injected fault"}
}

// serve implements the AWS JSON 1.1 protocol of CloudWatch Logs.
func (l *Logs) serve(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	op, _ := strings.CutPrefix(target, "Logs_20140328.")
	call := LogCall{Op: op}
	record := func(e *logsError) {
		if e != nil {
			call.Error = e.typ
		}
		l.mu.Lock()
		l.calls = append(l.calls, call)
		l.mu.Unlock()
	}
	buf, _ := l.bufs.Get().(*decodeBuf)
	if buf == nil {
		buf = &decodeBuf{}
	}
	defer l.bufs.Put(buf)
	body, err := readBody(r, 8<<20, &buf.body)
	if err != nil {
		e := &logsError{http.StatusBadRequest, "SerializationException", "cannot read body"}
		record(e)
		writeLogsError(w, e)
		return
	}
	caller, akid, why := l.srv.authenticate(r, body, "logs")
	call.AccessKeyID = akid
	l.srv.count(op, akid)
	var authErr *logsError
	switch why {
	case authMissing:
		authErr = &logsError{http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	case authUnknownKey, authBadToken:
		authErr = &logsError{http.StatusBadRequest, "UnrecognizedClientException", "The security token included in the request is invalid."}
	case authBadSignature, authBadContentHash:
		authErr = &logsError{http.StatusBadRequest, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided."}
	case authExpired:
		authErr = &logsError{http.StatusBadRequest, "ExpiredTokenException", "The security token included in the request is expired"}
	}
	if authErr != nil {
		record(authErr)
		writeLogsError(w, authErr)
		return
	}
	if r.Method != http.MethodPost {
		e := &logsError{http.StatusBadRequest, "UnknownOperationException", "unknown target " + target}
		record(e)
		writeLogsError(w, e)
		return
	}
	l.srv.delay(r, op)
	if op == OpPutLogEvents {
		l.mu.Lock()
		d := l.delay
		l.mu.Unlock()
		sleepCtx(r, d)
	}
	if code := l.srv.takeFault(op); code != "" {
		e := logsFault(code)
		record(e)
		writeLogsError(w, e)
		return
	}
	// Decoded before the lock: calls side by side decode side by side.
	var req putLogsRequest
	l.mu.Lock()
	buf.reuseArena = l.discard
	l.mu.Unlock()
	decodeErr := decodeLogsRequest(body, &req, buf)
	req.discard = buf.reuseArena
	l.mu.Lock()
	out, aerr := l.handle(op, &req, decodeErr, caller, &call)
	if aerr != nil {
		call.Error = aerr.typ
	}
	l.calls = append(l.calls, call)
	l.mu.Unlock()
	if aerr != nil {
		writeLogsError(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", newUUID())
	_ = json.NewEncoder(w).Encode(out)
}

// readBody reads at most limit bytes of r's body, into *scratch (grown as
// needed) when its length is known; the body is valid until *scratch is
// used again.
func readBody(r *http.Request, limit int64, scratch *[]byte) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= limit {
		b := grown(*scratch, int(n))
		*scratch = b
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, limit))
}

func sleepCtx(r *http.Request, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func writeLogsError(w http.ResponseWriter, e *logsError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", e.typ)
	w.Header().Set("X-Amzn-Requestid", newUUID())
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.typ, "message": e.msg})
}

type putLogsRequest struct {
	LogGroupName    string          `json:"logGroupName"`
	LogStreamName   string          `json:"logStreamName"`
	LogEvents       []inputLogEvent `json:"logEvents"`
	RetentionInDays int             `json:"retentionInDays"`
	// discard is SetKeepEvents's mode when the request was decoded (its
	// messages then point into a reused arena): put follows it, even if the
	// mode changed meanwhile.
	discard bool
}

type inputLogEvent struct {
	Timestamp *int64  `json:"timestamp"`
	Message   *string `json:"message"`
}

var groupNameRE = regexp.MustCompile(`^[\.\-_/#A-Za-z0-9]{1,512}$`)

// injected returns the fault injected with ThrottleNext/FailNext and friends. Callers hold l.mu.
func (l *Logs) injected() *logsError {
	now := time.Now()
	switch {
	case l.throttleNext > 0 || now.Before(l.throttleUntil):
		if l.throttleNext > 0 {
			l.throttleNext--
		}
		return &logsError{http.StatusBadRequest, "ThrottlingException", "Rate exceeded"}
	case l.failNext > 0 || now.Before(l.failUntil):
		if l.failNext > 0 {
			l.failNext--
		}
		return &logsError{l.failStatus, "ServiceUnavailableException", "The service is unavailable"}
	}
	return nil
}

// takeCreateToken applies the CreateLogStream rate limit. Callers hold l.mu.
func (l *Logs) takeCreateToken(account string) bool {
	if l.createRate <= 0 {
		return true
	}
	now := l.now()
	b := l.createBuckets[account]
	if b == nil {
		b = &tokenBucket{tokens: float64(l.createRate), last: now}
		l.createBuckets[account] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(l.createRate), b.tokens+el.Seconds()*float64(l.createRate))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// accountOf is the account id in an identity ARN (the fake's account when there is none).
func accountOf(arn string) string {
	if f := strings.Split(arn, ":"); len(f) >= 5 && f[4] != "" {
		return f[4]
	}
	return DefaultAccount
}

// handle runs one call, its body decoded into req (or decodeErr). Callers hold l.mu.
func (l *Logs) handle(op string, req *putLogsRequest, decodeErr error, caller Credentials, call *LogCall) (any, *logsError) {
	if e := l.injected(); e != nil {
		return nil, e
	}
	if decodeErr != nil {
		return nil, &logsError{http.StatusBadRequest, "SerializationException", "malformed JSON"}
	}
	call.Group, call.Stream = req.LogGroupName, req.LogStreamName
	if !groupNameRE.MatchString(req.LogGroupName) {
		return nil, logsInvalid("1 validation error detected: Value at 'logGroupName' failed to satisfy constraint")
	}
	if !l.srv.allowed(caller, "logs:"+op, req.LogGroupName) {
		return nil, &logsError{http.StatusBadRequest, "AccessDeniedException",
			fmt.Sprintf("User: %s is not authorized to perform: logs:%s on resource: %s", caller.ARN, op, req.LogGroupName)}
	}
	switch op {
	case OpCreateLogGroup:
		if l.groups[req.LogGroupName] != nil {
			return nil, &logsError{http.StatusBadRequest, "ResourceAlreadyExistsException", "The specified log group already exists"}
		}
		l.groups[req.LogGroupName] = &logGroup{streams: map[string][]LogEvent{}}
		return struct{}{}, nil
	case OpPutRetentionPolicy:
		g := l.groups[req.LogGroupName]
		if g == nil {
			return nil, &logsError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log group does not exist."}
		}
		g.retentionDays = req.RetentionInDays
		return struct{}{}, nil
	case OpCreateLogStream:
		if err := checkStreamName(req.LogStreamName); err != nil {
			return nil, err
		}
		if !l.takeCreateToken(accountOf(caller.ARN)) {
			return nil, &logsError{http.StatusBadRequest, "ThrottlingException", "Rate exceeded"}
		}
		g := l.groups[req.LogGroupName]
		if g == nil {
			return nil, &logsError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log group does not exist."}
		}
		if _, ok := g.streams[req.LogStreamName]; ok {
			return nil, &logsError{http.StatusBadRequest, "ResourceAlreadyExistsException", "The specified log stream already exists"}
		}
		g.streams[req.LogStreamName] = nil
		return struct{}{}, nil
	case OpPutLogEvents:
		return l.put(req, call)
	}
	return nil, &logsError{http.StatusBadRequest, "UnknownOperationException", "unsupported operation " + op}
}

func checkStreamName(s string) *logsError {
	if s == "" || len(s) > 512 || strings.ContainsAny(s, ":*") || !utf8.ValidString(s) {
		return logsInvalid("1 validation error detected: Value at 'logStreamName' failed to satisfy constraint")
	}
	return nil
}

type rejectedLogs struct {
	TooNewLogEventStartIndex *int `json:"tooNewLogEventStartIndex,omitempty"`
	TooOldLogEventEndIndex   *int `json:"tooOldLogEventEndIndex,omitempty"`
	ExpiredLogEventEndIndex  *int `json:"expiredLogEventEndIndex,omitempty"`
}

func (l *Logs) put(req *putLogsRequest, call *LogCall) (any, *logsError) {
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
			return nil, logsInvalid("log event %d: timestamp and message are required", i)
		}
		if len(*e.Message) == 0 {
			return nil, logsInvalid("1 validation error detected: Value at 'logEvents.%d.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1", i+1)
		}
		bytes += len(*e.Message) + LogsEventOverhead
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
		return nil, logsInvalid("1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length greater than or equal to 1")
	case n > LogsMaxBatchEvents:
		return nil, logsInvalid("1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length less than or equal to 10000")
	case bytes > LogsMaxBatchBytes:
		return nil, logsInvalid("Upload too large: %d bytes exceeds limit of %d", bytes, LogsMaxBatchBytes)
	case !call.Ordered:
		return nil, logsInvalid("Log events in a single PutLogEvents request must be in chronological order.")
	case time.Duration(last-first)*time.Millisecond > LogsMaxSpan:
		return nil, logsInvalid("The batch of log events in a single PutLogEvents request cannot span more than 24 hours.")
	}
	g := l.groups[req.LogGroupName]
	if g == nil {
		return nil, &logsError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log group does not exist."}
	}
	evs, ok := g.streams[req.LogStreamName]
	if !ok {
		return nil, &logsError{http.StatusBadRequest, "ResourceNotFoundException", "The specified log stream does not exist."}
	}
	now := l.now()
	tooNewAt := now.Add(LogsMaxFuture).UnixMilli()
	tooOldAt := now.Add(-LogsMaxAge).UnixMilli()
	expiredAt := int64(-1 << 62)
	if g.retentionDays > 0 {
		expiredAt = now.Add(-time.Duration(g.retentionDays) * 24 * time.Hour).UnixMilli()
	}
	var info rejectedLogs
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
	from := max(tooOldEnd, expiredEnd)
	call.Accepted = max(tooNewStart-from, 0)
	if req.discard {
		l.discarded += call.Accepted
	} else {
		for i := from; i < tooNewStart; i++ {
			evs = append(evs, LogEvent{Timestamp: *req.LogEvents[i].Timestamp, Message: *req.LogEvents[i].Message})
		}
		g.streams[req.LogStreamName] = evs
	}
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
	if info != (rejectedLogs{}) {
		out["rejectedLogEventsInfo"] = info
	}
	return out, nil
}
