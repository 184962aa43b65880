package logevent

import "time"

// Record is a parsed event on its way to a sink, with where it came from.
type Record struct {
	Event
	// Subject is the subject the message was published on.
	Subject string
	// Stream is the JetStream stream the message was read from.
	Stream string
	// Seq is the message's stream sequence.
	Seq uint64
	// Received is when the stream received the message.
	Received time.Time
}

// Status is what became of a record on its way to a sink.
type Status int

// Record outcomes.
const (
	// Pending: not delivered yet; the call carrying it failed or was not made.
	Pending Status = iota
	// Delivered: the cloud accepted it.
	Delivered
	// Dead: the cloud rejected it for good (or it can never be sent); Reason says why.
	Dead
	// RetryLater: the cloud rejected it for now (a timestamp too far ahead).
	RetryLater
	// Dropped: below the export's min_level; acked and counted, never sent.
	Dropped
)

// Outcome is the result of one record.
type Outcome struct {
	Status Status
	// Reason is an events.Dead* reason for Dead records.
	Reason string
	// Detail explains Reason, safe to show to requesters.
	Detail string
	// Truncated reports that the record was cut to fit the sink's size limit.
	Truncated bool
}

// Limits are a sink's per-call limits, used to size batches.
type Limits struct {
	// MaxEvents is the most records in one call.
	MaxEvents int
	// MaxBytes is the most bytes in one call, as counted by the sink's Size.
	MaxBytes int
	// MaxWait is how long a batch waits for more records: the sink's own
	// default (0: events.DefaultMaxWait); the export's batch.max_wait, when
	// set, replaces it.
	MaxWait time.Duration
}
