package events

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestSinkKinds checks the sink blocks found in Export: every kind, in
// order, with the provider it declares.
func TestSinkKinds(t *testing.T) {
	if got, want := SinkKinds(), []string{"cloudwatch", "cloud_logging", "s3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("SinkKinds() = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		exp  Export
		kind string
		prov string
	}{
		{Export{CloudWatch: &CloudWatchSink{LogGroup: "/a"}}, "cloudwatch", ProviderAWS},
		{Export{CloudLogging: &CloudLoggingSink{Project: "my-project", LogID: "x"}}, "cloud_logging", ProviderGCP},
		{Export{S3: &S3Sink{Bucket: "my-archive"}}, "s3", ProviderAWS},
		{Export{}, "", ""},
	} {
		kind, _ := tc.exp.Sink()
		if kind != tc.kind || tc.exp.Provider() != tc.prov {
			t.Errorf("Sink() = %q, Provider() = %q; want %q, %q", kind, tc.exp.Provider(), tc.kind, tc.prov)
		}
	}
}

// TestExactlyOneSink checks the generic sink check and its messages.
func TestExactlyOneSink(t *testing.T) {
	base := `"name":"e","connection":"c","subjects":["logs.>"]`
	for _, tc := range []struct{ doc, msg string }{
		{`{` + base + `}`, "cloudwatch, cloud_logging, s3: one sink required"},
		{`{` + base + `,"cloudwatch":{"log_group":"/a"},"cloud_logging":{"project":"my-project","log_id":"x"}}`, "cloudwatch, cloud_logging, s3: exactly one sink allowed"},
		{`{` + base + `,"cloudwatch":{"log_group":"a:b"}}`, `cloudwatch.log_group: "a:b" contains ':' '*' or a control character`},
		{`{` + base + `,"cloud_logging":{"project":"my-project","log_id":""}}`, "cloud_logging.log_id: required, up to 512 of [A-Za-z0-9_./-]"},
		{`{` + base + `,"cloudwatch":{"log_group":"/a"}}`, ""},
		{`{` + base + `,"cloudwatch":{"log_group":"/a","max_streams":100,"overflow_stream":"rest"}}`, ""},
		{`{` + base + `,"cloudwatch":{"log_group":"/a","max_streams":100001}}`, "cloudwatch.max_streams: between 1 and 100000"},
		{`{` + base + `,"cloudwatch":{"log_group":"/a","max_streams":-1}}`, "cloudwatch.max_streams: between 1 and 100000"},
		{`{` + base + `,"cloudwatch":{"log_group":"/a","overflow_stream":"a*b"}}`, `cloudwatch.overflow_stream: "a*b" contains ':' '*' or a control character`},
	} {
		var x Export
		if err := json.Unmarshal([]byte(tc.doc), &x); err != nil {
			t.Fatal(err)
		}
		err := x.Validate()
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("%s: %v", tc.doc, err)
		case tc.msg != "" && (err == nil || CodeOf(err) != CodeBadRequest || err.Error() != tc.msg):
			t.Errorf("%s: err %v, want bad_request %q", tc.doc, err, tc.msg)
		}
	}
}

// TestS3Block checks the s3 block's validation: bucket naming rules, prefix
// placeholders, the format and compression enums and the bounds, each
// bad_request naming the field.
func TestS3Block(t *testing.T) {
	base := `"name":"e","connection":"c","subjects":["logs.>"]`
	for _, tc := range []struct{ block, msg string }{
		{`{"bucket":"my-archive"}`, ""},
		{`{"bucket":"logs.example-1","prefix":"logs/{export}/{yyyy}/{mm}/{dd}/{hh}/","format":"ndjson","compression":"none","max_object_bytes":1024,"max_wait":"15m"}`, ""},
		{`{"bucket":"my-archive","prefix":"","compression":"gzip","max_object_bytes":67108864,"max_wait":"100ms"}`, ""},
		{`{}`, "s3.bucket: required"},
		{`{"bucket":"ab"}`, `s3.bucket: "ab" is not a valid bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit`},
		{`{"bucket":"My-Archive"}`, `s3.bucket: "My-Archive" is not a valid bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit`},
		{`{"bucket":"` + strings.Repeat("a", 64) + `"}`, `s3.bucket: "` + strings.Repeat("a", 64) + `" is not a valid bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit`},
		{`{"bucket":"my..archive"}`, `s3.bucket: "my..archive" is not a valid bucket name: two adjacent periods`},
		{`{"bucket":"192.168.5.4"}`, `s3.bucket: "192.168.5.4" is not a valid bucket name: formatted as an IP address`},
		{`{"bucket":"xn--archive"}`, `s3.bucket: "xn--archive" is not a valid bucket name: reserved prefix xn--`},
		{`{"bucket":"archive-s3alias"}`, `s3.bucket: "archive-s3alias" is not a valid bucket name: reserved suffix -s3alias`},
		{`{"bucket":"archive-"}`, `s3.bucket: "archive-" is not a valid bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit`},
		{`{"bucket":"my-archive","prefix":"logs/{subject}/"}`, "s3.prefix: unknown placeholder {subject} (want {export} {yyyy} {mm} {dd} {hh})"},
		{`{"bucket":"my-archive","prefix":"logs/{yyyy/"}`, "s3.prefix: unbalanced '{' or '}'"},
		{`{"bucket":"my-archive","prefix":"/logs/"}`, `s3.prefix: "/logs/" starts with '/' or has '//' or '\'`},
		{`{"bucket":"my-archive","prefix":"logs/../x/"}`, `s3.prefix: "logs/../x/" has a '.' or '..' segment`},
		{`{"bucket":"my-archive","prefix":"a\nb"}`, "s3.prefix: invalid UTF-8 or a control character"},
		{`{"bucket":"my-archive","prefix":"` + strings.Repeat("p", 513) + `"}`, "s3.prefix: at most 512 bytes"},
		{`{"bucket":"my-archive","format":"json"}`, `s3.format: "json" is not one of ndjson`},
		{`{"bucket":"my-archive","compression":"zstd"}`, `s3.compression: "zstd" is not one of gzip, none`},
		{`{"bucket":"my-archive","max_object_bytes":1023}`, "s3.max_object_bytes: between 1024 and 67108864"},
		{`{"bucket":"my-archive","max_object_bytes":67108865}`, "s3.max_object_bytes: between 1024 and 67108864"},
		{`{"bucket":"my-archive","max_object_bytes":-1}`, "s3.max_object_bytes: between 1024 and 67108864"},
		{`{"bucket":"my-archive","max_wait":"16m"}`, "s3.max_wait: between 100ms and 15m"},
		{`{"bucket":"my-archive","max_wait":"1ms"}`, "s3.max_wait: between 100ms and 15m"},
	} {
		doc := `{` + base + `,"s3":` + tc.block + `}`
		var x Export
		if err := json.Unmarshal([]byte(doc), &x); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		err := x.Validate()
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("%s: %v", tc.block, err)
		case tc.msg != "" && (err == nil || CodeOf(err) != CodeBadRequest || err.Error() != tc.msg):
			t.Errorf("%s: err %v, want bad_request %q", tc.block, err, tc.msg)
		}
	}
}
