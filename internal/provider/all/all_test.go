package all_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
)

func TestTableNames(t *testing.T) {
	if got := strings.Join(all.Table.Names(), ","); got != "aws,gcp,builtin" {
		t.Fatalf("Names = %s", got)
	}
}

// TestEveryBlockHasItsProvider fails when events.Connection grows a provider
// block no registered provider owns: each pointer-to-struct field of
// Connection but the generic ones (genericBlocks) is a block, named (json)
// like exactly one provider, and only that provider sees it.
func TestEveryBlockHasItsProvider(t *testing.T) {
	// The connection's own settings, common to every provider.
	genericBlocks := map[string]bool{"cache": true, "limits": true, "tokens": true}
	ct := reflect.TypeOf(events.Connection{})
	blocks := 0
	for i := 0; i < ct.NumField(); i++ {
		f := ct.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Type.Kind() != reflect.Pointer || f.Type.Elem().Kind() != reflect.Struct || genericBlocks[name] {
			continue
		}
		blocks++
		k, ok := all.Table.Kind(name)
		if !ok {
			t.Errorf("block %q (Connection.%s) has no provider in all.Table", name, f.Name)
			continue
		}
		var c events.Connection
		reflect.ValueOf(&c).Elem().Field(i).Set(reflect.New(f.Type.Elem()))
		for _, o := range all.Table.Names() {
			ok, _ := all.Table.Kind(o)
			if got := ok.HasBlock(&c); got != (o == k.Name()) {
				t.Errorf("with block %q set, provider %s HasBlock = %v", name, o, got)
			}
		}
	}
	if blocks == 0 {
		t.Error("found no provider block in events.Connection")
	}
}

const saKey = `{"type":"service_account","client_email":"r@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nSECRETKEY\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}`

func awsConn() events.Connection {
	return events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"biodb*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIAEXAMPLE000000000", SecretAccessKey: "s"}}
}

// TestValidateMessages pins the messages of the checks that span providers,
// as they were before the table computed them.
func TestValidateMessages(t *testing.T) {
	cases := []struct {
		name string
		edit func(*events.Connection)
		want string
	}{
		{"gcp block on aws", func(c *events.Connection) { c.GCP = &events.GCPConfig{Auth: events.GCPAuthDefault} }, "gcp: not allowed with provider aws"},
		{"aws block on gcp", func(c *events.Connection) { c.Provider = events.ProviderGCP }, "aws: not allowed with provider gcp"},
		{"builtin with aws", func(c *events.Connection) { c.Provider = events.ProviderBuiltin }, "aws: not allowed with provider builtin"},
		{"builtin with both", func(c *events.Connection) {
			c.Provider = events.ProviderBuiltin
			c.GCP = &events.GCPConfig{}
		}, "aws, gcp: not allowed with provider builtin"},
		{"aws without block", func(c *events.Connection) { c.AWS = nil }, "aws: required with provider aws"},
		{"gcp without block", func(c *events.Connection) { c.Provider, c.AWS = events.ProviderGCP, nil }, "gcp: required with provider gcp"},
		{"no provider", func(c *events.Connection) { c.Provider = "" }, "provider: required (aws, gcp or builtin)"},
		{"unknown provider", func(c *events.Connection) { c.Provider = "azure" }, `provider: "azure" is not one of aws, gcp, builtin`},
		{"generic first", func(c *events.Connection) { c.Provider = "azure"; c.Groups = []string{"Bio"} }, `groups[0]: "Bio" is not a valid name (want ` + events.NamePattern + `)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := awsConn()
			tc.edit(&c)
			err := all.Table.Validate(&c)
			if !errors.Is(err, events.ErrBadRequest) || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	for _, c := range []events.Connection{awsConn(),
		{Name: "b", Provider: events.ProviderBuiltin},
		{Name: "g", Provider: events.ProviderGCP, GCP: &events.GCPConfig{Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(saKey)}}} {
		if err := all.Table.Validate(&c); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
}

// TestRoutingChange is the exfiltration of issue 10 on the table: a put that
// keeps a [redacted] secret may not change where credentials are sent.
func TestRoutingChange(t *testing.T) {
	awsStored := awsConn()
	awsStored.AWS.SessionToken = "tok"
	awsStored.AWS.Endpoint = "https://secretsmanager.us-east-1.amazonaws.com"
	gcpStored := events.Connection{Name: "g", Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: json.RawMessage(saKey)}}
	redacted := func(c events.Connection) events.Connection {
		r := all.Table.Redact(c)
		// A deep copy, so edits below leave the stored connection alone.
		b, _ := json.Marshal(r)
		var out events.Connection
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	setTokenURI := func(c *events.Connection, uri string) {
		var k map[string]any
		_ = json.Unmarshal(c.GCP.ServiceAccountKey, &k)
		k["token_uri"] = uri
		c.GCP.ServiceAccountKey, _ = json.Marshal(k)
	}
	cases := []struct {
		name  string
		prev  events.Connection
		edit  func(*events.Connection)
		field string // "" when allowed
		kept  string
	}{
		{"aws unchanged", awsStored, func(c *events.Connection) { c.Groups = []string{"chem"}; c.Secrets = []string{"*"} }, "", ""},
		{"aws endpoint", awsStored, func(c *events.Connection) { c.AWS.Endpoint = "http://169.254.169.254/" }, "aws.endpoint", "aws.secret_access_key"},
		{"aws endpoint added", awsConn(), func(c *events.Connection) { c.AWS.Endpoint = "https://evil.example" }, "aws.endpoint", "aws.secret_access_key"},
		{"aws region", awsStored, func(c *events.Connection) { c.AWS.Region = "eu-west-1" }, "aws.region", "aws.secret_access_key"},
		{"aws role", awsStored, func(c *events.Connection) { c.AWS.RoleARN = "arn:aws:iam::123456789012:role/x" }, "aws.role_arn", "aws.secret_access_key"},
		{"aws only token kept", awsStored, func(c *events.Connection) { c.AWS.SecretAccessKey = "new"; c.AWS.Endpoint = "https://x.example" }, "aws.endpoint", "aws.session_token"},
		{"aws secrets given again", awsStored, func(c *events.Connection) {
			c.AWS.SecretAccessKey, c.AWS.SessionToken, c.AWS.Endpoint = "new", "", "https://x.example"
		}, "", ""},
		{"aws to gcp", awsStored, func(c *events.Connection) {
			*c = redacted(gcpStored)
			c.Name = awsStored.Name
		}, "provider", "gcp.service_account_key.private_key"},
		{"gcp unchanged", gcpStored, func(c *events.Connection) { c.Description = "x" }, "", ""},
		{"gcp endpoint", gcpStored, func(c *events.Connection) { c.GCP.Endpoint = "https://evil.example" }, "gcp.endpoint", "gcp.service_account_key.private_key"},
		{"gcp token_uri", gcpStored, func(c *events.Connection) { setTokenURI(c, "https://evil.example/token") }, "gcp.service_account_key.token_uri", "gcp.service_account_key.private_key"},
		{"gcp auth", gcpStored, func(c *events.Connection) {
			c.GCP.Auth, c.GCP.Impersonate = events.GCPAuthImpersonation, "x@bio-prod.iam.gserviceaccount.com"
		}, "gcp.auth", "gcp.service_account_key.private_key"},
		{"gcp delegates", gcpStored, func(c *events.Connection) { c.GCP.Delegates = []string{"d@p.iam.gserviceaccount.com"} }, "gcp.delegates", "gcp.service_account_key.private_key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prev := tc.prev
			c := redacted(prev)
			tc.edit(&c)
			err := all.Table.KeepRedacted(&c, &prev)
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := tc.field + ": changed while " + tc.kept + " is [redacted]; give the secret again"
			if !errors.Is(err, events.ErrBadRequest) || err.Error() != want {
				t.Fatalf("err = %v, want %q", err, want)
			}
		})
	}
}

// FuzzValidateRedact decodes arbitrary connections: the table's Validate
// answers bad_request or nil, and the redacted form of anything that decodes
// carries no sensitive value.
func FuzzValidateRedact(f *testing.F) {
	f.Add([]byte(`{"name":"aws-sm-bio","provider":"aws","groups":["bio"],"secrets":["biodb*"],"aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIAEXAMPLE000000000","secret_access_key":"xSECRETx","session_token":"tSECRETt"}}`))
	f.Add([]byte(`{"name":"g","provider":"gcp","groups":["*"],"secrets":["*"],"gcp":{"project":"bio-prod","auth":"impersonation","impersonate":"r@bio-prod.iam.gserviceaccount.com"}}`))
	f.Add([]byte(`{"name":"g","provider":"gcp","gcp":{"auth":"service_account_key","service_account_key":` + saKey + `}}`))
	f.Add([]byte(`{"name":"b","provider":"builtin","aws":{"secret_access_key":"xSECRETx"},"gcp":{"service_account_key":"xSECRETx"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c events.Connection
		if events.Decode(data, &c) != nil {
			return
		}
		if err := all.Table.Validate(&c); err != nil && events.CodeOf(err) != events.CodeBadRequest {
			t.Fatalf("validate error with code %s", events.CodeOf(err))
		}
		r := all.Table.Redact(c)
		if a := r.AWS; a != nil {
			for _, v := range []string{a.SecretAccessKey, a.SessionToken} {
				if v != "" && v != events.Redacted {
					t.Fatalf("redaction kept an AWS secret")
				}
			}
		}
		if g := r.GCP; g != nil && len(g.ServiceAccountKey) > 0 {
			var k struct {
				PrivateKey *string `json:"private_key"`
			}
			if json.Unmarshal(g.ServiceAccountKey, &k) == nil && k.PrivateKey != nil && *k.PrivateKey != events.Redacted {
				t.Fatalf("redaction kept the private key: %s", g.ServiceAccountKey)
			}
		}
	})
}
