package aws

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/cloudbridge/cloudbridge/events"
)

// Codes AWS uses for a request whose credentials are not valid.
var unauthorizedCodes = map[string]bool{
	"UnrecognizedClientException":         true,
	"InvalidSignatureException":           true,
	"ExpiredTokenException":               true,
	"InvalidClientTokenId":                true,
	"SignatureDoesNotMatch":               true,
	"ExpiredToken":                        true,
	"IncompleteSignature":                 true,
	"MissingAuthenticationToken":          true,
	"MissingAuthenticationTokenException": true,
	"InvalidToken":                        true,
}

// mapError translates an error of the AWS call op (about subject, e.g. the
// secret name; may be empty) into a wire error of package events: its message
// is safe to send (the operation, the subject and AWS's error code; no secret
// value, key, request id or SDK text), and the SDK error stays its cause, for
// the log and for errors.As.
func mapError(ctx context.Context, op, subject string, err error) error {
	if err == nil {
		return nil
	}
	what := "aws: " + op
	if subject != "" {
		what += " " + subject
	}
	ce := innermostCredentialsError(err)
	if ce != nil {
		what = "aws: obtaining credentials (" + ce.stage + ")"
	}
	mk := func(code *events.Error, format string, args ...any) error {
		return events.Wrap(code.Code, err, "%s: %s", what, fmt.Sprintf(format, args...))
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return mk(events.ErrTimeout, "deadline exceeded")
	}
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return mk(events.ErrTimeout, "request canceled")
	}
	if ce != nil && ce.stage != stageAssumeRole {
		// The connection's own credentials source (static keys, IMDS, the
		// container endpoint, the default chain) failed: down, or refused us.
		if isNetworkError(ce.err) || httpStatus(ce.err) >= 500 || isServerFault(ce.err) {
			return mk(events.ErrUnavailable, "the credentials source is unavailable")
		}
		if code := apiCode(ce.err); code != "" {
			return mk(events.ErrUnauthorized, "the credentials source refused (%s)", code)
		}
		return mk(events.ErrUnauthorized, "no credentials available")
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		switch {
		case code == "ResourceNotFoundException":
			return mk(events.ErrNotFound, "not found")
		case code == "DecryptionFailure":
			return mk(events.ErrForbidden, "KMS could not decrypt the secret (DecryptionFailure): the connection's identity needs kms:Decrypt on the secret's KMS key")
		case code == "AccessDeniedException" || code == "AccessDenied":
			return mk(events.ErrForbidden, "access denied by AWS (%s)", code)
		case unauthorizedCodes[code]:
			return mk(events.ErrUnauthorized, "AWS rejected the connection's credentials (%s)", code)
		case isThrottle(code):
			return mk(events.ErrThrottled, "throttled by AWS (%s), retries exhausted", code)
		case code == "ValidationException" || code == "InvalidParameterException" || code == "ValidationError":
			return mk(events.ErrBadRequest, "AWS rejected the request parameters (%s)", code)
		case code == "InvalidRequestException":
			return mk(events.ErrNotFound, "not readable in its current state, e.g. marked for deletion (%s)", code)
		case ae.ErrorFault() == smithy.FaultServer:
			return mk(events.ErrUnavailable, "AWS is unavailable (%s)", code)
		}
		if st := httpStatus(err); st >= 500 {
			return mk(events.ErrUnavailable, "AWS is unavailable (HTTP %d)", st)
		}
		return mk(events.ErrInternal, "unexpected AWS error %s", code)
	}
	if st := httpStatus(err); st >= 500 {
		return mk(events.ErrUnavailable, "AWS is unavailable (HTTP %d)", st)
	}
	return mk(events.ErrUnavailable, "AWS is unreachable")
}

// innermostCredentialsError is the credentials failure closest to the cause:
// with AssumeRole on top of a task role, a failing task role is reported as
// such, not as an AssumeRole failure.
func innermostCredentialsError(err error) *credentialsError {
	var found *credentialsError
	for {
		var ce *credentialsError
		if !errors.As(err, &ce) {
			return found
		}
		found, err = ce, ce.err
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func isServerFault(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorFault() == smithy.FaultServer
}

func isThrottle(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isNetworkError(err error) bool {
	return retry.RetryableConnectionError{}.IsErrorRetryable(err).Bool()
}
