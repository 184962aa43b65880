package aws

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// vendedWork proves vended credentials are real: a connection built from
// them reads a secret, and the fake sees the call signed with them.
func vendedWork(t *testing.T, fake *awsfake.Server, c *events.AWSCredentials) {
	t.Helper()
	conn := accessKeyConn(fake, awsfake.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken})
	conn.Name = "vended"
	resolveSignedBy(t, fake, newProvider(t, conn), c.AccessKeyID)
}

func TestTokenAccessKeyUsesGetSessionToken(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("athena")
	fake.PutSecretString("db", "value")
	p := newProvider(t, accessKeyConn(fake, user))

	tests := []struct {
		name     string
		duration time.Duration
		want     time.Duration
		code     events.Code
	}{
		{name: "default is 1h", want: time.Hour},
		{name: "36h is AWS's maximum", duration: 36 * time.Hour, want: 36 * time.Hour},
		{name: "under 15m", duration: 10 * time.Minute, code: events.CodeBadRequest},
		{name: "over 36h", duration: 37 * time.Hour, code: events.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fake.CallsBy(awsfake.OpGetSessionToken, user.AccessKeyID)
			tok, err := p.Token(ctxT(t), events.TokenRequest{Duration: events.Duration(tt.duration)})
			if tt.code != "" {
				if events.CodeOf(err) != tt.code {
					t.Fatalf("err = %v, want %s", err, tt.code)
				}
				if fake.CallsBy(awsfake.OpGetSessionToken, user.AccessKeyID) != before {
					t.Errorf("an invalid duration reached STS")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fake.CallsBy(awsfake.OpGetSessionToken, user.AccessKeyID)-before != 1 {
				t.Errorf("GetSessionToken not signed with the connection's key")
			}
			c := tok.AWS
			if tok.Provider != "aws" || c == nil || !strings.HasPrefix(c.AccessKeyID, "ASIA") || c.SessionToken == "" {
				t.Fatalf("token = %+v", tok)
			}
			if d := time.Until(c.Expiration); d < tt.want-time.Minute || d > tt.want+time.Minute {
				t.Errorf("expires in %s, want ~%s", d, tt.want)
			}
			vendedWork(t, fake, c)
		})
	}
}

func TestTokenAssumeRole(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("athena")
	roleARN := fake.AddRole("athena-query", awsfake.RoleOptions{ExternalID: "ext-42", MaxSession: 2 * time.Hour})
	fake.PutSecretString("db", "value")
	conn := accessKeyConn(fake, user)
	conn.AWS.RoleARN, conn.AWS.ExternalID = roleARN, "ext-42"
	p := newProvider(t, conn)

	tests := []struct {
		name     string
		duration time.Duration
		want     time.Duration
		code     events.Code
	}{
		{name: "default 1h", want: time.Hour},
		{name: "2h within the role's maximum", duration: 2 * time.Hour, want: 2 * time.Hour},
		{name: "3h over the role's maximum", duration: 3 * time.Hour, code: events.CodeBadRequest},
		{name: "13h over AWS's maximum", duration: 13 * time.Hour, code: events.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := p.Token(ctxT(t), events.TokenRequest{Duration: events.Duration(tt.duration)})
			if tt.code != "" {
				if events.CodeOf(err) != tt.code {
					t.Fatalf("err = %v, want %s", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			last := fake.LastAssumeRole()
			if last["ExternalId"] != "ext-42" || last["DurationSeconds"] != strconv.Itoa(int(tt.want/time.Second)) {
				t.Errorf("AssumeRole params = %v", last)
			}
			if d := time.Until(tok.AWS.Expiration); d < tt.want-time.Minute || d > tt.want+time.Minute {
				t.Errorf("expires in %s, want ~%s", d, tt.want)
			}
			vendedWork(t, fake, tok.AWS)
		})
	}
	if fake.Calls(awsfake.OpGetSessionToken) != 0 {
		t.Errorf("GetSessionToken called with role_arn set")
	}
}

func TestTokenTaskRoleReturnsCurrentCredentials(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	useIMDS(t, fake)
	inst := fake.SetInstanceRole("ec2-worker")
	p := newProvider(t, authConn(fake, events.AWSAuthTaskRole))
	tok, err := p.Token(ctxT(t), events.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if tok.AWS.AccessKeyID != inst.AccessKeyID || tok.AWS.SessionToken != inst.SessionToken {
		t.Errorf("token = %+v, want the instance role's credentials", tok.AWS)
	}
	// The SDK caps instance credentials at 1h and the cache renews them 4-5m
	// early; the reply's expiration is that conservative one.
	if exp := tok.AWS.Expiration; exp.Before(time.Now().Add(30*time.Minute)) || exp.After(inst.Expires) {
		t.Errorf("expiration %s, want between now+30m and %s", exp, inst.Expires)
	}
	if n := fake.Calls(awsfake.OpGetSessionToken) + fake.Calls(awsfake.OpAssumeRole); n != 0 {
		t.Errorf("STS called %d times for a task role token", n)
	}
}

func TestTokenErrors(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("athena")
	conn := accessKeyConn(fake, user)
	conn.AWS.SecretAccessKey = "not-the-key"
	p := newProvider(t, conn)
	_, err := p.Token(ctxT(t), events.TokenRequest{})
	if !errors.Is(err, events.ErrUnauthorized) || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Errorf("wrong key: err = %v, want unauthorized (SignatureDoesNotMatch)", err)
	}
	assertSafe(t, err, "not-the-key", user.SecretAccessKey)

	fake.FailFor(awsfake.OpGetSessionToken, "Throttling", time.Minute)
	_, err = newProvider(t, accessKeyConn(fake, user)).Token(ctxT(t), events.TokenRequest{})
	if !errors.Is(err, events.ErrThrottled) {
		t.Errorf("throttled STS: err = %v, want throttled", err)
	}
}

func TestProbe(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("bio")

	tests := []struct {
		name     string
		mut      func(c *events.Connection)
		wantOK   [2]bool
		identity string
		code     events.Code
	}{
		{name: "good keys", mut: func(c *events.Connection) {}, wantOK: [2]bool{true, true}, identity: user.ARN},
		{name: "bad secret key", mut: func(c *events.Connection) { c.AWS.SecretAccessKey = "bad-secret-key-value" },
			wantOK: [2]bool{true, false}, code: events.CodeUnauthorized},
		{name: "role not assumable", mut: func(c *events.Connection) { c.AWS.RoleARN = "arn:aws:iam::123456789012:role/nope" },
			wantOK: [2]bool{false, false}, code: events.CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := accessKeyConn(fake, user)
			tt.mut(&conn)
			steps := newProvider(t, conn).Probe(ctxT(t))
			if len(steps) != 2 || steps[0].Name != events.StepCredentials || steps[1].Name != events.StepIdentity {
				t.Fatalf("steps = %+v", steps)
			}
			for i, s := range steps {
				if s.OK != tt.wantOK[i] {
					t.Errorf("step %s ok = %v, want %v (%+v)", s.Name, s.OK, tt.wantOK[i], s)
				}
				if !s.OK && (s.Error == nil || s.Error.Code != tt.code) {
					t.Errorf("step %s error = %+v, want %s", s.Name, s.Error, tt.code)
				}
				for _, leak := range []string{user.AccessKeyID, user.SecretAccessKey, "bad-secret-key-value"} {
					if strings.Contains(s.Detail, leak) || (s.Error != nil && strings.Contains(s.Error.Message, leak)) {
						t.Errorf("step %s leaks a key: %+v", s.Name, s)
					}
				}
			}
			if tt.identity != "" && steps[1].Detail != tt.identity {
				t.Errorf("identity = %q, want %q", steps[1].Detail, tt.identity)
			}
			if steps[0].OK && !strings.Contains(steps[0].Detail, "static access keys") {
				t.Errorf("credentials detail = %q", steps[0].Detail)
			}
		})
	}
}

func TestCredentialSourceFailures(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	fake.SetContainerRole("ecs-task", "")
	t.Setenv(EnvContainerFullURI, fake.ContainerCredentialsURL())
	fake.PutSecretString("db", "value")
	fake.FailFor(awsfake.OpContainerCredentials, "ServiceUnavailable", time.Minute)
	p := newProvider(t, authConn(fake, events.AWSAuthTaskRole))
	if _, err := p.Resolve(ctxT(t), provider.Request{Secret: "db"}); !errors.Is(err, events.ErrUnavailable) {
		t.Errorf("container endpoint down: err = %v, want unavailable", err)
	}
	// The endpoint's own retryer tries 4 times; the signed call does not
	// retry around it (which would make 16).
	if n := fake.Calls(awsfake.OpContainerCredentials); n != 4 {
		t.Errorf("container endpoint called %d times, want 4", n)
	}

	user := fake.AddUser("bio")
	conn := accessKeyConn(fake, user)
	conn.AWS.SecretAccessKey = "wrong-key"
	conn.AWS.RoleARN = fake.AddRole("r", awsfake.RoleOptions{})
	if _, err := newProvider(t, conn).Resolve(ctxT(t), provider.Request{Secret: "db"}); !errors.Is(err, events.ErrUnauthorized) {
		t.Errorf("AssumeRole with bad base keys: err = %v, want unauthorized", err)
	}
}
