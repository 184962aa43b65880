package events

import (
	"errors"
	"fmt"
)

// Code is a wire error code.
type Code string

// The wire error codes of design.md section 4.
const (
	CodeBadRequest   Code = "bad_request"
	CodeUnauthorized Code = "unauthorized"
	CodeForbidden    Code = "forbidden"
	CodeNotFound     Code = "not_found"
	CodeTooLarge     Code = "too_large"
	CodeThrottled    Code = "throttled"
	CodeInternal     Code = "internal"
	CodeUnavailable  Code = "unavailable"
	CodeTimeout      Code = "timeout"
)

// codeNumbers is the one table mapping codes to the numbers sent in the
// Nats-Service-Error-Code header.
var codeNumbers = map[Code]int{
	CodeBadRequest:   400,
	CodeUnauthorized: 401,
	CodeForbidden:    403,
	CodeNotFound:     404,
	CodeTooLarge:     413,
	CodeThrottled:    429,
	CodeInternal:     500,
	CodeUnavailable:  503,
	CodeTimeout:      504,
}

// Codes lists every wire code, in table order.
func Codes() []Code {
	return []Code{CodeBadRequest, CodeUnauthorized, CodeForbidden, CodeNotFound, CodeTooLarge,
		CodeThrottled, CodeInternal, CodeUnavailable, CodeTimeout}
}

// Number is the numeric form of the code, as sent in Nats-Service-Error-Code.
func (c Code) Number() int {
	if n, ok := codeNumbers[c]; ok {
		return n
	}
	return 500
}

// CodeForNumber maps a Nats-Service-Error-Code number back to its code.
func CodeForNumber(n int) Code {
	for c, v := range codeNumbers {
		if v == n {
			return c
		}
	}
	return CodeInternal
}

// Error is a wire error: the body {"error":{"code","message"}} of a failed
// request. It also serves as the sentinel of its code, so
// errors.Is(err, ErrNotFound) holds for any *Error with code not_found.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return e.Message
}

// Is matches any *Error of the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels, one per code, for errors.Is and for wrapping with %w.
var (
	ErrBadRequest   = &Error{Code: CodeBadRequest, Message: "bad request"}
	ErrUnauthorized = &Error{Code: CodeUnauthorized, Message: "unauthorized"}
	ErrForbidden    = &Error{Code: CodeForbidden, Message: "forbidden"}
	ErrNotFound     = &Error{Code: CodeNotFound, Message: "not found"}
	ErrTooLarge     = &Error{Code: CodeTooLarge, Message: "too large"}
	ErrThrottled    = &Error{Code: CodeThrottled, Message: "throttled"}
	ErrInternal     = &Error{Code: CodeInternal, Message: "internal error"}
	ErrUnavailable  = &Error{Code: CodeUnavailable, Message: "unavailable"}
	ErrTimeout      = &Error{Code: CodeTimeout, Message: "timeout"}
)

// Errorf returns an *Error with the given code and a formatted message. The
// message is sent to the requester: never put a secret value in it.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorReply is the body of a failed request.
type ErrorReply struct {
	Error *Error `json:"error"`
}

// AsWire turns any error into the wire error sent to a requester. An error that
// wraps a sentinel (or an *Error) keeps its code and its full message, which
// callers must keep free of secrets; anything else is internal, with a generic
// message, because its text was not written for requesters.
func AsWire(err error) *Error {
	if err == nil {
		return nil
	}
	var we *Error
	if errors.As(err, &we) {
		msg := err.Error()
		if msg == "" {
			msg = string(we.Code)
		}
		return &Error{Code: we.Code, Message: msg}
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// CodeOf returns the wire code of err (internal when it carries none).
func CodeOf(err error) Code {
	var we *Error
	if errors.As(err, &we) {
		return we.Code
	}
	return CodeInternal
}
