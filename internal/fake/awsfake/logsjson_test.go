package awsfake

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The fast reader of PutLogEvents bodies decodes exactly what json.Unmarshal
// decodes, and fails exactly when it fails.
var logsBodies = []string{
	`{"logGroupName":"g","logStreamName":"s","logEvents":[{"timestamp":1,"message":"a"},{"message":"b","timestamp":2}]}`,
	` { "logEvents" : [ { "timestamp" : 1700000000000 , "message" : "{\"level\":\"info\",\"msg\":\"x\\ny\"}" } ] , "logGroupName" : "/a/b" } `,
	`{"logEvents":[]}`,
	`{}`,
	`{"logEvents":[{}]}`,
	`{"logEvents":[{"timestamp":1}]}`,
	`{"logEvents":[{"message":""}]}`,
	`{"logEvents":[{"timestamp":-5,"message":"\/\b\f\r\t\\"}]}`,
	`{"logEvents":[{"timestamp":1,"message":"caf\u00e9 \ud83d\ude00"}]}`, // \u: json.Unmarshal
	`{"logEvents":[{"timestamp":1,"message":"café ☕"}]}`,
	"{\"logEvents\":[{\"timestamp\":1,\"message\":\"bad \xff utf-8\"}]}",
	"{\"logEvents\":[{\"timestamp\":1,\"message\":\"ctl \x01\"}]}",
	`{"logEvents":[{"timestamp":1.5,"message":"a"}]}`,
	`{"logEvents":[{"timestamp":1e3,"message":"a"}]}`,
	`{"logEvents":[{"timestamp":01,"message":"a"}]}`,
	`{"logEvents":[{"timestamp":99999999999999999999,"message":"a"}]}`,
	`{"logEvents":[{"timestamp":"1","message":"a"}]}`,
	`{"logEvents":[{"timestamp":null,"message":null}]}`,
	`{"logEvents":null}`,
	`{"LogGroupName":"case","logStreamName":"s"}`,
	`{"logGroupName":"a","logGroupName":"b"}`,
	`{"logEvents":[{"timestamp":1,"timestamp":2,"message":"a"}]}`,
	`{"logGroupName":"g","unknown":{"x":[1,2]},"logEvents":[{"timestamp":1,"message":"a","extra":true}]}`,
	`{"retentionInDays":30,"logGroupName":"g"}`,
	`{"logGroupName":"g"} trailing`,
	`{"logGroupName":"g",}`,
	`{"logEvents":[{"timestamp":1,"message":"a"},]}`,
	`{"logEvents":[{"timestamp":1,"message":"a"}`,
	`{"logGroupName":"unterminated`,
	`{"logGroupName":"bad escape \x"}`,
	`[]`,
	``,
	`{"logGroupName":5}`,
	`{"logEvents":[{"timestamp":-,"message":"a"}]}`,
}

func TestDecodeLogsRequestMatchesUnmarshal(t *testing.T) {
	bodies := append([]string(nil), logsBodies...)
	var big strings.Builder
	big.WriteString(`{"logGroupName":"g","logStreamName":"s","logEvents":[`)
	for i := range 5000 {
		if i > 0 {
			big.WriteByte(',')
		}
		big.WriteString(`{"timestamp":1700000000000,"message":"{\"level\":\"info\",\"id\":` + strings.Repeat("7", i%13+1) + `}"}`)
	}
	big.WriteString(`]}`)
	bodies = append(bodies, big.String())
	for _, body := range bodies {
		check(t, body)
	}
}

func FuzzDecodeLogsRequest(f *testing.F) {
	for _, b := range logsBodies {
		f.Add(b)
	}
	f.Fuzz(check)
}

func check(t *testing.T, body string) {
	var want, got putLogsRequest
	wantErr := json.Unmarshal([]byte(body), &want)
	gotErr := decodeLogsRequest([]byte(body), &got, &decodeBuf{})
	if (wantErr != nil) != (gotErr != nil) {
		t.Fatalf("%.200q: error %v, json.Unmarshal's %v", body, gotErr, wantErr)
	}
	if wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%.200q: decoded %+v, json.Unmarshal %+v", body, got, want)
	}
	// The same with a decodeBuf that decoded another body before (the
	// fake's are kept between calls), its arena reused (SetKeepEvents(false))
	// or not; when not, the first body's messages are intact after the
	// second decode (the stored events point into them).
	first := logsBodies[1]
	var firstWant putLogsRequest
	if err := json.Unmarshal([]byte(first), &firstWant); err != nil {
		t.Fatal(err)
	}
	for _, reuse := range []bool{false, true} {
		buf := &decodeBuf{reuseArena: reuse}
		var firstGot putLogsRequest
		if err := decodeLogsRequest([]byte(first), &firstGot, buf); err != nil {
			t.Fatal(err)
		}
		kept := *firstGot.LogEvents[0].Message
		var again putLogsRequest
		againErr := decodeLogsRequest([]byte(body), &again, buf)
		if (wantErr != nil) != (againErr != nil) {
			t.Fatalf("%.200q after another body (arena reused %v): error %v, json.Unmarshal's %v", body, reuse, againErr, wantErr)
		}
		if wantErr == nil && !reflect.DeepEqual(again, want) {
			t.Fatalf("%.200q after another body (arena reused %v): decoded %+v, json.Unmarshal %+v", body, reuse, again, want)
		}
		if !reuse && kept != *firstWant.LogEvents[0].Message {
			t.Fatalf("%.200q: the body decoded before it now has message %q, want %q", body, kept, *firstWant.LogEvents[0].Message)
		}
	}
}

// What the SDK sends takes the fast reader (else the test above proves nothing about it).
func TestDecodeLogsRequestFastPath(t *testing.T) {
	for _, body := range logsBodies[:8] {
		var req putLogsRequest
		if !fastPutLogs([]byte(body), &req, &decodeBuf{}) {
			t.Errorf("%q: not read by the fast reader", body)
		}
	}
}
