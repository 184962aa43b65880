package events

import (
	"strconv"
	"strings"
	"testing"
)

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

// The strict walk reads the body's bytes itself: names with escapes, strings
// holding JSON's delimiters, whitespace anywhere, objects of many names, and
// the error's path and wording.
func TestDecodeStrictWalk(t *testing.T) {
	many := `{"connection":"c","name":"n","value":{`
	for i := 0; i < 40; i++ {
		many += `"k` + strconv.Itoa(i) + `":1,`
	}
	bad := []struct {
		body string
		v    any
		want string
	}{
		{`{"n\u0061me":"a","name":"b"}`, &NameRequest{}, `name: given twice`},
		{`{"\u004eame":"a"}`, &NameRequest{}, `unknown field "Name"`},
		{` { "name" : "a" , "name" : "b" } `, &NameRequest{}, `name: given twice`},
		{`{"name":"a\"},{\"name\":\"b","x":1}`, &NameRequest{}, `unknown field "x" (names are case-sensitive)`},
		{`{"name":"e","connection":"c","subjects":["x"],"cloudwatch":{"Log_Group":"g"}}`, &Export{}, `unknown field "cloudwatch.Log_Group"`},
		{`{"name":"c","provider":"aws","groups":[],"secrets":[],"aws":{"region":"r","regoin":"x"}}`, &Connection{}, `unknown field "aws.regoin"`},
		{many + `"k7":2}}`, &SecretPut{}, `value.k7: given twice`},
		{`{"name":"a"} {"name":"b"}`, &NameRequest{}, `data after the JSON object`},
		{`{"name":"a"}x`, &NameRequest{}, `data after the JSON object`},
		{`{"name":"a"`, &NameRequest{}, `truncated JSON`},
		{`{"name":5}`, &NameRequest{}, `expected string`},
		{`{"name":"a","extra":1}`, &NameRequest{}, `unknown field "extra"`},
	}
	for _, b := range bad {
		err := Decode([]byte(b.body), b.v)
		if CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: %v, want bad_request with %q", b.body, err, b.want)
		}
	}
	good := []struct {
		body string
		v    any
	}{
		{"\n{\t\"name\" :\r\"a\" }\n", &NameRequest{}},
		{`{"name":"a\"\\{}[],:"}`, &NameRequest{}},
		{many + `"kz":[{"a":1},{"a":2}],"n":null,"t":true,"f":false,"x":-1.5e3}}`, &SecretPut{}},
		{`{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"ttl":"5m"}}`, &Connection{}},
		{`{}`, &Empty{}},
	}
	for _, g := range good {
		if err := Decode([]byte(g.body), g.v); err != nil {
			t.Errorf("%s: %v", g.body, err)
		}
	}
	var n NameRequest
	if err := Decode([]byte(`{"n\u0061me":"a\u0062"}`), &n); err != nil || n.Name != "ab" {
		t.Errorf("escaped name: %+v, %v", n, err)
	}
}
