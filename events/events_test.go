package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMatchGlob(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"biodb*", "biodb01", true},
		{"biodb*", "biodb", true},
		{"biodb*", "chemdb01", false},
		{"*", "prod/db/main", true},
		{"prod/*", "prod/db/main", true},
		{"prod/*/main", "prod/db/main", true},
		{"prod/*/main", "prod/db/other", false},
		{"db?", "db1", true},
		{"db?", "db12", false},
		{"*a*b*", "xxaxxbxx", true},
		{"*a*b", "xxaxxbxxb", true},
		{"exact", "exact", true},
		{"exact", "exactly", false},
		{"", "", true},
		{"", "x", false},
	}
	for _, tc := range cases {
		if got := MatchGlob(tc.pattern, tc.name); got != tc.want {
			t.Errorf("MatchGlob(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestValidNameMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(NamePattern)
	for _, n := range []string{"", "a", "bio", "local-bio", "a_b", "-a", "_a", "A", "a.b", "a b", "0", strings.Repeat("a", 64), strings.Repeat("a", 65), "é", "a*", "a>"} {
		if ValidName(n) != re.MatchString(n) {
			t.Errorf("ValidName(%q) = %v, pattern says %v", n, ValidName(n), re.MatchString(n))
		}
	}
}

func FuzzValidName(f *testing.F) {
	re := regexp.MustCompile(NamePattern)
	f.Add("local-bio")
	f.Fuzz(func(t *testing.T, n string) {
		if ValidName(n) != re.MatchString(n) {
			t.Fatalf("ValidName(%q) disagrees with the pattern", n)
		}
	})
}

func TestSubjects(t *testing.T) {
	s := Subjects{}
	if got := s.Resolve("bio", "local-bio"); got != "cloudbridge.v1.resolve.bio.local-bio" {
		t.Fatal(got)
	}
	if got := (Subjects{Prefix: "acme.cb"}).Admin(ResourceConnections, VerbPut); got != "acme.cb.v1.admin.connections.put" {
		t.Fatal(got)
	}
	cases := []struct {
		subject     string
		group, conn string
		ok          bool
	}{
		{"cloudbridge.v1.resolve.bio.local-bio", "bio", "local-bio", true},
		{"cloudbridge.v1.resolve.bio", "", "", false},
		{"cloudbridge.v1.resolve.bio.a.b", "", "", false},
		{"cloudbridge.v1.resolve.BIO.x", "", "", false},
		{"cloudbridge.v1.test.bio.x", "", "", false},
		{"other.v1.resolve.bio.x", "", "", false},
	}
	for _, tc := range cases {
		g, c, err := s.ParseOp(OpResolve, tc.subject)
		if (err == nil) != tc.ok || g != tc.group || c != tc.conn {
			t.Errorf("ParseOp(%q) = %q, %q, %v", tc.subject, g, c, err)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("ParseOp error is not bad_request: %v", err)
		}
	}
	for _, p := range []string{"", "a..b", "A", "x.>"} {
		if CheckPrefix(p) == nil {
			t.Errorf("CheckPrefix(%q) accepted", p)
		}
	}
}

func TestErrorTable(t *testing.T) {
	want := map[Code]int{CodeBadRequest: 400, CodeUnauthorized: 401, CodeForbidden: 403, CodeNotFound: 404,
		CodeTooLarge: 413, CodeThrottled: 429, CodeInternal: 500, CodeUnavailable: 503, CodeTimeout: 504}
	if len(Codes()) != len(want) {
		t.Fatalf("Codes() has %d codes", len(Codes()))
	}
	for _, c := range Codes() {
		if c.Number() != want[c] || CodeForNumber(want[c]) != c {
			t.Errorf("%s: number %d, want %d", c, c.Number(), want[c])
		}
	}
	wrapped := fmt.Errorf("reading secret %q: %w", "db", ErrNotFound)
	if !errors.Is(wrapped, ErrNotFound) || errors.Is(wrapped, ErrForbidden) {
		t.Fatal("errors.Is on wrapped sentinel")
	}
	w := AsWire(wrapped)
	if w.Code != CodeNotFound || w.Message != `reading secret "db": not found` {
		t.Fatalf("AsWire = %+v", w)
	}
	if w := AsWire(errors.New("boom with detail")); w.Code != CodeInternal || strings.Contains(w.Message, "boom") {
		t.Fatalf("an unknown error leaked its text: %+v", w)
	}
	if !errors.Is(&Error{Code: CodeTimeout, Message: "x"}, ErrTimeout) {
		t.Fatal("a wire error does not match its sentinel")
	}
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name string
		body string
		code Code
	}{
		{"ok", `{"secret":"db"}`, ""},
		{"empty body is {}", ``, ""},
		{"whitespace", "  \n", ""},
		{"unknown field", `{"secret":"db","x":1}`, CodeBadRequest},
		{"malformed", `{"secret":`, CodeBadRequest},
		{"array", `[1]`, CodeBadRequest},
		{"null", `null`, CodeBadRequest},
		{"string", `"db"`, CodeBadRequest},
		{"two objects", `{"secret":"a"}{"secret":"b"}`, CodeBadRequest},
		{"wrong type", `{"secret":["a"]}`, CodeBadRequest},
		{"too large", `{"secret":"` + strings.Repeat("x", MaxRequestSize) + `"}`, CodeTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r ResolveRequest
			err := Decode([]byte(tc.body), &r)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if CodeOf(err) != tc.code {
				t.Fatalf("err = %v, want %s", err, tc.code)
			}
		})
	}
}

func FuzzDecodeResolve(f *testing.F) {
	for _, s := range []string{`{"secret":"db","keys":["a"],"fresh":true}`, `{}`, `{"secret":"\u0000"}`, `[`, `{"version":"x","secret":"y"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r ResolveRequest
		err := Decode(data, &r)
		if err != nil {
			if c := CodeOf(err); c != CodeBadRequest && c != CodeTooLarge {
				t.Fatalf("decode error with code %s: %v", c, err)
			}
			return
		}
		if err := r.Validate(); err != nil && CodeOf(err) != CodeBadRequest {
			t.Fatalf("validate error with code %s", CodeOf(err))
		}
	})
}

func FuzzDecodeConnection(f *testing.F) {
	f.Add([]byte(`{"name":"aws-sm-bio","provider":"aws","groups":["bio"],"secrets":["biodb*"],"aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIAEXAMPLE000000000","secret_access_key":"x"}}`))
	f.Add([]byte(`{"name":"g","provider":"gcp","groups":["*"],"secrets":["*"],"gcp":{"project":"bio-prod","auth":"impersonation","impersonate":"r@bio-prod.iam.gserviceaccount.com"}}`))
	f.Add([]byte(`{"name":"b","provider":"builtin","groups":[],"secrets":[],"cache":{"ttl":"5m","max_stale":"1h"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Connection
		if err := Decode(data, &c); err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			if CodeOf(err) != CodeBadRequest {
				t.Fatalf("validate error with code %s", CodeOf(err))
			}
			return
		}
	})
}

// TestConnectionValidate covers the generic part of a connection; the
// provider part (provider, blocks) is tested with the provider table in
// internal/provider and each provider's package.
func TestConnectionValidate(t *testing.T) {
	base := func() Connection {
		return Connection{Name: "aws-sm-bio", Provider: ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"biodb*"},
			AWS: &AWSConfig{Region: "us-east-1", Auth: AWSAuthAccessKey, AccessKeyID: "AKIAEXAMPLE000000000", SecretAccessKey: "s"}}
	}
	cases := []struct {
		name  string
		edit  func(*Connection)
		field string
	}{
		{"valid", func(*Connection) {}, ""},
		{"bad name", func(c *Connection) { c.Name = "-x" }, "name"},
		{"long description", func(c *Connection) { c.Description = strings.Repeat("x", 1025) }, "description"},
		{"bad group", func(c *Connection) { c.Groups = []string{"Bio"} }, "groups[0]"},
		{"any group", func(c *Connection) { c.Groups = []string{"*"} }, ""},
		{"too many groups", func(c *Connection) { c.Groups = make([]string, 257) }, "groups"},
		{"blank pattern", func(c *Connection) { c.Secrets = []string{"a", "b c"} }, "secrets[1]"},
		{"ttl too long", func(c *Connection) { c.Cache = &CachePolicy{TTL: Duration(48 * time.Hour)} }, "cache.ttl"},
		{"max_stale too long", func(c *Connection) { c.Cache = &CachePolicy{MaxStale: Duration(8 * 24 * time.Hour)} }, "cache.max_stale"},
		// The provider part is not checked here.
		{"provider part ignored", func(c *Connection) { c.AWS.Region = "mars"; c.GCP = &GCPConfig{} }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadRequest) || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("err = %v, want bad_request naming %s", err, tc.field)
			}
		})
	}
}

func TestClip(t *testing.T) {
	if got := Clip("abcdef", 3); got != "abc…" {
		t.Errorf("Clip = %q", got)
	}
	if got := Clip("é", 1); got != "…" {
		t.Errorf("Clip cut a rune: %q", got)
	}
	if got := Clip("abc", 3); got != "abc" {
		t.Errorf("Clip = %q", got)
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]string{`"5m"`: "5m", `"1h"`: "1h", `"1h30m"`: "1h30m", `"500ms"`: "500ms", `"90s"`: "1m30s"} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil {
			t.Fatal(err)
		}
		if d.String() != want {
			t.Errorf("%s → %s, want %s", in, d, want)
		}
	}
	for _, bad := range []string{`5`, `"5 minutes"`, `"-1m"`, `null`} {
		var d Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil && bad != `null` {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestSubjectWithin(t *testing.T) {
	cases := []struct {
		filter string
		of     []string
		want   bool
	}{
		{"logs.app.>", []string{"logs.>"}, true},
		{"logs.app.web", []string{"logs.>"}, true},
		{"logs.*.web", []string{"logs.>"}, true},
		{"logs.>", []string{"logs.>"}, true},
		{"logs", []string{"logs.>"}, false},
		{"other.>", []string{"logs.>"}, false},
		{"logs.app.>", []string{"logs.*"}, false},
		{"logs.app", []string{"logs.*"}, true},
		{"logs.*", []string{"logs.app"}, false},
		{"cloudbridge.v1.>", []string{"logs.>", "audit.>"}, false},
		{"audit.x", []string{"logs.>", "audit.>"}, true},
	}
	for _, tc := range cases {
		if got := SubjectWithin(tc.filter, tc.of); got != tc.want {
			t.Errorf("SubjectWithin(%q, %v) = %v, want %v", tc.filter, tc.of, got, tc.want)
		}
	}
}
