package events

import "time"

// TokenRequest is the body of cloudbridge.v1.token.<group>.<conn>.
type TokenRequest struct {
	// Scopes are OAuth scopes (GCP); default cloud-platform.
	Scopes []string `json:"scopes,omitempty"`
	// Duration is the requested lifetime, within the cloud's limits.
	Duration Duration `json:"duration,omitempty"`
}

// Validate checks the request.
func (r *TokenRequest) Validate() error {
	if len(r.Scopes) > 64 {
		return Errorf(CodeBadRequest, "scopes: more than 64")
	}
	for _, s := range r.Scopes {
		if s == "" || len(s) > 512 {
			return Errorf(CodeBadRequest, "scopes: empty or overlong scope")
		}
	}
	if r.Duration.D() > 36*time.Hour {
		return Errorf(CodeBadRequest, "duration: %s is longer than any cloud allows (36h)", r.Duration)
	}
	return nil
}

// TokenReply carries short-lived cloud credentials.
type TokenReply struct {
	Provider string          `json:"provider"`
	AWS      *AWSCredentials `json:"aws,omitempty"`
	GCP      *GCPToken       `json:"gcp,omitempty"`
}

// AWSCredentials are temporary AWS credentials.
type AWSCredentials struct {
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	SessionToken    string    `json:"session_token"`
	Expiration      time.Time `json:"expiration"`
}

// GCPToken is a Google OAuth2 access token.
type GCPToken struct {
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	Expiry      time.Time `json:"expiry"`
}
