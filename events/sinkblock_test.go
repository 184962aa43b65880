package events

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestSinkKinds checks the sink blocks found in Export: every kind, in
// order, with the provider it declares.
func TestSinkKinds(t *testing.T) {
	if got, want := SinkKinds(), []string{"cloudwatch", "cloud_logging"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("SinkKinds() = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		exp  Export
		kind string
		prov string
	}{
		{Export{CloudWatch: &CloudWatchSink{LogGroup: "/a"}}, "cloudwatch", ProviderAWS},
		{Export{CloudLogging: &CloudLoggingSink{Project: "my-project", LogID: "x"}}, "cloud_logging", ProviderGCP},
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
		{`{` + base + `}`, "cloudwatch, cloud_logging: one sink required"},
		{`{` + base + `,"cloudwatch":{"log_group":"/a"},"cloud_logging":{"project":"my-project","log_id":"x"}}`, "cloudwatch, cloud_logging: exactly one sink allowed"},
		{`{` + base + `,"cloudwatch":{"log_group":"a:b"}}`, `cloudwatch.log_group: "a:b" contains ':' '*' or a control character`},
		{`{` + base + `,"cloud_logging":{"project":"my-project","log_id":""}}`, "cloud_logging.log_id: required, up to 512 of [A-Za-z0-9_./-]"},
		{`{` + base + `,"cloudwatch":{"log_group":"/a"}}`, ""},
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
