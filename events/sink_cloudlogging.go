package events

import "regexp"

// CloudLoggingSink is the cloud_logging block of an export: Google Cloud
// Logging, through a gcp connection (internal/sink/cloudlogging).
type CloudLoggingSink struct {
	Project  string             `json:"project"`
	LogID    string             `json:"log_id"`
	Resource *MonitoredResource `json:"resource,omitempty"`
}

// MonitoredResource is a Cloud Logging monitored resource.
type MonitoredResource struct {
	Type   string            `json:"type"`
	Labels map[string]string `json:"labels,omitempty"`
}

var (
	logIDRE    = regexp.MustCompile(`^[A-Za-z0-9_./-]{1,512}$`)
	labelKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	resTypeRE  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,127}$`)
)

// Provider is gcp: Cloud Logging is reached with a gcp connection.
func (c *CloudLoggingSink) Provider() string { return ProviderGCP }

// Validate checks the cloud_logging block.
func (c *CloudLoggingSink) Validate() error {
	if c.Project == "" || !gcpProjectRE.MatchString(c.Project) {
		return Errorf(CodeBadRequest, "cloud_logging.project: required, a project id")
	}
	if !logIDRE.MatchString(c.LogID) {
		return Errorf(CodeBadRequest, "cloud_logging.log_id: required, up to 512 of [A-Za-z0-9_./-]")
	}
	if r := c.Resource; r != nil {
		if !resTypeRE.MatchString(r.Type) {
			return Errorf(CodeBadRequest, "cloud_logging.resource.type: %q is not a resource type", truncate(r.Type, 40))
		}
		for k, v := range r.Labels {
			if !labelKeyRE.MatchString(k) || len(v) > 1024 {
				return Errorf(CodeBadRequest, "cloud_logging.resource.labels: invalid label %q", truncate(k, 40))
			}
		}
	}
	return nil
}
