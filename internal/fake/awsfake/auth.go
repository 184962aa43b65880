package awsfake

import (
	"net/http"
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
)

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
	if r.Header.Get("X-Amz-Security-Token") != c.SessionToken {
		return c, a.AccessKeyID, authBadToken
	}
	if expired || (!c.Expires.IsZero() && now.After(c.Expires)) {
		return c, a.AccessKeyID, authExpired
	}
	return c, a.AccessKeyID, authOK
}
