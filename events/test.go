package events

// TestRequest is the body of cloudbridge.v1.test.<group>.<conn>.
type TestRequest struct {
	// Secret, when set, is read as part of the test.
	Secret string `json:"secret,omitempty"`
	// Keys, when set, must be present in the secret.
	Keys []string `json:"keys,omitempty"`
}

// Validate checks the request.
func (r *TestRequest) Validate() error {
	if r.Secret != "" {
		if err := CheckSecretName("secret", r.Secret); err != nil {
			return err
		}
	} else if len(r.Keys) > 0 {
		return Errorf(CodeBadRequest, "keys: needs secret")
	}
	return checkVersionKeys("", r.Keys)
}

// Step names used in test reports.
const (
	StepCredentials = "credentials"
	StepIdentity    = "identity"
	StepSecret      = "secret"
	StepKeys        = "keys"
	// StepEvents checks a connection's change-event queue or subscription
	// (aws.events, gcp.events): reachable, and readable with its credentials.
	StepEvents = "events"
)

// Step is one check of a test report.
type Step struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// TestReply is a test's step report: OK only if every step passed. A failed
// check is a step, not an error reply.
type TestReply struct {
	OK    bool   `json:"ok"`
	Steps []Step `json:"steps"`
}

// Add appends a step and keeps OK up to date.
func (r *TestReply) Add(s Step) {
	r.Steps = append(r.Steps, s)
	r.OK = true
	for _, st := range r.Steps {
		if !st.OK {
			r.OK = false
		}
	}
}

// PassStep is a passed step with a detail.
func PassStep(name, detail string) Step { return Step{Name: name, OK: true, Detail: detail} }

// FailStep is a failed step carrying err as a wire error.
func FailStep(name string, err error) Step { return Step{Name: name, OK: false, Error: AsWire(err)} }
