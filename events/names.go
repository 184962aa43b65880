package events

import (
	"strings"
)

// NamePattern is the pattern of group, connection and export names.
const NamePattern = `^[a-z0-9][a-z0-9_-]{0,63}$`

// ValidName reports whether s is a legal group, connection or export name
// (NamePattern, checked without a regexp: it is on every request's path).
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// CheckName returns a bad_request error naming field when s is not a legal name.
func CheckName(field, s string) error {
	if s == "" {
		return Errorf(CodeBadRequest, "%s: required", field)
	}
	if !ValidName(s) {
		return Errorf(CodeBadRequest, "%s: %q is not a valid name (want %s)", field, truncate(s, 80), NamePattern)
	}
	return nil
}

// MaxSecretNameLen bounds secret names, AWS's own limit for names and ARNs.
const MaxSecretNameLen = 2048

// CheckSecretName validates a secret reference as given by a requester: a name,
// an ARN or a full resource name. It must be printable, without whitespace.
func CheckSecretName(field, s string) error {
	if s == "" {
		return Errorf(CodeBadRequest, "%s: required", field)
	}
	if len(s) > MaxSecretNameLen {
		return Errorf(CodeBadRequest, "%s: longer than %d bytes", field, MaxSecretNameLen)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '\uFFFD' || r == '*' || r == '>' {
			return Errorf(CodeBadRequest, "%s: %q contains a character that is not allowed", field, truncate(s, 80))
		}
	}
	return nil
}

// builtinSecretPattern is the pattern of a name in the built-in store; it
// must also be a legal JetStream KV key.
const builtinSecretPattern = `^[A-Za-z0-9_][A-Za-z0-9_=/-]*(\.[A-Za-z0-9_=/-]+)*$`

// validBuiltinSecretName reports whether s matches builtinSecretPattern,
// checked without a regexp: it is on every secret put's and built-in
// resolve's path (TestValidBuiltinSecretNameMatchesThePattern). The pattern
// is: a first character of [A-Za-z0-9_], then characters of [A-Za-z0-9_=/-]
// and dots, each dot followed by one of those characters (no dot last, no
// two in a row).
func validBuiltinSecretName(s string) bool {
	if s == "" || !builtinSecretChar(s[0]) || s[0] == '=' || s[0] == '/' || s[0] == '-' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if i+1 == len(s) || !builtinSecretChar(s[i+1]) {
				return false
			}
			continue
		}
		if !builtinSecretChar(c) {
			return false
		}
	}
	return true
}

// builtinSecretChar reports whether c is in [A-Za-z0-9_=/-].
func builtinSecretChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '=' || c == '/' || c == '-'
}

// CheckBuiltinSecretName validates a secret name for the built-in store.
func CheckBuiltinSecretName(field, s string) error {
	if err := CheckSecretName(field, s); err != nil {
		return err
	}
	if len(s) > 255 || !validBuiltinSecretName(s) {
		return Errorf(CodeBadRequest, "%s: %q is not a valid built-in secret name (letters, digits, _ = / - and single dots, at most 255)", field, truncate(s, 80))
	}
	return nil
}

// MatchGlob reports whether name matches pattern, where '*' matches any run of
// characters (including '/') and '?' exactly one character.
func MatchGlob(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// The KV buckets of the registry, under the prefix (see Subjects.Bucket).
const (
	BucketConnections = "connections"
	BucketSecrets     = "secrets"
	BucketExports     = "exports"
)

// ExportConsumerPrefix starts the name of every export's durable consumer.
const ExportConsumerPrefix = "cloudbridge-export-"

// prefixName is the prefix as one name token: dots become underscores.
func (s Subjects) prefixName() string {
	p := s.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return strings.ReplaceAll(p, ".", "_")
}

// LogsStream is the name of the stream log events are captured in:
// CLOUDBRIDGE_LOGS for the default prefix, ACME_CB_LOGS for "acme.cb", so
// deployments with other prefixes on the same NATS keep their own.
func (s Subjects) LogsStream() string { return strings.ToUpper(s.prefixName()) + "_LOGS" }

// DeadStream is the name of the dead-letter stream (subjects DeadWildcard):
// CLOUDBRIDGE_DEAD for the default prefix.
func (s Subjects) DeadStream() string { return strings.ToUpper(s.prefixName()) + "_DEAD" }

// Bucket is the name of the registry's KV bucket what (BucketConnections,
// BucketSecrets, BucketExports): cloudbridge_connections for the default prefix.
func (s Subjects) Bucket(what string) string { return s.prefixName() + "_" + what }

// ExportConsumer is the name of export's durable pull consumer on the logs
// stream, cloudbridge-export-<export>, whatever the prefix: each deployment
// has its own logs stream.
func ExportConsumer(export string) string { return ExportConsumerPrefix + export }
