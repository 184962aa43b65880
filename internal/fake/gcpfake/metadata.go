package gcpfake

import (
	"encoding/json"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"
)

// Metadata is a fake GCE metadata server for the instance's default service
// account. Point GCE_METADATA_HOST at Host() to use it.
type Metadata struct {
	s       *Server
	srv     *httptest.Server
	email   string
	project string
}

// StartMetadata starts a metadata server whose default service account is
// email (known to the fake, so its tokens work on the gRPC services) in project.
func (s *Server) StartMetadata(t testenv.TB, email, project string) *Metadata {
	t.Helper()
	s.mu.Lock()
	if _, ok := s.accounts[email]; !ok {
		s.accounts[email] = &ServiceAccount{Email: email, Project: project}
	}
	s.mu.Unlock()
	m := &Metadata{s: s, email: email, project: project}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

// Host is host:port, the value for GCE_METADATA_HOST.
func (m *Metadata) Host() string { return strings.TrimPrefix(m.srv.URL, "http://") }

func (m *Metadata) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
		return
	}
	w.Header().Set("Metadata-Flavor", "Google")
	const sa = "/computeMetadata/v1/instance/service-accounts/default/"
	switch r.URL.Path {
	case sa + "token":
		scopes := []string{CloudPlatformScope}
		if q := r.URL.Query().Get("scopes"); q != "" {
			scopes = strings.Split(q, ",")
		}
		token, exp := m.s.issue(m.email, scopes, m.s.tokenLifetime(m.email))
		m.s.mu.Lock()
		m.s.tokenFetches[m.email]++
		m.s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer",
			"expires_in": int(time.Until(exp).Round(time.Second).Seconds())})
	case sa + "email":
		_, _ = w.Write([]byte(m.email))
	case "/computeMetadata/v1/project/project-id":
		_, _ = w.Write([]byte(m.project))
	case "/computeMetadata/v1/universe/universe-domain":
		_, _ = w.Write([]byte("googleapis.com"))
	case "/", "/computeMetadata/v1/", "/computeMetadata/v1/instance/":
		_, _ = w.Write([]byte("ok"))
	default:
		http.NotFound(w, r)
	}
}
