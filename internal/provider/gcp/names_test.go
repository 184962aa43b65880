package gcp

import (
	"regexp"
	"testing"
)

var fullNameRE = regexp.MustCompile(`^projects/[a-z0-9][a-z0-9.:-]*/secrets/[A-Za-z0-9_-]{1,255}/versions/[A-Za-z0-9_-]{1,63}$`)

func FuzzVersionName(f *testing.F) {
	for _, s := range []string{"biodb01", "projects/p1/secrets/s/versions/3", "projects/p1/secrets/s",
		"projects//secrets/x", "projects/p/locations/l/secrets/s", "a/b", "", "é", "projects/p/secrets/s/versions/latest/x"} {
		f.Add("bio-prod", s, "")
		f.Add("", s, "latest")
		f.Add("bio-prod", s, "alias_1")
	}
	f.Fuzz(func(t *testing.T, project, secret, version string) {
		name, err := VersionName(project, secret, version)
		if err != nil {
			if name != "" {
				t.Fatalf("name %q with error %v", name, err)
			}
			return
		}
		if !fullNameRE.MatchString(name) {
			t.Fatalf("VersionName(%q, %q, %q) = %q: not a version resource name", project, secret, version, name)
		}
	})
}
