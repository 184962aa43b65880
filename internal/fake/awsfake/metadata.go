package awsfake

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveIMDS answers the EC2 instance metadata service in IMDSv2-required
// mode: a PUT /latest/api/token with a TTL header yields a session token, and
// every GET must carry it.
func (s *Server) serveIMDS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		s.count(OpIMDSToken, "")
		if r.Method != http.MethodPut {
			http.Error(w, "", http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("X-Forwarded-For") != "" {
			http.Error(w, "", http.StatusForbidden)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
		if code := s.takeFault(OpIMDSToken); code != "" {
			http.Error(w, "", http.StatusServiceUnavailable)
			return
		}
		tok := "AQAEA" + randomString(48, upperDigits)
		s.mu.Lock()
		s.imdsTokens[tok] = s.now().Add(time.Duration(ttl) * time.Second)
		s.mu.Unlock()
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", strconv.Itoa(ttl))
		_, _ = w.Write([]byte(tok))
		return
	}
	s.count(OpIMDSGet, "")
	s.mu.Lock()
	exp, ok := s.imdsTokens[r.Header.Get("X-Aws-Ec2-Metadata-Token")]
	valid := ok && s.now().Before(exp)
	if !valid {
		s.imdsRejected++
	}
	roleName, creds := s.instanceRole, s.instanceCreds
	s.mu.Unlock()
	if r.Method != http.MethodGet {
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if !valid {
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	s.delay(r, OpIMDSGet)
	if code := s.takeFault(OpIMDSGet); code != "" {
		http.Error(w, "", http.StatusServiceUnavailable)
		return
	}
	const credsPath = "/latest/meta-data/iam/security-credentials/"
	switch {
	case r.URL.Path == credsPath && roleName != "":
		_, _ = w.Write([]byte(roleName))
	case r.URL.Path == credsPath+roleName && roleName != "":
		w.Header().Set("Content-Type", "text/plain")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"Code": "Success", "LastUpdated": s.now().UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
			"AccessKeyId": creds.AccessKeyID, "SecretAccessKey": creds.SecretAccessKey, "Token": creds.SessionToken,
			"Expiration": creds.Expires.UTC().Format(time.RFC3339),
		})
	default:
		http.Error(w, "", http.StatusNotFound)
	}
}

// serveContainer answers the ECS container credentials endpoint, checking
// the Authorization header against the token set with SetContainerRole.
func (s *Server) serveContainer(w http.ResponseWriter, r *http.Request) {
	s.count(OpContainerCredentials, "")
	s.mu.Lock()
	tok, creds := s.containerTok, s.containerCred
	bad := tok != "" && r.Header.Get("Authorization") != tok
	if bad {
		s.ecsRejected++
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if bad {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"code": "AccessDenied", "message": "invalid authorization token"})
		return
	}
	if creds == nil {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]string{"code": "NotFound", "message": "no task role"})
		return
	}
	s.delay(r, OpContainerCredentials)
	if code := s.takeFault(OpContainerCredentials); code != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"code": strings.TrimSuffix(code, "Exception"), "message": "unavailable"})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{
		"AccessKeyId": creds.AccessKeyID, "SecretAccessKey": creds.SecretAccessKey, "Token": creds.SessionToken,
		"Expiration": creds.Expires.UTC().Format(time.RFC3339), "RoleArn": creds.ARN,
	})
}
