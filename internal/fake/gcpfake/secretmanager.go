package gcpfake

import (
	"context"
	"fmt"
	"hash/crc32"
	"regexp"
	"strconv"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxPayload is Secret Manager's payload limit: 64 KiB.
const MaxPayload = 64 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type version struct {
	number   int64
	data     []byte
	state    secretmanagerpb.SecretVersion_State
	wrongCRC bool
}

type secret struct {
	versions  []*version
	aliases   map[string]int64
	accessors map[string]bool // empty: anyone with a token
}

func secretKey(project, id string) string { return "projects/" + project + "/secrets/" + id }

// AddSecret creates a secret. With accessors, only those identities hold
// roles/secretmanager.secretAccessor on it; others get PermissionDenied.
func (s *Server) AddSecret(project, id string, accessors ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := &secret{aliases: map[string]int64{}, accessors: map[string]bool{}}
	for _, a := range accessors {
		sec.accessors[a] = true
	}
	s.secrets[secretKey(project, id)] = sec
}

// AddVersion adds an enabled version to a secret (created if missing) and
// returns its number. A payload over 64 KiB is refused, as Secret Manager does.
func (s *Server) AddVersion(project, id string, data []byte) (int64, error) {
	if len(data) > MaxPayload {
		return 0, status.Errorf(codes.InvalidArgument, "Secret Payload cannot be larger than 64KiB.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.secrets[secretKey(project, id)]
	if !ok {
		sec = &secret{aliases: map[string]int64{}, accessors: map[string]bool{}}
		s.secrets[secretKey(project, id)] = sec
	}
	n := int64(len(sec.versions) + 1)
	sec.versions = append(sec.versions, &version{number: n, data: append([]byte(nil), data...),
		state: secretmanagerpb.SecretVersion_ENABLED})
	return n, nil
}

// MustAddVersion is AddVersion for payloads known to fit.
func (s *Server) MustAddVersion(project, id string, data []byte) int64 {
	n, err := s.AddVersion(project, id, data)
	if err != nil {
		panic(err)
	}
	return n
}

func (s *Server) version(project, id string, n int64) *version {
	sec := s.secrets[secretKey(project, id)]
	if sec == nil || n < 1 || n > int64(len(sec.versions)) {
		panic(fmt.Sprintf("gcpfake: no version %d of %s", n, secretKey(project, id)))
	}
	return sec.versions[n-1]
}

// SetState disables, destroys or re-enables a version.
func (s *Server) SetState(project, id string, n int64, state secretmanagerpb.SecretVersion_State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.version(project, id, n)
	v.state = state
	if state == secretmanagerpb.SecretVersion_DESTROYED {
		v.data = nil
	}
}

// SetAlias points a version alias at version n.
func (s *Server) SetAlias(project, id, alias string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version(project, id, n)
	s.secrets[secretKey(project, id)].aliases[alias] = n
}

// CorruptCRC makes responses for version n carry a wrong data_crc32c.
func (s *Server) CorruptCRC(project, id string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version(project, id, n).wrongCRC = true
}

// SetProjectNumber makes response names use the project number instead of
// the project id, as the real service does.
func (s *Server) SetProjectNumber(project, number string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projectNumber[project] = number
}

var versionNameRE = regexp.MustCompile(`^projects/([a-z0-9-]+)/secrets/([A-Za-z0-9_-]{1,255})/versions/([A-Za-z0-9_-]{1,63})$`)

type secretManager struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer
	s *Server
}

// AccessSecretVersion returns a version's payload with its CRC32C.
func (m *secretManager) AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	parts := versionNameRE.FindStringSubmatch(req.GetName())
	if parts == nil {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid resource field value in the request.")
	}
	project, id, ver := parts[1], parts[2], parts[3]
	caller, _ := Caller(ctx)
	s := m.s
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.secrets[secretKey(project, id)]
	if ok && len(sec.accessors) > 0 && !sec.accessors[caller] {
		return nil, status.Errorf(codes.PermissionDenied,
			"Permission 'secretmanager.versions.access' denied for resource '%s' (or it may not exist).", req.GetName())
	}
	if !ok || len(sec.versions) == 0 {
		return nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", secretKey(project, id))
	}
	var n int64
	switch {
	case ver == "latest":
		n = int64(len(sec.versions))
	default:
		if v, err := strconv.ParseInt(ver, 10, 64); err == nil {
			n = v
		} else if a, ok := sec.aliases[ver]; ok {
			n = a
		} else {
			return nil, status.Errorf(codes.NotFound, "Secret Version alias [%s] not found.", ver)
		}
	}
	if n < 1 || n > int64(len(sec.versions)) {
		return nil, status.Errorf(codes.NotFound, "Secret Version [%s/versions/%d] not found.", secretKey(project, id), n)
	}
	v := sec.versions[n-1]
	switch v.state {
	case secretmanagerpb.SecretVersion_DISABLED:
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s/versions/%d] is in DISABLED state.", secretKey(project, id), n)
	case secretmanagerpb.SecretVersion_DESTROYED:
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s/versions/%d] is in DESTROYED state.", secretKey(project, id), n)
	}
	crc := int64(crc32.Checksum(v.data, castagnoli))
	if v.wrongCRC {
		crc ^= 0x5a5a
	}
	nameProject := project
	if num, ok := s.projectNumber[project]; ok {
		nameProject = num
	}
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name: fmt.Sprintf("projects/%s/secrets/%s/versions/%d", nameProject, id, n),
		Payload: &secretmanagerpb.SecretPayload{
			Data:       append([]byte(nil), v.data...),
			DataCrc32C: &crc,
		},
	}, nil
}
