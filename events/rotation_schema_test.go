package events

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The schema fragment of the events blocks and their golden examples wait in
// schemas/pending until the connection schema takes them; this keeps them
// true to the Go types and their validation meanwhile.

const fragmentID = "https://github.com/cloudbridge/cloudbridge/schemas/rotation-events.fragment.json"

func compileFragment(t *testing.T) (aws, gcp *jsonschema.Schema) {
	t.Helper()
	c := jsonschema.NewCompiler()
	for id, path := range map[string]string{
		fragmentID: filepath.Join("..", "schemas", "pending", "rotation-events.fragment.json"),
		"https://github.com/cloudbridge/cloudbridge/schemas/defs.schema.json": filepath.Join("..", "schemas", "defs.schema.json"),
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(id, doc); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if aws, err = c.Compile(fragmentID + "#/$defs/aws_events"); err != nil {
		t.Fatal(err)
	}
	if gcp, err = c.Compile(fragmentID + "#/$defs/gcp_events"); err != nil {
		t.Fatal(err)
	}
	return aws, gcp
}

func validates(s *jsonschema.Schema, doc string) bool {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(doc)))
	return err == nil && s.Validate(inst) == nil
}

func TestRotationSchemaFragmentAndExamples(t *testing.T) {
	awsSchema, gcpSchema := compileFragment(t)
	for _, name := range []string{"aws-events", "gcp-events"} {
		b, err := os.ReadFile(filepath.Join("..", "schemas", "pending", "examples", "connection", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			AWS *struct {
				Region   string          `json:"region"`
				Endpoint string          `json:"endpoint"`
				Events   json.RawMessage `json:"events"`
			} `json:"aws"`
			GCP *struct {
				Events json.RawMessage `json:"events"`
			} `json:"gcp"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		switch {
		case doc.AWS != nil:
			if !validates(awsSchema, string(doc.AWS.Events)) {
				t.Errorf("%s: aws.events fails the schema", name)
			}
			var ev AWSEvents
			if err := Decode(doc.AWS.Events, &ev); err != nil {
				t.Fatal(err)
			}
			if err := ev.Validate(doc.AWS.Region, doc.AWS.Endpoint); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case doc.GCP != nil:
			if !validates(gcpSchema, string(doc.GCP.Events)) {
				t.Errorf("%s: gcp.events fails the schema", name)
			}
			var ev GCPEvents
			if err := Decode(doc.GCP.Events, &ev); err != nil {
				t.Fatal(err)
			}
			if err := ev.Validate(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		default:
			t.Fatalf("%s: neither aws nor gcp", name)
		}
	}
	// Bad blocks: rejected by the schema and by the worker.
	for _, bad := range []string{
		`{}`,
		`{"queue_url":"https://sqs.us-east-1.amazonaws.com/secret-changes"}`,
		`{"queue_url":"https://sqs.us-east-1.amazonaws.com/123456789012/q","extra":1}`,
		`{"queue_url":"https://sqs.us-east-1.amazonaws.com/123456789012/q","degraded_ttl":"soon"}`,
	} {
		var ev AWSEvents
		if validates(awsSchema, bad) {
			t.Errorf("schema accepts aws.events %s", bad)
		}
		if Decode([]byte(bad), &ev) == nil && ev.Validate("us-east-1", "") == nil {
			t.Errorf("worker accepts aws.events %s", bad)
		}
	}
	for _, bad := range []string{
		`{}`,
		`{"subscription":"secret-changes"}`,
		`{"subscription":"projects/bio-prod/topics/t1"}`,
		`{"subscription":"projects/bio-prod/subscriptions/s1","endpoint":"grpc://h"}`,
	} {
		var ev GCPEvents
		if validates(gcpSchema, bad) {
			t.Errorf("schema accepts gcp.events %s", bad)
		}
		if Decode([]byte(bad), &ev) == nil && ev.Validate() == nil {
			t.Errorf("worker accepts gcp.events %s", bad)
		}
	}
}
