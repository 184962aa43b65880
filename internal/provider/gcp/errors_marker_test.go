package gcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestErrorsKeepGoogleTextOutOfReplies: a Google API's own message (here a
// marker) never reaches the wire message; the log's Detail keeps it.
func TestErrorsKeepGoogleTextOutOfReplies(t *testing.T) {
	const marker = "MARKER-google-b7a0"
	ctx := context.Background()
	p := &Provider{identity: "sa@p.iam.gserviceaccount.com"}
	for _, c := range []codes.Code{codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied, codes.Unauthenticated,
		codes.ResourceExhausted, codes.InvalidArgument, codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown} {
		cause := status.Error(c, marker)
		for name, err := range map[string]error{
			"secret":        p.secretError(ctx, cause, 1),
			"impersonation": impersonationError(ctx, cause),
			"token":         classifyTokenError(fmt.Errorf("auth: %w", cause)),
		} {
			check(t, fmt.Sprintf("%s/%s", name, c), err, marker)
		}
	}
	check(t, "network", classifyTokenError(&net.OpError{Op: "dial", Err: errors.New(marker)}), marker)
}

func check(t *testing.T, what string, err error, marker string) {
	t.Helper()
	w := events.AsWire(err)
	if w.Code == events.CodeInternal || strings.Contains(w.Message, marker) {
		t.Errorf("%s: wire %+v", what, w)
	}
	if !strings.Contains(events.Detail(err), marker) {
		t.Errorf("%s: Detail %q lost the cause", what, events.Detail(err))
	}
}
