package main

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestSinkNameOfEveryKind: export put and export ls name the sink of every
// kind (an s3 block was shown as "-").
func TestSinkNameOfEveryKind(t *testing.T) {
	cases := []struct {
		x    events.Export
		want string
	}{
		{events.Export{CloudWatch: &events.CloudWatchSink{LogGroup: "/platform/app"}}, "cloudwatch /platform/app"},
		{events.Export{CloudLogging: &events.CloudLoggingSink{Project: "p", LogID: "app"}}, "cloud_logging p/app"},
		{events.Export{S3: &events.S3Sink{Bucket: "my-archive"}}, "s3 my-archive/" + events.DefaultS3Prefix},
		{events.Export{S3: &events.S3Sink{Bucket: "my-archive", Prefix: "a/{export}/"}}, "s3 my-archive/a/{export}/"},
		{events.Export{}, "-"},
	}
	for _, c := range cases {
		if got := sinkName(c.x); got != c.want {
			t.Errorf("sinkName(%+v) = %q, want %q", c.x, got, c.want)
		}
	}
	for _, kind := range events.SinkKinds() {
		seen := false
		for _, c := range cases {
			if name, _ := c.x.Sink(); name == kind {
				seen = true
			}
		}
		if !seen {
			t.Errorf("sink kind %s has no case here", kind)
		}
	}
}

// TestTooLargeStdinNamed: a body over the limit on stdin is named "standard
// input", as the other errors of -f - name it (it was "-: larger than ...").
func TestTooLargeStdinNamed(t *testing.T) {
	big := `{"name":"` + strings.Repeat("a", events.MaxRequestSize) + `"}`
	for _, verb := range [][]string{{"conn", "put", "-f", "-"}, {"export", "put", "-f", "-"}} {
		_, errOut, code := cb(t, big, append(verb, "--nats-url", "nats://127.0.0.1:1")...)
		if code != events.CodeTooLarge.ExitCode() || !strings.Contains(errOut, "standard input: larger than the 65536-byte limit") {
			t.Errorf("%v with %d bytes on stdin: exit %d, stderr %q", verb, len(big), code, errOut)
		}
	}
}
