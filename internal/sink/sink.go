// Package sink defines what a log-export sink is, for its consumer, the
// export worker (workers/export): a small interface that writes batches of
// records, the Kind a sink package registers in internal/sink/all, and the
// classification of failed calls.
//
// A sink only classifies: each record gets an outcome (delivered, dead with a
// reason, too new) and each failed call a Class (retry, retry later,
// dead-letter). The export runner owns the policy: backoff, how long to keep
// a batch's messages alive, when to dead-letter, what to ack.
package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"google.golang.org/api/option"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
)

// Sink delivers batches of log records of one export block to a cloud.
type Sink interface {
	// Limits are the per-call limits; the runner never hands Write a batch
	// beyond them.
	Limits() logevent.Limits
	// Size is what a record counts against Limits().MaxBytes; 0 for a record
	// that will never be sent (too large, not truncated).
	Size(r *logevent.Record) int
	// Write sends the records whose outcome is Pending, in as many calls as
	// the cloud needs (one per log stream and limit), and sets the outcome of
	// every record a successful call carried. It stops at the first failed
	// call and returns a *Failure classifying it; the records not carried by
	// a successful call stay Pending, so a retry sends only those.
	Write(ctx context.Context, recs []logevent.Record, out []logevent.Outcome) error
	// Close releases the sink's client.
	Close() error
}

// CallReporter is a Sink that reports each successful call as it returns:
// WriteEach is Write calling accepted (on the caller's goroutine, between
// calls) after every call that set outcomes, with the indexes in recs of the
// records that call carried, so the runner acks what a call carried at once
// instead of after the whole batch's calls (a worker killed between two
// calls of a batch then loses the acks of none it completed), and looks at
// those records only. idx is the sink's: valid only during the callback.
type CallReporter interface {
	WriteEach(ctx context.Context, recs []logevent.Record, out []logevent.Outcome, accepted func(idx []int)) error
}

// Clients turn a connection into what a cloud's SDK clients are built from,
// with the connection's own credentials. A sink kind uses its provider's.
type Clients struct {
	AWS func(context.Context, events.Connection) (aws.Config, error)
	GCP func(context.Context, events.Connection) ([]option.ClientOption, error)
}

// AWSConfig builds the AWS configuration of export exp from its connection.
func (c Clients) AWSConfig(ctx context.Context, exp events.Export, conn events.Connection) (aws.Config, error) {
	if c.AWS == nil {
		return aws.Config{}, fmt.Errorf("export %s: no aws client configuration", exp.Name)
	}
	cfg, err := c.AWS(ctx, conn)
	if err != nil {
		return aws.Config{}, fmt.Errorf("building aws config for export %s: %w", exp.Name, err)
	}
	return cfg, nil
}

// GCPOptions builds the Google client options of export exp from its connection.
func (c Clients) GCPOptions(ctx context.Context, exp events.Export, conn events.Connection) ([]option.ClientOption, error) {
	if c.GCP == nil {
		return nil, fmt.Errorf("export %s: no gcp client options", exp.Name)
	}
	opts, err := c.GCP(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("building gcp options for export %s: %w", exp.Name, err)
	}
	return opts, nil
}

// Kind is one kind of sink, registered in internal/sink/all. Its block and
// the provider its connection must have are declared by the block's type in
// package events (events.SinkBlock); the runner checks the provider before
// New is called.
type Kind struct {
	// Block is the export's block this kind reads: "cloudwatch", "cloud_logging".
	Block string
	// New builds the sink of an export block from its connection.
	New func(ctx context.Context, exp events.Export, conn events.Connection, c Clients) (Sink, error)
}

// Class says what to do with the records of a failed call.
type Class int

// Classes of failed calls.
const (
	// Retry: a transient failure (unreachable, 5xx, timeout); retry with backoff.
	Retry Class = iota
	// RetryLater: the cloud throttled the call; retry after Failure.After
	// (or the runner's backoff when the cloud gave no hint).
	RetryLater
	// DeadLetter: the cloud refused the call itself for good (invalid
	// request); retrying cannot help, its records are dead-lettered.
	DeadLetter
)

func (c Class) String() string {
	switch c {
	case RetryLater:
		return "retry_later"
	case DeadLetter:
		return "dead_letter"
	}
	return "retry"
}

// Failure is a failed call, classified by the sink.
type Failure struct {
	Class Class
	// After is the cloud's hint for RetryLater (0: none).
	After time.Duration
	// Records are the indexes of the records the call carried.
	Records []int
	// Err wraps an events sentinel (throttled, unavailable, bad_request, ...)
	// with a message safe to log and to put in a dead letter.
	Err error
}

func (f *Failure) Error() string { return f.Err.Error() }
func (f *Failure) Unwrap() error { return f.Err }

// Fail classifies err, a failed call carrying records, by its events code:
// throttled is RetryLater, bad_request is DeadLetter, anything else Retry.
func Fail(err error, records []int) *Failure {
	f := &Failure{Class: Retry, Records: records, Err: err}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
	case errors.Is(err, events.ErrThrottled):
		f.Class = RetryLater
	case errors.Is(err, events.ErrBadRequest):
		f.Class = DeadLetter
	}
	return f
}

// Classify reads the classification of an error returned by Write: a
// *Failure's, or Retry for any other error.
func Classify(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	return &Failure{Class: Retry, Err: err}
}
