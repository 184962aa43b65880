package gcp

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// On GCE, auth default uses the metadata server (here a fake on loopback):
// the instance's service account reads the secret, the probe names it, and
// an impersonation connection uses it as the caller.
func TestDefaultCredentialsFromMetadataServer(t *testing.T) {
	e := newEnv(t)
	const vm = "vm-sa@ops-prod.iam.gserviceaccount.com"
	md := e.fake.StartMetadata(t, vm, "bio-prod")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", t.TempDir()) // no gcloud well-known file
	t.Setenv("GCE_METADATA_HOST", md.Host())

	c := e.defaultConn("gcp-gce")
	c.GCP.Project = "" // from the metadata server
	p := newProvider(t, c)
	s, err := p.Resolve(ctxT(t), provider.Request{Secret: "biodb01"})
	if err != nil || !strings.Contains(string(s.Data), "user01") {
		t.Fatalf("resolve: %q %v", s.Data, err)
	}
	if n := e.fake.CallsBy(gcpfake.MethodAccessSecretVersion, vm); n != 1 {
		t.Fatalf("calls by the instance account = %d", n)
	}
	steps := p.Probe(ctxT(t))
	if !steps[0].OK || steps[1].Detail != vm {
		t.Fatalf("probe %+v", steps)
	}
	tok, err := p.Token(ctxT(t), events.TokenRequest{Scopes: []string{bigqueryScope}})
	if err != nil {
		t.Fatal(err)
	}
	if email, scopes, _, _ := e.fake.TokenInfo(tok.GCP.AccessToken); email != vm || len(scopes) != 1 || scopes[0] != bigqueryScope {
		t.Fatalf("token of %s with %v", email, scopes)
	}

	e.fake.GrantTokenCreator(vm, e.reader.Email)
	pi := newProvider(t, e.impersonationConn("gcp-imp", e.reader.Email, nil))
	if _, err := pi.Resolve(ctxT(t), provider.Request{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
	if steps := pi.Probe(ctxT(t)); !strings.Contains(steps[1].Detail, "impersonated by "+vm) {
		t.Fatalf("probe %+v", steps)
	}
}
