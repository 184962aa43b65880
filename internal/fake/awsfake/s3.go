package awsfake

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"hash"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// S3 operation names (for Calls, CallsBy, Fail and SetLatency on the Server).
const (
	OpPutObject     = "PutObject"
	OpGetObject     = "GetObject"
	OpHeadObject    = "HeadObject"
	OpDeleteObject  = "DeleteObject"
	OpListObjectsV2 = "ListObjectsV2"
	OpCreateBucket  = "CreateBucket"
	OpHeadBucket    = "HeadBucket"
)

// S3MaxObjectSize is the largest object a single PutObject may upload (5 GiB).
const S3MaxObjectSize int64 = 5 << 30

// S3 is the S3 part of the fake, served on the Server's URL with path-style
// (http://host/bucket/key) and virtual-hosted-style addressing (Host
// bucket.localhost, bucket.s3.amazonaws.com or bucket.s3.REGION.amazonaws.com).
// It serves PutObject, GetObject, HeadObject, DeleteObject, ListObjectsV2,
// CreateBucket and HeadBucket with S3's XML error shapes. Every request is
// SigV4-verified (service "s3"); x-amz-content-sha256 must be the body's hex
// SHA-256 or UNSIGNED-PAYLOAD, and x-amz-checksum-* and Content-MD5 headers
// are checked against the body (BadDigest). Faults: Server.Fail with
// "SlowDown" (503), "InternalError" (500), "ServiceUnavailable" (503) or any
// S3 code; Server.SetLatency to hang until the client gives up (a call whose
// client gave up is not applied).
type S3 struct {
	srv *Server

	mu      sync.Mutex
	buckets map[string]*s3Bucket
	maxSize int64
}

type s3Bucket struct {
	created time.Time
	objects map[string]*S3Object
}

// S3Object is a stored object.
type S3Object struct {
	Key             string
	Data            []byte
	ContentType     string
	ContentEncoding string
	// Metadata holds the x-amz-meta-* headers, by lower-case name without the prefix.
	Metadata map[string]string
	// Checksums holds the x-amz-checksum-* values sent, by algorithm (crc32, crc32c, sha1, sha256, ...).
	Checksums    map[string]string
	ETag         string // quoted hex MD5
	LastModified time.Time
	// PutBy is the access key id that signed the PutObject.
	PutBy string
}

func newS3(s *Server) *S3 {
	return &S3{srv: s, buckets: map[string]*s3Bucket{}, maxSize: S3MaxObjectSize}
}

// S3 is the S3 service of the fake.
func (s *Server) S3() *S3 { return s.s3 }

// URL is the endpoint to configure as the client's BaseEndpoint (the Server's URL).
func (b *S3) URL() string { return b.srv.URL() }

// CreateBucket creates a bucket (no-op if it exists).
func (b *S3) CreateBucket(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buckets[name] == nil {
		b.buckets[name] = &s3Bucket{created: time.Now(), objects: map[string]*S3Object{}}
	}
}

// DeleteBucket removes a bucket and its objects.
func (b *S3) DeleteBucket(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.buckets, name)
}

// SetMaxObjectSize lowers (or restores) the PutObject size limit, so tests can
// hit EntityTooLarge without uploading 5 GiB.
func (b *S3) SetMaxObjectSize(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.maxSize = n
}

// Object returns a copy of a stored object.
func (b *S3) Object(bucket, key string) (S3Object, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.buckets[bucket]
	if bk == nil || bk.objects[key] == nil {
		return S3Object{}, false
	}
	return copyObject(bk.objects[key]), true
}

// Keys lists the keys of a bucket in order.
func (b *S3) Keys(bucket string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.buckets[bucket]
	if bk == nil {
		return nil
	}
	return sortedKeys(bk.objects)
}

// PutObject stores an object directly (no call is recorded).
func (b *S3) PutObject(bucket, key string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.buckets[bucket]
	if bk == nil {
		bk = &s3Bucket{created: time.Now(), objects: map[string]*S3Object{}}
		b.buckets[bucket] = bk
	}
	sum := md5.Sum(data)
	bk.objects[key] = &S3Object{Key: key, Data: append([]byte(nil), data...), ETag: `"` + hex.EncodeToString(sum[:]) + `"`,
		LastModified: time.Now().UTC().Truncate(time.Second)}
}

func copyObject(o *S3Object) S3Object {
	c := *o
	c.Data = append([]byte(nil), o.Data...)
	c.Metadata = map[string]string{}
	for k, v := range o.Metadata {
		c.Metadata[k] = v
	}
	c.Checksums = map[string]string{}
	for k, v := range o.Checksums {
		c.Checksums[k] = v
	}
	return c
}

func sortedKeys(m map[string]*S3Object) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var virtualHostRE = regexp.MustCompile(`^(.+)\.(localhost|s3\.amazonaws\.com|s3[.-][a-z0-9-]+\.amazonaws\.com)$`)

// virtualBucket is the bucket named by a virtual-hosted-style Host, or "".
func (b *S3) virtualBucket(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if m := virtualHostRE.FindStringSubmatch(strings.ToLower(host)); m != nil {
		return m[1]
	}
	return ""
}

type s3Error struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Key       string   `xml:"Key,omitempty"`
	Bucket    string   `xml:"BucketName,omitempty"`
	RequestID string   `xml:"RequestId"`
	status    int
}

var s3Errors = map[string]struct {
	status int
	msg    string
}{
	"AccessDenied":              {http.StatusForbidden, "Access Denied"},
	"InvalidAccessKeyId":        {http.StatusForbidden, "The AWS Access Key Id you provided does not exist in our records."},
	"InvalidToken":              {http.StatusBadRequest, "The provided token is malformed or otherwise invalid."},
	"ExpiredToken":              {http.StatusBadRequest, "The provided token has expired."},
	"SignatureDoesNotMatch":     {http.StatusForbidden, "The request signature we calculated does not match the signature you provided. Check your key and signing method."},
	"XAmzContentSHA256Mismatch": {http.StatusBadRequest, "The provided 'x-amz-content-sha256' header does not match what was computed."},
	"BadDigest":                 {http.StatusBadRequest, "The Content-MD5 or checksum value that you specified did not match what the server received."},
	"InvalidDigest":             {http.StatusBadRequest, "The Content-MD5 or checksum value that you specified is not valid."},
	"EntityTooLarge":            {http.StatusBadRequest, "Your proposed upload exceeds the maximum allowed size"},
	"KeyTooLongError":           {http.StatusBadRequest, "Your key is too long"},
	"NoSuchBucket":              {http.StatusNotFound, "The specified bucket does not exist"},
	"NoSuchKey":                 {http.StatusNotFound, "The specified key does not exist."},
	"BucketAlreadyOwnedByYou":   {http.StatusConflict, "Your previous request to create the named bucket succeeded and you already own it."},
	"InvalidArgument":           {http.StatusBadRequest, "Invalid Argument"},
	"MethodNotAllowed":          {http.StatusMethodNotAllowed, "The specified method is not allowed against this resource."},
	"NotImplemented":            {http.StatusNotImplemented, "A header you provided implies functionality that is not implemented."},
	"SlowDown":                  {http.StatusServiceUnavailable, "Please reduce your request rate."},
	"InternalError":             {http.StatusInternalServerError, "We encountered an internal error. Please try again."},
	"ServiceUnavailable":        {http.StatusServiceUnavailable, "Service is unable to handle request."},
}

func newS3Error(code, bucket, key string) *s3Error {
	e, ok := s3Errors[code]
	if !ok {
		e.status, e.msg = http.StatusBadRequest, code
	}
	return &s3Error{Code: code, Message: e.msg, Bucket: bucket, Key: key, status: e.status}
}

func writeS3Error(w http.ResponseWriter, r *http.Request, e *s3Error) {
	e.RequestID = randomString(16, upperDigits)
	w.Header().Set("X-Amz-Request-Id", e.RequestID)
	w.Header().Set("X-Amz-Id-2", randomString(32, upperDigits))
	if r.Method == http.MethodHead {
		w.WriteHeader(e.status) // HEAD replies have no body
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.status)
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(e)
}

// s3Op names the operation of a request.
func s3Op(r *http.Request, key string) string {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodPut:
		if key == "" {
			return OpCreateBucket
		}
		return OpPutObject
	case http.MethodGet:
		if key == "" {
			if q.Get("list-type") == "2" {
				return OpListObjectsV2
			}
			return "ListObjects"
		}
		return OpGetObject
	case http.MethodHead:
		if key == "" {
			return OpHeadBucket
		}
		return OpHeadObject
	case http.MethodDelete:
		if key == "" {
			return "DeleteBucket"
		}
		return OpDeleteObject
	}
	return r.Method
}

// s3AuthCodes are S3's answers to a refused signature.
var s3AuthCodes = authCodes{
	authMissing:        "AccessDenied",
	authUnknownKey:     "InvalidAccessKeyId",
	authBadToken:       "InvalidToken",
	authBadSignature:   "SignatureDoesNotMatch",
	authBadContentHash: "XAmzContentSHA256Mismatch",
	authExpired:        "ExpiredToken",
}

func (b *S3) serve(w http.ResponseWriter, r *http.Request) {
	bucket, key := b.virtualBucket(r.Host), ""
	path := strings.TrimPrefix(r.URL.Path, "/")
	if bucket == "" {
		bucket, key, _ = strings.Cut(path, "/")
	} else {
		key = path
	}
	op := s3Op(r, key)

	b.mu.Lock()
	limit := b.maxSize
	b.mu.Unlock()
	var body []byte
	if r.Method == http.MethodPut {
		if r.ContentLength > limit {
			b.srv.count(op, "")
			writeS3Error(w, r, newS3Error("EntityTooLarge", bucket, key))
			return
		}
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			writeS3Error(w, r, newS3Error("InternalError", bucket, key))
			return
		}
		if int64(len(body)) > limit {
			b.srv.count(op, "")
			writeS3Error(w, r, newS3Error("EntityTooLarge", bucket, key))
			return
		}
	}

	caller, code := b.srv.admit(r, body, "s3", op, s3AuthCodes)
	if code != "" {
		if code == s3AuthCodes[authBadContentHash] && strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), streamingPayloadPrefix) {
			code = "NotImplemented"
		}
		writeS3Error(w, r, newS3Error(code, bucket, key))
		return
	}
	b.srv.delay(r, op)
	if r.Context().Err() != nil {
		return // the client gave up while the call hung: nothing is applied
	}
	if code := b.srv.takeFault(op); code != "" {
		writeS3Error(w, r, newS3Error(code, bucket, key))
		return
	}
	if bucket == "" {
		writeS3Error(w, r, newS3Error("NotImplemented", "", ""))
		return
	}
	if !b.srv.allowed(caller, s3Action(op), bucket) {
		writeS3Error(w, r, newS3Error("AccessDenied", "", ""))
		return
	}
	if len(key) > 1024 {
		writeS3Error(w, r, newS3Error("KeyTooLongError", bucket, ""))
		return
	}
	switch op {
	case OpCreateBucket:
		b.createBucket(w, r, bucket)
	case OpPutObject:
		b.putObject(w, r, bucket, key, body, caller.AccessKeyID)
	case OpGetObject, OpHeadObject:
		b.getObject(w, r, bucket, key)
	case OpDeleteObject:
		b.deleteObject(w, r, bucket, key)
	case OpListObjectsV2:
		b.listObjectsV2(w, r, bucket)
	case OpHeadBucket:
		b.mu.Lock()
		ok := b.buckets[bucket] != nil
		b.mu.Unlock()
		if !ok {
			writeS3Error(w, r, newS3Error("NoSuchBucket", bucket, ""))
			return
		}
		w.WriteHeader(http.StatusOK)
	default:
		writeS3Error(w, r, newS3Error("NotImplemented", bucket, key))
	}
}

// s3Action is the IAM action checked for an operation (HeadObject needs
// s3:GetObject and ListObjectsV2 s3:ListBucket, as in IAM).
func s3Action(op string) string {
	switch op {
	case OpHeadObject:
		return "s3:GetObject"
	case OpListObjectsV2, OpHeadBucket:
		return "s3:ListBucket"
	}
	return "s3:" + op
}

func (b *S3) createBucket(w http.ResponseWriter, r *http.Request, bucket string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buckets[bucket] != nil {
		writeS3Error(w, r, newS3Error("BucketAlreadyOwnedByYou", bucket, ""))
		return
	}
	b.buckets[bucket] = &s3Bucket{created: time.Now(), objects: map[string]*S3Object{}}
	w.Header().Set("Location", "/"+bucket)
	w.WriteHeader(http.StatusOK)
}

// checksumAlgorithms are the x-amz-checksum-* algorithms the fake verifies.
var checksumAlgorithms = map[string]func() hash.Hash{
	"crc32":  func() hash.Hash { return crc32.NewIEEE() },
	"crc32c": func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) },
	"sha1":   sha1.New,
	"sha256": sha256.New,
}

func (b *S3) putObject(w http.ResponseWriter, r *http.Request, bucket, key string, body []byte, akid string) {
	if r.Header.Get("Content-Encoding") == "aws-chunked" {
		writeS3Error(w, r, newS3Error("NotImplemented", bucket, key))
		return
	}
	if m := r.Header.Get("Content-Md5"); m != "" {
		want, err := base64.StdEncoding.DecodeString(m)
		sum := md5.Sum(body)
		if err != nil || len(want) != md5.Size {
			writeS3Error(w, r, newS3Error("InvalidDigest", bucket, key))
			return
		}
		if !bytes.Equal(want, sum[:]) {
			writeS3Error(w, r, newS3Error("BadDigest", bucket, key))
			return
		}
	}
	checksums := map[string]string{}
	for name, vals := range r.Header {
		alg, ok := strings.CutPrefix(strings.ToLower(name), "x-amz-checksum-")
		if !ok || alg == "algorithm" || alg == "type" || alg == "mode" {
			continue
		}
		checksums[alg] = vals[0]
		if newHash := checksumAlgorithms[alg]; newHash != nil {
			h := newHash()
			h.Write(body)
			if base64.StdEncoding.EncodeToString(h.Sum(nil)) != vals[0] {
				writeS3Error(w, r, newS3Error("BadDigest", bucket, key))
				return
			}
		}
	}
	meta := map[string]string{}
	for name, vals := range r.Header {
		if k, ok := strings.CutPrefix(strings.ToLower(name), "x-amz-meta-"); ok {
			meta[k] = vals[0]
		}
	}
	sum := md5.Sum(body)
	obj := &S3Object{Key: key, Data: body, ContentType: r.Header.Get("Content-Type"), ContentEncoding: r.Header.Get("Content-Encoding"),
		Metadata: meta, Checksums: checksums, ETag: `"` + hex.EncodeToString(sum[:]) + `"`,
		LastModified: time.Now().UTC().Truncate(time.Second), PutBy: akid}
	if obj.ContentType == "" {
		obj.ContentType = "binary/octet-stream"
	}
	b.mu.Lock()
	bk := b.buckets[bucket]
	if bk != nil {
		bk.objects[key] = obj
	}
	b.mu.Unlock()
	if bk == nil {
		writeS3Error(w, r, newS3Error("NoSuchBucket", bucket, ""))
		return
	}
	w.Header().Set("ETag", obj.ETag)
	for alg, v := range checksums {
		w.Header().Set("X-Amz-Checksum-"+alg, v)
	}
	w.Header().Set("X-Amz-Request-Id", randomString(16, upperDigits))
	w.WriteHeader(http.StatusOK)
}

func (b *S3) getObject(w http.ResponseWriter, r *http.Request, bucket, key string) {
	b.mu.Lock()
	bk := b.buckets[bucket]
	var obj S3Object
	found := false
	if bk != nil && bk.objects[key] != nil {
		obj, found = copyObject(bk.objects[key]), true
	}
	b.mu.Unlock()
	switch {
	case bk == nil:
		writeS3Error(w, r, newS3Error("NoSuchBucket", bucket, ""))
		return
	case !found:
		writeS3Error(w, r, newS3Error("NoSuchKey", "", key))
		return
	}
	h := w.Header()
	h.Set("Content-Type", obj.ContentType)
	if obj.ContentEncoding != "" {
		h.Set("Content-Encoding", obj.ContentEncoding)
	}
	h.Set("Content-Length", strconv.Itoa(len(obj.Data)))
	h.Set("ETag", obj.ETag)
	h.Set("Last-Modified", obj.LastModified.Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("X-Amz-Request-Id", randomString(16, upperDigits))
	for k, v := range obj.Metadata {
		h.Set("X-Amz-Meta-"+k, v)
	}
	if strings.EqualFold(r.Header.Get("X-Amz-Checksum-Mode"), "ENABLED") {
		for alg, v := range obj.Checksums {
			h.Set("X-Amz-Checksum-"+alg, v)
		}
		if len(obj.Checksums) > 0 {
			h.Set("X-Amz-Checksum-Type", "FULL_OBJECT")
		}
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(obj.Data)
	}
}

func (b *S3) deleteObject(w http.ResponseWriter, r *http.Request, bucket, key string) {
	b.mu.Lock()
	bk := b.buckets[bucket]
	if bk != nil {
		delete(bk.objects, key)
	}
	b.mu.Unlock()
	if bk == nil {
		writeS3Error(w, r, newS3Error("NoSuchBucket", bucket, ""))
		return
	}
	w.Header().Set("X-Amz-Request-Id", randomString(16, upperDigits))
	w.WriteHeader(http.StatusNoContent)
}

type s3Contents struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int    `xml:"Size"`
	StorageClass string `xml:"StorageClass"`
}

type s3Prefix struct {
	Prefix string `xml:"Prefix"`
}

type listBucketResult struct {
	XMLName               xml.Name     `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string       `xml:"Name"`
	Prefix                string       `xml:"Prefix"`
	Delimiter             string       `xml:"Delimiter,omitempty"`
	MaxKeys               int          `xml:"MaxKeys"`
	EncodingType          string       `xml:"EncodingType,omitempty"`
	KeyCount              int          `xml:"KeyCount"`
	IsTruncated           bool         `xml:"IsTruncated"`
	ContinuationToken     string       `xml:"ContinuationToken,omitempty"`
	NextContinuationToken string       `xml:"NextContinuationToken,omitempty"`
	StartAfter            string       `xml:"StartAfter,omitempty"`
	Contents              []s3Contents `xml:"Contents"`
	CommonPrefixes        []s3Prefix   `xml:"CommonPrefixes"`
}

func (b *S3) listObjectsV2(w http.ResponseWriter, r *http.Request, bucket string) {
	q := r.URL.Query()
	maxKeys := 1000
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeS3Error(w, r, newS3Error("InvalidArgument", bucket, ""))
			return
		}
		maxKeys = min(n, 1000)
	}
	enc := q.Get("encoding-type")
	if enc != "" && enc != "url" {
		writeS3Error(w, r, newS3Error("InvalidArgument", bucket, ""))
		return
	}
	prefix, delim, startAfter, token := q.Get("prefix"), q.Get("delimiter"), q.Get("start-after"), q.Get("continuation-token")
	after := startAfter
	if token != "" {
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil {
			writeS3Error(w, r, newS3Error("InvalidArgument", bucket, ""))
			return
		}
		after = string(raw)
	}
	b.mu.Lock()
	bk := b.buckets[bucket]
	type entry struct {
		key  string
		size int
		etag string
		mod  time.Time
	}
	var entries []entry
	if bk != nil {
		for _, k := range sortedKeys(bk.objects) {
			o := bk.objects[k]
			entries = append(entries, entry{k, len(o.Data), o.ETag, o.LastModified})
		}
	}
	b.mu.Unlock()
	if bk == nil {
		writeS3Error(w, r, newS3Error("NoSuchBucket", bucket, ""))
		return
	}
	escape := func(s string) string {
		if enc == "url" {
			return strings.ReplaceAll(url.QueryEscape(s), "%2F", "/")
		}
		return s
	}
	out := listBucketResult{Name: bucket, Prefix: escape(prefix), Delimiter: escape(delim), MaxKeys: maxKeys, EncodingType: enc,
		ContinuationToken: token, StartAfter: escape(startAfter)}
	seenPrefix := map[string]bool{}
	last := ""
	for _, e := range entries {
		if !strings.HasPrefix(e.key, prefix) || e.key <= after {
			continue
		}
		cp := ""
		if delim != "" {
			if i := strings.Index(e.key[len(prefix):], delim); i >= 0 {
				cp = e.key[:len(prefix)+i+len(delim)]
			}
		}
		if cp != "" && (seenPrefix[cp] || cp <= after) {
			continue
		}
		if out.KeyCount == maxKeys {
			out.IsTruncated = true
			out.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
			break
		}
		if cp != "" {
			seenPrefix[cp] = true
			out.CommonPrefixes = append(out.CommonPrefixes, s3Prefix{escape(cp)})
			// Skip the rest of the prefix: any key under cp sorts at most at cp + "\xff...".
			last = cp + "\U0010FFFF"
		} else {
			out.Contents = append(out.Contents, s3Contents{Key: escape(e.key), LastModified: e.mod.Format("2006-01-02T15:04:05.000Z"),
				ETag: e.etag, Size: e.size, StorageClass: "STANDARD"})
			last = e.key
		}
		out.KeyCount++
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Amz-Request-Id", randomString(16, upperDigits))
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(out)
}
