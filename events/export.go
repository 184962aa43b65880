package events

import (
	"regexp"
	"strings"
	"time"
)

// Log levels, lowest first, as used by min_level.
var Levels = []string{"trace", "debug", "info", "warn", "error", "fatal"}

// Export is an export block: which log subjects go to which sink through which connection.
type Export struct {
	Name       string   `json:"name"`
	Connection string   `json:"connection"`
	Subjects   []string `json:"subjects"`
	// MinLevel drops events below this level (acked and counted, not exported).
	MinLevel string `json:"min_level,omitempty"`
	// Truncate cuts oversized events with a marker instead of dead-lettering them.
	Truncate bool `json:"truncate,omitempty"`
	// The sink blocks, exactly one of which is set: every field whose type
	// implements SinkBlock is one (sinkblock.go). A new sink kind adds its
	// field here and its block type in sink_<kind>.go.
	CloudWatch   *CloudWatchSink   `json:"cloudwatch,omitempty"`
	CloudLogging *CloudLoggingSink `json:"cloud_logging,omitempty"`
	S3           *S3Sink           `json:"s3,omitempty"`
	Batch        *BatchPolicy      `json:"batch,omitempty"`
}

// BatchPolicy bounds a batch: it is flushed at whichever limit comes first.
type BatchPolicy struct {
	MaxEvents int      `json:"max_events,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
	MaxWait   Duration `json:"max_wait,omitempty"`
}

// Default batch limits.
const (
	DefaultMaxWait = time.Second
)

var subjectTokRE = regexp.MustCompile(`^[^\s.*>]+$`)

// ValidLevel reports whether l is one of Levels.
func ValidLevel(l string) bool {
	for _, v := range Levels {
		if v == l {
			return true
		}
	}
	return false
}

// CheckSubjectFilter validates a NATS subject filter with optional * and > wildcards.
func CheckSubjectFilter(field, s string) error {
	if s == "" || len(s) > 512 {
		return Errorf(CodeBadRequest, "%s: empty or longer than 512", field)
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "*":
		case t == ">" && i == len(toks)-1:
		case subjectTokRE.MatchString(t):
		default:
			return Errorf(CodeBadRequest, "%s: %q is not a valid subject filter", field, truncate(s, 80))
		}
	}
	return nil
}

// Validate checks the export block, with bad_request errors naming the field.
// The connection's provider is checked by the admin worker, which knows it.
func (e *Export) Validate() error {
	if err := CheckName("name", e.Name); err != nil {
		return err
	}
	if err := CheckName("connection", e.Connection); err != nil {
		return err
	}
	if len(e.Subjects) == 0 {
		return Errorf(CodeBadRequest, "subjects: at least one subject filter required")
	}
	if len(e.Subjects) > 64 {
		return Errorf(CodeBadRequest, "subjects: more than 64")
	}
	for i, s := range e.Subjects {
		if err := CheckSubjectFilter(fieldIdx("subjects", i), s); err != nil {
			return err
		}
	}
	if err := noDuplicates("subjects", e.Subjects); err != nil {
		return err
	}
	// JetStream refuses a consumer whose filters overlap, so such a block
	// would be stored and never run.
	for i := range e.Subjects {
		for j := range i {
			if SubjectsCollide(e.Subjects[j], e.Subjects[i]) {
				return Errorf(CodeBadRequest, "%s: %q overlaps %s: %q (an export's subject filters may not overlap: keep the wider one)",
					fieldIdx("subjects", i), truncate(e.Subjects[i], 80), fieldIdx("subjects", j), truncate(e.Subjects[j], 80))
			}
		}
	}
	if e.MinLevel != "" && !ValidLevel(e.MinLevel) {
		return Errorf(CodeBadRequest, "min_level: %q is not one of %s", truncate(e.MinLevel, 20), strings.Join(Levels, ", "))
	}
	if err := e.checkSink(); err != nil {
		return err
	}
	if b := e.Batch; b != nil {
		if b.MaxEvents < 0 || b.MaxEvents > 10000 {
			return Errorf(CodeBadRequest, "batch.max_events: between 1 and 10000")
		}
		if b.MaxBytes < 0 || b.MaxBytes > 10<<20 {
			return Errorf(CodeBadRequest, "batch.max_bytes: between 1 and 10485760")
		}
		if b.MaxWait.D() > 5*time.Minute {
			return Errorf(CodeBadRequest, "batch.max_wait: at most 5m")
		}
	}
	return nil
}

// ExportedEvent is published on cloudbridge.v1.exported.<export> for every delivered batch.
type ExportedEvent struct {
	Export     string `json:"export"`
	Events     int    `json:"events"`
	Bytes      int    `json:"bytes"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	Rejected   int    `json:"rejected"`
	Dead       int    `json:"dead"`
	DurationMS int64  `json:"duration_ms"`
}

// Dead-letter reasons.
const (
	DeadTooLarge      = "too_large"
	DeadTooOld        = "too_old"
	DeadExpired       = "expired"
	DeadInvalid       = "invalid"
	DeadRejected      = "rejected"
	DeadUndeliverable = "undeliverable"
)

// DeadLetter is a message on cloudbridge.v1.dead.<export>: an event that can
// never be delivered, with why.
type DeadLetter struct {
	Export  string `json:"export"`
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail,omitempty"`
	// Payload is the original message (base64 on the wire).
	Payload []byte    `json:"payload"`
	Time    time.Time `json:"time"`
}

// SubjectsCollide reports whether some subject matches both filters a and b
// (valid subject filters, with * and > wildcards), as NATS decides that two
// consumer filters or two streams' subjects overlap.
func SubjectsCollide(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch x, y := at[i], bt[i]; {
		case x == ">" || y == ">":
			return true
		case x == "*" || y == "*" || x == y:
		default:
			return false
		}
	}
	return len(at) == len(bt)
}

// SubjectWithin reports whether every subject matching filter also matches
// one of the filters in of: whether a consumer with filter fits a stream
// capturing of.
func SubjectWithin(filter string, of []string) bool {
	for _, o := range of {
		if subjectSubset(strings.Split(filter, "."), strings.Split(o, ".")) {
			return true
		}
	}
	return false
}

func subjectSubset(f, o []string) bool {
	for i, tok := range f {
		if i >= len(o) {
			return false
		}
		switch o[i] {
		case ">":
			return true
		case "*":
			if tok == ">" {
				return false
			}
		default:
			if tok != o[i] {
				return false
			}
		}
	}
	return len(f) == len(o)
}
