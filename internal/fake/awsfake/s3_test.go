package awsfake

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// recorder is an HTTP client that keeps the headers of every request sent.
type recorder struct {
	mu      sync.Mutex
	client  *http.Client
	headers []http.Header
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.headers = append(r.headers, req.Header.Clone())
	r.mu.Unlock()
	return r.client.Do(req)
}

func (r *recorder) last() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headers[len(r.headers)-1]
}

func s3Client(t *testing.T, s *Server, c Credentials, pathStyle bool) (*s3.Client, *recorder) {
	t.Helper()
	rec := &recorder{client: &http.Client{}}
	endpoint := s.URL()
	if !pathStyle {
		// Virtual-hosted style needs a host name: bucket.localhost:PORT,
		// dialled at the fake's address whatever the name.
		u, _ := url.Parse(s.URL())
		addr := u.Host
		endpoint = "http://localhost:" + u.Port()
		rec.client.Transport = &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	}
	// The checksum settings are those config.LoadDefaultConfig resolves by default.
	return s3.NewFromConfig(aws.Config{Region: "us-east-1", Retryer: func() aws.Retryer { return aws.NopRetryer{} },
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported,
		Credentials:                credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)},
		func(o *s3.Options) {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = pathStyle
			o.HTTPClient = rec
		}), rec
}

func s3Status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func TestS3ObjectLifecycle(t *testing.T) {
	for _, pathStyle := range []bool{true, false} {
		t.Run(fmt.Sprintf("path-style=%v", pathStyle), func(t *testing.T) {
			s := New(t)
			u := s.AddUser("archiver")
			s.S3().CreateBucket("logs-archive")
			c, rec := s3Client(t, s, u, pathStyle)
			ctx := context.Background()
			body := []byte(`{"msg":"hello"}` + "\n")
			put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("logs-archive"), Key: aws.String("logs/app/2026/12/01/1-2.ndjson.gz"),
				Body: bytes.NewReader(body), ContentType: aws.String("application/x-ndjson"), ContentEncoding: aws.String("gzip"),
				Metadata: map[string]string{"first-seq": "1"}})
			if err != nil {
				t.Fatalf("PutObject: %v", err)
			}
			// What aws-sdk-go-v2 sends over plain http: a signed hex payload
			// hash and a CRC32 header, no aws-chunked trailer.
			h := rec.last()
			sum := sha256.Sum256(body)
			if got := h.Get("X-Amz-Content-Sha256"); got != hex.EncodeToString(sum[:]) {
				t.Errorf("x-amz-content-sha256 = %q", got)
			}
			if h.Get("X-Amz-Checksum-Crc32") != crc32Base64(body) || strings.Contains(h.Get("Content-Encoding"), "aws-chunked") {
				t.Errorf("checksum headers %v", h)
			}
			if aws.ToString(put.ETag) == "" || aws.ToString(put.ChecksumCRC32) != crc32Base64(body) {
				t.Errorf("PutObject output ETag %q crc32 %q", aws.ToString(put.ETag), aws.ToString(put.ChecksumCRC32))
			}
			obj, ok := s.S3().Object("logs-archive", "logs/app/2026/12/01/1-2.ndjson.gz")
			if !ok || !bytes.Equal(obj.Data, body) || obj.ContentType != "application/x-ndjson" || obj.ContentEncoding != "gzip" ||
				obj.Metadata["first-seq"] != "1" || obj.PutBy != u.AccessKeyID {
				t.Fatalf("stored %+v", obj)
			}
			if s.CallsBy(OpPutObject, u.AccessKeyID) != 1 {
				t.Errorf("CallsBy(PutObject) = %d", s.CallsBy(OpPutObject, u.AccessKeyID))
			}

			got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("logs-archive"), Key: aws.String("logs/app/2026/12/01/1-2.ndjson.gz")})
			if err != nil {
				t.Fatalf("GetObject: %v", err)
			}
			b, err := io.ReadAll(got.Body) // the SDK validates the CRC32 the fake returns as it reads
			got.Body.Close()
			if err != nil {
				t.Fatalf("reading GetObject: %v", err)
			}
			if !bytes.Equal(b, body) || aws.ToString(got.ContentType) != "application/x-ndjson" || got.Metadata["first-seq"] != "1" ||
				aws.ToString(got.ChecksumCRC32) != crc32Base64(body) {
				t.Fatalf("GetObject %q %+v", b, got)
			}
			head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("logs-archive"), Key: aws.String("logs/app/2026/12/01/1-2.ndjson.gz")})
			if err != nil || aws.ToInt64(head.ContentLength) != int64(len(body)) || aws.ToString(head.ETag) != obj.ETag {
				t.Fatalf("HeadObject %+v, %v", head, err)
			}

			for _, k := range []string{"logs/app/2026/12/01/3-4.ndjson.gz", "logs/app/2026/12/02/5-6.ndjson.gz", "logs/db/2026/12/01/1-9.ndjson.gz", "other key+=~1"} {
				if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("logs-archive"), Key: aws.String(k), Body: strings.NewReader(k)}); err != nil {
					t.Fatalf("PutObject %s: %v", k, err)
				}
			}
			var keys []string
			p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String("logs-archive"), Prefix: aws.String("logs/app/"), MaxKeys: aws.Int32(2)})
			pages := 0
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					t.Fatalf("ListObjectsV2: %v", err)
				}
				pages++
				for _, o := range page.Contents {
					keys = append(keys, aws.ToString(o.Key))
					if aws.ToInt64(o.Size) == 0 || aws.ToString(o.ETag) == "" || o.LastModified == nil {
						t.Errorf("listed %+v", o)
					}
				}
			}
			if strings.Join(keys, ",") != "logs/app/2026/12/01/1-2.ndjson.gz,logs/app/2026/12/01/3-4.ndjson.gz,logs/app/2026/12/02/5-6.ndjson.gz" || pages != 2 {
				t.Fatalf("listed %v in %d pages", keys, pages)
			}
			dirs, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("logs-archive"), Prefix: aws.String("logs/"), Delimiter: aws.String("/")})
			if err != nil || len(dirs.Contents) != 0 || len(dirs.CommonPrefixes) != 2 || aws.ToString(dirs.CommonPrefixes[0].Prefix) != "logs/app/" ||
				aws.ToString(dirs.CommonPrefixes[1].Prefix) != "logs/db/" || aws.ToInt32(dirs.KeyCount) != 2 {
				t.Fatalf("delimited list %+v, %v", dirs, err)
			}

			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("logs-archive"), Key: aws.String("other key+=~1")}); err != nil {
				t.Fatalf("DeleteObject: %v", err)
			}
			_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("logs-archive"), Key: aws.String("other key+=~1")})
			var nsk *types.NoSuchKey
			if !errors.As(err, &nsk) {
				t.Fatalf("GetObject after delete: %v", err)
			}
			_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("logs-archive"), Key: aws.String("other key+=~1")})
			var nf *types.NotFound
			if !errors.As(err, &nf) {
				t.Fatalf("HeadObject after delete: %v", err)
			}
			if got := s.S3().Keys("logs-archive"); len(got) != 4 {
				t.Fatalf("keys %v", got)
			}
		})
	}
}

func crc32Base64(data []byte) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.ChecksumIEEE(data))
	return base64.StdEncoding.EncodeToString(b[:])
}

func TestS3Errors(t *testing.T) {
	s := New(t)
	u := s.AddUser("archiver")
	other := s.AddUser("reader")
	s.S3().CreateBucket("b")
	ctx := context.Background()
	put := func(c *s3.Client, bucket, body string, mod ...func(*s3.PutObjectInput)) error {
		in := &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"), Body: strings.NewReader(body)}
		for _, m := range mod {
			m(in)
		}
		_, err := c.PutObject(ctx, in)
		return err
	}
	c, _ := s3Client(t, s, u, true)
	wrong := u
	wrong.SecretAccessKey = "x" + u.SecretAccessKey[1:]
	cWrong, _ := s3Client(t, s, wrong, true)
	unknown := u
	unknown.AccessKeyID = "AKIANOTKNOWN0000000"
	cUnknown, _ := s3Client(t, s, unknown, true)
	cOther, _ := s3Client(t, s, other, true)
	s.Deny(other.ARN, "s3:PutObject", "b")

	tests := []struct {
		name   string
		call   func() error
		code   string
		status int
	}{
		{"no such bucket", func() error { return put(c, "missing", "x") }, "NoSuchBucket", 404},
		{"wrong signature", func() error { return put(cWrong, "b", "x") }, "SignatureDoesNotMatch", 403},
		{"unknown key", func() error { return put(cUnknown, "b", "x") }, "InvalidAccessKeyId", 403},
		{"denied", func() error { return put(cOther, "b", "x") }, "AccessDenied", 403},
		{"bad checksum", func() error {
			return put(c, "b", "x", func(in *s3.PutObjectInput) { in.ChecksumCRC32 = aws.String(crc32Base64([]byte("y"))) })
		}, "BadDigest", 400},
		{"list no such bucket", func() error {
			_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("missing")})
			return err
		}, "NoSuchBucket", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if apiCode(err) != tt.code || s3Status(err) != tt.status {
				t.Fatalf("err = %v (status %d), want %s %d", err, s3Status(err), tt.code, tt.status)
			}
		})
	}
	if _, ok := s.S3().Object("b", "k"); ok {
		t.Fatal("a refused PutObject stored an object")
	}
	// The denied identity may still read: only s3:PutObject was denied.
	s.S3().PutObject("b", "seeded", []byte("v"))
	if _, err := cOther.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("seeded")}); err != nil {
		t.Fatalf("GetObject by the identity denied PutObject: %v", err)
	}
}

// signedPut builds a PutObject request signed over signedBody, with body as
// the request body, and x-amz-content-sha256 set to payloadHash ("" for the
// hex hash of signedBody).
func signedPut(t *testing.T, s *Server, c Credentials, signedBody, body, payloadHash string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, s.URL()+"/b/raw", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if payloadHash == "" {
		sum := sha256.Sum256([]byte(signedBody))
		payloadHash = hex.EncodeToString(sum[:])
	}
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	if err := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}, req, payloadHash, "s3", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	return req
}

func TestS3PayloadHash(t *testing.T) {
	s := New(t)
	u := s.AddUser("archiver")
	s.S3().CreateBucket("b")
	tests := []struct {
		name, signedBody, body, hash string
		status                       int
		code                         string
	}{
		{name: "signed body", signedBody: "data", body: "data", status: 200},
		{name: "tampered body", signedBody: "data", body: "evil", status: 400, code: "XAmzContentSHA256Mismatch"},
		{name: "unsigned payload", body: "anything", hash: "UNSIGNED-PAYLOAD", status: 200},
		{name: "aws-chunked", body: "4\r\ndata\r\n0\r\n\r\n", hash: "STREAMING-UNSIGNED-PAYLOAD-TRAILER", status: 501, code: "NotImplemented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(signedPut(t, s, u, tt.signedBody, tt.body, tt.hash))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || (tt.code != "" && !bytes.Contains(b, []byte("<Code>"+tt.code+"</Code>"))) {
				t.Fatalf("status %d body %s, want %d %s", resp.StatusCode, b, tt.status, tt.code)
			}
			if obj, ok := s.S3().Object("b", "raw"); tt.status == 200 && (!ok || string(obj.Data) != tt.body) {
				t.Fatalf("stored %q %v", obj.Data, ok)
			}
		})
	}
	// An anonymous request is refused.
	resp, err := http.Get(s.URL() + "/b/raw")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous GET: %d", resp.StatusCode)
	}
}

func TestS3SizeLimit(t *testing.T) {
	if S3MaxObjectSize != 5<<30 {
		t.Fatalf("S3MaxObjectSize = %d", S3MaxObjectSize)
	}
	s := New(t)
	u := s.AddUser("archiver")
	s.S3().CreateBucket("b")
	// A declared size past 5 GiB is refused before any body is read.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /b/huge HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", strings.TrimPrefix(s.URL(), "http://"), S3MaxObjectSize+1)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !bytes.Contains(b, []byte("<Code>EntityTooLarge</Code>")) {
		t.Fatalf("status %d %s", resp.StatusCode, b)
	}
	// With a lowered limit, through the SDK.
	s.S3().SetMaxObjectSize(10)
	c, _ := s3Client(t, s, u, true)
	if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("0123456789")}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	_, err = c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k2"), Body: strings.NewReader("0123456789a")})
	if apiCode(err) != "EntityTooLarge" {
		t.Fatalf("past the limit: %v", err)
	}
}

func TestS3Faults(t *testing.T) {
	s := New(t)
	u := s.AddUser("archiver")
	s.S3().CreateBucket("b")
	c, _ := s3Client(t, s, u, true)
	put := func(ctx context.Context, key string) error {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String(key), Body: strings.NewReader("v")})
		return err
	}
	ctx := context.Background()
	s.Fail(OpPutObject, "SlowDown", 1)
	if err := put(ctx, "a"); apiCode(err) != "SlowDown" || s3Status(err) != 503 {
		t.Fatalf("SlowDown: %v", err)
	}
	s.Fail(OpPutObject, "InternalError", 1)
	if err := put(ctx, "a"); apiCode(err) != "InternalError" || s3Status(err) != 500 {
		t.Fatalf("InternalError: %v", err)
	}
	if got := s.Refused(OpPutObject); got != 2 {
		t.Fatalf("Refused(PutObject) = %d, want 2", got)
	}
	s.SetLatency(OpPutObject, time.Hour)
	hctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := put(hctx, "hung"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v", err)
	}
	s.SetLatency(OpPutObject, 0)
	if err := put(ctx, "a"); err != nil {
		t.Fatalf("after faults: %v", err)
	}
	if got := s.S3().Keys("b"); strings.Join(got, ",") != "a" {
		t.Fatalf("keys %v: a failed or hung call stored an object", got)
	}
}

// The fake returns the stored CRC32 when the SDK asks for it, so a corrupted
// object fails the SDK's own validation; a client without checksum settings
// (a bare aws.Config) sends no checksum and is served too.
func TestS3ResponseChecksum(t *testing.T) {
	s := New(t)
	u := s.AddUser("archiver")
	s.S3().CreateBucket("b")
	c, _ := s3Client(t, s, u, true)
	ctx := context.Background()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("original")}); err != nil {
		t.Fatal(err)
	}
	s.s3.mu.Lock()
	s.s3.buckets["b"].objects["k"].Data = []byte("corrupt!")
	s.s3.mu.Unlock()
	got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(got.Body)
	got.Body.Close()
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("reading a corrupted object: %v", err)
	}

	rec := &recorder{client: &http.Client{}}
	bare := s3.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(u.AccessKeyID, u.SecretAccessKey, "")},
		func(o *s3.Options) { o.BaseEndpoint, o.UsePathStyle, o.HTTPClient = aws.String(s.URL()), true, rec })
	if _, err := bare.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("bare"), Body: strings.NewReader("v")}); err != nil {
		t.Fatalf("bare client: %v", err)
	}
	for h := range rec.last() {
		if strings.HasPrefix(strings.ToLower(h), "x-amz-checksum-") {
			t.Errorf("bare client sent %s", h)
		}
	}
}
