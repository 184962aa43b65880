package rotation

import (
	"context"
	"errors"

	"github.com/cloudbridge/cloudbridge/events"
)

// CauseClass classifies a receive error (Health.Cause) as a wire code, which
// is safe to show to requesters (the events step of conn test) where the
// error's own text, the cloud's, is not: the code of an *events.Error in its
// chain (each provider's source maps its cloud's errors at its boundary, as
// the rest of the provider does: forbidden, unauthorized, not_found,
// throttled…); timeout for a deadline; unavailable for anything else (the
// queue or subscription cannot be read now). A nil error is no class ("").
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
	return events.CodeUnavailable
}
