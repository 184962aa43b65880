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
	Truncate     bool              `json:"truncate,omitempty"`
	CloudWatch   *CloudWatchSink   `json:"cloudwatch,omitempty"`
	CloudLogging *CloudLoggingSink `json:"cloud_logging,omitempty"`
	Batch        *BatchPolicy      `json:"batch,omitempty"`
}

// CloudWatchSink is the cloudwatch block of an export.
type CloudWatchSink struct {
	// LogGroup and LogStream are templates: {subject} and {export} are replaced.
	LogGroup      string `json:"log_group"`
	LogStream     string `json:"log_stream,omitempty"`
	Create        bool   `json:"create,omitempty"`
	RetentionDays int    `json:"retention_days,omitempty"`
}

// CloudLoggingSink is the cloud_logging block of an export.
type CloudLoggingSink struct {
	Project  string             `json:"project"`
	LogID    string             `json:"log_id"`
	Resource *MonitoredResource `json:"resource,omitempty"`
}

// MonitoredResource is a Cloud Logging monitored resource.
type MonitoredResource struct {
	Type   string            `json:"type"`
	Labels map[string]string `json:"labels,omitempty"`
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

// CloudWatch's retention periods, in days.
var cloudWatchRetention = map[int]bool{1: true, 3: true, 5: true, 7: true, 14: true, 30: true, 60: true,
	90: true, 120: true, 150: true, 180: true, 365: true, 400: true, 545: true, 731: true, 1096: true,
	1827: true, 2192: true, 2557: true, 2922: true, 3288: true, 3653: true}

var (
	logIDRE      = regexp.MustCompile(`^[A-Za-z0-9_./-]{1,512}$`)
	labelKeyRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	resTypeRE    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,127}$`)
	subjectTokRE = regexp.MustCompile(`^[^\s.*>]+$`)
)

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
	if e.MinLevel != "" && !ValidLevel(e.MinLevel) {
		return Errorf(CodeBadRequest, "min_level: %q is not one of %s", truncate(e.MinLevel, 20), strings.Join(Levels, ", "))
	}
	switch {
	case e.CloudWatch != nil && e.CloudLogging != nil:
		return Errorf(CodeBadRequest, "cloudwatch, cloud_logging: exactly one sink allowed")
	case e.CloudWatch != nil:
		if err := e.CloudWatch.Validate(); err != nil {
			return err
		}
	case e.CloudLogging != nil:
		if err := e.CloudLogging.Validate(); err != nil {
			return err
		}
	default:
		return Errorf(CodeBadRequest, "cloudwatch, cloud_logging: one sink required")
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

// Provider is the provider a connection of this export must have.
func (e *Export) Provider() string {
	if e.CloudLogging != nil {
		return ProviderGCP
	}
	return ProviderAWS
}

// Validate checks the cloudwatch block.
func (c *CloudWatchSink) Validate() error {
	if c.LogGroup == "" || len(c.LogGroup) > 512 {
		return Errorf(CodeBadRequest, "cloudwatch.log_group: required, at most 512")
	}
	if len(c.LogStream) > 512 {
		return Errorf(CodeBadRequest, "cloudwatch.log_stream: at most 512")
	}
	for _, f := range []struct{ name, v string }{{"cloudwatch.log_group", c.LogGroup}, {"cloudwatch.log_stream", c.LogStream}} {
		if strings.ContainsAny(f.v, ":*\x00\n\r") {
			return Errorf(CodeBadRequest, "%s: %q contains ':' '*' or a control character", f.name, truncate(f.v, 80))
		}
	}
	if c.RetentionDays != 0 && !cloudWatchRetention[c.RetentionDays] {
		return Errorf(CodeBadRequest, "cloudwatch.retention_days: %d is not a CloudWatch retention period", c.RetentionDays)
	}
	return nil
}

// Validate checks the cloud_logging block.
func (c *CloudLoggingSink) Validate() error {
	if c.Project == "" || !gcpProjectRE.MatchString(c.Project) {
		return Errorf(CodeBadRequest, "cloud_logging.project: required, a project id")
	}
	if !logIDRE.MatchString(c.LogID) {
		return Errorf(CodeBadRequest, "cloud_logging.log_id: required, up to 512 of [A-Za-z0-9_./-]")
	}
	if r := c.Resource; r != nil {
		if !resTypeRE.MatchString(r.Type) {
			return Errorf(CodeBadRequest, "cloud_logging.resource.type: %q is not a resource type", truncate(r.Type, 40))
		}
		for k, v := range r.Labels {
			if !labelKeyRE.MatchString(k) || len(v) > 1024 {
				return Errorf(CodeBadRequest, "cloud_logging.resource.labels: invalid label %q", truncate(k, 40))
			}
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
