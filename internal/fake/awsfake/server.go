// Package awsfake is an in-process stand-in for the AWS services cloudbridge
// talks to, for tests driven by the real aws-sdk-go-v2 clients, all on one
// URL: Secrets Manager (AWS JSON 1.1), CloudWatch Logs (AWS JSON 1.1, see
// Logs), S3 (REST/XML, path-style and virtual-hosted-style, see S3), STS
// (query protocol, XML replies), the EC2 instance metadata service with
// IMDSv2 session tokens, and the ECS container credentials endpoint.
// Requests are dispatched by X-Amz-Target, then by the service of the SigV4
// credential scope.
//
// Every signed call is checked like AWS does: the SigV4 signature is
// recomputed with the registered secret key, x-amz-content-sha256 must be
// the body's hash, the session token must match, and expired credentials are
// refused, each with the service's own error shape. Deny refuses an
// operation to an identity, as a missing IAM permission would. Calls
// are counted per operation and per access key id so tests can prove which
// credentials signed what, and faults and latency can be injected per
// operation.
package awsfake

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

// Operation names used by Calls, Fail and SetLatency.
const (
	OpGetSecretValue       = "GetSecretValue"
	OpDescribeSecret       = "DescribeSecret"
	OpBatchGetSecretValue  = "BatchGetSecretValue"
	OpGetCallerIdentity    = "GetCallerIdentity"
	OpAssumeRole           = "AssumeRole"
	OpGetSessionToken      = "GetSessionToken"
	OpIMDSToken            = "IMDSToken"
	OpIMDSGet              = "IMDSGet"
	OpContainerCredentials = "ContainerCredentials"
	// OpAny matches every operation in Fail and SetLatency.
	OpAny = "*"
)

// Stages AWS manages.
const (
	StageCurrent  = "AWSCURRENT"
	StagePrevious = "AWSPREVIOUS"
	StagePending  = "AWSPENDING"
)

// DefaultAccount and DefaultRegion are the fake's account id and region.
const (
	DefaultAccount = "123456789012"
	DefaultRegion  = "us-east-1"
)

// Credentials are AWS credentials the fake knows, with the identity they
// belong to.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	// SessionToken is set for temporary credentials; requests must carry it.
	SessionToken string
	// Expires, when set, is when the credentials stop working.
	Expires time.Time
	// ARN is the identity GetCallerIdentity reports.
	ARN string
	// UserID is the caller's unique id.
	UserID string
}

// Temporary reports whether the credentials carry a session token.
func (c Credentials) Temporary() bool { return c.SessionToken != "" }

// RoleOptions configures a role that AssumeRole may assume.
type RoleOptions struct {
	// ExternalID, when set, must be passed to AssumeRole exactly.
	ExternalID string
	// MaxSession is the role's maximum session duration (default 1h, AWS's default).
	MaxSession time.Duration
}

type role struct {
	arn, name string
	opts      RoleOptions
}

type version struct {
	id      string
	str     *string
	bin     []byte
	stages  []string
	created time.Time
}

type secret struct {
	name, arn string
	versions  []*version
	created   time.Time
	changed   time.Time
	denied    map[string]bool // principal ARNs refused access
}

type fault struct {
	op, code string
	times    int       // remaining; -1 for "until"
	until    time.Time // zero unless time bound
}

// Server is the fake. Create it with New; it stops when the test ends.
type Server struct {
	srv *httptest.Server

	mu            sync.Mutex
	creds         map[string]*Credentials
	expired       map[string]bool
	secrets       map[string]*secret // by name
	roles         map[string]*role
	instanceRole  string
	instanceCreds *Credentials
	imdsTokens    map[string]time.Time
	containerTok  string
	containerCred *Credentials
	calls         map[string]int
	callsBy       map[[2]string]int
	faults        []*fault
	refused       map[string]int // calls answered with an injected fault, by op
	latency       map[string]time.Duration
	imdsRejected  int
	ecsRejected   int
	lastAssume    map[string]string
	denials       []denial
	now           func() time.Time

	logs *Logs
	s3   *S3
}

// New starts a fake on 127.0.0.1, closed when the test ends.
func New(t testenv.TB) *Server {
	t.Helper()
	s := &Server{
		creds:      map[string]*Credentials{},
		expired:    map[string]bool{},
		secrets:    map[string]*secret{},
		roles:      map[string]*role{},
		imdsTokens: map[string]time.Time{},
		calls:      map[string]int{},
		callsBy:    map[[2]string]int{},
		latency:    map[string]time.Duration{},
		refused:    map[string]int{},
		now:        time.Now,
	}
	s.logs = newLogs(s)
	s.s3 = newS3(s)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the base URL of every service: the endpoint for Secrets Manager,
// CloudWatch Logs, S3 and STS, and AWS_EC2_METADATA_SERVICE_ENDPOINT for IMDS.
func (s *Server) URL() string { return s.srv.URL }

// ContainerCredentialsPath is the path of the ECS credentials endpoint, the
// value of AWS_CONTAINER_CREDENTIALS_RELATIVE_URI.
const ContainerCredentialsPath = "/v2/credentials/6f1c0d0e-fake-task"

// ContainerCredentialsURL is the full URL of the ECS credentials endpoint,
// the value of AWS_CONTAINER_CREDENTIALS_FULL_URI.
func (s *Server) ContainerCredentialsURL() string { return s.srv.URL + ContainerCredentialsPath }

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

const upperDigits = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func newKeys(prefix string) (id, secretKey string) {
	return prefix + randomString(16, upperDigits), randomString(40, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")
}

func newUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// AddUser registers an IAM user with fresh long-term access keys and returns them.
func (s *Server) AddUser(name string) Credentials {
	id, key := newKeys("AKIA")
	c := Credentials{AccessKeyID: id, SecretAccessKey: key,
		ARN: "arn:aws:iam::" + DefaultAccount + ":user/" + name, UserID: "AIDA" + randomString(17, upperDigits)}
	s.AddCredentials(c)
	return c
}

// AddCredentials registers credentials the fake accepts.
func (s *Server) AddCredentials(c Credentials) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cc := c
	s.creds[c.AccessKeyID] = &cc
}

// ExpireCredentials makes every later call signed with the access key id
// fail with the expired-token error.
func (s *Server) ExpireCredentials(accessKeyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired[accessKeyID] = true
}

// AddRole registers a role AssumeRole may assume and returns its ARN.
func (s *Server) AddRole(name string, opts RoleOptions) string {
	if opts.MaxSession == 0 {
		opts.MaxSession = time.Hour
	}
	arn := "arn:aws:iam::" + DefaultAccount + ":role/" + name
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roles[arn] = &role{arn: arn, name: name, opts: opts}
	return arn
}

// issueRoleCreds mints temporary credentials of an assumed role. Callers hold s.mu.
func (s *Server) issueRoleCreds(roleName, session string, d time.Duration) *Credentials {
	id, key := newKeys("ASIA")
	c := &Credentials{AccessKeyID: id, SecretAccessKey: key, SessionToken: "FwoG" + randomString(120, upperDigits),
		Expires: s.now().Add(d).UTC().Truncate(time.Second),
		ARN:     "arn:aws:sts::" + DefaultAccount + ":assumed-role/" + roleName + "/" + session,
		UserID:  "AROA" + randomString(17, upperDigits) + ":" + session}
	s.creds[id] = c
	return c
}

// SetInstanceRole makes IMDS serve temporary credentials of the named role
// (the EC2 instance profile) and returns them.
func (s *Server) SetInstanceRole(roleName string) Credentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instanceRole = roleName
	s.instanceCreds = s.issueRoleCreds(roleName, "i-0fake0instance", 6*time.Hour)
	return *s.instanceCreds
}

// SetContainerRole makes the ECS credentials endpoint serve temporary
// credentials of the named task role to requests whose Authorization header
// equals token (any request when token is empty), and returns them.
func (s *Server) SetContainerRole(roleName, token string) Credentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.containerTok = token
	s.containerCred = s.issueRoleCreds(roleName, "ecs-task-fake", 6*time.Hour)
	return *s.containerCred
}

// SecretARN is the ARN the fake gives a secret name.
func SecretARN(name string) string {
	return "arn:aws:secretsmanager:" + DefaultRegion + ":" + DefaultAccount + ":secret:" + name + "-Fk3x9Q"
}

// PutSecretString stores a new version of a string secret, creating the
// secret if needed, and returns its version id. stages default to
// AWSCURRENT; moving AWSCURRENT gives the former current version AWSPREVIOUS,
// as PutSecretValue does.
func (s *Server) PutSecretString(name, value string, stages ...string) string {
	v := value
	return s.put(name, &version{str: &v}, stages)
}

// PutSecretBinary is PutSecretString for a binary secret.
func (s *Server) PutSecretBinary(name string, value []byte, stages ...string) string {
	return s.put(name, &version{bin: append([]byte(nil), value...)}, stages)
}

func (s *Server) put(name string, v *version, stages []string) string {
	if len(stages) == 0 {
		stages = []string{StageCurrent}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	sec := s.secrets[name]
	if sec == nil {
		sec = &secret{name: name, arn: SecretARN(name), created: now, denied: map[string]bool{}}
		s.secrets[name] = sec
	}
	v.id, v.created = newUUID(), now
	for _, st := range stages {
		for _, old := range sec.versions {
			if removeStage(old, st) && st == StageCurrent {
				for _, o2 := range sec.versions {
					removeStage(o2, StagePrevious)
				}
				old.stages = append(old.stages, StagePrevious)
			}
		}
	}
	v.stages = append([]string(nil), stages...)
	sec.versions = append(sec.versions, v)
	sec.changed = now
	return v.id
}

func removeStage(v *version, stage string) bool {
	for i, st := range v.stages {
		if st == stage {
			v.stages = append(v.stages[:i], v.stages[i+1:]...)
			return true
		}
	}
	return false
}

// DeleteSecret removes a secret.
func (s *Server) DeleteSecret(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.secrets, name)
}

// DenySecret makes reads of the secret by the identity with the given ARN
// fail with AccessDeniedException, as a resource policy or missing IAM
// permission would (Deny does the same for any service and operation).
func (s *Server) DenySecret(principalARN, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.secrets[name]; sec != nil {
		sec.denied[principalARN] = true
	}
}

// Calls is the number of requests received for op.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// CallsBy is the number of requests for op signed with accessKeyID.
func (s *Server) CallsBy(op, accessKeyID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callsBy[[2]string{op, accessKeyID}]
}

// ResetCalls zeroes every call counter.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
	s.callsBy = map[[2]string]int{}
}

// IMDSRejected counts IMDS requests refused for a missing or invalid IMDSv2 token.
func (s *Server) IMDSRejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.imdsRejected
}

// ContainerRejected counts ECS endpoint requests refused for a wrong authorization token.
func (s *Server) ContainerRejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ecsRejected
}

// LastAssumeRole returns the parameters of the last AssumeRole call
// (RoleArn, RoleSessionName, ExternalId, DurationSeconds).
func (s *Server) LastAssumeRole() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.lastAssume {
		out[k] = v
	}
	return out
}

// Fail makes the next n calls of op (OpAny for all) fail with the AWS error
// code: ThrottlingException, InternalServiceError, ServiceUnavailable,
// AccessDeniedException, DecryptionFailure, ExpiredTokenException, or any
// other code (returned with HTTP 400). STS operations answer with their own
// names for the same failure (Throttling, AccessDenied, ExpiredToken).
// CloudWatch Logs takes ThrottlingException, ServiceUnavailableException
// (503) and InternalFailure (500); S3 takes its own codes: SlowDown (503),
// InternalError (500), ServiceUnavailable (503), AccessDenied (403), ...
func (s *Server) Fail(op, code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{op: op, code: code, times: n})
}

// FailFor is Fail for every call during d.
func (s *Server) FailFor(op, code string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{op: op, code: code, times: -1, until: s.now().Add(d)})
}

// Refused is the number of calls of op answered with a fault injected with
// Fail or FailFor: a test whose fault must be seen by calls waits for it
// instead of guessing how long the calls take to come.
func (s *Server) Refused(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused[op]
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetLatency delays every reply of op (OpAny for all) by d; zero removes it.
// A delayed call still ends when the client gives up.
func (s *Server) SetLatency(op string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency[op] = d
}

// takeFault returns the code of a fault that applies to op now, consuming one use.
func (s *Server) takeFault(op string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for i, f := range s.faults {
		if f.op != op && f.op != OpAny {
			continue
		}
		if f.times == -1 {
			if now.Before(f.until) {
				s.refused[op]++
				return f.code
			}
			continue
		}
		if f.times > 0 {
			f.times--
			code := f.code
			if f.times == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			s.refused[op]++
			return code
		}
	}
	return ""
}

func (s *Server) count(op, akid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	if akid != "" {
		s.callsBy[[2]string{op, akid}]++
	}
}

func (s *Server) delay(r *http.Request, op string) {
	s.mu.Lock()
	d := s.latency[op]
	if d == 0 {
		d = s.latency[OpAny]
	}
	s.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	scope := ""
	if a, err := ParseAuthorization(r.Header.Get("Authorization")); err == nil {
		scope = a.Service
	}
	switch {
	case s.s3.virtualBucket(r.Host) != "" || scope == "s3":
		s.s3.serve(w, r)
	case strings.HasPrefix(r.URL.Path, "/latest/"):
		s.serveIMDS(w, r)
	case r.URL.Path == ContainerCredentialsPath:
		s.serveContainer(w, r)
	case strings.HasPrefix(target, "secretsmanager."):
		s.serveSecretsManager(w, r)
	case strings.HasPrefix(target, "Logs_20140328."):
		s.logs.serve(w, r)
	case scope == "sts" || (scope == "" && r.Method == http.MethodPost &&
		strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")):
		s.serveSTS(w, r)
	case scope == "" && target == "":
		s.s3.serve(w, r) // anonymous S3 requests: AccessDenied
	default:
		http.Error(w, fmt.Sprintf("awsfake: no service at %s %s", r.Method, r.URL.Path), http.StatusNotFound)
	}
}
