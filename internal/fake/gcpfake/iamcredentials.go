package gcpfake

import (
	"context"
	"strings"
	"time"

	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxTokenLifetime is generateAccessToken's limit without the org policy.
const MaxTokenLifetime = time.Hour

// GrantTokenCreator gives member roles/iam.serviceAccountTokenCreator on the
// service account target.
func (s *Server) GrantTokenCreator(member, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[[2]string{member, target}] = true
}

// RevokeTokenCreator removes a grant made by GrantTokenCreator.
func (s *Server) RevokeTokenCreator(member, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.grants, [2]string{member, target})
}

type iamCredentials struct {
	credentialspb.UnimplementedIAMCredentialsServer
	s *Server
}

const saPrefix = "projects/-/serviceAccounts/"

func accountOf(name string) (string, bool) {
	if !strings.HasPrefix(name, saPrefix) {
		return "", false
	}
	email := strings.TrimPrefix(name, saPrefix)
	return email, email != "" && strings.Contains(email, "@") && !strings.Contains(email, "/")
}

// GenerateAccessToken mints a token for the target service account when the
// caller holds Token Creator on the first hop and every delegate on the next.
func (i *iamCredentials) GenerateAccessToken(ctx context.Context, req *credentialspb.GenerateAccessTokenRequest) (*credentialspb.GenerateAccessTokenResponse, error) {
	caller, _ := Caller(ctx)
	target, ok := accountOf(req.GetName())
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid form of account ID %s. Should be [Gaia ID |Email |Unique ID |] of the account", req.GetName())
	}
	if len(req.GetScope()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "Scope required.")
	}
	lifetime := MaxTokenLifetime
	if l := req.GetLifetime(); l != nil {
		lifetime = l.AsDuration()
		if lifetime <= 0 || lifetime > MaxTokenLifetime {
			return nil, status.Errorf(codes.InvalidArgument, "The lifetime must be between 1s and 3600s, got %s.", lifetime)
		}
	}
	chain := []string{caller}
	for _, d := range req.GetDelegates() {
		email, ok := accountOf(d)
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "Invalid form of delegate %s.", d)
		}
		chain = append(chain, email)
	}
	chain = append(chain, target)
	s := i.s
	s.mu.Lock()
	_, exists := s.accounts[target]
	var denied string
	for h := 0; h+1 < len(chain) && denied == ""; h++ {
		if !s.grants[[2]string{chain[h], chain[h+1]}] {
			denied = chain[h+1]
		}
	}
	s.mu.Unlock()
	if denied != "" {
		return nil, status.Errorf(codes.PermissionDenied,
			"Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist): %s", denied)
	}
	if !exists {
		return nil, status.Errorf(codes.NotFound, "Not found; Gaia id not found for email %s", target)
	}
	token, exp := s.issue(target, req.GetScope(), lifetime)
	s.mu.Lock()
	s.generateCalls[target]++
	s.mu.Unlock()
	return &credentialspb.GenerateAccessTokenResponse{AccessToken: token, ExpireTime: timestamppb.New(exp)}, nil
}
