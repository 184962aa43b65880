package provider_test

import (
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func TestAllowlist(t *testing.T) {
	def := provider.MustAllowlist(provider.DefaultAllowEndpoints...)
	loop := provider.MustAllowlist("127.0.0.1", "localhost:8443", "[::1]", "*.corp.example:*")
	for _, tc := range []struct {
		a    provider.Allowlist
		url  string
		want bool
	}{
		{def, "https://secretsmanager.us-east-1.amazonaws.com", true},
		{def, "https://vpce-1.secretsmanager.us-east-1.vpce.amazonaws.com:443", true},
		{def, "https://sts.cn-north-1.amazonaws.com.cn", true},
		{def, "https://SecretManager.GoogleAPIs.com.", true},
		{def, "https://oauth2.googleapis.com/token", true},
		{def, "https://amazonaws.com", false}, // "*." needs a subdomain
		{def, "https://amazonaws.com.attacker.example", false},
		{def, "https://evilamazonaws.com", false},
		{def, "http://169.254.169.254/latest", false},
		{def, "http://127.0.0.1:8080", false},
		{loop, "http://127.0.0.1:8080", true}, // no port in the pattern: any port
		{loop, "https://127.0.0.1", true},
		{loop, "https://localhost:8443", true},
		{loop, "https://localhost:8444", false},
		{loop, "https://localhost", false}, // 443 is not 8443
		{loop, "http://[::1]:9", true},
		{loop, "https://a.b.corp.example:1234", true},
		{loop, "https://127.0.0.2", false},
		{provider.Allowlist{}, "http://anything", true}, // zero: not enforced
		{provider.MustAllowlist(), "https://secretsmanager.us-east-1.amazonaws.com", false},
	} {
		if got := tc.a.Allows(tc.url); got != tc.want {
			t.Errorf("%v.Allows(%q) = %v, want %v", tc.a, tc.url, got, tc.want)
		}
	}
	for _, bad := range []string{"https://x.com", "x.com/path", "[::1", "a b", ":80"} {
		if _, err := provider.ParseAllowlist([]string{bad}); err == nil {
			t.Errorf("provider.ParseAllowlist(%q) accepted", bad)
		}
	}
}

// endpointKind is a kind naming one endpoint.
type endpointKind struct{ fakeKind }

func (endpointKind) Endpoints(c *events.Connection) []provider.Field {
	return []provider.Field{{Name: "fake.endpoint", Value: c.Description}}
}

func TestTableEndpointAllowlist(t *testing.T) {
	tbl := provider.NewTable(endpointKind{fakeKind{name: "fake"}}).WithEndpoints(provider.MustAllowlist("*.cloud.example"))
	c := events.Connection{Name: "c", Provider: "fake", Description: "https://evil.example"}
	err := tbl.Validate(&c)
	if events.CodeOf(err) != events.CodeBadRequest || err.Error() == "" {
		t.Fatalf("Validate outside the allowlist: %v", err)
	}
	if err := tbl.CheckStored(&c); events.CodeOf(err) != events.CodeForbidden {
		t.Fatalf("CheckStored outside the allowlist: %v", err)
	}
	c.Description = "https://api.cloud.example"
	if err := tbl.CheckStored(&c); err != nil {
		t.Fatal(err)
	}
}
