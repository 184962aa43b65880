package gcpfake

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Methods that faults can target. The token endpoint is "Token"; its faults
// become the HTTP status Google's token endpoint uses for the code (429 for
// ResourceExhausted, 503 for Unavailable, 400 invalid_grant otherwise).
const (
	MethodAccessSecretVersion = "AccessSecretVersion"
	MethodGenerateAccessToken = "GenerateAccessToken"
	MethodToken               = "Token"
)

// Fault is an injected failure.
type Fault struct {
	Code    codes.Code
	Message string
}

// Fail makes the next times calls of method fail with code (after the bearer
// check, so the call is still recorded).
func (s *Server) Fail(method string, code codes.Code, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < times; i++ {
		s.faults[method] = append(s.faults[method], Fault{Code: code, Message: "injected " + code.String()})
	}
}

// Delay makes every call of method take d before answering; a call whose
// deadline passes first fails with DeadlineExceeded, as Google's front end does.
func (s *Server) Delay(method string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delays[method] = d
}

// PendingFaults is how many injected faults of method are still queued.
func (s *Server) PendingFaults(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults[method])
}

// nextFault pops the next queued fault of method.
func (s *Server) nextFault(method string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[method]
	if len(q) == 0 {
		return Fault{}, false
	}
	s.faults[method] = q[1:]
	return q[0], true
}

// inject applies the delay and the next fault of method.
func (s *Server) inject(ctx context.Context, method string) error {
	s.mu.Lock()
	d := s.delays[method]
	s.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return status.Error(codes.DeadlineExceeded, "Deadline expired before operation could complete.")
		}
	}
	if f, ok := s.nextFault(method); ok {
		return status.Error(f.Code, f.Message)
	}
	return nil
}
