package aws

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// resolveSignedBy resolves "db" and checks the fake saw the call signed with akid.
func resolveSignedBy(t *testing.T, fake *awsfake.Server, p *Provider, akid string) {
	t.Helper()
	before := fake.CallsBy(awsfake.OpGetSecretValue, akid)
	s, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if string(s.Data) != "value" {
		t.Fatalf("Resolve data = %q", s.Data)
	}
	if got := fake.CallsBy(awsfake.OpGetSecretValue, akid) - before; got != 1 {
		t.Fatalf("GetSecretValue signed by %s: %d calls, want 1", akid, got)
	}
}

func TestAuthTaskRoleIMDSv2(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	useIMDS(t, fake)
	inst := fake.SetInstanceRole("ec2-worker")
	fake.PutSecretString("db", "value")
	p := newProvider(t, authConn(fake, events.AWSAuthTaskRole))

	resolveSignedBy(t, fake, p, inst.AccessKeyID)
	if fake.Calls(awsfake.OpIMDSToken) < 1 {
		t.Errorf("no IMDSv2 token PUT seen")
	}
	if n := fake.IMDSRejected(); n != 0 {
		t.Errorf("%d IMDS requests came without a valid IMDSv2 token", n)
	}
	resolveSignedBy(t, fake, p, inst.AccessKeyID)
	if n := fake.Calls(awsfake.OpIMDSGet); n > 2 {
		t.Errorf("credentials not cached: %d IMDS GETs for two resolves", n)
	}
	steps := p.Probe(ctxT(t))
	if len(steps) != 2 || !steps[0].OK || !strings.Contains(steps[0].Detail, "IMDSv2") ||
		!steps[1].OK || steps[1].Detail != inst.ARN {
		t.Errorf("probe = %+v, want credentials from IMDSv2 and identity %s", steps, inst.ARN)
	}
}

func TestAuthTaskRoleIMDSWithoutRole(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	useIMDS(t, fake)
	fake.PutSecretString("db", "value")
	p := newProvider(t, authConn(fake, events.AWSAuthTaskRole))
	_, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"})
	if !errors.Is(err, events.ErrUnauthorized) || !strings.Contains(err.Error(), "obtaining credentials (task_role)") {
		t.Fatalf("err = %v, want unauthorized while obtaining credentials", err)
	}
	if n := fake.Calls(awsfake.OpGetSecretValue); n != 0 {
		t.Errorf("GetSecretValue called %d times without credentials", n)
	}
}

func TestAuthTaskRoleContainerEndpoint(t *testing.T) {
	tests := []struct {
		name      string
		env       func(t *testing.T, fake *awsfake.Server, dir string)
		wantErr   events.Code
		rejection bool
	}{
		{name: "token in env", env: func(t *testing.T, fake *awsfake.Server, dir string) {
			t.Setenv(EnvContainerToken, "task-token-1")
		}},
		{name: "token file", env: func(t *testing.T, fake *awsfake.Server, dir string) {
			f := filepath.Join(dir, "token")
			if err := os.WriteFile(f, []byte("task-token-1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv(EnvContainerTokenFile, f)
			t.Setenv(EnvContainerToken, "ignored-when-file-set")
		}},
		{name: "wrong token", env: func(t *testing.T, fake *awsfake.Server, dir string) {
			t.Setenv(EnvContainerToken, "stolen")
		}, wantErr: events.CodeUnauthorized, rejection: true},
		{name: "missing token file", env: func(t *testing.T, fake *awsfake.Server, dir string) {
			t.Setenv(EnvContainerTokenFile, filepath.Join(dir, "nope"))
		}, wantErr: events.CodeUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			fake := awsfake.New(t)
			task := fake.SetContainerRole("ecs-task", "task-token-1")
			fake.PutSecretString("db", "value")
			t.Setenv(EnvContainerFullURI, fake.ContainerCredentialsURL())
			tt.env(t, fake, t.TempDir())
			p := newProvider(t, authConn(fake, events.AWSAuthTaskRole))
			if tt.wantErr == "" {
				resolveSignedBy(t, fake, p, task.AccessKeyID)
				if n := fake.ContainerRejected(); n != 0 {
					t.Errorf("endpoint rejected %d requests", n)
				}
				return
			}
			_, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"})
			if events.CodeOf(err) != tt.wantErr {
				t.Fatalf("err = %v, want %s", err, tt.wantErr)
			}
			assertSafe(t, err, "stolen", task.SecretAccessKey)
			if tt.rejection && fake.ContainerRejected() == 0 {
				t.Errorf("the fake saw no rejected token")
			}
			if fake.Calls(awsfake.OpGetSecretValue) != 0 {
				t.Errorf("GetSecretValue called without credentials")
			}
		})
	}
}

func TestAuthTaskRoleContainerURLMustBeLocal(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	t.Setenv(EnvContainerFullURI, "http://203.0.113.9/creds")
	if _, err := New(ctxT(t), authConn(fake, events.AWSAuthTaskRole)); !errors.Is(err, events.ErrBadRequest) {
		t.Fatalf("err = %v, want bad_request for a non-local http endpoint", err)
	}
}

func TestAuthDefaultChain(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("env-user")
	fake.PutSecretString("db", "value")
	t.Setenv("AWS_ACCESS_KEY_ID", user.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", user.SecretAccessKey)
	p := newProvider(t, authConn(fake, events.AWSAuthDefault))
	resolveSignedBy(t, fake, p, user.AccessKeyID)
	steps := p.Probe(ctxT(t))
	if !steps[0].OK || !strings.Contains(steps[0].Detail, "environment") || steps[1].Detail != user.ARN {
		t.Errorf("probe = %+v", steps)
	}
	if strings.Contains(steps[0].Detail, user.AccessKeyID) {
		t.Errorf("probe detail shows the access key id")
	}
}

func TestAuthDefaultChainSharedCredentialsFile(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("file-user")
	fake.PutSecretString("db", "value")
	f := filepath.Join(t.TempDir(), "credentials")
	body := "[default]\naws_access_key_id = " + user.AccessKeyID + "\naws_secret_access_key = " + user.SecretAccessKey + "\n"
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", f)
	p := newProvider(t, authConn(fake, events.AWSAuthDefault))
	resolveSignedBy(t, fake, p, user.AccessKeyID)
}

func TestAuthAssumeRole(t *testing.T) {
	tests := []struct {
		name       string
		externalID string
		sessName   string
		wantErr    events.Code
	}{
		{name: "external id matches", externalID: "ext-7a1", sessName: ""},
		{name: "custom session name", externalID: "ext-7a1", sessName: "nightly-etl"},
		{name: "wrong external id", externalID: "ext-guess", wantErr: events.CodeForbidden},
		{name: "missing external id", externalID: "", wantErr: events.CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			fake := awsfake.New(t)
			user := fake.AddUser("bio")
			roleARN := fake.AddRole("secrets-reader", awsfake.RoleOptions{ExternalID: "ext-7a1"})
			fake.PutSecretString("db", "value")
			conn := accessKeyConn(fake, user)
			conn.AWS.RoleARN, conn.AWS.ExternalID, conn.AWS.SessionName = roleARN, tt.externalID, tt.sessName
			p := newProvider(t, conn)
			s, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"})
			if tt.wantErr != "" {
				if events.CodeOf(err) != tt.wantErr || !strings.Contains(err.Error(), "assume_role") {
					t.Fatalf("err = %v, want %s while assuming the role", err, tt.wantErr)
				}
				if fake.Calls(awsfake.OpGetSecretValue) != 0 {
					t.Errorf("GetSecretValue called without the role")
				}
				return
			}
			if err != nil || string(s.Data) != "value" {
				t.Fatalf("Resolve = %q, %v", s.Data, err)
			}
			last := fake.LastAssumeRole()
			wantSess := tt.sessName
			if wantSess == "" {
				wantSess = "cloudbridge-aws-sm-bio"
			}
			if last["ExternalId"] != "ext-7a1" || last["RoleSessionName"] != wantSess || last["RoleArn"] != roleARN {
				t.Errorf("AssumeRole params = %v", last)
			}
			if fake.CallsBy(awsfake.OpAssumeRole, user.AccessKeyID) != 1 {
				t.Errorf("AssumeRole not signed with the base keys")
			}
			if fake.CallsBy(awsfake.OpGetSecretValue, user.AccessKeyID) != 0 {
				t.Errorf("GetSecretValue signed with the base keys instead of the role session")
			}
			if _, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"}); err != nil {
				t.Fatal(err)
			}
			if n := fake.Calls(awsfake.OpAssumeRole); n != 1 {
				t.Errorf("role session not cached: %d AssumeRole calls", n)
			}
			// The 1h session is renewed 4-5 minutes before it expires.
			c, err := p.creds.Retrieve(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if left := time.Until(c.Expires); left < 54*time.Minute || left > 56*time.Minute+time.Second {
				t.Errorf("cached session renews in %s, want 55-56m for a 1h session", left)
			}
			steps := p.Probe(ctxT(t))
			if !steps[1].OK || !strings.HasPrefix(steps[1].Detail, "arn:aws:sts::123456789012:assumed-role/secrets-reader/"+wantSess) {
				t.Errorf("identity = %+v", steps[1])
			}
		})
	}
}

func TestAssumeRoleOnTaskRole(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	useIMDS(t, fake)
	inst := fake.SetInstanceRole("ec2-worker")
	roleARN := fake.AddRole("cross-account", awsfake.RoleOptions{})
	fake.PutSecretString("db", "value")
	conn := authConn(fake, events.AWSAuthTaskRole)
	conn.AWS.RoleARN = roleARN
	p := newProvider(t, conn)
	if _, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	if fake.CallsBy(awsfake.OpAssumeRole, inst.AccessKeyID) != 1 {
		t.Errorf("AssumeRole not signed with the instance role")
	}
}

func TestConfigForOtherClients(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("logs")
	p := newProvider(t, accessKeyConn(fake, user))
	cfg := p.Config()
	if cfg.Region != "us-east-1" || cfg.BaseEndpoint == nil || *cfg.BaseEndpoint != fake.URL() {
		t.Fatalf("config region %q endpoint %v", cfg.Region, cfg.BaseEndpoint)
	}
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctxT(t), &sts.GetCallerIdentityInput{})
	if err != nil || *out.Arn != user.ARN {
		t.Fatalf("GetCallerIdentity through Config() = %v, %v", out, err)
	}
	if fake.CallsBy(awsfake.OpGetCallerIdentity, user.AccessKeyID) != 1 {
		t.Errorf("client built from Config() did not sign with the connection's key")
	}
}

func TestAuthTaskRoleContainerRelativeURI(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	task := fake.SetContainerRole("ecs-task", "")
	fake.PutSecretString("db", "value")
	old := ecsHost
	ecsHost = fake.URL()
	t.Cleanup(func() { ecsHost = old })
	t.Setenv(EnvContainerRelativeURI, awsfake.ContainerCredentialsPath)
	useIMDS(t, fake) // present but must not be used: the container endpoint wins
	p := newProvider(t, authConn(fake, events.AWSAuthTaskRole))
	resolveSignedBy(t, fake, p, task.AccessKeyID)
	if fake.Calls(awsfake.OpIMDSToken)+fake.Calls(awsfake.OpIMDSGet) != 0 {
		t.Errorf("IMDS used although the container endpoint is configured")
	}
	steps := p.Probe(ctxT(t))
	if !strings.Contains(steps[0].Detail, "container credentials endpoint") || steps[1].Detail != task.ARN {
		t.Errorf("probe = %+v", steps)
	}
}

func TestFactoryAndSDKConfig(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("bio")
	fake.PutSecretString("db", "value")
	r, err := Factory(fastRetry)(ctxT(t), accessKeyConn(fake, user))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(provider.Prober); !ok {
		t.Errorf("factory result does not expose Probe")
	}
	if r, err := Factory()(ctxT(t), events.Connection{Name: "x", Provider: "aws"}); r != nil || !errors.Is(err, events.ErrBadRequest) {
		t.Errorf("bad connection: %v, %v; want nil resolver and bad_request", r, err)
	}
	cfg, err := SDKConfig(ctxT(t), accessKeyConn(fake, user))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Credentials.Retrieve(ctxT(t))
	if err != nil || c.AccessKeyID != user.AccessKeyID {
		t.Errorf("SDKConfig credentials = %s, %v", c.AccessKeyID, err)
	}
}

func TestAuthDefaultChainFindsNothing(t *testing.T) {
	isolate(t) // no env keys, empty shared files, IMDS disabled
	fake := awsfake.New(t)
	fake.PutSecretString("db", "value")
	p := newProvider(t, authConn(fake, events.AWSAuthDefault))
	_, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"})
	if !errors.Is(err, events.ErrUnauthorized) || !strings.Contains(err.Error(), "obtaining credentials (default)") {
		t.Fatalf("err = %v, want unauthorized from the default chain", err)
	}
	if fake.Calls(awsfake.OpGetSecretValue) != 0 {
		t.Errorf("an unsigned call reached AWS")
	}
}
