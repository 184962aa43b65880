package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
	"github.com/cloudbridge/cloudbridge/schemas"
)

// goTypes maps every schema to the Go type of package events it describes.
var goTypes = map[string]func() any{
	"audit-event":           func() any { return new(events.AuditEvent) },
	"fingerprint-request":   func() any { return new(events.FingerprintRequest) },
	"fingerprint-reply":     func() any { return new(events.FingerprintReply) },
	"sealed-reply":          func() any { return new(events.SealedReply) },
	"connection":            func() any { return new(events.Connection) },
	"connection-stored":     func() any { return new(events.Connection) },
	"connection-list":       func() any { return new(events.ConnectionList) },
	"dead-letter":           func() any { return new(events.DeadLetter) },
	"dead-list":             func() any { return new(events.DeadList) },
	"dead-query":            func() any { return new(events.DeadQuery) },
	"dead-ref":              func() any { return new(events.DeadRef) },
	"dead-result":           func() any { return new(events.DeadResult) },
	"empty":                 func() any { return new(events.Empty) },
	"error-reply":           func() any { return new(events.ErrorReply) },
	"export":                func() any { return new(events.Export) },
	"export-list":           func() any { return new(events.ExportList) },
	"export-status-list":    func() any { return new(events.ExportStatusList) },
	"export-status-request": func() any { return new(events.ExportStatusRequest) },
	"exported-event":        func() any { return new(events.ExportedEvent) },
	"export-accepted":       func() any { return new(events.ExportAccepted) },
	"invalidate-request":    func() any { return new(events.InvalidateRequest) },
	"name-request":          func() any { return new(events.NameRequest) },
	"rekey-reply":           func() any { return new(events.RekeyReply) },
	"resolve-reply":         func() any { return new(events.ResolveReply) },
	"resolve-request":       func() any { return new(events.ResolveRequest) },
	"secret-list-request":   func() any { return new(events.SecretListRequest) },
	"secret-names":          func() any { return new(events.SecretNames) },
	"secret-put":            func() any { return new(events.SecretPut) },
	"secret-ref":            func() any { return new(events.SecretRef) },
	"test-reply":            func() any { return new(events.TestReply) },
	"test-request":          func() any { return new(events.TestRequest) },
	"token-reply":           func() any { return new(events.TokenReply) },
	"token-request":         func() any { return new(events.TokenRequest) },
}

// nestedTypes are struct types of events that appear only inside a message,
// with the schema that describes them.
var nestedTypes = map[string]string{
	"AWSConfig":         "connection",
	"GCPConfig":         "connection",
	"CachePolicy":       "connection",
	"Limits":            "connection",
	"CloudWatchSink":    "export",
	"CloudLoggingSink":  "export",
	"S3Sink":            "export",
	"MonitoredResource": "export",
	"BatchPolicy":       "export",
	"Step":              "test-reply",
	"DeadSummary":       "dead-list",
	"ExportStatus":      "export-status-list",
	"ExportError":       "export-status-list",
	"Error":             "error-reply",
	"AWSCredentials":    "token-reply",
	"GCPToken":          "token-reply",
	"AWSEvents":         "connection",
	"GCPEvents":         "connection",
	"Requester":         "audit-event",
}

// notMessages are struct types of events that never go on the wire.
var notMessages = map[string]bool{
	"Client":      true,
	"CodeInfo":    true, // a row of the error table (events.ErrorTable)
	"Subjects":    true,
	"ReplySealer": true, // a key pair sealing replies; its plaintext is SealedReply
}

// validator is implemented by request types that the worker checks after decoding.
type validator interface{ Validate() error }

// workerValidate runs the worker's checks of a decoded message: its Validate,
// and for a connection the provider table, whose Validate runs the generic
// events.Connection.Validate and then the provider's own rules.
func workerValidate(v any) error {
	if c, ok := v.(*events.Connection); ok {
		return all.Table.Validate(c)
	}
	if val, ok := v.(validator); ok {
		return val.Validate()
	}
	return nil
}

func TestNamesMatchFilesAndGoTypes(t *testing.T) {
	names := schemas.Names()
	if len(names) == 0 {
		t.Fatal("no schemas embedded")
	}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
		if _, ok := goTypes[n]; !ok {
			t.Errorf("schema %s describes no Go type in goTypes", n)
		}
		b, err := schemas.Schema(n)
		if err != nil {
			t.Fatalf("Schema(%s): %v", n, err)
		}
		var doc struct {
			ID     string `json:"$id"`
			Schema string `json:"$schema"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("schema %s: %v", n, err)
		}
		if doc.ID != schemas.ID(n) {
			t.Errorf("schema %s: $id %q, want %q", n, doc.ID, schemas.ID(n))
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("schema %s: $schema %q is not draft 2020-12", n, doc.Schema)
		}
	}
	for n := range goTypes {
		if !seen[n] {
			t.Errorf("Go type for %s has no schema", n)
		}
	}
	if seen["defs"] {
		t.Error("defs is not a message and must not be among Names")
	}
	if _, err := schemas.Schema("defs"); err != nil {
		t.Errorf("Schema(defs): %v", err)
	}
}

// TestEveryEventsStructHasASchema parses package events and fails when an
// exported struct type is neither a message with a schema nor a known part of one.
func TestEveryEventsStructHasASchema(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "events", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("listing events sources: %v (%d files)", err, len(files))
	}
	covered := map[string]bool{}
	// A message type covers the struct types of its fields (a provider's
	// block type such as AWSConfig), found by reflection.
	var cover func(t reflect.Type)
	cover = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeOf(events.Connection{}).PkgPath() || covered[t.Name()] {
			return
		}
		covered[t.Name()] = true
		for i := 0; i < t.NumField(); i++ {
			cover(t.Field(i).Type)
		}
	}
	for _, f := range goTypes {
		cover(reflect.TypeOf(f()))
	}
	fset := token.NewFileSet()
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parsing %s: %v", path, err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				if _, isStruct := ts.Type.(*ast.StructType); !isStruct || !ts.Name.IsExported() {
					continue
				}
				name := ts.Name.Name
				if covered[name] || notMessages[name] {
					continue
				}
				if _, ok := nestedTypes[name]; ok {
					continue
				}
				t.Errorf("events.%s (%s) has no schema: add one to schemas/ and to goTypes, or list it in nestedTypes/notMessages", name, filepath.Base(path))
			}
		}
	}
}

func TestSchemaAPIErrors(t *testing.T) {
	for _, name := range []string{"", "nope", "../schemas", "defs.schema", "examples"} {
		if _, err := schemas.Schema(name); name != "" && !errors.Is(err, schemas.ErrUnknownSchema) {
			t.Errorf("Schema(%q): err %v, want ErrUnknownSchema", name, err)
		}
		if err := schemas.Validate(name, []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownSchema) {
			t.Errorf("Validate(%q): err %v, want ErrUnknownSchema", name, err)
		}
		if _, err := schemas.Examples(name); !errors.Is(err, schemas.ErrUnknownSchema) {
			t.Errorf("Examples(%q): err %v, want ErrUnknownSchema", name, err)
		}
	}
	var ve *schemas.ValidationError
	if err := schemas.Validate("empty", []byte(`{} {}`)); !errors.As(err, &ve) {
		t.Errorf("two documents: err %v, want a *ValidationError", err)
	}
	if err := schemas.Validate("empty", []byte(`{`)); !errors.As(err, &ve) {
		t.Errorf("truncated document: err %v, want a *ValidationError", err)
	}
}

func TestGoldenExamplesValidate(t *testing.T) {
	for _, name := range schemas.Names() {
		exs, err := schemas.Examples(name)
		if err != nil {
			t.Fatalf("Examples(%s): %v", name, err)
		}
		if len(exs) == 0 {
			t.Errorf("schema %s has no golden example in examples/%s/", name, name)
		}
		for _, ex := range exs {
			if err := schemas.Validate(name, ex.Doc); err != nil {
				t.Errorf("examples/%s/%s.json: %v", name, ex.Name, err)
			}
		}
	}
}

// TestGoldenExamplesRoundTrip decodes every example strictly into its Go type,
// checks requests with the worker's own Validate, and re-encodes: the result
// still validates and carries the same JSON.
func TestGoldenExamplesRoundTrip(t *testing.T) {
	for _, name := range schemas.Names() {
		exs, _ := schemas.Examples(name)
		for _, ex := range exs {
			t.Run(name+"/"+ex.Name, func(t *testing.T) {
				v := goTypes[name]()
				dec := json.NewDecoder(bytes.NewReader(ex.Doc))
				dec.DisallowUnknownFields()
				if err := dec.Decode(v); err != nil {
					t.Fatalf("strict decode into %T: %v", v, err)
				}
				if err := workerValidate(v); err != nil {
					t.Fatalf("worker rejects a golden example: %v", err)
				}
				out, err := json.Marshal(v)
				if err != nil {
					t.Fatalf("encode: %v", err)
				}
				if err := schemas.Validate(name, out); err != nil {
					t.Fatalf("re-encoded %T no longer validates: %v\n%s", v, err, out)
				}
				if a, b := normalize(t, ex.Doc), normalize(t, out); !reflect.DeepEqual(a, b) {
					t.Errorf("round trip changed the document:\n in: %s\nout: %s", ex.Doc, out)
				}
			})
		}
	}
}

func normalize(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("normalize: %v", err)
	}
	return v
}

var (
	fetched = time.Date(2026, 11, 24, 2, 15, 4, 123456789, time.UTC)
	pemKey  = "-----BEGIN PRIVATE KEY-----\nSAMPLE-NOT-A-REAL-KEY\n-----END PRIVATE KEY-----\n"
)

func saKey(t *testing.T) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "chem-data-prod", "private_key_id": "abc123",
		"private_key": pemKey, "client_email": "cloudbridge@chem-data-prod.iam.gserviceaccount.com",
		"client_id": "1048576", "token_uri": "http://127.0.0.1:8080/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// connections is one connection per provider and auth method.
func connections(t *testing.T) []events.Connection {
	return []events.Connection{
		{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"biodb*"},
			Cache: &events.CachePolicy{TTL: events.Duration(5 * time.Minute), MaxStale: events.Duration(time.Hour)},
			AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIAIOSFODNN7EXAMPLE",
				SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", SessionToken: "FwoGZXIvYXdzEXAMPLE",
				Endpoint: "http://127.0.0.1:4566"}},
		{Name: "aws-task", Provider: events.ProviderAWS, Groups: []string{"*"}, Secrets: []string{"analytics/*", "db-?"},
			AWS: &events.AWSConfig{Region: "eu-west-1", Auth: events.AWSAuthTaskRole,
				RoleARN: "arn:aws:iam::123456789012:role/cloudbridge", ExternalID: "datagrok", SessionName: "cloudbridge",
				Duration: events.Duration(90 * time.Minute)}},
		{Name: "aws-default", Provider: events.ProviderAWS, Groups: []string{"bio", "chem"}, Secrets: []string{"*"},
			AWS: &events.AWSConfig{Region: "ap-southeast-2", Auth: events.AWSAuthDefault}},
		{Name: "gcp-sm-chem", Provider: events.ProviderGCP, Description: "chem's Secret Manager", Groups: []string{"chem"},
			Secrets: []string{"chemdb*"}, Cache: &events.CachePolicy{TTL: events.Duration(30 * time.Second)},
			GCP: &events.GCPConfig{Project: "chem-data-prod", Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: saKey(t)}},
		{Name: "gcp-imp", Provider: events.ProviderGCP, Groups: []string{"chem"}, Secrets: []string{"x"},
			GCP: &events.GCPConfig{Project: "chem-data-prod", Auth: events.GCPAuthImpersonation,
				Impersonate: "bq@chem-data-prod.iam.gserviceaccount.com",
				Delegates:   []string{"hop@chem-data-prod.iam.gserviceaccount.com"}, Endpoint: "https://127.0.0.1:9443"}},
		{Name: "gcp-default", Provider: events.ProviderGCP, Groups: []string{"chem"}, Secrets: []string{"x"},
			GCP: &events.GCPConfig{Auth: events.GCPAuthDefault}},
		{Name: "local-bio", Provider: events.ProviderBuiltin, Groups: []string{"bio"}, Secrets: []string{"biodb*"}},
	}
}

func exports() []events.Export {
	var out []events.Export
	for _, lvl := range events.Levels {
		out = append(out, events.Export{Name: "cw-" + lvl, Connection: "aws-sm-bio", Subjects: []string{"logs.app.>", "logs.db.*", "metrics.>"},
			MinLevel: lvl, CloudWatch: &events.CloudWatchSink{LogGroup: "/datagrok/{export}", LogStream: "{subject}", Create: true, RetentionDays: 14},
			Batch: &events.BatchPolicy{MaxEvents: 10000, MaxBytes: 1 << 20, MaxWait: events.Duration(1500 * time.Millisecond)}})
	}
	out = append(out, events.Export{Name: "gl", Connection: "gcp-sm-chem", Subjects: []string{"logs.app.web"}, Truncate: true,
		CloudLogging: &events.CloudLoggingSink{Project: "chem-data-prod", LogID: "datagrok.app",
			Resource: &events.MonitoredResource{Type: "generic_node", Labels: map[string]string{"node_id": "w1", "location": "eu"}}}})
	out = append(out, events.Export{Name: "gl-min", Connection: "gcp-sm-chem", Subjects: []string{"logs.>"},
		CloudLogging: &events.CloudLoggingSink{Project: "chem-data-prod", LogID: "app"}})
	return out
}

type goValue struct {
	schema string
	what   string
	v      any
}

// goValues builds a value of every message type, covering every provider,
// auth method, error code, level and dead-letter reason of package events.
func goValues(t *testing.T) []goValue {
	var vals []goValue
	add := func(schema, what string, v any) { vals = append(vals, goValue{schema, what, v}) }
	var stored []events.Connection
	for _, c := range connections(t) {
		add("connection", c.Name, c)
		stored = append(stored, all.Table.Redact(c))
		add("connection-stored", c.Name, all.Table.Redact(c))
	}
	add("connection-list", "all", events.ConnectionList{Connections: stored})
	add("connection-list", "none", events.ConnectionList{Connections: []events.Connection{}})
	for _, e := range exports() {
		add("export", e.Name, e)
	}
	add("export-list", "all", events.ExportList{Exports: exports()})
	add("export-list", "none", events.ExportList{Exports: []events.Export{}})
	add("name-request", "conn", events.NameRequest{Name: "aws-sm-bio"})
	add("empty", "empty", events.Empty{})
	add("secret-put", "object", events.SecretPut{Connection: "local-bio", Name: "biodb01", Value: json.RawMessage(`{"login":"user01","password":"password01"}`)})
	add("secret-put", "string", events.SecretPut{Connection: "local-bio", Name: "team/biodb01.ro", Value: json.RawMessage(`"password01"`)})
	add("secret-ref", "ref", events.SecretRef{Connection: "local-bio", Name: "biodb01"})
	add("secret-list-request", "list", events.SecretListRequest{Connection: "local-bio"})
	add("secret-names", "names", events.SecretNames{Names: []string{"biodb01", "team/biodb01.ro"}})
	add("secret-names", "none", events.SecretNames{Names: []string{}})
	add("rekey-reply", "rekey", events.RekeyReply{Resealed: 3, Failed: []string{}, Current: "k2"})
	add("rekey-reply", "some failed", events.RekeyReply{Resealed: 3, Failed: []string{"aws-sm-bio", "local-bio.biodb01"}, Current: "k2"})
	add("invalidate-request", "conn", events.InvalidateRequest{Connection: "aws-sm-bio"})
	add("invalidate-request", "secret", events.InvalidateRequest{Connection: "aws-sm-bio", Secret: "biodb01"})
	add("resolve-request", "plain", events.ResolveRequest{Secret: "biodb01"})
	add("resolve-request", "full", events.ResolveRequest{Secret: "projects/chem-data-prod/secrets/chemdb/versions/3", Version: "latest", Keys: []string{"login"}, Fresh: true})
	str := "password01"
	add("resolve-reply", "credentials", events.ResolveReply{Connection: "aws-sm-bio", Secret: "biodb01", Version: "v1",
		Credentials: map[string]json.RawMessage{"login": json.RawMessage(`"user01"`), "port": json.RawMessage(`5432`)}, FetchedAt: fetched})
	add("resolve-reply", "value", events.ResolveReply{Connection: "aws-sm-bio", Secret: "biodb01", Value: &str, Cached: true, Stale: true, FetchedAt: fetched})
	empty := ""
	add("resolve-reply", "empty-value", events.ResolveReply{Connection: "aws-sm-bio", Secret: "biodb01", Value: &empty, FetchedAt: fetched})
	add("resolve-reply", "binary", events.ResolveReply{Connection: "aws-sm-bio", Secret: "cert", Binary: []byte{0, 1, 2, 0xfe, 0xff}, FetchedAt: fetched})
	add("test-request", "empty", events.TestRequest{})
	add("test-request", "keys", events.TestRequest{Secret: "biodb01", Keys: []string{"login", "password"}})
	var ok, failed events.TestReply
	ok.Add(events.PassStep(events.StepSecret, "read"))
	ok.Add(events.PassStep(events.StepKeys, "login, password"))
	failed.Add(events.PassStep(events.StepCredentials, ""))
	failed.Add(events.PassStep(events.StepIdentity, "arn:aws:iam::123456789012:user/cb"))
	failed.Add(events.FailStep(events.StepSecret, fmt.Errorf("reading biodb02: %w", events.ErrNotFound)))
	failed.Add(events.FailStep(events.StepKeys, errors.New("a bug")))
	add("test-reply", "ok", ok)
	add("test-reply", "failed", failed)
	add("token-request", "empty", events.TokenRequest{})
	add("token-request", "full", events.TokenRequest{Scopes: []string{"https://www.googleapis.com/auth/cloud-platform"}, Duration: events.Duration(time.Hour)})
	add("token-reply", "aws", events.TokenReply{Provider: events.ProviderAWS, AWS: &events.AWSCredentials{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "s", SessionToken: "t", Expiration: fetched}})
	add("token-reply", "gcp", events.TokenReply{Provider: events.ProviderGCP, GCP: &events.GCPToken{AccessToken: "ya29.x", TokenType: "Bearer", Expiry: fetched}})
	for _, code := range events.Codes() {
		add("error-reply", string(code), events.ErrorReply{Error: events.Errorf(code, "something %s", code)})
		add("error-reply", "wire-"+string(code), events.ErrorReply{Error: events.AsWire(fmt.Errorf("doing x: %w", &events.Error{Code: code}))})
	}
	add("error-reply", "plain-error", events.ErrorReply{Error: events.AsWire(errors.New("boom"))})
	add("export-accepted", "call", events.ExportAccepted{Export: "cw-info", Worker: "w1", Runner: "r1", Stream: "CLOUDBRIDGE_LOGS",
		StreamCreated: fetched, ConsumerCreated: fetched.Add(time.Second), Ranges: [][]uint64{{1, 50}, {52, 52}},
		Stored: [][]int64{{fetched.Add(2 * time.Second).UnixNano(), fetched.Add(3 * time.Second).UnixNano()}, {fetched.Add(4 * time.Second).UnixNano(), fetched.Add(4 * time.Second).UnixNano()}}})
	add("exported-event", "batch", events.ExportedEvent{Export: "cw-info", Events: 10, Bytes: 1000, FirstSeq: 1, LastSeq: 12, Rejected: 1, Dead: 1, DurationMS: 42})
	for _, reason := range deadReasons {
		add("dead-letter", reason, events.DeadLetter{Export: "cw-info", Subject: "logs.app.web", Seq: 7, Reason: reason,
			Detail: "why", Payload: []byte(`{"msg":"hi"}`), Time: fetched})
	}
	since := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	for _, reason := range deadReasons {
		add("dead-query", reason, events.DeadQuery{Export: "cw-info", Reason: reason, Since: &since})
		add("dead-list", reason, events.DeadList{Export: "cw-info", DeadLetters: []events.DeadSummary{{Seq: 7, Subject: "logs.app.web", Reason: reason, Detail: "x", Size: 3, Time: since}}, Truncated: true})
	}
	add("dead-query", "all", events.DeadQuery{Export: "cw-info"})
	add("dead-list", "empty", events.DeadList{Export: "cw-info", DeadLetters: []events.DeadSummary{}})
	add("dead-ref", "seq", events.DeadRef{Export: "cw-info", Seq: 7})
	add("export-status-request", "all", events.ExportStatusRequest{})
	add("export-status-request", "one", events.ExportStatusRequest{Name: "cw-info"})
	add("export-status-list", "none", events.ExportStatusList{Exports: []events.ExportStatus{}})
	add("export-status-list", "failing", events.ExportStatusList{Exports: []events.ExportStatus{{Export: "cw-info", Workers: 1, Lag: 3, Pending: 1, AckPending: 2,
		LastDelivery: &since, LastError: &events.ExportError{Time: fetched, Code: events.CodeThrottled, Message: "putting log events: cloudwatch ThrottlingException", Cause: "Rate exceeded", Endpoint: "https://logs.eu-west-1.amazonaws.com"},
		Retries: 4, DeadLetters: 1}}})
	add("dead-result", "more", events.DeadResult{Export: "cw-info", Count: 1000, More: true})
	add("dead-result", "none", events.DeadResult{Export: "cw-info"})
	sealedConn := connections(t)[len(connections(t))-1]
	sealedConn.RequireSealed = true
	add("connection", "require_sealed", sealedConn)
	add("connection-stored", "require_sealed", all.Table.Redact(sealedConn))
	for _, ev := range auditEvents() {
		add("audit-event", ev.Op+"/"+ev.Verb+"/"+ev.Outcome, ev)
	}
	add("fingerprint-request", "current", events.FingerprintRequest{Connection: "local-bio", Secret: "biodb01"})
	add("fingerprint-request", "version", events.FingerprintRequest{Connection: "aws-sm-bio", Secret: "biodb01", Version: "AWSPREVIOUS"})
	add("fingerprint-reply", "fp", events.FingerprintReply{Connection: "local-bio", Secret: "biodb01", Version: "3", Fingerprint: fingerprint})
	add("fingerprint-reply", "no version", events.FingerprintReply{Connection: "local-bio", Secret: "biodb01", Fingerprint: fingerprint})
	for _, body := range []any{
		events.ResolveReply{Connection: "local-bio", Secret: "biodb01", Value: &str, FetchedAt: fetched},
		events.ErrorReply{Error: events.Errorf(events.CodeNotFound, "no such key")},
		events.Empty{},
	} {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		add("sealed-reply", fmt.Sprintf("%T", body), events.SealedReply{RequestID: "6KvHx0qWm3c8ZpN2aRb1sX", Expires: fetched.Add(events.SealedReplyTTL), Body: b})
	}
	return vals
}

const (
	fingerprint = "3f1d7a0e9c2b84d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2"
	replyKey    = "XBTJKFJ43PULMKMD36HYQ4P3O26QGKFH7Q3TQZIQIAPDG63AZ5VEHZQE"
)

// auditEvents is an audit event of every op, with and without a failure,
// a requester, token fields and a sealed reply.
func auditEvents() []events.AuditEvent {
	exp := fetched.Add(time.Hour)
	base := func(op string) events.AuditEvent {
		return events.AuditEvent{Time: fetched, Op: op, Outcome: events.OutcomeOK, LatencyMS: 0.125, Instance: "Vq3kSx2bQ0pJ7eTqFh9YrM", RequestID: "6KvHx0qWm3c8ZpN2aRb1sT"}
	}
	var out []events.AuditEvent
	ev := base(events.OpResolve)
	ev.Group, ev.Connection, ev.Secret, ev.Version, ev.Cached, ev.Fingerprint = "bio", "aws-sm-bio", "biodb01", "v1", true, fingerprint
	ev.Requester = &events.Requester{Account: "DATAGROK", User: "api", Name: "datagrok api", Host: "10.0.3.17", Server: "nats-1"}
	out = append(out, ev)
	ev.Sealed, ev.ReplyKey, ev.Stale = true, replyKey, true
	out = append(out, ev)
	ev = base(events.OpResolve)
	ev.Group, ev.Connection, ev.Secret, ev.Outcome = "chem", "aws-sm-bio", "biodb01", string(events.CodeForbidden)
	out = append(out, ev)
	ev = base(events.OpResolve)
	ev.Group, ev.Connection, ev.Outcome = "bio", "aws-sm-bio", string(events.CodeBadRequest)
	out = append(out, ev)
	ev = base(events.OpTest)
	ev.Group, ev.Connection, ev.Secret = "bio", "aws-sm-bio", "biodb01"
	out = append(out, ev)
	ev = base(events.OpToken)
	ev.Group, ev.Connection, ev.Role, ev.Expires, ev.Fingerprint = "bio", "aws-task", "arn:aws:iam::123456789012:role/cloudbridge", &exp, fingerprint
	out = append(out, ev)
	ev = base(events.OpToken)
	ev.Group, ev.Connection, ev.Scopes, ev.Expires, ev.Fingerprint = "chem", "gcp-imp", []string{"https://www.googleapis.com/auth/cloud-platform"}, &exp, fingerprint
	ev.Sealed, ev.ReplyKey = true, replyKey
	out = append(out, ev)
	ev = base(events.OpInvalidate)
	ev.Connection, ev.Secret = "aws-sm-bio", "biodb01"
	out = append(out, ev)
	ev = base(events.OpAdmin)
	ev.Verb, ev.Connection, ev.Secret = "secrets-put", "local-bio", "biodb01"
	out = append(out, ev)
	ev = base(events.OpAdmin)
	ev.Verb, ev.Outcome = "rekey", string(events.CodeUnavailable)
	out = append(out, ev)
	return out
}

// deadReasons are the dead-letter reasons of package events.
var deadReasons = []string{events.DeadTooLarge, events.DeadTooOld, events.DeadExpired, events.DeadInvalid, events.DeadRejected, events.DeadUndeliverable}

func TestGoValuesValidate(t *testing.T) {
	covered := map[string]bool{}
	for _, gv := range goValues(t) {
		covered[gv.schema] = true
		t.Run(gv.schema+"/"+gv.what, func(t *testing.T) {
			want := reflect.TypeOf(goTypes[gv.schema]()).Elem()
			if reflect.TypeOf(gv.v) != want {
				t.Fatalf("value is %T, schema %s describes %v", gv.v, gv.schema, want)
			}
			pv := reflect.New(want)
			pv.Elem().Set(reflect.ValueOf(gv.v))
			if err := workerValidate(pv.Interface()); err != nil {
				t.Fatalf("test value is not a valid request: %v", err)
			}
			b, err := json.Marshal(gv.v)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if err := schemas.Validate(gv.schema, b); err != nil {
				t.Errorf("%v\n%s", err, b)
			}
		})
	}
	for _, n := range schemas.Names() {
		if !covered[n] {
			t.Errorf("no Go value of schema %s in goValues", n)
		}
	}
}

// TestEnumsMatchEvents ties the schemas' enums to the constants of events, so
// adding a code, level or reason without updating the schema fails.
func TestEnumsMatchEvents(t *testing.T) {
	var codes []string
	for _, c := range events.Codes() {
		codes = append(codes, string(c))
	}
	tests := []struct {
		schema, pointer string
		want            []string
	}{
		{"defs", "/$defs/code/enum", codes},
		{"defs", "/$defs/level/enum", events.Levels},
		{"dead-letter", "/properties/reason/enum", deadReasons},
		{"connection", "/properties/provider/enum", all.Table.Names()},
		{"connection", "/$defs/aws/properties/auth/enum", []string{events.AWSAuthAccessKey, events.AWSAuthTaskRole, events.AWSAuthDefault}},
		{"connection", "/$defs/gcp/properties/auth/enum", []string{events.GCPAuthServiceAccountKey, events.GCPAuthImpersonation, events.GCPAuthDefault}},
		{"token-reply", "/properties/provider/enum", []string{events.ProviderAWS, events.ProviderGCP}},
		{"defs", "/$defs/name/pattern", []string{events.NamePattern}},
		{"audit-event", "/properties/op/enum", []string{events.OpResolve, events.OpTest, events.OpToken, events.OpInvalidate, events.OpAdmin}},
		{"audit-event", "/properties/outcome/anyOf/0/const", []string{events.OutcomeOK}},
	}
	for _, tc := range tests {
		b, err := schemas.Schema(tc.schema)
		if err != nil {
			t.Fatal(err)
		}
		var node any
		if err := json.Unmarshal(b, &node); err != nil {
			t.Fatal(err)
		}
		for _, tok := range strings.Split(strings.TrimPrefix(tc.pointer, "/"), "/") {
			switch n := node.(type) {
			case map[string]any:
				node = n[tok]
			case []any:
				i, err := strconv.Atoi(tok)
				if err != nil || i < 0 || i >= len(n) {
					node = nil
				} else {
					node = n[i]
				}
			default:
				node = nil
			}
		}
		var got []string
		switch n := node.(type) {
		case []any:
			for _, v := range n {
				got = append(got, fmt.Sprint(v))
			}
		case string:
			got = []string{n}
		}
		a, w := append([]string(nil), got...), append([]string(nil), tc.want...)
		sort.Strings(a)
		sort.Strings(w)
		if !reflect.DeepEqual(a, w) {
			t.Errorf("%s#%s = %v, events has %v", tc.schema, tc.pointer, got, tc.want)
		}
	}
}
