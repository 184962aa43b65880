package service

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestTokenNeedsOptIn: an allowed group asking a connection without
// "tokens" for credentials is forbidden, and STS never hears of it; once
// opted in, the credentials are capped by max_duration and narrowed by a
// session policy to the connection's secrets.
func TestTokenNeedsOptIn(t *testing.T) {
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	fake := awsfake.New(t)
	user := fake.AddUser("platform-admin")
	role := fake.AddRole("bio-reader", awsfake.RoleOptions{MaxSession: 12 * time.Hour})
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	conn := events.Connection{Name: "aws-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"bio/*", "shared-db"},
		AWS: &events.AWSConfig{Region: "eu-west-1", Auth: events.AWSAuthAccessKey, AccessKeyID: user.AccessKeyID,
			SecretAccessKey: user.SecretAccessKey, Endpoint: fake.URL()}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	token := func(conn string, req events.TokenRequest) (*events.TokenReply, error) {
		return c.Token(ctx, "bio", conn, req)
	}
	for _, tc := range []*events.TokenPolicy{nil, {Enabled: false, MaxDuration: events.Duration(time.Hour)}} {
		conn.Tokens = tc
		adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
		_, err := token("aws-bio", events.TokenRequest{})
		var werr *events.Error
		if !errors.As(err, &werr) || werr.Code != events.CodeForbidden || !strings.Contains(werr.Message, "tokens") {
			t.Fatalf("token without opt-in (%+v): %v", tc, err)
		}
	}
	if n := fake.Calls(awsfake.OpGetSessionToken) + fake.Calls(awsfake.OpAssumeRole); n != 0 {
		t.Fatalf("STS got %d calls for refused token requests", n)
	}

	// Opted in, GetSessionToken: the requested 4h is capped at 30m.
	conn.Tokens = &events.TokenPolicy{Enabled: true, MaxDuration: events.Duration(30 * time.Minute)}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	natstest.Eventually(t, 5*time.Second, "the opt-in to reach the worker", func() bool {
		_, err := token("aws-bio", events.TokenRequest{Duration: events.Duration(4 * time.Hour)})
		return err == nil
	})
	tok, err := token("aws-bio", events.TokenRequest{Duration: events.Duration(4 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(tok.AWS.Expiration); left > 31*time.Minute || left < 20*time.Minute {
		t.Fatalf("credentials last %s, want 30m", left)
	}

	// Opted in with a role: AssumeRole with the cap and a session policy
	// naming only the allowed secrets.
	conn.AWS.RoleARN = role
	conn.Tokens = &events.TokenPolicy{Enabled: true, MaxDuration: events.Duration(2 * time.Hour)}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	natstest.Eventually(t, 5*time.Second, "the role to reach the worker", func() bool {
		_, err := token("aws-bio", events.TokenRequest{Duration: events.Duration(6 * time.Hour)})
		return err == nil && fake.LastAssumeRole()["RoleArn"] == role
	})
	last := fake.LastAssumeRole()
	if last["DurationSeconds"] != "7200" {
		t.Fatalf("AssumeRole asked for %s seconds, want the 2h cap", last["DurationSeconds"])
	}
	var policy struct {
		Statement []struct {
			Effect   string
			Action   []string
			Resource []string
		}
	}
	if err := json.Unmarshal([]byte(last["Policy"]), &policy); err != nil || len(policy.Statement) != 1 {
		t.Fatalf("session policy %q: %v", last["Policy"], err)
	}
	st := policy.Statement[0]
	want := []string{"arn:aws:secretsmanager:eu-west-1:*:secret:bio/*-??????", "arn:aws:secretsmanager:eu-west-1:*:secret:shared-db-??????"}
	if st.Effect != "Allow" || strings.Join(st.Resource, " ") != strings.Join(want, " ") ||
		strings.Join(st.Action, " ") != "secretsmanager:GetSecretValue secretsmanager:DescribeSecret" {
		t.Fatalf("session policy %s", last["Policy"])
	}
	// OAuth scopes are a GCP thing.
	if _, err := token("aws-bio", events.TokenRequest{Scopes: []string{"x"}}); !errors.Is(err, events.ErrBadRequest) {
		t.Fatalf("AWS token with scopes: %v", err)
	}
	conn.Tokens.Scopes = []string{"https://www.googleapis.com/auth/bigquery"}
	if err := putConn(c, conn); !errors.Is(err, events.ErrBadRequest) {
		t.Fatalf("put of tokens.scopes on aws: %v", err)
	}
}

// TestGCPTokenScopesWithinTheConnection: a requester may ask only for the
// scopes the connection lists.
func TestGCPTokenScopesWithinTheConnection(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	fake := gcpfake.New(t)
	worker := fake.AddServiceAccount("worker@ops-prod.iam.gserviceaccount.com")
	fake.AddServiceAccount("reader@bio-prod.iam.gserviceaccount.com")
	fake.GrantTokenCreator("worker@ops-prod.iam.gserviceaccount.com", "reader@bio-prod.iam.gserviceaccount.com")
	adc := filepath.Join(dir, "adc.json")
	if err := os.WriteFile(adc, worker.KeyJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", adc)
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	const bq = "https://www.googleapis.com/auth/bigquery"
	conn := events.Connection{Name: "gcp-bio", Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthImpersonation,
			Impersonate: "reader@bio-prod.iam.gserviceaccount.com", Endpoint: fake.Endpoint()}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Token(ctx, "bio", "gcp-bio", events.TokenRequest{}); !errors.Is(err, events.ErrForbidden) {
		t.Fatalf("token without opt-in: %v", err)
	}
	conn.Tokens = &events.TokenPolicy{Enabled: true, Scopes: []string{bq}, MaxDuration: events.Duration(20 * time.Minute)}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	var tok *events.TokenReply
	natstest.Eventually(t, 5*time.Second, "the opt-in to reach the worker", func() bool {
		var err error
		tok, err = c.Token(ctx, "bio", "gcp-bio", events.TokenRequest{})
		return err == nil
	})
	if _, scopes, _, ok := fake.TokenInfo(tok.GCP.AccessToken); !ok || strings.Join(scopes, " ") != bq {
		t.Fatalf("default request got scopes %v, want the connection's", scopes)
	}
	if left := time.Until(tok.GCP.Expiry); left > 21*time.Minute {
		t.Fatalf("token lasts %s, want at most the 20m cap", left)
	}
	for _, scopes := range [][]string{{gcpfake.CloudPlatformScope}, {bq, "https://www.googleapis.com/auth/devstorage.full_control"}} {
		_, err := c.Token(ctx, "bio", "gcp-bio", events.TokenRequest{Scopes: scopes})
		if !errors.Is(err, events.ErrForbidden) {
			t.Fatalf("scopes %v outside the connection's: %v", scopes, err)
		}
	}
}
