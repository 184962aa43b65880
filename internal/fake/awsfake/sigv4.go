package awsfake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Authorization is the parsed SigV4 Authorization header of a request.
type Authorization struct {
	// AccessKeyID is the access key id of the credential scope.
	AccessKeyID string
	// Date, Region and Service are the rest of the credential scope.
	Date, Region, Service string
	// SignedHeaders are the lower-case names of the signed headers, sorted.
	SignedHeaders []string
	// Signature is the hex signature.
	Signature string
}

// errMalformedAuth is returned for an Authorization header that is not SigV4.
var errMalformedAuth = errors.New("authorization header is not AWS4-HMAC-SHA256")

// ParseAuthorization parses an AWS4-HMAC-SHA256 Authorization header value.
func ParseAuthorization(h string) (Authorization, error) {
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(h, algo) {
		return Authorization{}, errMalformedAuth
	}
	var a Authorization
	var haveCred, haveSigned, haveSig bool
	for _, part := range strings.Split(h[len(algo):], ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Authorization{}, errMalformedAuth
		}
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" || f[0] == "" {
				return Authorization{}, errMalformedAuth
			}
			a.AccessKeyID, a.Date, a.Region, a.Service = f[0], f[1], f[2], f[3]
			haveCred = true
		case "SignedHeaders":
			if v == "" {
				return Authorization{}, errMalformedAuth
			}
			a.SignedHeaders = strings.Split(v, ";")
			if !sort.StringsAreSorted(a.SignedHeaders) {
				return Authorization{}, errMalformedAuth
			}
			haveSigned = true
		case "Signature":
			if _, err := hex.DecodeString(v); err != nil || len(v) != 64 {
				return Authorization{}, errMalformedAuth
			}
			a.Signature = v
			haveSig = true
		default:
			return Authorization{}, errMalformedAuth
		}
	}
	if !haveCred || !haveSigned || !haveSig {
		return Authorization{}, errMalformedAuth
	}
	return a, nil
}

// VerifySignature recomputes the SigV4 signature of r (whose body is body)
// with secretKey and reports whether it matches the one in a. It checks that
// host and x-amz-date are signed.
func VerifySignature(r *http.Request, body []byte, a Authorization, secretKey string) bool {
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || t.Format("20060102") != a.Date {
		return false
	}
	var signsHost, signsDate bool
	var canonHeaders strings.Builder
	for _, name := range a.SignedHeaders {
		var vals []string
		switch name {
		case "host":
			signsHost = true
			vals = []string{r.Host}
		case "content-length":
			vals = r.Header.Values("Content-Length")
			if len(vals) == 0 {
				vals = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		default:
			if name == "x-amz-date" {
				signsDate = true
			}
			vals = r.Header.Values(name)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		canonHeaders.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	if !signsHost || !signsDate {
		return false
	}
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if payloadHash == "" {
		sum := sha256.Sum256(body)
		payloadHash = hex.EncodeToString(sum[:])
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{
		r.Method, path, canonicalQuery(r.URL.Query()), canonHeaders.String(),
		strings.Join(a.SignedHeaders, ";"), payloadHash,
	}, "\n")
	crHash := sha256.Sum256([]byte(canonical))
	scope := a.Date + "/" + a.Region + "/" + a.Service + "/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
	key := hmacSHA256([]byte("AWS4"+secretKey), a.Date)
	key = hmacSHA256(key, a.Region)
	key = hmacSHA256(key, a.Service)
	key = hmacSHA256(key, "aws4_request")
	sig := hex.EncodeToString(hmacSHA256(key, toSign))
	return hmac.Equal([]byte(sig), []byte(a.Signature))
}

func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			parts = append(parts, awsEscape(k)+"="+awsEscape(v))
		}
	}
	return strings.Join(parts, "&")
}

func awsEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
