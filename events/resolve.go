package events

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// ResolveRequest is the body of cloudbridge.v1.resolve.<group>.<conn>.
type ResolveRequest struct {
	// Secret names the secret: a name, an ARN or a full resource name.
	Secret string `json:"secret"`
	// Version selects a version: a stage or version id (AWS), a number or alias (GCP).
	Version string `json:"version,omitempty"`
	// Keys narrows credentials to these keys; a missing key is not_found.
	Keys []string `json:"keys,omitempty"`
	// Fresh bypasses the cache.
	Fresh bool `json:"fresh,omitempty"`
}

// Validate checks the request.
func (r *ResolveRequest) Validate() error {
	if err := CheckSecretName("secret", r.Secret); err != nil {
		return err
	}
	return checkVersionKeys(r.Version, r.Keys)
}

// MaxKeyLen bounds one entry of keys.
const MaxKeyLen = 256

// checkKey checks one entry of keys: 1 to MaxKeyLen bytes of UTF-8 without
// control characters (no NUL, so no two lists of keys read alike).
func checkKey(i int, k string) error {
	switch {
	case k == "":
		return Errorf(CodeBadRequest, "%s: empty key", fieldIdx("keys", i))
	case len(k) > MaxKeyLen:
		return Errorf(CodeBadRequest, "%s: longer than %d bytes", fieldIdx("keys", i), MaxKeyLen)
	case !utf8.ValidString(k):
		return Errorf(CodeBadRequest, "%s: not valid UTF-8", fieldIdx("keys", i))
	case strings.IndexFunc(k, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return Errorf(CodeBadRequest, "%s: contains a control character", fieldIdx("keys", i))
	}
	return nil
}

func checkVersionKeys(version string, keys []string) error {
	if len(version) > 256 {
		return Errorf(CodeBadRequest, "version: longer than 256 bytes")
	}
	if len(keys) > 256 {
		return Errorf(CodeBadRequest, "keys: more than 256 keys")
	}
	for i, k := range keys {
		if err := checkKey(i, k); err != nil {
			return err
		}
	}
	return nil
}

// ResolveReply is the reply to a resolve request. Exactly one of Credentials,
// Value and Binary is set.
type ResolveReply struct {
	Connection string `json:"connection"`
	Secret     string `json:"secret"`
	Version    string `json:"version,omitempty"`
	// Credentials is a JSON-object secret, narrowed to the requested keys.
	Credentials map[string]json.RawMessage `json:"credentials,omitzero"`
	// Value is a plain-string secret.
	Value *string `json:"value,omitempty"`
	// Binary is a binary secret (base64 on the wire).
	Binary []byte `json:"binary,omitempty"`
	// Cached is true when the reply came from the worker's cache.
	Cached bool `json:"cached"`
	// Stale is true when the provider was unavailable and a value past its TTL
	// but within max_stale was served.
	Stale bool `json:"stale,omitempty"`
	// FetchedAt is when the value was fetched from the provider.
	FetchedAt time.Time `json:"fetched_at"`
}

// String returns the credential under key as a string: a JSON string as is,
// any other JSON value in its JSON text.
func (r *ResolveReply) String(key string) (string, bool) {
	raw, ok := r.Credentials[key]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	return string(raw), true
}
