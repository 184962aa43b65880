package awsfake

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
)

// smErrorStatus is the HTTP status Secrets Manager uses for an error code.
func smErrorStatus(code string) int {
	switch code {
	case "InternalServiceError", "InternalFailure":
		return http.StatusInternalServerError
	case "ServiceUnavailable":
		return http.StatusServiceUnavailable
	default:
		return http.StatusBadRequest
	}
}

var smMessages = map[string]string{
	"ThrottlingException":                 "Rate exceeded",
	"InternalServiceError":                "An error occurred on the server side.",
	"ServiceUnavailable":                  "Service is unavailable.",
	"AccessDeniedException":               "User is not authorized to perform: secretsmanager action on resource because no identity-based policy allows it",
	"DecryptionFailure":                   "Secrets Manager can't decrypt the protected secret text using the provided KMS key.",
	"ExpiredTokenException":               "The security token included in the request is expired",
	"UnrecognizedClientException":         "The security token included in the request is invalid.",
	"InvalidSignatureException":           "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
	"MissingAuthenticationTokenException": "Missing Authentication Token",
}

func writeSMError(w http.ResponseWriter, code, msg string) {
	if msg == "" {
		msg = smMessages[code]
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", newUUID())
	w.WriteHeader(smErrorStatus(code))
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "Message": msg})
}

func writeSM(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", newUUID())
	_ = json.NewEncoder(w).Encode(v)
}

var versionIDRE = regexp.MustCompile(`^[a-zA-Z0-9-]{32,64}$`)

// smAuthCodes are Secrets Manager's answers to a refused signature.
var smAuthCodes = authCodes{
	authMissing:        "MissingAuthenticationTokenException",
	authUnknownKey:     "UnrecognizedClientException",
	authBadToken:       "UnrecognizedClientException",
	authBadSignature:   "InvalidSignatureException",
	authBadContentHash: "InvalidSignatureException",
	authExpired:        "ExpiredTokenException",
}

func (s *Server) serveSecretsManager(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "secretsmanager.")
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeSMError(w, "SerializationException", "cannot read body")
		return
	}
	caller, code := s.admit(r, body, "secretsmanager", op, smAuthCodes)
	if code == "" {
		code = s.stall(r, op)
	}
	if code != "" {
		writeSMError(w, code, "")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		writeSMError(w, "SerializationException", "unexpected content type")
		return
	}
	var in struct {
		SecretId     string
		VersionId    string
		VersionStage string
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&in); err != nil {
		writeSMError(w, "SerializationException", "Start of structure or map found where not expected.")
		return
	}
	switch op {
	case OpGetSecretValue:
		s.getSecretValue(w, caller, in.SecretId, in.VersionId, in.VersionStage)
	case OpDescribeSecret:
		s.describeSecret(w, caller, in.SecretId)
	default:
		writeSMError(w, "UnknownOperationException", "")
	}
}

// lookup finds a secret by name or ARN and checks the caller may read it. Callers hold s.mu.
func (s *Server) lookup(w http.ResponseWriter, caller Credentials, op, id string) *secret {
	if id == "" || len(id) > 2048 {
		writeSMError(w, "ValidationException", "1 validation error detected: Value at 'secretId' failed to satisfy constraint: Member must have length between 1 and 2048")
		return nil
	}
	sec := s.secrets[id]
	if sec == nil {
		for _, c := range s.secrets {
			if c.arn == id {
				sec = c
			}
		}
	}
	if sec == nil {
		writeSMError(w, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
		return nil
	}
	if sec.denied[caller.ARN] || !s.allowedLocked(caller, "secretsmanager:"+op, sec.name) {
		writeSMError(w, "AccessDeniedException", "")
		return nil
	}
	return sec
}

func (s *Server) getSecretValue(w http.ResponseWriter, caller Credentials, id, versionID, stage string) {
	if versionID != "" && !versionIDRE.MatchString(versionID) {
		writeSMError(w, "ValidationException", "1 validation error detected: Value at 'versionId' failed to satisfy constraint: Member must have length greater than or equal to 32")
		return
	}
	if len(stage) > 256 {
		writeSMError(w, "ValidationException", "1 validation error detected: Value at 'versionStage' failed to satisfy constraint: Member must have length less than or equal to 256")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookup(w, caller, OpGetSecretValue, id)
	if sec == nil {
		return
	}
	if versionID == "" && stage == "" {
		stage = StageCurrent
	}
	var found *version
	for _, v := range sec.versions {
		if versionID != "" && v.id != versionID {
			continue
		}
		if stage != "" && !hasStage(v, stage) {
			continue
		}
		found = v
	}
	if found == nil {
		if versionID != "" {
			writeSMError(w, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for VersionId: "+versionID)
		} else {
			writeSMError(w, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: "+stage)
		}
		return
	}
	out := map[string]any{
		"ARN": sec.arn, "Name": sec.name, "VersionId": found.id,
		"VersionStages": found.stages, "CreatedDate": float64(found.created.UnixMilli()) / 1000,
	}
	if found.str != nil {
		out["SecretString"] = *found.str
	} else {
		out["SecretBinary"] = found.bin // base64 by encoding/json, as AWS sends blobs
	}
	writeSM(w, out)
}

func hasStage(v *version, stage string) bool {
	for _, st := range v.stages {
		if st == stage {
			return true
		}
	}
	return false
}

func (s *Server) describeSecret(w http.ResponseWriter, caller Credentials, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookup(w, caller, OpDescribeSecret, id)
	if sec == nil {
		return
	}
	stages := map[string][]string{}
	for _, v := range sec.versions {
		if len(v.stages) > 0 {
			stages[v.id] = v.stages
		}
	}
	writeSM(w, map[string]any{
		"ARN": sec.arn, "Name": sec.name, "VersionIdsToStages": stages,
		"CreatedDate":     float64(sec.created.UnixMilli()) / 1000,
		"LastChangedDate": float64(sec.changed.UnixMilli()) / 1000,
	})
}
