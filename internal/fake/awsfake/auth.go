package awsfake

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// authFailure is why a signed request was refused.
type authFailure int

const (
	authOK authFailure = iota
	authMissing
	authUnknownKey
	authBadSignature
	authBadToken
	authExpired
	// authBadContentHash: the signature is good but x-amz-content-sha256 is
	// not the hash of the body (or is a payload mode the service refuses).
	authBadContentHash
)

// Payload hash values of x-amz-content-sha256 that are not a hex digest.
const (
	unsignedPayload        = "UNSIGNED-PAYLOAD"
	streamingPayloadPrefix = "STREAMING-"
)

// authCodes maps each refusal to the error code a service answers with.
type authCodes map[authFailure]string

// admit authenticates r for service, counts the call of op under the access
// key named, and returns the signer's credentials and the service's error
// code for a refusal ("" when admitted).
func (s *Server) admit(r *http.Request, body []byte, service, op string, codes authCodes) (Credentials, string) {
	c, akid, why := s.authenticate(r, body, service)
	s.count(op, akid)
	if why == authOK {
		return c, ""
	}
	return c, codes[why]
}

// stall applies op's configured delay, then returns the code of a fault
// that applies to op now ("" for none).
func (s *Server) stall(r *http.Request, op string) string {
	s.delay(r, op)
	return s.takeFault(op)
}

// authenticate checks the SigV4 signature of r for service and returns the
// credentials that signed it. akid is the access key id named in the header,
// even when the check fails.
func (s *Server) authenticate(r *http.Request, body []byte, service string) (c Credentials, akid string, why authFailure) {
	a, err := ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return Credentials{}, "", authMissing
	}
	s.mu.Lock()
	cp, ok := s.creds[a.AccessKeyID]
	expired := s.expired[a.AccessKeyID]
	now := s.now()
	s.mu.Unlock()
	if !ok {
		return Credentials{}, a.AccessKeyID, authUnknownKey
	}
	c = *cp
	if a.Service != service || !VerifySignature(r, body, a, c.SecretAccessKey) {
		return c, a.AccessKeyID, authBadSignature
	}
	if !payloadMatches(r.Header.Get("X-Amz-Content-Sha256"), body, service) {
		return c, a.AccessKeyID, authBadContentHash
	}
	if r.Header.Get("X-Amz-Security-Token") != c.SessionToken {
		return c, a.AccessKeyID, authBadToken
	}
	if expired || (!c.Expires.IsZero() && now.After(c.Expires)) {
		return c, a.AccessKeyID, authExpired
	}
	return c, a.AccessKeyID, authOK
}

// payloadMatches checks the x-amz-content-sha256 header against the body, as
// AWS does: absent (the signature then covers the body's hash) or the hex
// SHA-256 of the body. S3 also takes UNSIGNED-PAYLOAD; the aws-chunked
// STREAMING-* modes are refused (aws-sdk-go-v2 uses them only over TLS, and
// the fake serves plain http).
func payloadMatches(h string, body []byte, service string) bool {
	switch {
	case h == "":
		return true
	case h == unsignedPayload:
		return service == "s3"
	case strings.HasPrefix(h, streamingPayloadPrefix):
		return false
	}
	sum := sha256.Sum256(body)
	return strings.EqualFold(h, hex.EncodeToString(sum[:]))
}

type denial struct{ principal, action, resource string }

// Deny makes calls of action by the identity with principalARN on resource
// fail with the service's access-denied error, as a missing IAM permission
// or a resource policy would. action is "service:Operation" (s3:PutObject,
// logs:CreateLogStream, secretsmanager:GetSecretValue) or "service:*";
// resource is a bucket name (S3), a log group name (CloudWatch Logs) or a
// secret name (Secrets Manager), or "*" for every one.
func (s *Server) Deny(principalARN, action, resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denials = append(s.denials, denial{principalARN, action, resource})
}

// allowed reports whether caller may call action on resource.
func (s *Server) allowed(caller Credentials, action, resource string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allowedLocked(caller, action, resource)
}

func (s *Server) allowedLocked(caller Credentials, action, resource string) bool {
	svc, _, _ := strings.Cut(action, ":")
	for _, d := range s.denials {
		if d.principal != caller.ARN || (d.resource != "*" && d.resource != resource) {
			continue
		}
		if d.action == action || d.action == svc+":*" || d.action == "*" {
			return false
		}
	}
	return true
}
