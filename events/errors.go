package events

import (
	"errors"
	"fmt"
	"strings"
)

// Code is a wire error code.
type Code string

// The wire error codes. Their numbers, CLI exit codes and help are in
// errorTable, which the README's error table ("Errors", under "Subjects")
// and the schemas' code enum are checked against.
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

// CodeInfo is one row of the error table.
type CodeInfo struct {
	Code Code
	// Number is sent in the Nats-Service-Error-Code header.
	Number int
	// Exit is the CLI's exit code for a failure with this code.
	Exit int
	// Help says when the code is returned, in one line.
	Help string
}

// errorTable is the one table of wire errors: Codes, Number, CodeForNumber,
// ExitCode, Help and the CLI's help text are derived from it. Numbers and
// exit codes are part of the contract: never renumber.
var errorTable = []CodeInfo{
	{CodeBadRequest, 400, 10, "malformed JSON, unknown field, invalid name, missing field"},
	{CodeUnauthorized, 401, 11, "the cloud rejected the connection's own credentials"},
	{CodeForbidden, 403, 12, "group not allowed, secret outside the allowlist, cloud access denied"},
	{CodeNotFound, 404, 13, "unknown connection, secret, version or key"},
	{CodeTooLarge, 413, 14, "request body over 64 KiB"},
	{CodeThrottled, 429, 15, "the cloud throttled and retries ran out"},
	{CodeInternal, 500, 16, "a bug (a recovered panic too); the message says nothing secret"},
	{CodeUnavailable, 503, 17, "the cloud or a dependency is down; a record sealed under an unknown master key"},
	{CodeTimeout, 504, 18, "the upstream call ran past the request deadline (--request-timeout, 8s)"},
}

// CLI exit codes that are not wire codes.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // a failure without a wire code (or a failed conn test)
	ExitUsage   = 2 // a mistake in the command line
)

// ErrorTable returns the rows of the error table, in table order.
func ErrorTable() []CodeInfo { return append([]CodeInfo(nil), errorTable...) }

// Codes lists every wire code, in table order.
func Codes() []Code {
	out := make([]Code, len(errorTable))
	for i, r := range errorTable {
		out[i] = r.Code
	}
	return out
}

func (c Code) info() (CodeInfo, bool) {
	for _, r := range errorTable {
		if r.Code == c {
			return r, true
		}
	}
	return CodeInfo{}, false
}

// Number is the numeric form of the code, as sent in Nats-Service-Error-Code
// (500 for a code not in the table).
func (c Code) Number() int {
	if r, ok := c.info(); ok {
		return r.Number
	}
	return 500
}

// ExitCode is the CLI's exit code for a failure with this code (ExitFailure
// for a code not in the table).
func (c Code) ExitCode() int {
	if r, ok := c.info(); ok {
		return r.Exit
	}
	return ExitFailure
}

// Help says in one line when the code is returned.
func (c Code) Help() string {
	r, _ := c.info()
	return r.Help
}

// CodeForNumber maps a Nats-Service-Error-Code number back to its code
// (internal for an unknown number).
func CodeForNumber(n int) Code {
	for _, r := range errorTable {
		if r.Number == n {
			return r.Code
		}
	}
	return CodeInternal
}

// ExitCodesHelp describes the CLI's exit codes in one sentence, for help text:
// "0 ok, 1 error, 2 usage, 10 bad_request, …".
func ExitCodesHelp() string {
	parts := []string{fmt.Sprintf("%d ok", ExitOK), fmt.Sprintf("%d error", ExitFailure), fmt.Sprintf("%d usage", ExitUsage)}
	for _, r := range errorTable {
		parts = append(parts, fmt.Sprintf("%d %s", r.Exit, r.Code))
	}
	return strings.Join(parts, ", ")
}

// Error is a wire error: the body {"error":{"code","message"}} of a failed
// request. It also serves as the sentinel of its code, so
// errors.Is(err, ErrNotFound) holds for any *Error with code not_found.
//
// Message is sent to the requester. An *Error made by Wrap also keeps the
// foreign error it translates (NATS, an SDK, the registry) as its cause: for
// the log (Detail) and for errors.Is and errors.As, never for the wire.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`

	cause error
}

// Error implements error: the message only, never the cause.
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

// Unwrap returns the cause of an *Error made by Wrap.
func (e *Error) Unwrap() error { return e.cause }

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
// message is sent to the requester: build it from safe parts only (field,
// connection, secret and export names, the cloud's error code), never a secret
// value and never the text of a foreign error; use Wrap for those.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap translates a foreign error (NATS, an SDK, the registry) at the
// boundary: the returned *Error carries code and a message formatted from
// safe parts only, as with Errorf, and keeps cause for the log (Detail) and
// for errors.Is and errors.As. The cause's text never reaches a requester.
func Wrap(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), cause: cause}
}

// ErrorReply is the body of a failed request.
type ErrorReply struct {
	Error *Error `json:"error"`
}

// AsWire turns any error into the wire error sent to a requester. An error
// that wraps a sentinel (or an *Error) keeps its code and its message, which
// is the text of the chain down to the *Error: the context added by %w
// wrappers, then the *Error's own message (never its cause). When part of the
// chain is a foreign error joined alongside (errors.Join, several %w), only
// the *Error's own message is sent. Anything else is internal, with a generic
// message, because its text was not written for requesters.
func AsWire(err error) *Error {
	if err == nil {
		return nil
	}
	var we *Error
	if !errors.As(err, &we) {
		return &Error{Code: CodeInternal, Message: "internal error"}
	}
	msg := we.Error()
	if safeChain(err) {
		msg = err.Error()
	}
	if msg == "" {
		msg = string(we.Code)
	}
	return &Error{Code: we.Code, Message: msg}
}

// safeChain reports whether err's text is made of *Error messages and the
// context of wrappers only: every branch of a multi-error leads to an *Error.
func safeChain(err error) bool {
	for {
		switch e := err.(type) {
		case *Error:
			return true
		case interface{ Unwrap() []error }:
			for _, b := range e.Unwrap() {
				var we *Error
				if !errors.As(b, &we) || !safeChain(b) {
					return false
				}
			}
			return true
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		default:
			return false
		}
	}
}

// Detail is err's full text for the log: its message followed by the cause
// of every *Error made by Wrap in its chain. It is never sent to a requester.
func Detail(err error) string {
	if err == nil {
		return ""
	}
	var causes []string
	collectCauses(err, &causes)
	if len(causes) == 0 {
		return err.Error()
	}
	return err.Error() + " (cause: " + strings.Join(causes, "; ") + ")"
}

func collectCauses(err error, out *[]string) {
	for err != nil {
		switch e := err.(type) {
		case *Error:
			if e.cause != nil {
				*out = append(*out, Detail(e.cause))
			}
			return
		case interface{ Unwrap() []error }:
			for _, b := range e.Unwrap() {
				collectCauses(b, out)
			}
			return
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		default:
			return
		}
	}
}

// CodeOf returns the wire code of err (internal when it carries none).
func CodeOf(err error) Code {
	var we *Error
	if errors.As(err, &we) {
		return we.Code
	}
	return CodeInternal
}
