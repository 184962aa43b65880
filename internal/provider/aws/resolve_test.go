package aws

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func TestResolveShapes(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("bio")
	jsonID := fake.PutSecretString("biodb01", `{"password":"password01","login":"user01"}`)
	plainID := fake.PutSecretString("plain", "just-a-token")
	binID := fake.PutSecretBinary("bin", []byte{0, 1, 2, 0xff})
	p := newProvider(t, accessKeyConn(fake, user))

	tests := []struct {
		name, secret, wantVersion string
		want                      []byte
		binary                    bool
	}{
		{"json object", "biodb01", jsonID, []byte(`{"password":"password01","login":"user01"}`), false},
		{"plain string", "plain", plainID, []byte("just-a-token"), false},
		{"binary", "bin", binID, []byte{0, 1, 2, 0xff}, true},
		{"by ARN", awsfake.SecretARN("biodb01"), jsonID, []byte(`{"password":"password01","login":"user01"}`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fake.CallsBy(awsfake.OpGetSecretValue, user.AccessKeyID)
			s, err := p.Resolve(ctxT(t), provider.Request{Secret: tt.secret})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if !bytes.Equal(s.Data, tt.want) || s.Binary != tt.binary || s.Version != tt.wantVersion {
				t.Errorf("got data %q binary %v version %s, want %q %v %s", s.Data, s.Binary, s.Version, tt.want, tt.binary, tt.wantVersion)
			}
			if s.FetchedAt.IsZero() || s.Cached {
				t.Errorf("FetchedAt %v Cached %v", s.FetchedAt, s.Cached)
			}
			if got := fake.CallsBy(awsfake.OpGetSecretValue, user.AccessKeyID) - before; got != 1 {
				t.Errorf("GetSecretValue calls signed by the connection's key = %d, want 1", got)
			}
		})
	}
}

func TestVersionsAndStages(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("bio")
	v1 := fake.PutSecretString("db", "one")
	v2 := fake.PutSecretString("db", "two") // AWSCURRENT moves; v1 becomes AWSPREVIOUS
	v3 := fake.PutSecretString("db", "three", "BLUE")
	p := newProvider(t, accessKeyConn(fake, user))

	tests := []struct {
		version, want, wantID string
		code                  events.Code
	}{
		{"", "two", v2, ""},
		{"AWSCURRENT", "two", v2, ""},
		{"AWSPREVIOUS", "one", v1, ""},
		{"BLUE", "three", v3, ""},
		{v1, "one", v1, ""},
		{v3, "three", v3, ""},
		{"GREEN", "", "", events.CodeNotFound},
		{"00000000-0000-4000-8000-000000000000", "", "", events.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run("version="+tt.version, func(t *testing.T) {
			s, err := p.Resolve(ctxT(t), provider.Request{Secret: "db", Version: tt.version})
			if tt.code != "" {
				if events.CodeOf(err) != tt.code {
					t.Fatalf("err = %v, want code %s", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if string(s.Data) != tt.want || s.Version != tt.wantID {
				t.Errorf("got %q %s, want %q %s", s.Data, s.Version, tt.want, tt.wantID)
			}
		})
	}
}

func TestCurrentVersion(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("bio")
	v1 := fake.PutSecretString("db", "one")
	p := newProvider(t, accessKeyConn(fake, user))
	ctx := ctxT(t)

	got, err := p.CurrentVersion(ctx, provider.Request{Secret: "db"})
	if err != nil || got != v1 {
		t.Fatalf("CurrentVersion = %q, %v; want %s", got, err, v1)
	}
	v2 := fake.PutSecretString("db", "two")
	if got, _ := p.CurrentVersion(ctx, provider.Request{Secret: "db"}); got != v2 {
		t.Errorf("after rotation CurrentVersion = %q, want %s", got, v2)
	}
	if got, _ := p.CurrentVersion(ctx, provider.Request{Secret: "db", Version: "AWSPREVIOUS"}); got != v1 {
		t.Errorf("AWSPREVIOUS = %q, want %s", got, v1)
	}
	if n := fake.Calls(awsfake.OpGetSecretValue); n != 0 {
		t.Errorf("CurrentVersion read the value %d times; it must only describe", n)
	}
	before := fake.Calls(awsfake.OpDescribeSecret)
	if got, err := p.CurrentVersion(ctx, provider.Request{Secret: "db", Version: v1}); err != nil || got != v1 {
		t.Errorf("version id request = %q, %v; want itself", got, err)
	}
	if fake.Calls(awsfake.OpDescribeSecret) != before {
		t.Errorf("a version id request called DescribeSecret")
	}
	if _, err := p.CurrentVersion(ctx, provider.Request{Secret: "db", Version: "NOPE"}); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("unknown stage: err = %v, want not_found", err)
	}
	if _, err := p.CurrentVersion(ctx, provider.Request{Secret: "missing"}); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("unknown secret: err = %v, want not_found", err)
	}
}

func TestTwoConnectionsSignWithTheirOwnKeys(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	alice, bob := fake.AddUser("alice"), fake.AddUser("bob")
	fake.PutSecretString("db", "v")
	pa := newProvider(t, accessKeyConn(fake, alice))
	cb := accessKeyConn(fake, bob)
	cb.Name = "aws-other"
	pb := newProvider(t, cb)
	for i := 0; i < 3; i++ {
		if _, err := pa.Resolve(ctxT(t), provider.Request{Secret: "db"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pb.Resolve(ctxT(t), provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	if a, b := fake.CallsBy(awsfake.OpGetSecretValue, alice.AccessKeyID), fake.CallsBy(awsfake.OpGetSecretValue, bob.AccessKeyID); a != 3 || b != 1 {
		t.Errorf("calls signed by alice=%d bob=%d, want 3 and 1", a, b)
	}
}

func TestErrorMapping(t *testing.T) {
	isolate(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name      string
		setup     func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection)
		timeout   time.Duration
		code      events.Code
		msg       string // substring of the message
		wantCalls int    // GetSecretValue calls seen by the fake, 0 = don't check
	}{
		{name: "missing secret", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) { f.DeleteSecret("db") },
			code: events.CodeNotFound, msg: "not found", wantCalls: 1},
		{name: "access denied", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) { f.DenySecret(u.ARN, "db") },
			code: events.CodeForbidden, msg: "AccessDeniedException", wantCalls: 1},
		{name: "kms decryption failure", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			f.Fail(awsfake.OpGetSecretValue, "DecryptionFailure", 1)
		}, code: events.CodeForbidden, msg: "KMS", wantCalls: 1},
		{name: "unknown access key", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			c.AWS.AccessKeyID = "AKIAUNKNOWNUNKNOWN00"
		}, code: events.CodeUnauthorized, msg: "UnrecognizedClientException", wantCalls: 1},
		{name: "wrong secret key", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			c.AWS.SecretAccessKey = "wrong" + u.SecretAccessKey[5:]
		}, code: events.CodeUnauthorized, msg: "InvalidSignatureException", wantCalls: 1},
		{name: "expired token", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			f.ExpireCredentials(u.AccessKeyID)
		}, code: events.CodeUnauthorized, msg: "ExpiredTokenException", wantCalls: 1},
		{name: "throttling storm", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			f.FailFor(awsfake.OpGetSecretValue, "ThrottlingException", time.Minute)
		}, code: events.CodeThrottled, msg: "retries exhausted", wantCalls: 4},
		{name: "server error persists", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			f.FailFor(awsfake.OpGetSecretValue, "InternalServiceError", time.Minute)
		}, code: events.CodeUnavailable, wantCalls: 4},
		{name: "503 persists", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			f.FailFor(awsfake.OpGetSecretValue, "ServiceUnavailable", time.Minute)
		}, code: events.CodeUnavailable, wantCalls: 4},
		{name: "transient throttle is retried", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			f.Fail(awsfake.OpGetSecretValue, "ThrottlingException", 2)
		}, wantCalls: 3},
		{name: "network error", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			c.AWS.Endpoint = deadURL
		}, code: events.CodeUnavailable, msg: "unreachable"},
		{name: "deadline", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {
			f.SetLatency(awsfake.OpGetSecretValue, 5*time.Second)
		}, timeout: 100 * time.Millisecond, code: events.CodeTimeout, msg: "deadline"},
		{name: "overlong version id is a bad request", setup: func(f *awsfake.Server, u *awsfake.Credentials, c *events.Connection) {},
			code: events.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := awsfake.New(t)
			user := fake.AddUser("bio")
			fake.PutSecretString("db", `{"password":"hunter2-value"}`)
			conn := accessKeyConn(fake, user)
			tt.setup(fake, &user, &conn)
			p := newProvider(t, conn)
			ctx := ctxT(t)
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			req := provider.Request{Secret: "db"}
			if tt.code == events.CodeBadRequest {
				req.Version = strings.Repeat("x", 257)
			}
			start := time.Now()
			_, err := p.Resolve(ctx, req)
			if got := events.CodeOf(err); (tt.code == "" && err != nil) || (tt.code != "" && got != tt.code) {
				t.Fatalf("err = %v (code %s), want code %q", err, got, tt.code)
			}
			if tt.timeout > 0 && time.Since(start) > tt.timeout+time.Second {
				t.Errorf("took %s past a %s deadline", time.Since(start), tt.timeout)
			}
			if err != nil {
				t.Logf("wire error: %+v", events.AsWire(err))
				if !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("message %q does not mention %q", err.Error(), tt.msg)
				}
				assertSafe(t, err, user.SecretAccessKey, conn.AWS.SecretAccessKey, "hunter2-value")
			}
			if tt.wantCalls > 0 {
				if got := fake.Calls(awsfake.OpGetSecretValue); got != tt.wantCalls {
					t.Errorf("GetSecretValue calls = %d, want %d", got, tt.wantCalls)
				}
			}
		})
	}
}

func TestResolveMetrics(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	p := newProvider(t, accessKeyConn(fake, fake.AddUser("bio")))
	c := metrics.Upstream.WithLabelValues("aws", "GetSecretValue", "not_found")
	before := testutil.ToFloat64(c)
	if _, err := p.Resolve(ctxT(t), provider.Request{Secret: "nope"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	if got := testutil.ToFloat64(c) - before; got != 1 {
		t.Errorf("upstream not_found counter moved by %v, want 1", got)
	}
}

func TestBadRequests(t *testing.T) {
	isolate(t)
	fake := awsfake.New(t)
	user := fake.AddUser("bio")
	p := newProvider(t, accessKeyConn(fake, user))
	for _, req := range []provider.Request{{Secret: ""}, {Secret: strings.Repeat("a", 2049)}} {
		if _, err := p.Resolve(ctxT(t), req); !errors.Is(err, events.ErrBadRequest) {
			t.Errorf("Resolve(%.20q) err = %v, want bad_request", req.Secret, err)
		}
	}
	if n := fake.Calls(awsfake.OpGetSecretValue); n != 0 {
		t.Errorf("bad requests reached AWS %d times", n)
	}
	bad := []func(c *events.Connection){
		func(c *events.Connection) { c.Provider = events.ProviderGCP },
		func(c *events.Connection) { c.AWS = nil },
		func(c *events.Connection) { c.AWS.Region = "" },
		func(c *events.Connection) { c.AWS.Auth = "password" },
		func(c *events.Connection) { c.AWS.SecretAccessKey = "" },
		func(c *events.Connection) { c.AWS.RoleARN = "not-an-arn" },
		func(c *events.Connection) { c.AWS.Endpoint = "ftp://x" },
	}
	for i, mut := range bad {
		c := accessKeyConn(fake, user)
		a := *c.AWS
		c.AWS = &a
		mut(&c)
		if _, err := New(context.Background(), c); !errors.Is(err, events.ErrBadRequest) {
			t.Errorf("case %d: New err = %v, want bad_request", i, err)
		}
	}
}

func TestIsVersionID(t *testing.T) {
	for v, want := range map[string]bool{
		"AWSCURRENT": false, "AWSPREVIOUS": false, "BLUE": false, "": false,
		"a1b2c3d4-5678-90ab-cdef-EXAMPLE11111": true, "00000000000000000000000000000000": true,
		strings.Repeat("a", 65): false, "a1b2c3d4 5678 90ab cdef EXAMPLE11111": false,
	} {
		if got := IsVersionID(v); got != want {
			t.Errorf("IsVersionID(%q) = %v, want %v", v, got, want)
		}
	}
}

func FuzzIsVersionID(f *testing.F) {
	for _, s := range []string{"AWSCURRENT", "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111", "", "x\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if IsVersionID(s) {
			if len(s) < 32 || len(s) > 64 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
				t.Fatalf("IsVersionID(%q) accepted a non-id", s)
			}
		}
	})
}
