package awsfake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

func signed(t *testing.T, url, body, akid, secretKey, token string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/?b=2&a=1%202", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "secretsmanager.GetSecretValue")
	sum := sha256.Sum256([]byte(body))
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secretKey, SessionToken: token},
		req, hex.EncodeToString(sum[:]), "secretsmanager", "us-east-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestVerifySignature(t *testing.T) {
	s := New(t)
	u := s.AddUser("alice")
	tests := []struct {
		name   string
		mutate func(r *http.Request, body *[]byte)
		key    string
		want   bool
	}{
		{name: "valid", key: u.SecretAccessKey, want: true},
		{name: "wrong secret key", key: "x" + u.SecretAccessKey[1:], want: false},
		{name: "tampered body", key: u.SecretAccessKey, mutate: func(r *http.Request, b *[]byte) { *b = []byte(`{"SecretId":"other"}`) }},
		{name: "tampered signed header", key: u.SecretAccessKey, mutate: func(r *http.Request, b *[]byte) {
			r.Header.Set("X-Amz-Target", "secretsmanager.DescribeSecret")
		}},
		{name: "tampered query", key: u.SecretAccessKey, mutate: func(r *http.Request, b *[]byte) { r.URL.RawQuery = "a=1" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(`{"SecretId":"db"}`)
			r := signed(t, s.URL(), string(body), u.AccessKeyID, tt.key, "")
			r.Host = r.URL.Host
			if tt.mutate != nil {
				tt.mutate(r, &body)
			}
			a, err := ParseAuthorization(r.Header.Get("Authorization"))
			if err != nil {
				t.Fatal(err)
			}
			if a.AccessKeyID != u.AccessKeyID || a.Service != "secretsmanager" || a.Region != "us-east-1" {
				t.Errorf("parsed %+v", a)
			}
			if got := VerifySignature(r, body, a, u.SecretAccessKey); got != tt.want {
				t.Errorf("VerifySignature = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSecretsManagerAuthErrors(t *testing.T) {
	s := New(t)
	u := s.AddUser("alice")
	s.PutSecretString("db", "v")
	tests := []struct {
		name, akid, key, token, wantType string
		status                           int
	}{
		{"ok", u.AccessKeyID, u.SecretAccessKey, "", "", 200},
		{"unknown key", "AKIANOTKNOWN0000000", u.SecretAccessKey, "", "UnrecognizedClientException", 400},
		{"bad signature", u.AccessKeyID, "nope", "", "InvalidSignatureException", 400},
		{"unexpected session token", u.AccessKeyID, u.SecretAccessKey, "tok", "UnrecognizedClientException", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(signed(t, s.URL(), `{"SecretId":"db"}`, tt.akid, tt.key, tt.token))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || (tt.wantType != "" && !bytes.Contains(b, []byte(`"__type":"`+tt.wantType+`"`))) {
				t.Errorf("status %d body %s, want %d %s", resp.StatusCode, b, tt.status, tt.wantType)
			}
		})
	}
	if s.CallsBy(OpGetSecretValue, u.AccessKeyID) != 3 || s.Calls(OpGetSecretValue) != 4 {
		t.Errorf("calls by key %d, total %d", s.CallsBy(OpGetSecretValue, u.AccessKeyID), s.Calls(OpGetSecretValue))
	}
}

func TestIMDSRequiresSessionToken(t *testing.T) {
	s := New(t)
	s.SetInstanceRole("web")
	get := func(tok string) int {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/latest/meta-data/iam/security-credentials/", nil)
		if tok != "" {
			req.Header.Set("X-aws-ec2-metadata-token", tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(""); st != http.StatusUnauthorized {
		t.Errorf("IMDSv1 GET status %d, want 401", st)
	}
	if st := get("forged"); st != http.StatusUnauthorized {
		t.Errorf("forged token status %d, want 401", st)
	}
	put := func(ttl string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, s.URL()+"/latest/api/token", nil)
		if ttl != "" {
			req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", ttl)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for _, ttl := range []string{"", "0", "21601", "x"} {
		if st, _ := put(ttl); st != http.StatusBadRequest {
			t.Errorf("PUT token ttl %q: status %d, want 400", ttl, st)
		}
	}
	st, tok := put("300")
	if st != 200 || tok == "" {
		t.Fatalf("PUT token: %d %q", st, tok)
	}
	if st := get(tok); st != 200 {
		t.Errorf("GET with token: %d", st)
	}
	if s.IMDSRejected() != 2 {
		t.Errorf("IMDSRejected = %d, want 2", s.IMDSRejected())
	}
}

func TestPutSecretMovesStages(t *testing.T) {
	s := New(t)
	v1 := s.PutSecretString("db", "1")
	v2 := s.PutSecretString("db", "2")
	v3 := s.PutSecretString("db", "3")
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string][]string{v1: nil, v2: {StagePrevious}, v3: {StageCurrent}}
	for _, v := range s.secrets["db"].versions {
		if strings.Join(v.stages, ",") != strings.Join(want[v.id], ",") {
			t.Errorf("version %s stages %v, want %v", v.id, v.stages, want[v.id])
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261124/us-east-1/secretsmanager/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("ab", 32))
	f.Add("AWS4-HMAC-SHA256 Credential=/x/y/z/aws4_request")
	f.Add("Bearer abc")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := ParseAuthorization(h)
		if err != nil {
			return
		}
		if a.AccessKeyID == "" || len(a.SignedHeaders) == 0 || len(a.Signature) != 64 {
			t.Fatalf("accepted incomplete header %q: %+v", h, a)
		}
	})
}
