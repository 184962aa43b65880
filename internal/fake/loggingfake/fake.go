// Package loggingfake is an in-process Cloud Logging for tests: a gRPC
// LoggingServiceV2 on 127.0.0.1 that enforces the WriteLogEntries limits of
// docs/cloud-limits.md (request ≤ 10 MB, entry ≤ 256 KiB), deduplicates by
// insertId, answers partialSuccess with per-entry errors, and can inject
// RESOURCE_EXHAUSTED and UNAVAILABLE.
package loggingfake

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"cloud.google.com/go/logging/apiv2/loggingpb"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The limits of WriteLogEntries.
const (
	MaxRequestBytes = 10 << 20
	MaxEntryBytes   = 256 << 10
)

// Write records one WriteLogEntries call.
type Write struct {
	Entries int
	Bytes   int
	// Code is the gRPC code answered (OK on success).
	Code codes.Code
	// Rejected counts entries refused by per-entry errors.
	Rejected int
}

// Fake is the fake Cloud Logging service.
type Fake struct {
	loggingpb.UnimplementedLoggingServiceV2Server

	srv  *grpc.Server
	addr string

	mu           sync.Mutex
	entries      []*loggingpb.LogEntry
	seen         map[string]bool
	duplicates   int
	writes       []Write
	exhaustUntil time.Time
	exhaustNext  int
	failUntil    time.Time
	failNext     int
	reject       func(*loggingpb.LogEntry) string
}

// New starts a fake on 127.0.0.1; Close stops it.
func New() (*Fake, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening: %w", err)
	}
	f := &Fake{addr: lis.Addr().String(), seen: map[string]bool{},
		srv: grpc.NewServer(grpc.MaxRecvMsgSize(4 * MaxRequestBytes))}
	loggingpb.RegisterLoggingServiceV2Server(f.srv, f)
	go func() { _ = f.srv.Serve(lis) }()
	return f, nil
}

// Addr is the server's host:port.
func (f *Fake) Addr() string { return f.addr }

// ClientOptions connect a logging client to the fake without credentials.
func (f *Fake) ClientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(f.addr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

// Close stops the server.
func (f *Fake) Close() { f.srv.Stop() }

// ExhaustFor answers RESOURCE_EXHAUSTED for d.
func (f *Fake) ExhaustFor(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exhaustUntil = time.Now().Add(d)
}

// ExhaustNext answers RESOURCE_EXHAUSTED to the next n calls. With
// ExhaustFor, calls are refused until both are spent: at least n of them,
// and for at least d.
func (f *Fake) ExhaustNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exhaustNext = n
}

// FailFor answers UNAVAILABLE for d.
func (f *Fake) FailFor(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failUntil = time.Now().Add(d)
}

// FailNext answers UNAVAILABLE to the next n calls. With FailFor, calls are
// refused until both are spent: at least n of them, and for at least d.
func (f *Fake) FailNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = n
}

// Refused is the number of calls answered with code (an injected
// RESOURCE_EXHAUSTED or UNAVAILABLE, or any other code the fake answered).
func (f *Fake) Refused(code codes.Code) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, w := range f.writes {
		if w.Code == code {
			n++
		}
	}
	return n
}

// RejectWhen makes fn decide per entry: a non-empty reason rejects the entry
// with INVALID_ARGUMENT in the partial errors.
func (f *Fake) RejectWhen(fn func(*loggingpb.LogEntry) string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reject = fn
}

// Entries returns the stored entries (each insertId once).
func (f *Fake) Entries() []*loggingpb.LogEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*loggingpb.LogEntry(nil), f.entries...)
}

// Count is the number of stored entries.
func (f *Fake) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

// Duplicates counts entries dropped because their insertId was seen before.
func (f *Fake) Duplicates() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.duplicates
}

// Writes returns every call recorded.
func (f *Fake) Writes() []Write {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Write(nil), f.writes...)
}

// WriteLogEntries implements the RPC.
func (f *Fake) WriteLogEntries(_ context.Context, req *loggingpb.WriteLogEntriesRequest) (*loggingpb.WriteLogEntriesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := Write{Entries: len(req.Entries), Bytes: proto.Size(req)}
	resp, err := f.write(req, &w)
	w.Code = status.Code(err)
	f.writes = append(f.writes, w)
	return resp, err
}

func (f *Fake) write(req *loggingpb.WriteLogEntriesRequest, w *Write) (*loggingpb.WriteLogEntriesResponse, error) {
	now := time.Now()
	if f.exhaustNext > 0 || now.Before(f.exhaustUntil) {
		if f.exhaustNext > 0 {
			f.exhaustNext--
		}
		return nil, status.Error(codes.ResourceExhausted, "Quota exceeded for quota metric 'Write requests'")
	}
	if f.failNext > 0 || now.Before(f.failUntil) {
		if f.failNext > 0 {
			f.failNext--
		}
		return nil, status.Error(codes.Unavailable, "The service is currently unavailable.")
	}
	if w.Bytes > MaxRequestBytes {
		return nil, status.Errorf(codes.InvalidArgument, "Request payload size exceeds the limit: %d bytes.", MaxRequestBytes)
	}
	if len(req.Entries) == 0 {
		return nil, status.Error(codes.InvalidArgument, "at least one log entry is required")
	}
	bad := map[int32]*spb.Status{}
	merged := make([]*loggingpb.LogEntry, len(req.Entries))
	for i, e := range req.Entries {
		e = proto.Clone(e).(*loggingpb.LogEntry)
		if e.LogName == "" {
			e.LogName = req.LogName
		}
		if e.Resource == nil {
			e.Resource = req.Resource
		}
		if len(req.Labels) > 0 {
			if e.Labels == nil {
				e.Labels = map[string]string{}
			}
			for k, v := range req.Labels {
				if _, ok := e.Labels[k]; !ok {
					e.Labels[k] = v
				}
			}
		}
		merged[i] = e
		switch {
		case e.LogName == "":
			bad[int32(i)] = &spb.Status{Code: int32(codes.InvalidArgument), Message: "log name is required"}
		case e.Resource == nil || e.Resource.Type == "":
			bad[int32(i)] = &spb.Status{Code: int32(codes.InvalidArgument), Message: "monitored resource is required"}
		case proto.Size(e) > MaxEntryBytes:
			bad[int32(i)] = &spb.Status{Code: int32(codes.InvalidArgument), Message: fmt.Sprintf("Log entry with size %d exceeds maximum size of %d", proto.Size(e), MaxEntryBytes)}
		case f.reject != nil:
			if reason := f.reject(e); reason != "" {
				bad[int32(i)] = &spb.Status{Code: int32(codes.InvalidArgument), Message: reason}
			}
		}
	}
	w.Rejected = len(bad)
	if len(bad) > 0 && !req.PartialSuccess {
		return nil, partial(bad)
	}
	for i, e := range merged {
		if _, rejected := bad[int32(i)]; rejected {
			continue
		}
		key := e.LogName + "\x00" + e.InsertId + "\x00" + e.GetTimestamp().AsTime().String()
		if e.InsertId != "" && f.seen[key] {
			f.duplicates++
			continue
		}
		f.seen[key] = true
		f.entries = append(f.entries, e)
	}
	if len(bad) > 0 {
		return nil, partial(bad)
	}
	return &loggingpb.WriteLogEntriesResponse{}, nil
}

func partial(bad map[int32]*spb.Status) error {
	st := status.New(codes.InvalidArgument, "Log entries with invalid fields were rejected")
	st, err := st.WithDetails(&loggingpb.WriteLogEntriesPartialErrors{LogEntryErrors: bad},
		&errdetails.DebugInfo{Detail: "loggingfake"})
	if err != nil {
		return status.Error(codes.Internal, "building partial errors")
	}
	return st.Err()
}
