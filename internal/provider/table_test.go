package provider_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// fakeKind is a provider whose block is the connection's AWS field (for "a")
// or GCP field (for "b"), or none; its one sensitive field is the AWS block's
// secret access key, its routing field the block's endpoint.
type fakeKind struct {
	name     string
	block    func(c *events.Connection) bool
	validate error
	redacted *int
}

func (k fakeKind) Name() string { return k.name }
func (k fakeKind) HasBlock(c *events.Connection) bool {
	return k.block != nil && k.block(c)
}
func (k fakeKind) Validate(*events.Connection) error { return k.validate }
func (k fakeKind) Redact(c events.Connection) events.Connection {
	if k.redacted != nil {
		*k.redacted++
	}
	if c.AWS != nil {
		a := *c.AWS
		a.SecretAccessKey = events.Redacted
		c.AWS = &a
	}
	return c
}
func (k fakeKind) Redacted(c *events.Connection) []string {
	if c.AWS != nil && c.AWS.SecretAccessKey == events.Redacted {
		return []string{k.name + ".secret"}
	}
	return nil
}
func (k fakeKind) KeepRedacted(c, prev *events.Connection) error {
	if c.AWS == nil || c.AWS.SecretAccessKey != events.Redacted {
		return nil
	}
	if prev == nil || prev.AWS == nil {
		return events.Errorf(events.CodeBadRequest, "%s.secret: nothing stored", k.name)
	}
	c.AWS.SecretAccessKey = prev.AWS.SecretAccessKey
	return nil
}
func (k fakeKind) Routing(c *events.Connection) []provider.Field {
	v := ""
	if c.AWS != nil {
		v = c.AWS.Endpoint
	}
	return []provider.Field{{Name: k.name + ".endpoint", Value: v}}
}
func (k fakeKind) Factory(env provider.Env) provider.Factory {
	return func(context.Context, events.Connection) (provider.Resolver, error) {
		return provider.ResolverFunc(func(context.Context, provider.Request) (provider.Secret, error) {
			return provider.Secret{Version: k.name}, nil
		}), nil
	}
}

func hasAWS(c *events.Connection) bool { return c.AWS != nil }
func hasGCP(c *events.Connection) bool { return c.GCP != nil }

func fakeTable(redacted *int) *provider.Table {
	return provider.NewTable(
		fakeKind{name: "a", block: hasAWS, redacted: redacted},
		fakeKind{name: "b", block: hasGCP, redacted: redacted},
		fakeKind{name: "c"},
	)
}

func conn(p string) events.Connection {
	return events.Connection{Name: "x", Provider: p, Groups: []string{"bio"}, Secrets: []string{"*"}}
}

func TestTableNames(t *testing.T) {
	tb := fakeTable(nil)
	if got := tb.Names(); len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("Names = %v", got)
	}
	if k, ok := tb.Kind("b"); !ok || k.Name() != "b" {
		t.Fatal("Kind(b) not found")
	}
	if _, ok := tb.Kind("z"); ok {
		t.Fatal("Kind(z) found")
	}
}

func TestNewTableRefusesBadRegistrations(t *testing.T) {
	for name, kinds := range map[string][]provider.Kind{
		"duplicate":  {fakeKind{name: "a"}, fakeKind{name: "a"}},
		"empty name": {fakeKind{name: ""}},
		"reserved":   {fakeKind{name: "provider"}},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("NewTable did not panic")
				}
			}()
			provider.NewTable(kinds...)
		})
	}
}

func TestTableValidate(t *testing.T) {
	tb := fakeTable(nil)
	cases := []struct {
		name string
		edit func(*events.Connection)
		want string // the whole message; "" for valid
	}{
		{"own block", func(c *events.Connection) { c.Provider = "a"; c.AWS = &events.AWSConfig{} }, ""},
		{"no block provider", func(c *events.Connection) { c.Provider = "c" }, ""},
		{"missing provider", func(c *events.Connection) { c.Provider = "" }, "provider: required (a, b or c)"},
		{"unknown provider", func(c *events.Connection) { c.Provider = "zz" }, `provider: "zz" is not one of a, b, c`},
		{"generic part first", func(c *events.Connection) { c.Provider = "zz"; c.Name = "-" }, `name: "-" is not a valid name (want ` + events.NamePattern + `)`},
		{"other block", func(c *events.Connection) { c.Provider = "a"; c.AWS = &events.AWSConfig{}; c.GCP = &events.GCPConfig{} }, "b: not allowed with provider a"},
		{"two other blocks", func(c *events.Connection) { c.Provider = "c"; c.AWS = &events.AWSConfig{}; c.GCP = &events.GCPConfig{} }, "a, b: not allowed with provider c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := conn("a")
			tc.edit(&c)
			err := tb.Validate(&c)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, events.ErrBadRequest) || err.Error() != tc.want {
				t.Fatalf("err = %v, want bad_request %q", err, tc.want)
			}
		})
	}
	// The provider's own rules run last.
	own := provider.NewTable(fakeKind{name: "a", validate: events.Errorf(events.CodeBadRequest, "a.x: bad")})
	c := conn("a")
	if err := own.Validate(&c); err == nil || err.Error() != "a.x: bad" {
		t.Fatalf("own rules: %v", err)
	}
}

func TestTableRedactAllBlocks(t *testing.T) {
	n := 0
	tb := fakeTable(&n)
	c := conn("c")
	c.AWS = &events.AWSConfig{SecretAccessKey: "s3cr3t"}
	r := tb.Redact(c)
	if r.AWS.SecretAccessKey != events.Redacted {
		t.Fatalf("not redacted: %q", r.AWS.SecretAccessKey)
	}
	if c.AWS.SecretAccessKey != "s3cr3t" {
		t.Fatal("Redact changed its argument")
	}
	if n != 1 {
		t.Fatalf("%d kinds redacted, want the one whose block is present", n)
	}
}

func TestTableRoutingChange(t *testing.T) {
	tb := fakeTable(nil)
	stored := conn("a")
	stored.AWS = &events.AWSConfig{SecretAccessKey: "s3cr3t", Endpoint: "https://one.example"}
	put := func(provider, endpoint, secret string) *events.Connection {
		c := conn(provider)
		c.AWS = &events.AWSConfig{SecretAccessKey: secret, Endpoint: endpoint}
		return &c
	}
	cases := []struct {
		name        string
		c, prev     *events.Connection
		field, kept string
	}{
		{"same routing, kept", put("a", "https://one.example", events.Redacted), &stored, "", ""},
		{"endpoint changed, kept", put("a", "https://evil.example", events.Redacted), &stored, "a.endpoint", "a.secret"},
		{"endpoint changed, given again", put("a", "https://evil.example", "new"), &stored, "", ""},
		{"provider changed, kept", put("b", "https://one.example", events.Redacted), &stored, "provider", "b.secret"},
		{"nothing stored", put("a", "https://evil.example", events.Redacted), nil, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			field, kept, changed := tb.RoutingChange(tc.c, tc.prev)
			if changed != (tc.field != "") || field != tc.field || kept != tc.kept {
				t.Fatalf("RoutingChange = %q, %q, %v; want %q, %q", field, kept, changed, tc.field, tc.kept)
			}
			err := tb.CheckRouting(tc.c, tc.prev)
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := tc.field + ": changed while " + tc.kept + " is [redacted]; give the secret again"
			if !errors.Is(err, events.ErrBadRequest) || err.Error() != want {
				t.Fatalf("CheckRouting = %v, want %q", err, want)
			}
		})
	}
}

func TestTableKeepRedacted(t *testing.T) {
	tb := fakeTable(nil)
	stored := conn("a")
	stored.AWS = &events.AWSConfig{SecretAccessKey: "s3cr3t", Endpoint: "https://one.example"}

	c := conn("a")
	c.AWS = &events.AWSConfig{SecretAccessKey: events.Redacted, Endpoint: "https://one.example"}
	if err := tb.KeepRedacted(&c, &stored); err != nil || c.AWS.SecretAccessKey != "s3cr3t" {
		t.Fatalf("kept: %v, %q", err, c.AWS.SecretAccessKey)
	}
	// The routing check comes first: nothing is copied.
	c.AWS = &events.AWSConfig{SecretAccessKey: events.Redacted, Endpoint: "https://evil.example"}
	if err := tb.KeepRedacted(&c, &stored); !errors.Is(err, events.ErrBadRequest) || c.AWS.SecretAccessKey != events.Redacted {
		t.Fatalf("routing change: %v, %q", err, c.AWS.SecretAccessKey)
	}
	// A stored connection of another provider keeps nothing.
	c = conn("b")
	c.AWS = &events.AWSConfig{SecretAccessKey: "fresh", Endpoint: "https://one.example"}
	if err := tb.KeepRedacted(&c, &stored); err != nil || c.AWS.SecretAccessKey != "fresh" {
		t.Fatalf("provider change with a fresh secret: %v, %q", err, c.AWS.SecretAccessKey)
	}
}

func TestTableFactories(t *testing.T) {
	fs := fakeTable(nil).Factories(provider.Env{})
	if len(fs) != 3 {
		t.Fatalf("%d factories", len(fs))
	}
	r, err := fs["b"](context.Background(), conn("b"))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := r.Resolve(context.Background(), provider.Request{}); s.Version != "b" {
		t.Fatalf("factory of b built %q", s.Version)
	}
}

func TestCheckEndpoint(t *testing.T) {
	for s, ok := range map[string]bool{
		"":                         true,
		"https://x.example":        true,
		"http://127.0.0.1:4566/v1": true,
		"ftp://x":                  false,
		"https://":                 false,
		"https://u:p@x.example":    false,
		"x.example":                false,
		"://":                      false,
	} {
		err := provider.CheckEndpoint("f.endpoint", s)
		if (err == nil) != ok {
			t.Errorf("CheckEndpoint(%q) = %v", s, err)
		}
		if err != nil && (!errors.Is(err, events.ErrBadRequest) || err.Error()[:11] != "f.endpoint:") {
			t.Errorf("CheckEndpoint(%q) = %v, want bad_request naming the field", s, err)
		}
	}
}
