package gcp

import (
	"regexp"
	"strings"

	"github.com/cloudbridge/cloudbridge/events"
)

var (
	secretIDRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
	projectRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9.:-]{0,99}$`)
	versionIDRE = regexp.MustCompile(`^(latest|[1-9][0-9]{0,18}|[A-Za-z][A-Za-z0-9_-]{0,62})$`)
)

// VersionName turns a secret reference into the resource name of a secret
// version: a short name "biodb01" becomes
// projects/<project>/secrets/biodb01/versions/<version or latest>; full names
// projects/<p>/secrets/<s> and projects/<p>/secrets/<s>/versions/<v> are
// accepted as they are. version is a number, "latest" or an alias; when both
// the name and version give one, they must agree.
func VersionName(project, secret, version string) (string, error) {
	if version != "" && !versionIDRE.MatchString(version) {
		return "", events.Errorf(events.CodeBadRequest, "version: %q is not a version number, \"latest\" or an alias", trunc(version))
	}
	var proj, id, ver string
	if strings.HasPrefix(secret, "projects/") {
		parts := strings.Split(secret, "/")
		switch {
		case len(parts) >= 4 && parts[2] == "locations":
			return "", events.Errorf(events.CodeBadRequest, "secret: regional secrets (projects/*/locations/*) are not supported")
		case len(parts) == 4 && parts[2] == "secrets":
			proj, id = parts[1], parts[3]
		case len(parts) == 6 && parts[2] == "secrets" && parts[4] == "versions":
			proj, id, ver = parts[1], parts[3], parts[5]
			if !versionIDRE.MatchString(ver) {
				return "", events.Errorf(events.CodeBadRequest, "secret: %q has an invalid version", trunc(secret))
			}
			if version != "" && version != ver {
				return "", events.Errorf(events.CodeBadRequest, "version: %q contradicts the version in the secret name", trunc(version))
			}
		default:
			return "", events.Errorf(events.CodeBadRequest,
				"secret: %q is neither a secret id nor projects/<project>/secrets/<id>[/versions/<version>]", trunc(secret))
		}
		if !projectRE.MatchString(proj) {
			return "", events.Errorf(events.CodeBadRequest, "secret: %q has an invalid project", trunc(secret))
		}
	} else {
		if project == "" {
			return "", events.Errorf(events.CodeBadRequest, "secret: %q is a short name but the connection has no gcp.project", trunc(secret))
		}
		if !projectRE.MatchString(project) {
			return "", events.Errorf(events.CodeBadRequest, "gcp.project: %q is not a project id", trunc(project))
		}
		proj, id = project, secret
	}
	if !secretIDRE.MatchString(id) {
		return "", events.Errorf(events.CodeBadRequest, "secret: %q is not a Secret Manager secret id ([A-Za-z0-9_-], at most 255)", trunc(id))
	}
	if ver == "" {
		ver = version
	}
	if ver == "" {
		ver = "latest"
	}
	return "projects/" + proj + "/secrets/" + id + "/versions/" + ver, nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return strings.ToValidUTF8(s[:80], "") + "…"
	}
	return s
}
