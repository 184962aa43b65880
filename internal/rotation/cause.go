package rotation

import (
	"context"
	"errors"
	"strings"

	"github.com/cloudbridge/cloudbridge/events"
)

// CauseClass classifies a receive error (Health.Cause) as a wire code, which
// is safe to show to requesters (the events step of conn test) where the
// error's own text, the cloud's, is not: the code of an *events.Error in its
// chain; timeout for a deadline; for a cloud API error (one with an error
// code, as the AWS SDK's) forbidden, unauthorized, not_found or throttled
// from that code; unavailable for anything else (the queue or subscription
// cannot be read now). A nil error is no class ("").
func CauseClass(err error) events.Code {
	if err == nil {
		return ""
	}
	var we *events.Error
	if errors.As(err, &we) {
		return we.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return events.CodeTimeout
	}
	var ae interface{ ErrorCode() string }
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		switch {
		case strings.Contains(code, "AccessDenied") || strings.Contains(code, "Forbidden") || code == "PermissionDenied":
			return events.CodeForbidden
		case strings.Contains(code, "NonExistentQueue") || strings.Contains(code, "QueueDoesNotExist") || strings.Contains(code, "NotFound"):
			return events.CodeNotFound
		case unauthorizedCodes[code]:
			return events.CodeUnauthorized
		case strings.Contains(code, "Throttl") || code == "RequestLimitExceeded" || code == "OverLimit":
			return events.CodeThrottled
		}
	}
	return events.CodeUnavailable
}

// unauthorizedCodes are the API error codes of rejected credentials.
var unauthorizedCodes = map[string]bool{
	"ExpiredToken": true, "ExpiredTokenException": true, "InvalidClientTokenId": true,
	"UnrecognizedClientException": true, "InvalidSignatureException": true, "SignatureDoesNotMatch": true,
	"IncompleteSignature": true, "MissingAuthenticationToken": true, "InvalidAccessKeyId": true,
	"InvalidSecurity": true, "AuthFailure": true, "Unauthenticated": true,
}
