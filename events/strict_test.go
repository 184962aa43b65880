package events

import "testing"

// Strict decoding: a name given twice, or in another case, is bad_request at
// any depth (inside a secret's value too, where it would be ambiguous); keys
// of maps and of opaque values may differ only in case.
func TestDecodeRejectsDuplicateAndMiscasedNames(t *testing.T) {
	bad := []struct {
		body string
		v    any
	}{
		{`{"name":"a","name":"b"}`, &NameRequest{}},
		{`{"Name":"a"}`, &NameRequest{}},
		{`{"NAME":"a"}`, &NameRequest{}},
		{`{"name":"e","connection":"c","subjects":["x"],"cloudwatch":{"log_group":"g","log_group":"h"}}`, &Export{}},
		{`{"name":"e","connection":"c","subjects":["x"],"cloudwatch":{"Log_Group":"g"}}`, &Export{}},
		{`{"name":"e","connection":"c","subjects":["x"],"cloudwatch":{"log_group":"g"},"batch":{"max_wait":"1s","max_wait":"2s"}}`, &Export{}},
		{`{"name":"e","connection":"c","subjects":["x"],"cloud_logging":{"project":"p","log_id":"l","resource":{"type":"t","labels":{"a":"1","a":"2"}}}}`, &Export{}},
		{`{"connection":"c","name":"n","value":{"k":1},"value":"x"}`, &SecretPut{}},
		{`{"connection":"c","name":"n","value":{"k":1,"k":2}}`, &SecretPut{}},
	}
	for _, b := range bad {
		err := Decode([]byte(b.body), b.v)
		if CodeOf(err) != CodeBadRequest {
			t.Errorf("%s: %v, want bad_request", b.body, err)
		}
	}
	good := []struct {
		body string
		v    any
	}{
		{`{"name":"a"}`, &NameRequest{}},
		{`{"connection":"c","name":"n","value":{"k":1,"K":3,"x":{"K":1,"k":2}}}`, &SecretPut{}},
		{`{"name":"e","connection":"c","subjects":["x"],"cloud_logging":{"project":"p","log_id":"l","resource":{"type":"t","labels":{"a":"1","A":"2"}}}}`, &Export{}},
		{`{"name":"e","connection":"c","subjects":["x","x"],"cloudwatch":{"log_group":"g"},"batch":{"max_wait":"1s"}}`, &Export{}},
		{``, &Empty{}},
	}
	for _, g := range good {
		if err := Decode([]byte(g.body), g.v); err != nil {
			t.Errorf("%s: %v", g.body, err)
		}
	}
}
