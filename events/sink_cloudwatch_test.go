package events

import (
	"strings"
	"testing"
)

// TestCloudWatchPlaceholders: {subject} and {export} are the placeholders
// of the CloudWatch names; any other {word} is bad_request naming the field
// (as s3.prefix does), not a literal part of the name.
func TestCloudWatchPlaceholders(t *testing.T) {
	ok := []CloudWatchSink{
		{LogGroup: "/platform/{export}", LogStream: "{subject}"},
		{LogGroup: "/x/{subject}", LogStream: "{export}-{subject}", OverflowStream: "_overflow"},
		{LogGroup: "/plain"},
	}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := []struct {
		c     CloudWatchSink
		field string
	}{
		{CloudWatchSink{LogGroup: "/x/{subjects}"}, "cloudwatch.log_group"},
		{CloudWatchSink{LogGroup: "/x", LogStream: "{app}"}, "cloudwatch.log_stream"},
		{CloudWatchSink{LogGroup: "/x", OverflowStream: "{}"}, "cloudwatch.overflow_stream"},
	}
	for _, tc := range bad {
		err := tc.c.Validate()
		if CodeOf(err) != CodeBadRequest || !strings.HasPrefix(err.Error(), tc.field+": unknown placeholder") {
			t.Errorf("%+v: %v, want bad_request naming %s", tc.c, err, tc.field)
		}
	}
}
