package events

import (
	"net/netip"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// S3Sink is the s3 block of an export: an archive of the export's events as
// objects in an S3 bucket, through an aws connection (internal/sink/s3).
type S3Sink struct {
	Bucket string `json:"bucket"`
	// Prefix is the key prefix, a template: {export}, {yyyy}, {mm}, {dd} and
	// {hh} are replaced (the date and hour the stream received the batch's
	// events, UTC). Default DefaultS3Prefix.
	Prefix string `json:"prefix,omitempty"`
	// Format is the object format: "ndjson" (the default and only one).
	Format string `json:"format,omitempty"`
	// Compression is "gzip" (the default) or "none".
	Compression string `json:"compression,omitempty"`
	// MaxObjectBytes bounds an object's uncompressed size (default
	// DefaultS3MaxObjectBytes).
	MaxObjectBytes int `json:"max_object_bytes,omitempty"`
	// MaxWait is how long a batch waits for more events before it is
	// written (default DefaultS3MaxWait).
	MaxWait Duration `json:"max_wait,omitempty"`
}

// The s3 block's defaults and bounds.
const (
	DefaultS3Prefix         = "logs/{export}/{yyyy}/{mm}/{dd}/"
	DefaultS3Format         = "ndjson"
	DefaultS3Compression    = "gzip"
	DefaultS3MaxObjectBytes = 10_000_000      // as Vector's aws_s3 batch.max_bytes
	DefaultS3MaxWait        = 5 * time.Minute // as Vector's aws_s3 batch.timeout_secs
	MinS3MaxObjectBytes     = 1024
	MaxS3MaxObjectBytes     = 64 << 20
	MinS3MaxWait            = 100 * time.Millisecond
	MaxS3MaxWait            = 15 * time.Minute
	MaxS3PrefixBytes        = 512
)

// S3Placeholders are the placeholders of s3.prefix.
var S3Placeholders = []string{"{export}", "{yyyy}", "{mm}", "{dd}", "{hh}"}

var (
	s3BucketRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	s3PlaceholderRE = regexp.MustCompile(`\{[^{}]*\}`)
)

// Provider is aws: S3 is reached with an aws connection.
func (c *S3Sink) Provider() string { return ProviderAWS }

// Validate checks the s3 block.
func (c *S3Sink) Validate() error {
	if err := CheckS3Bucket("s3.bucket", c.Bucket); err != nil {
		return err
	}
	if err := checkS3Prefix(c.Prefix); err != nil {
		return err
	}
	if c.Format != "" && c.Format != "ndjson" {
		return Errorf(CodeBadRequest, "s3.format: %q is not one of ndjson", truncate(c.Format, 20))
	}
	if c.Compression != "" && c.Compression != "gzip" && c.Compression != "none" {
		return Errorf(CodeBadRequest, "s3.compression: %q is not one of gzip, none", truncate(c.Compression, 20))
	}
	if n := c.MaxObjectBytes; n != 0 && (n < MinS3MaxObjectBytes || n > MaxS3MaxObjectBytes) {
		return Errorf(CodeBadRequest, "s3.max_object_bytes: between %d and %d", MinS3MaxObjectBytes, MaxS3MaxObjectBytes)
	}
	if d := c.MaxWait.D(); d != 0 && (d < MinS3MaxWait || d > MaxS3MaxWait) {
		return Errorf(CodeBadRequest, "s3.max_wait: between %v and %v", Duration(MinS3MaxWait), Duration(MaxS3MaxWait))
	}
	return nil
}

// CheckS3Bucket checks a bucket name against S3's naming rules for general
// purpose buckets: 3..63 of [a-z0-9.-], starting and ending with a letter or
// digit, no "..", not an IP address, none of the reserved prefixes and
// suffixes.
func CheckS3Bucket(field, b string) error {
	bad := func(why string) error {
		return Errorf(CodeBadRequest, "%s: %q is not a valid bucket name: %s", field, truncate(b, 70), why)
	}
	switch {
	case b == "":
		return Errorf(CodeBadRequest, "%s: required", field)
	case !s3BucketRE.MatchString(b):
		return bad("3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit")
	case strings.Contains(b, ".."):
		return bad("two adjacent periods")
	}
	if _, err := netip.ParseAddr(b); err == nil {
		return bad("formatted as an IP address")
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(b, p) {
			return bad("reserved prefix " + p)
		}
	}
	for _, s := range []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"} {
		if strings.HasSuffix(b, s) {
			return bad("reserved suffix " + s)
		}
	}
	return nil
}

func checkS3Prefix(p string) error {
	const field = "s3.prefix"
	if len(p) > MaxS3PrefixBytes {
		return Errorf(CodeBadRequest, "%s: at most %d bytes", field, MaxS3PrefixBytes)
	}
	if !utf8.ValidString(p) || strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return Errorf(CodeBadRequest, "%s: invalid UTF-8 or a control character", field)
	}
	if strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.Contains(p, "\\") {
		return Errorf(CodeBadRequest, "%s: %q starts with '/' or has '//' or '\\'", field, truncate(p, 80))
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return Errorf(CodeBadRequest, "%s: %q has a '.' or '..' segment", field, truncate(p, 80))
		}
	}
	for _, ph := range s3PlaceholderRE.FindAllString(p, -1) {
		known := false
		for _, k := range S3Placeholders {
			known = known || ph == k
		}
		if !known {
			return Errorf(CodeBadRequest, "%s: unknown placeholder %s (want %s)", field, truncate(ph, 40), strings.Join(S3Placeholders, " "))
		}
	}
	if rest := s3PlaceholderRE.ReplaceAllString(p, ""); strings.ContainsAny(rest, "{}") {
		return Errorf(CodeBadRequest, "%s: unbalanced '{' or '}'", field)
	}
	return nil
}
