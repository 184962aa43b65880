package aws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestMapErrorKeepsSDKTextOutOfReplies: the SDK's text (here a marker in the
// API error's message, a URL, a credentials source's error) never reaches
// the wire message; the log's Detail keeps it.
func TestMapErrorKeepsSDKTextOutOfReplies(t *testing.T) {
	const marker = "MARKER-sdk-4d1e"
	resp := func(code int) *smithyhttp.Response {
		return &smithyhttp.Response{Response: &http.Response{StatusCode: code}}
	}
	tests := []struct {
		name string
		err  error
		code events.Code
	}{
		{"access denied", &smithy.GenericAPIError{Code: "AccessDeniedException", Message: marker}, events.CodeForbidden},
		{"not found", &smithy.GenericAPIError{Code: "ResourceNotFoundException", Message: marker}, events.CodeNotFound},
		{"throttled", &smithy.GenericAPIError{Code: "ThrottlingException", Message: marker}, events.CodeThrottled},
		{"server", &smithy.GenericAPIError{Code: "InternalServiceError", Message: marker, Fault: smithy.FaultServer}, events.CodeUnavailable},
		{"unknown", &smithy.GenericAPIError{Code: "WeirdException", Message: marker}, events.CodeInternal},
		{"http 502", &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{Response: resp(502), Err: errors.New(marker)}}, events.CodeUnavailable},
		{"network", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect refused " + marker)}, events.CodeUnavailable},
		{"credentials", &credentialsError{stage: "task_role", err: errors.New("GET http://169.254.170.2/" + marker)}, events.CodeUnauthorized},
		{"deadline", fmt.Errorf("%s: %w", marker, context.DeadlineExceeded), events.CodeTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mapError(context.Background(), "GetSecretValue", "biodb01", fmt.Errorf("operation error: %w", tt.err))
			w := events.AsWire(fmt.Errorf("connection %q: %w", "aws-sm-bio", err))
			if w.Code != tt.code {
				t.Errorf("code %s, want %s (%s)", w.Code, tt.code, w.Message)
			}
			if strings.Contains(w.Message, marker) || !strings.HasPrefix(w.Message, `connection "aws-sm-bio": aws: `) {
				t.Errorf("wire message %q", w.Message)
			}
			if !strings.Contains(events.Detail(err), marker) {
				t.Errorf("Detail %q lost the SDK error", events.Detail(err))
			}
			if !errors.Is(err, tt.err) {
				t.Error("the SDK error is not reachable with errors.Is")
			}
		})
	}
}
