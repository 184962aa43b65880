package events

import "strings"

// CloudWatchSink is the cloudwatch block of an export: CloudWatch Logs,
// through an aws connection (internal/sink/cloudwatch).
type CloudWatchSink struct {
	// LogGroup and LogStream are templates: {subject} and {export} are replaced.
	LogGroup      string `json:"log_group"`
	LogStream     string `json:"log_stream,omitempty"`
	Create        bool   `json:"create,omitempty"`
	RetentionDays int    `json:"retention_days,omitempty"`
	// MaxStreams bounds the log streams one worker writes for the export
	// (default DefaultMaxStreams): the events of a stream beyond it go to
	// OverflowStream (default DefaultOverflowStream), in the log group
	// named with an empty {subject}.
	MaxStreams     int    `json:"max_streams,omitempty"`
	OverflowStream string `json:"overflow_stream,omitempty"`
}

// The cloudwatch block's stream cardinality defaults and bounds.
const (
	DefaultMaxStreams     = 1000
	MaxMaxStreams         = 100_000
	DefaultOverflowStream = "_overflow"
)

// CloudWatch's retention periods, in days.
var cloudWatchRetention = map[int]bool{1: true, 3: true, 5: true, 7: true, 14: true, 30: true, 60: true,
	90: true, 120: true, 150: true, 180: true, 365: true, 400: true, 545: true, 731: true, 1096: true,
	1827: true, 2192: true, 2557: true, 2922: true, 3288: true, 3653: true}

// Provider is aws: CloudWatch Logs is reached with an aws connection.
func (c *CloudWatchSink) Provider() string { return ProviderAWS }

// Validate checks the cloudwatch block.
func (c *CloudWatchSink) Validate() error {
	if c.LogGroup == "" || len(c.LogGroup) > 512 {
		return Errorf(CodeBadRequest, "cloudwatch.log_group: required, at most 512")
	}
	if len(c.LogStream) > 512 {
		return Errorf(CodeBadRequest, "cloudwatch.log_stream: at most 512")
	}
	if len(c.OverflowStream) > 512 {
		return Errorf(CodeBadRequest, "cloudwatch.overflow_stream: at most 512")
	}
	if c.MaxStreams < 0 || c.MaxStreams > MaxMaxStreams {
		return Errorf(CodeBadRequest, "cloudwatch.max_streams: between 1 and %d", MaxMaxStreams)
	}
	for _, f := range []struct{ name, v string }{{"cloudwatch.log_group", c.LogGroup}, {"cloudwatch.log_stream", c.LogStream}, {"cloudwatch.overflow_stream", c.OverflowStream}} {
		if strings.ContainsAny(f.v, ":*\x00\n\r") {
			return Errorf(CodeBadRequest, "%s: %q contains ':' '*' or a control character", f.name, truncate(f.v, 80))
		}
	}
	for _, f := range []struct{ name, v string }{{"cloudwatch.log_group", c.LogGroup}, {"cloudwatch.log_stream", c.LogStream}, {"cloudwatch.overflow_stream", c.OverflowStream}} {
		for _, ph := range s3PlaceholderRE.FindAllString(f.v, -1) {
			if ph != "{subject}" && ph != "{export}" {
				// A typo ({subjects}, {app}) would silently become part of
				// the name (sanitized to _ in a log group).
				return Errorf(CodeBadRequest, "%s: unknown placeholder %s (want {subject} {export})", f.name, truncate(ph, 40))
			}
		}
	}
	if c.RetentionDays != 0 && !cloudWatchRetention[c.RetentionDays] {
		return Errorf(CodeBadRequest, "cloudwatch.retention_days: %d is not a CloudWatch retention period", c.RetentionDays)
	}
	return nil
}
