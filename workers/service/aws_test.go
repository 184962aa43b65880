package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/internal/testenv/pgtest"
)

// The platform docs' AWS story end to end: the secret is created in (fake)
// Secrets Manager, an admin adds and tests aws-sm-bio, a bio service resolves
// biodb01 over NATS and logs in to PostgreSQL with it.
func TestAWSBiodb01EndToEnd(t *testing.T) {
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	fake := awsfake.New(t)
	admin := fake.AddUser("platform-admin")
	fake.PutSecretString("biodb01", `{"password":"password01","login":"user01"}`)
	pg := pgtest.Scram(t)
	pg.CreateLogin(t, "user01", "password01", "biodb01")

	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	conn := events.Connection{Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		Tokens: &events.TokenPolicy{Enabled: true},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: admin.AccessKeyID,
			SecretAccessKey: admin.SecretAccessKey, Endpoint: fake.URL()}}
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	report, err := c.Test(ctx, "bio", "aws-sm-bio", events.TestRequest{Secret: "biodb01", Keys: []string{"login", "password"}})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, s := range report.Steps {
		names = append(names, s.Name)
		if !s.OK {
			t.Fatalf("step %s failed: %+v", s.Name, s.Error)
		}
	}
	if !report.OK || len(names) != 4 || names[0] != "credentials" || names[1] != "identity" || names[2] != "secret" || names[3] != "keys" {
		t.Fatalf("test report: %+v", report)
	}

	got, err := c.Resolve(ctx, "bio", "aws-sm-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatal(err)
	}
	login, _ := got.String("login")
	password, _ := got.String("password")
	if user, db, err := pg.Login(login, password, "biodb01"); err != nil || user != "user01" || db != "biodb01" {
		t.Fatalf("login with resolved credentials: %v (%s@%s)", err, user, db)
	}
	if n := fake.CallsBy("GetSecretValue", admin.AccessKeyID); n < 1 {
		t.Fatalf("the fake saw %d GetSecretValue calls signed by the connection's key", n)
	}
	// Cached: a second resolve makes no call.
	before := fake.Calls("GetSecretValue")
	if got, err := c.Resolve(ctx, "bio", "aws-sm-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil || !got.Cached {
		t.Fatalf("second resolve: %+v %v", got, err)
	}
	if fake.Calls("GetSecretValue") != before {
		t.Fatal("a cached resolve called Secrets Manager")
	}
	// Short-lived credentials for Athena/S3 come from GetSessionToken.
	tok, err := c.Token(ctx, "bio", "aws-sm-bio", events.TokenRequest{Duration: events.Duration(time.Hour)})
	if err != nil || tok.Provider != "aws" || tok.AWS == nil || tok.AWS.SessionToken == "" || tok.AWS.AccessKeyID == admin.AccessKeyID {
		t.Fatalf("token: %+v %v", tok, err)
	}
	// The cloud's answers map to wire codes.
	if _, err := c.Resolve(ctx, "bio", "aws-sm-bio", events.ResolveRequest{Secret: "biodb99"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("missing secret: %v", err)
	}
	if logs := w.logs.String(); containsAny(logs, "password01", admin.SecretAccessKey) {
		t.Fatal("logs contain a secret")
	}
}

func containsAny(s string, subs ...string) bool {
	for _, x := range subs {
		if x != "" && strings.Contains(s, x) {
			return true
		}
	}
	return false
}
