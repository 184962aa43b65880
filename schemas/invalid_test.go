package schemas_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/schemas"
)

const (
	awsOK = `"aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"wJalrXUtnFEMI"}`
	cwOK  = `"cloudwatch":{"log_group":"/app"}`
	// auditOK is the required part of a valid resolve audit event.
	auditOK = `"time":"2026-11-24T02:00:00Z","op":"resolve","outcome":"ok","latency_ms":0.5,"request_id":"r1"`
	// auditThrottled is the required part of a throttled resolve audit event.
	auditThrottled = `"time":"2026-11-24T02:00:00Z","op":"resolve","outcome":"throttled","latency_ms":0.01,"request_id":"r2"`
	xkeyOK         = "XBTJKFJ43PULMKMD36HYQ4P3O26QGKFH7Q3TQZIQIAPDG63AZ5VEHZQE"
)

// invalidDocs are documents the schema must reject. worker says whether the
// worker's strict decode and Validate reject them too (false for rules only
// the schema states, such as the shape of replies).
var invalidDocs = []struct {
	name, schema, doc string
	keyword           string // the failing keyword reported
	worker            bool
}{
	{"unknown field", "resolve-request", `{"secret":"biodb01","secrte":"x"}`, "additionalProperties", true},
	{"missing secret", "resolve-request", `{"keys":["login"]}`, "required", true},
	{"secret with space", "resolve-request", `{"secret":"bio db01"}`, "pattern", true},
	{"secret with wildcard", "resolve-request", `{"secret":"biodb*"}`, "pattern", true},
	{"secret with NUL", "resolve-request", `{"secret":"bio\u0000db"}`, "pattern", true},
	{"empty key", "resolve-request", `{"secret":"biodb01","keys":[""]}`, "minLength", true},
	{"NUL in a key", "resolve-request", `{"secret":"biodb01","keys":["login\u0000password"]}`, "pattern", true},
	{"control character in a key", "resolve-request", `{"secret":"biodb01","keys":["login\npassword"]}`, "pattern", true},
	{"key too long", "resolve-request", `{"secret":"biodb01","keys":["` + strings.Repeat("k", 257) + `"]}`, "maxLength", true},
	{"fresh not bool", "resolve-request", `{"secret":"biodb01","fresh":"yes"}`, "type", true},
	{"array body", "resolve-request", `["biodb01"]`, "type", true},
	{"keys without secret", "test-request", `{"keys":["login"]}`, "dependentRequired", true},
	{"bad duration", "token-request", `{"duration":"5 minutes"}`, "pattern", true},
	{"negative duration", "token-request", `{"duration":"-5m"}`, "pattern", true},
	{"empty scope", "token-request", `{"scopes":[""]}`, "minLength", true},
	{"bad name", "connection", `{"name":"AWS_SM","provider":"builtin","groups":["bio"],"secrets":["x"]}`, "pattern", true},
	{"name too long", "connection", `{"name":"` + strings.Repeat("a", 65) + `","provider":"builtin"}`, "pattern", true},
	{"bad group", "connection", `{"name":"c","provider":"builtin","groups":["Bio"]}`, "pattern", true},
	{"duplicate group", "connection", `{"name":"c","provider":"builtin","groups":["bio","bio"]}`, "uniqueItems", true},
	{"duplicate secret pattern", "connection", `{"name":"c","provider":"builtin","groups":["bio"],"secrets":["db*","db*"]}`, "uniqueItems", true},
	{"missing provider", "connection", `{"name":"c","groups":["bio"]}`, "required", true},
	{"unknown provider", "connection", `{"name":"c","provider":"azure"}`, "enum", true},
	{"aws without block", "connection", `{"name":"c","provider":"aws"}`, "required", true},
	{"builtin with aws", "connection", `{"name":"c","provider":"builtin",` + awsOK + `}`, "const", true},
	{"gcp with aws", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"default"},` + awsOK + `}`, "const", true},
	{"aws with gcp", "connection", `{"name":"c","provider":"aws",` + awsOK + `,"gcp":{"auth":"default"}}`, "const", true},
	{"bad region", "connection", `{"name":"c","provider":"aws","aws":{"region":"mars","auth":"default"}}`, "pattern", true},
	{"unknown auth", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"password"}}`, "enum", true},
	{"access_key without secret", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIAIOSFODNN7EXAMPLE"}}`, "required", true},
	{"task_role with keys", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"task_role","access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"x"}}`, "const", true},
	{"external_id without role", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"default","external_id":"xyz"}}`, "const", true},
	{"bad role arn", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"default","role_arn":"arn:aws:iam::1:user/x"}}`, "pattern", true},
	{"unknown aws field", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"default","profile":"x"}}`, "additionalProperties", true},
	{"ftp endpoint", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"default","endpoint":"ftp://x"}}`, "pattern", true},
	{"tokens on builtin", "connection", `{"name":"c","provider":"builtin","tokens":{"enabled":true}}`, "enum", true},
	{"tokens without enabled", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"default"},"tokens":{"scopes":["x"]}}`, "required", false},
	{"tokens unknown field", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"default"},"tokens":{"enabled":true,"roles":["x"]}}`, "additionalProperties", true},
	{"tokens scope with space", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"default"},"tokens":{"enabled":true,"scopes":["a b"]}}`, "pattern", true},
	{"tokens bad max_duration", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"default"},"tokens":{"enabled":true,"max_duration":"1 hour"}}`, "pattern", true},
	{"bad cache ttl", "connection", `{"name":"c","provider":"builtin","cache":{"ttl":"5"}}`, "pattern", true},
	{"negative max_concurrent", "connection", `{"name":"c","provider":"builtin","limits":{"max_concurrent":-1}}`, "minimum", true},
	{"huge max_queue", "connection", `{"name":"c","provider":"builtin","limits":{"max_queue":10001}}`, "maximum", true},
	{"unknown limit", "connection", `{"name":"c","provider":"builtin","limits":{"max_inflight":8}}`, "additionalProperties", true},
	{"impersonation without target", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"impersonation"}}`, "required", true},
	{"bad impersonate email", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"impersonation","impersonate":"me@gmail.com"}}`, "pattern", true},
	{"key of wrong type", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"service_account_key","service_account_key":{"type":"user","private_key":"-----BEGIN PRIVATE KEY-----","client_email":"a@b.iam.gserviceaccount.com"}}}`, "const", true},
	{"key not PEM", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"service_account_key","service_account_key":{"type":"service_account","private_key":"hunter2hunter2","client_email":"a@b.iam.gserviceaccount.com"}}}`, "pattern", true},
	{"default with key", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"default","service_account_key":{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----","client_email":"a@b.iam.gserviceaccount.com"}}}`, "not", true},
	{"stored with clear secret key", "connection-stored", `{"name":"c","provider":"aws","groups":[],"secrets":[],` + awsOK + `}`, "const", false},
	{"stored with clear private key", "connection-stored", `{"name":"c","provider":"gcp","groups":[],"secrets":[],"gcp":{"auth":"service_account_key","service_account_key":{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----x","client_email":"a@b.iam.gserviceaccount.com"}}}`, "const", false},
	{"stored without groups", "connection-stored", `{"name":"c","provider":"builtin","secrets":[]}`, "required", false},
	{"null list", "connection-list", `{"connections":null}`, "type", false},
	{"name request extra", "name-request", `{"name":"c","force":true}`, "additionalProperties", true},
	{"name request bad", "name-request", `{"name":"../etc"}`, "pattern", false},
	{"empty with field", "empty", `{"all":true}`, "additionalProperties", true},
	{"secret value number", "secret-put", `{"connection":"local-bio","name":"biodb01","value":5}`, "type", true},
	{"secret value missing", "secret-put", `{"connection":"local-bio","name":"biodb01"}`, "required", true},
	{"secret name with space", "secret-put", `{"connection":"local-bio","name":"bio db","value":"x"}`, "pattern", true},
	{"secret name double dot", "secret-ref", `{"connection":"local-bio","name":"a..b"}`, "pattern", true},
	{"secret list without connection", "secret-list-request", `{}`, "required", false},
	{"invalidate bad secret", "invalidate-request", `{"connection":"c","secret":"a b"}`, "pattern", true},
	{"invalidate without connection", "invalidate-request", `{"secret":"biodb01"}`, "required", true},
	{"export no sink", "export", `{"name":"e","connection":"c","subjects":["logs.>"]}`, "required", true},
	{"export duplicate subject", "export", `{"name":"e","connection":"c","subjects":["logs.a","logs.a"],` + cwOK + `}`, "uniqueItems", true},
	{"s3 bucket upper case", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"My-Archive"}}`, "pattern", true},
	{"s3 no bucket", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"prefix":"x/"}}`, "required", true},
	{"s3 unknown placeholder", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"my-archive","prefix":"{subject}/"}}`, "pattern", true},
	{"s3 leading slash", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"my-archive","prefix":"/logs/"}}`, "pattern", true},
	{"s3 compression zstd", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"my-archive","compression":"zstd"}}`, "enum", true},
	{"s3 format csv", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"my-archive","format":"csv"}}`, "enum", true},
	{"s3 object too small", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"my-archive","max_object_bytes":10}}`, "minimum", true},
	{"s3 and cloudwatch", "export", `{"name":"e","connection":"c","subjects":["logs.>"],` + cwOK + `,"s3":{"bucket":"my-archive"}}`, "oneOf", true},
	{"s3 unknown field", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"my-archive","region":"us-east-1"}}`, "additionalProperties", true},
	{"export two sinks", "export", `{"name":"e","connection":"c","subjects":["logs.>"],` + cwOK + `,"cloud_logging":{"project":"chem-data-prod","log_id":"x"}}`, "oneOf", true},
	{"export no subjects", "export", `{"name":"e","connection":"c","subjects":[],` + cwOK + `}`, "minItems", true},
	{"export bad subject", "export", `{"name":"e","connection":"c","subjects":["logs.>.x"],` + cwOK + `}`, "pattern", true},
	{"export bad level", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"min_level":"loud",` + cwOK + `}`, "enum", true},
	{"export bad retention", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"cloudwatch":{"log_group":"/a","retention_days":2}}`, "enum", true},
	{"export log group colon", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"cloudwatch":{"log_group":"a:b"}}`, "pattern", true},
	{"export batch too big", "export", `{"name":"e","connection":"c","subjects":["logs.>"],` + cwOK + `,"batch":{"max_events":10001}}`, "maximum", true},
	{"export bad label", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"cloud_logging":{"project":"chem-data-prod","log_id":"x","resource":{"type":"global","labels":{"Bad":"x"}}}}`, "pattern", true},
	{"resolve reply two values", "resolve-reply", `{"connection":"c","secret":"s","value":"x","binary":"AA==","cached":false,"fetched_at":"2026-11-24T02:00:00Z"}`, "oneOf", false},
	{"resolve reply no value", "resolve-reply", `{"connection":"c","secret":"s","cached":false,"fetched_at":"2026-11-24T02:00:00Z"}`, "required", false},
	{"resolve reply bad time", "resolve-reply", `{"connection":"c","secret":"s","value":"x","cached":false,"fetched_at":"yesterday"}`, "format", false},
	{"resolve reply bad base64", "resolve-reply", `{"connection":"c","secret":"s","binary":"!!","cached":false,"fetched_at":"2026-11-24T02:00:00Z"}`, "pattern", false},
	{"test reply ok with failed step", "test-reply", `{"ok":true,"steps":[{"name":"secret","ok":false}]}`, "const", false},
	{"test reply failed with no failed step", "test-reply", `{"ok":false,"steps":[{"name":"secret","ok":true}]}`, "const", false},
	{"step passed with error", "test-reply", `{"ok":true,"steps":[{"name":"secret","ok":true,"error":{"code":"internal","message":"x"}}]}`, "const", false},
	{"token reply wrong block", "token-reply", `{"provider":"aws","gcp":{"access_token":"x","token_type":"Bearer","expiry":"2026-11-24T02:00:00Z"}}`, "required", false},
	{"error reply unknown code", "error-reply", `{"error":{"code":"teapot","message":"x"}}`, "enum", false},
	{"error reply without message", "error-reply", `{"error":{"code":"internal"}}`, "required", false},
	{"rekey negative", "rekey-reply", `{"resealed":-1,"current":"k1"}`, "minimum", false},
	{"exported fractional", "exported-event", `{"export":"e","events":1.5,"bytes":0,"first_seq":0,"last_seq":0,"rejected":0,"dead":0,"duration_ms":0}`, "type", false},
	{"accepted no ranges", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[]}`, "minItems", true},
	{"accepted zero seq", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[0,5]]}`, "minimum", true},
	{"accepted triple", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[1,2,3]]}`, "maxItems", true},
	{"accepted negative", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[-1,2]]}`, "minimum", true},
	{"accepted unknown field", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[1,2]],"stored":[[5,6]],"all":true}`, "additionalProperties", true},
	{"accepted no stored", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[1,2]]}`, "required", true},
	{"accepted stored zero", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[1,2]],"stored":[[0,5]]}`, "minimum", true},
	{"accepted stored triple", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[1,2]],"stored":[[1,2,3]]}`, "maxItems", true},
	{"accepted stored string", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[1,2]],"stored":[["1",2]]}`, "type", true},
	{"accepted no runner", "export-accepted", `{"export":"e","worker":"w","stream":"S","stream_created":"2026-11-24T02:00:00Z","consumer_created":"2026-11-24T02:00:00Z","ranges":[[1,2]],"stored":[[1,2]]}`, "required", true},
	{"accepted no incarnation", "export-accepted", `{"export":"e","worker":"w","runner":"r","stream":"S","ranges":[[1,2]]}`, "required", true},
	{"require_sealed not bool", "connection", `{"name":"c","provider":"builtin","require_sealed":"yes"}`, "type", true},
	{"audit value field", "audit-event", `{` + auditOK + `,"value":"password01"}`, "additionalProperties", false},
	{"audit without request id", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"resolve","outcome":"ok","latency_ms":1}`, "required", false},
	{"audit request id with space", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"resolve","outcome":"ok","latency_ms":1,"request_id":"a b"}`, "pattern", false},
	{"audit unknown op", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"read","outcome":"ok","latency_ms":1,"request_id":"r"}`, "enum", false},
	{"audit unknown outcome", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"resolve","outcome":"teapot","latency_ms":1,"request_id":"r"}`, "enum", false},
	{"audit negative latency", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"resolve","outcome":"ok","latency_ms":-1,"request_id":"r"}`, "minimum", false},
	{"audit bad time", "audit-event", `{"time":"yesterday","op":"resolve","outcome":"ok","latency_ms":1,"request_id":"r"}`, "format", false},
	{"audit admin without verb", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"admin","outcome":"ok","latency_ms":1,"request_id":"r"}`, "required", false},
	{"audit resolve with verb", "audit-event", `{` + auditOK + `,"verb":"connections-put"}`, "not", false},
	{"audit invalidate with group", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"invalidate","group":"bio","outcome":"ok","latency_ms":1,"request_id":"r"}`, "not", false},
	{"audit bad group", "audit-event", `{` + auditOK + `,"group":"Bio"}`, "pattern", false},
	{"audit fingerprint of a failure", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"resolve","outcome":"not_found","latency_ms":1,"request_id":"r","fingerprint":"` + strings.Repeat("ab", 32) + `"}`, "const", false},
	{"audit fingerprint upper case", "audit-event", `{` + auditOK + `,"fingerprint":"` + strings.Repeat("AB", 32) + `"}`, "pattern", false},
	{"audit fingerprint short", "audit-event", `{` + auditOK + `,"fingerprint":"abcd"}`, "pattern", false},
	{"audit reply key without sealed", "audit-event", `{` + auditOK + `,"reply_key":"` + xkeyOK + `"}`, "required", false},
	{"audit sealed without reply key", "audit-event", `{` + auditOK + `,"sealed":true}`, "required", false},
	{"audit sealed false", "audit-event", `{` + auditOK + `,"sealed":false,"reply_key":"` + xkeyOK + `"}`, "const", false},
	{"audit reply key not a curve key", "audit-event", `{` + auditOK + `,"sealed":true,"reply_key":"UBTJKFJ43PULMKMD36HYQ4P3O26QGKFH7Q3TQZIQIAPDG63AZ5VEHZQE"}`, "pattern", false},
	{"audit empty requester", "audit-event", `{` + auditOK + `,"requester":{}}`, "minProperties", false},
	{"audit requester unknown field", "audit-event", `{` + auditOK + `,"requester":{"user":"u","password":"p"}}`, "additionalProperties", false},
	{"audit bad expires", "audit-event", `{` + auditOK + `,"expires":"soon"}`, "format", false},
	{"audit empty scope", "audit-event", `{` + auditOK + `,"scopes":[""]}`, "minLength", false},
	{"audit count of an ok event", "audit-event", `{` + auditOK + `,"count":2,"until":"2026-11-24T02:00:01Z"}`, "const", false},
	{"audit count without until", "audit-event", `{` + auditThrottled + `,"count":2}`, "required", false},
	{"audit until without count", "audit-event", `{` + auditThrottled + `,"until":"2026-11-24T02:00:01Z"}`, "required", false},
	{"audit count zero", "audit-event", `{` + auditThrottled + `,"count":0,"until":"2026-11-24T02:00:01Z"}`, "minimum", false},
	{"audit count not an integer", "audit-event", `{` + auditThrottled + `,"count":1.5,"until":"2026-11-24T02:00:01Z"}`, "type", false},
	{"audit summary with a reply key", "audit-event", `{` + auditThrottled + `,"count":2,"until":"2026-11-24T02:00:01Z","sealed":true,"reply_key":"` + xkeyOK + `"}`, "not", false},
	{"audit bad until", "audit-event", `{` + auditThrottled + `,"count":2,"until":"later"}`, "format", false},
	{"fingerprint request without secret", "fingerprint-request", `{"connection":"local-bio"}`, "required", true},
	{"fingerprint request wildcard", "fingerprint-request", `{"connection":"local-bio","secret":"biodb*"}`, "pattern", true},
	{"fingerprint request bad connection", "fingerprint-request", `{"connection":"Local Bio","secret":"biodb01"}`, "pattern", true},
	{"fingerprint request unknown field", "fingerprint-request", `{"connection":"local-bio","secret":"biodb01","value":"password01"}`, "additionalProperties", true},
	{"fingerprint request long version", "fingerprint-request", `{"connection":"local-bio","secret":"biodb01","version":"` + strings.Repeat("v", 257) + `"}`, "maxLength", true},
	{"fingerprint reply without fingerprint", "fingerprint-reply", `{"connection":"local-bio","secret":"biodb01"}`, "required", false},
	{"fingerprint reply bad fingerprint", "fingerprint-reply", `{"connection":"local-bio","secret":"biodb01","fingerprint":"password01"}`, "pattern", false},
	{"sealed reply without request id", "sealed-reply", `{"expires":"2026-11-24T02:00:00Z","body":{}}`, "required", false},
	{"sealed reply without expiry", "sealed-reply", `{"request_id":"r","body":{}}`, "required", false},
	{"sealed reply bad expiry", "sealed-reply", `{"request_id":"r","expires":"1m","body":{}}`, "format", false},
	{"sealed reply body a string", "sealed-reply", `{"request_id":"r","expires":"2026-11-24T02:00:00Z","body":"password01"}`, "type", false},
	{"sealed reply unknown field", "sealed-reply", `{"request_id":"r","expires":"2026-11-24T02:00:00Z","body":{},"sender":"x"}`, "additionalProperties", false},
	{"dead unknown reason", "dead-letter", `{"export":"e","subject":"logs.a","seq":1,"reason":"lost","payload":"","time":"2026-11-24T02:00:00Z"}`, "enum", false},
}

func TestInvalidDocumentsAreRejected(t *testing.T) {
	for _, tc := range invalidDocs {
		t.Run(tc.schema+"/"+tc.name, func(t *testing.T) {
			err := schemas.Validate(tc.schema, []byte(tc.doc))
			var ve *schemas.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("schema accepted it (err %v)", err)
			}
			found := false
			for _, p := range ve.Problems {
				if strings.HasPrefix(p.Keyword+"/", tc.keyword+"/") {
					found = true
				}
			}
			if !found {
				t.Errorf("no %q problem reported: %v", tc.keyword, err)
			}
			if !tc.worker {
				return
			}
			v := goTypes[tc.schema]()
			werr := events.Decode([]byte(tc.doc), v)
			if werr == nil {
				werr = workerValidate(v)
			}
			if werr == nil {
				t.Errorf("schema rejects it but the worker's decode and Validate accept it")
			} else if !errors.Is(werr, events.ErrBadRequest) && !errors.Is(werr, events.ErrTooLarge) {
				t.Errorf("worker error %v is not bad_request", werr)
			}
		})
	}
}

// TestValidationErrorsDoNotQuoteValues checks that a rejected document's
// values, secrets among them, never reach the error message.
func TestValidationErrorsDoNotQuoteValues(t *testing.T) {
	const secret = "hunter2-PRIVATE-VALUE"
	docs := map[string]string{
		"connection":        `{"name":"c","provider":"gcp","gcp":{"auth":"service_account_key","service_account_key":{"type":"service_account","private_key":"` + secret + `","client_email":"a@b.iam.gserviceaccount.com"}}}`,
		"connection-stored": `{"name":"c","provider":"aws","groups":[],"secrets":[],"aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"` + secret + `"}}`,
		"resolve-reply":     `{"connection":"c","secret":"s","value":"` + secret + `","binary":"` + secret + `","cached":false,"fetched_at":"` + secret + `"}`,
		"secret-put":        `{"connection":"` + secret + `","name":"` + secret + ` x","value":1}`,
	}
	for schema, doc := range docs {
		err := schemas.Validate(schema, []byte(doc))
		if err == nil {
			t.Fatalf("%s: accepted", schema)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error quotes a value: %v", schema, err)
		}
	}
}

// FuzzValidate feeds arbitrary documents to every schema: Validate never
// panics, returns nil or a *ValidationError, and its message never quotes a
// string value of the document that the schema does not itself contain.
func FuzzValidate(f *testing.F) {
	names := schemas.Names()
	for i, n := range names {
		exs, _ := schemas.Examples(n)
		for _, ex := range exs {
			f.Add(uint8(i), ex.Doc)
		}
	}
	for _, tc := range invalidDocs {
		for i, n := range names {
			if n == tc.schema {
				f.Add(uint8(i), []byte(tc.doc))
			}
		}
	}
	f.Fuzz(func(t *testing.T, idx uint8, doc []byte) {
		name := names[int(idx)%len(names)]
		err := schemas.Validate(name, doc)
		if err == nil {
			return
		}
		var ve *schemas.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("Validate(%s) returned %T, want *ValidationError: %v", name, err, err)
		}
		var v any
		if json.Unmarshal(doc, &v) != nil {
			return
		}
		schemaText, _ := schemas.Schema(name)
		defsText, _ := schemas.Schema("defs")
		msg := err.Error()
		keys := strings.Join(objectKeys(v), "\x00")
		for _, s := range stringValues(v) {
			// Property names are quoted on purpose (unknown or missing ones),
			// so a value that is also part of a key proves nothing.
			if len(s) < 6 || strings.Contains(string(schemaText), s) || strings.Contains(string(defsText), s) || strings.Contains(keys, s) {
				continue
			}
			if strings.Contains(msg, s) {
				t.Fatalf("error quotes the document value %q: %s", s, msg)
			}
		}
	})
}

// objectKeys returns every property name in a decoded JSON document.
func objectKeys(v any) []string {
	switch v := v.(type) {
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, objectKeys(e)...)
		}
		return out
	case map[string]any:
		var out []string
		for k, e := range v {
			out = append(out, k)
			out = append(out, objectKeys(e)...)
		}
		return out
	}
	return nil
}

// stringValues returns every string value (not key) in a decoded JSON document.
func stringValues(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, stringValues(e)...)
		}
		return out
	case map[string]any:
		var out []string
		for _, e := range v {
			out = append(out, stringValues(e)...)
		}
		return out
	}
	return nil
}

// validDocs are documents the schema must accept although they are not
// golden examples (their Go re-encoding differs), such as the README's
// connection example ("Connections") with its empty optional fields spelled out.
var validDocs = []struct{ name, schema, doc string }{
	{"README connection, empty fields spelled out", "connection", `{"name": "aws-sm-bio", "provider": "aws", "groups": ["bio"], "secrets": ["biodb*"],
		"cache": {"ttl": "5m", "max_stale": "1h"},
		"aws": {"region": "us-east-1", "auth": "access_key", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI",
		"session_token": "", "role_arn": "", "external_id": "", "endpoint": ""}}`},
	{"task role with empty keys", "connection", `{"name":"c","provider":"aws","aws":{"region":"us-east-1","auth":"task_role","access_key_id":"","secret_access_key":""}}`},
	{"gcp default with empty impersonate", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"default","impersonate":"","delegates":[]}}`},
	{"impersonation from a key", "connection", `{"name":"c","provider":"gcp","gcp":{"auth":"impersonation","impersonate":"a@p-123.iam.gserviceaccount.com","service_account_key":{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----","client_email":"k@p-123.iam.gserviceaccount.com"}}}`},
	{"zero duration", "token-request", `{"duration":"0s"}`},
	{"fractional duration", "token-request", `{"duration":"1.5h"}`},
	{"invalidate with empty secret", "invalidate-request", `{"connection":"c","secret":""}`},
	{"string secret empty", "secret-put", `{"connection":"local-bio","name":"biodb01","value":""}`},
	{"subject filter full wildcard", "export", `{"name":"e","connection":"c","subjects":[">"],"cloudwatch":{"log_group":"/a"}}`},
	{"s3 empty prefix", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"a.b-c","prefix":""}}`},
	{"audit minimal", "audit-event", `{` + auditOK + `}`},
	{"audit throttled summary of one", "audit-event", `{` + auditThrottled + `,"count":1,"until":"2026-11-24T02:00:00Z"}`},
	{"audit sealed", "audit-event", `{` + auditOK + `,"sealed":true,"reply_key":"` + xkeyOK + `"}`},
	{"audit admin bad request has no connection", "audit-event", `{"time":"2026-11-24T02:00:00Z","op":"admin","verb":"secrets-put","outcome":"bad_request","latency_ms":0.1,"request_id":"r"}`},
	{"fingerprint request empty version", "fingerprint-request", `{"connection":"local-bio","secret":"biodb01","version":""}`},
	{"s3 every placeholder", "export", `{"name":"e","connection":"c","subjects":["logs.>"],"s3":{"bucket":"abc","prefix":"{export}/{yyyy}-{mm}-{dd}T{hh}/x.y_z/"}}`},
}

func TestValidDocumentsAreAccepted(t *testing.T) {
	for _, tc := range validDocs {
		t.Run(tc.schema+"/"+tc.name, func(t *testing.T) {
			if err := schemas.Validate(tc.schema, []byte(tc.doc)); err != nil {
				t.Fatalf("schema rejects it: %v", err)
			}
			v := goTypes[tc.schema]()
			if err := events.Decode([]byte(tc.doc), v); err != nil {
				t.Fatalf("worker's decode rejects it: %v", err)
			}
			if err := workerValidate(v); err != nil {
				t.Fatalf("worker's Validate rejects it: %v", err)
			}
		})
	}
}
