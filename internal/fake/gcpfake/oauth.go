package gcpfake

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// JWTBearerGrant is the grant type of a service-account token request.
const JWTBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// ServiceAccount is a service account known to the fake, with its RSA key.
type ServiceAccount struct {
	Email   string
	Project string
	KeyID   string
	key     *rsa.PrivateKey
	keyJSON []byte
}

// AddServiceAccount creates a service account with a fresh RSA key whose JSON
// key file points its token_uri at this fake. The project is taken from the
// email (name@project.iam.gserviceaccount.com).
func (s *Server) AddServiceAccount(email string) *ServiceAccount {
	key := rsaKey(email)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(fmt.Sprintf("gcpfake: encoding RSA key: %v", err))
	}
	kid := make([]byte, 20)
	_, _ = rand.Read(kid)
	project := ""
	if at := strings.IndexByte(email, '@'); at >= 0 {
		project, _, _ = strings.Cut(email[at+1:], ".")
	}
	sa := &ServiceAccount{Email: email, Project: project, KeyID: hex.EncodeToString(kid), key: key}
	sa.keyJSON, _ = json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              sa.KeyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                email,
		"client_id":                   "1000000000000000000",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   s.TokenURL(),
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
	}, "", "  ")
	s.mu.Lock()
	s.accounts[email] = sa
	s.mu.Unlock()
	return sa
}

// keys holds one RSA key per email for the life of the test binary: 2048-bit
// generation is slow, and reusing a key across fakes changes nothing a test
// can observe (each fake has its own accounts and token endpoint).
var keys sync.Map

func rsaKey(email string) *rsa.PrivateKey {
	if k, ok := keys.Load(email); ok {
		return k.(*rsa.PrivateKey)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(fmt.Sprintf("gcpfake: generating RSA key: %v", err))
	}
	actual, _ := keys.LoadOrStore(email, k)
	return actual.(*rsa.PrivateKey)
}

// KeyJSON is the service account's JSON key file.
func (a *ServiceAccount) KeyJSON() []byte { return append([]byte(nil), a.keyJSON...) }

// PrivateKeyPEM is the PEM private key inside the JSON key, for tests that
// check it never leaks.
func (a *ServiceAccount) PrivateKeyPEM() string {
	var k struct {
		PrivateKey string `json:"private_key"`
	}
	_ = json.Unmarshal(a.keyJSON, &k)
	return k.PrivateKey
}

// RevokeKey deletes the account's key: the token endpoint answers its
// assertions with 400 invalid_grant, as Google does for a deleted key.
func (s *Server) RevokeKey(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.accounts[email]; ok {
		a.key = nil
	}
}

// account returns the account of email and its public key (nil if revoked).
func (s *Server) account(email string) (*ServiceAccount, *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[email]
	if !ok || a.key == nil {
		return a, nil
	}
	return a, &a.key.PublicKey
}

type tokenError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// tokenHandler is Google's OAuth2 token endpoint for the JWT-bearer grant.
func (s *Server) tokenHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		reply := func(code int, v any) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(v)
		}
		if r.Method != http.MethodPost {
			reply(http.StatusMethodNotAllowed, tokenError{"invalid_request", "POST required"})
			return
		}
		if err := r.ParseForm(); err != nil {
			reply(http.StatusBadRequest, tokenError{"invalid_request", "bad form"})
			return
		}
		if g := r.PostForm.Get("grant_type"); g != JWTBearerGrant {
			reply(http.StatusBadRequest, tokenError{"unsupported_grant_type", "Invalid grant_type: " + g})
			return
		}
		claims, err := s.verifyAssertion(r.PostForm.Get("assertion"))
		if err != nil {
			reply(http.StatusBadRequest, tokenError{"invalid_grant", err.Error()})
			return
		}
		if f, ok := s.nextFault(MethodToken); ok {
			switch f.Code.String() {
			case "ResourceExhausted":
				reply(http.StatusTooManyRequests, tokenError{"rate_limit_exceeded", f.Message})
			case "Unavailable":
				reply(http.StatusServiceUnavailable, tokenError{"temporarily_unavailable", f.Message})
			default:
				reply(http.StatusBadRequest, tokenError{"invalid_grant", f.Message})
			}
			return
		}
		scopes := strings.Fields(claims.Scope)
		token, exp := s.issue(claims.Iss, scopes, s.tokenLifetime(claims.Iss))
		s.mu.Lock()
		s.tokenFetches[claims.Iss]++
		s.mu.Unlock()
		reply(http.StatusOK, map[string]any{
			"access_token": token,
			"token_type":   "Bearer",
			"expires_in":   int(time.Until(exp).Round(time.Second).Seconds()),
		})
	})
	return mux
}

// Claims are the JWT claims of a service-account assertion.
type Claims struct {
	Iss   string `json:"iss"`
	Scope string `json:"scope"`
	Aud   string `json:"aud"`
	Sub   string `json:"sub,omitempty"`
	Iat   int64  `json:"iat"`
	Exp   int64  `json:"exp"`
}

// JWTHeader is the header of a JWT.
type JWTHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// ParseJWT splits and decodes a compact JWS without verifying it.
func ParseJWT(assertion string) (header JWTHeader, claims Claims, signed string, sig []byte, err error) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return header, claims, "", nil, errors.New("Invalid JWT: not three segments")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return header, claims, "", nil, errors.New("Invalid JWT: header is not base64url")
	}
	if err := json.Unmarshal(hb, &header); err != nil {
		return header, claims, "", nil, errors.New("Invalid JWT: header is not JSON")
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return header, claims, "", nil, errors.New("Invalid JWT: claims are not base64url")
	}
	if err := json.Unmarshal(cb, &claims); err != nil {
		return header, claims, "", nil, errors.New("Invalid JWT: claims are not JSON")
	}
	sig, err = base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return header, claims, "", nil, errors.New("Invalid JWT: signature is not base64url")
	}
	return header, claims, parts[0] + "." + parts[1], sig, nil
}

// verifyAssertion checks a JWT-bearer assertion as Google does: RS256 signed
// by the issuer's current key, audience this token endpoint, issued now and
// valid for at most one hour, with a scope.
func (s *Server) verifyAssertion(assertion string) (Claims, error) {
	h, c, signed, sig, err := ParseJWT(assertion)
	if err != nil {
		return c, err
	}
	if h.Alg != "RS256" {
		return c, errors.New("Invalid JWT: alg must be RS256")
	}
	acct, pub := s.account(c.Iss)
	if acct == nil {
		return c, errors.New("Invalid JWT Signature.")
	}
	if pub == nil {
		return c, errors.New("Invalid grant: account not found")
	}
	if h.Kid != "" && h.Kid != acct.KeyID {
		return c, errors.New("Invalid JWT Signature.")
	}
	sum := sha256.Sum256([]byte(signed))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return c, errors.New("Invalid JWT Signature.")
	}
	if c.Aud != s.TokenURL() {
		return c, errors.New("Invalid JWT: Failed audience check.")
	}
	now := time.Now().Unix()
	if c.Iat > now+300 || c.Exp < now || c.Exp-c.Iat > 3600 {
		return c, errors.New("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
	}
	if strings.TrimSpace(c.Scope) == "" {
		return c, errors.New("Invalid OAuth scope or ID token audience provided.")
	}
	return c, nil
}
