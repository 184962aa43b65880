package awsfake

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

const stsNS = "https://sts.amazonaws.com/doc/2011-06-15/"

// stsError maps a Secrets Manager style fault code to STS's name, type and status.
func stsError(code string) (name, typ string, status int) {
	switch code {
	case "ThrottlingException", "Throttling":
		return "Throttling", "Sender", http.StatusBadRequest
	case "InternalServiceError", "InternalFailure":
		return "InternalFailure", "Receiver", http.StatusInternalServerError
	case "ServiceUnavailable":
		return "ServiceUnavailable", "Receiver", http.StatusServiceUnavailable
	case "AccessDeniedException", "AccessDenied":
		return "AccessDenied", "Sender", http.StatusForbidden
	case "ExpiredTokenException", "ExpiredToken":
		return "ExpiredToken", "Sender", http.StatusBadRequest
	case "InvalidClientTokenId", "SignatureDoesNotMatch", "MissingAuthenticationToken":
		return code, "Sender", http.StatusForbidden
	default:
		return code, "Sender", http.StatusBadRequest
	}
}

func writeSTSError(w http.ResponseWriter, code, msg string) {
	name, typ, status := stsError(code)
	if msg == "" {
		msg = map[string]string{
			"Throttling":                 "Rate exceeded",
			"InternalFailure":            "An internal error occurred.",
			"ServiceUnavailable":         "Service unavailable.",
			"AccessDenied":               "Access denied.",
			"ExpiredToken":               "The security token included in the request is expired",
			"InvalidClientTokenId":       "The security token included in the request is invalid.",
			"SignatureDoesNotMatch":      "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
			"MissingAuthenticationToken": "Request is missing Authentication Token",
		}[name]
	}
	type errBody struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	v := struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		NS        string   `xml:"xmlns,attr"`
		Error     errBody  `xml:"Error"`
		RequestID string   `xml:"RequestId"`
	}{NS: stsNS, Error: errBody{Type: typ, Code: name, Message: msg}, RequestID: newUUID()}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	_ = xml.NewEncoder(w).Encode(v)
}

type stsCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type responseMetadata struct {
	RequestID string `xml:"RequestId"`
}

func writeSTS(w http.ResponseWriter, action string, result any) {
	v := struct {
		XMLName  xml.Name
		NS       string `xml:"xmlns,attr"`
		Result   any
		Metadata responseMetadata `xml:"ResponseMetadata"`
	}{XMLName: xml.Name{Local: action + "Response"}, NS: stsNS, Result: result, Metadata: responseMetadata{newUUID()}}
	w.Header().Set("Content-Type", "text/xml")
	_ = xml.NewEncoder(w).Encode(v)
}

func toSTSCreds(c *Credentials) stsCredentials {
	return stsCredentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
		SessionToken: c.SessionToken, Expiration: c.Expires.UTC().Format(time.RFC3339)}
}

var roleSessionRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

// stsAuthCodes are STS's answers to a refused signature.
var stsAuthCodes = authCodes{
	authMissing:        "MissingAuthenticationToken",
	authUnknownKey:     "InvalidClientTokenId",
	authBadToken:       "InvalidClientTokenId",
	authBadSignature:   "SignatureDoesNotMatch",
	authBadContentHash: "SignatureDoesNotMatch",
	authExpired:        "ExpiredToken",
}

func (s *Server) serveSTS(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeSTSError(w, "MalformedInput", "cannot read body")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Version") != "2011-06-15" {
		writeSTSError(w, "InvalidAction", "Could not find operation for version")
		return
	}
	op := form.Get("Action")
	caller, code := s.admit(r, body, "sts", op, stsAuthCodes)
	if code == "" {
		code = s.stall(r, op)
	}
	if code != "" {
		writeSTSError(w, code, "")
		return
	}
	switch op {
	case OpGetCallerIdentity:
		writeSTS(w, op, struct {
			XMLName xml.Name `xml:"GetCallerIdentityResult"`
			Arn     string   `xml:"Arn"`
			UserID  string   `xml:"UserId"`
			Account string   `xml:"Account"`
		}{Arn: caller.ARN, UserID: caller.UserID, Account: DefaultAccount})
	case OpAssumeRole:
		s.assumeRole(w, caller, form)
	case OpGetSessionToken:
		s.getSessionToken(w, caller, form)
	default:
		writeSTSError(w, "InvalidAction", "Could not find operation "+op)
	}
}

func durationParam(form url.Values, def time.Duration) (time.Duration, bool) {
	v := form.Get("DurationSeconds")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

func (s *Server) assumeRole(w http.ResponseWriter, caller Credentials, form url.Values) {
	arn, session, extID := form.Get("RoleArn"), form.Get("RoleSessionName"), form.Get("ExternalId")
	s.mu.Lock()
	s.lastAssume = map[string]string{"RoleArn": arn, "RoleSessionName": session, "ExternalId": extID,
		"DurationSeconds": form.Get("DurationSeconds"), "Policy": form.Get("Policy")}
	s.mu.Unlock()
	if !roleSessionRE.MatchString(session) {
		writeSTSError(w, "ValidationError", "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*")
		return
	}
	d, ok := durationParam(form, time.Hour)
	if !ok || d < 15*time.Minute || d > 12*time.Hour {
		writeSTSError(w, "ValidationError", "1 validation error detected: Value at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ro := s.roles[arn]
	if ro == nil || ro.opts.ExternalID != extID {
		writeSTSError(w, "AccessDenied", "User: "+caller.ARN+" is not authorized to perform: sts:AssumeRole on resource: "+arn)
		return
	}
	if d > ro.opts.MaxSession {
		writeSTSError(w, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
		return
	}
	if caller.Temporary() && isAssumedRole(caller.ARN) && d > time.Hour {
		writeSTSError(w, "ValidationError", "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
		return
	}
	c := s.issueRoleCreds(ro.name, session, d)
	type user struct {
		Arn           string `xml:"Arn"`
		AssumedRoleID string `xml:"AssumedRoleId"`
	}
	writeSTS(w, OpAssumeRole, struct {
		XMLName     xml.Name       `xml:"AssumeRoleResult"`
		Credentials stsCredentials `xml:"Credentials"`
		User        user           `xml:"AssumedRoleUser"`
	}{Credentials: toSTSCreds(c), User: user{Arn: c.ARN, AssumedRoleID: c.UserID}})
}

func isAssumedRole(arn string) bool {
	return regexp.MustCompile(`^arn:aws:sts::\d{12}:assumed-role/`).MatchString(arn)
}

func (s *Server) getSessionToken(w http.ResponseWriter, caller Credentials, form url.Values) {
	if caller.Temporary() {
		writeSTSError(w, "AccessDenied", "Cannot call GetSessionToken with session credentials")
		return
	}
	d, ok := durationParam(form, 12*time.Hour)
	if !ok || d < 15*time.Minute || d > 36*time.Hour {
		writeSTSError(w, "ValidationError", "1 validation error detected: Value at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 129600")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, key := newKeys("ASIA")
	c := &Credentials{AccessKeyID: id, SecretAccessKey: key, SessionToken: "IQoJ" + randomString(120, upperDigits),
		Expires: s.now().Add(d).UTC().Truncate(time.Second), ARN: caller.ARN, UserID: caller.UserID}
	s.creds[id] = c
	writeSTS(w, OpGetSessionToken, struct {
		XMLName     xml.Name       `xml:"GetSessionTokenResult"`
		Credentials stsCredentials `xml:"Credentials"`
	}{Credentials: toSTSCreds(c)})
}
