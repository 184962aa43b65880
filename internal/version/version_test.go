package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestFrom: every source of a version maps to a SemVer one, as the micro
// service requires: the -X value (with or without v, or not SemVer at all),
// the module version Go recorded (a pseudo-version, +dirty), the VCS
// revision, nothing.
func TestFrom(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}}
	for _, tc := range []struct {
		build, main string
		settings    []debug.BuildSetting
		want        string
	}{
		{"", "", nil, "0.0.0-dev"},
		{"", "(devel)", nil, "0.0.0-dev"},
		{"", "(devel)", rev, "0.0.0-dev+0123456789ab"},
		{"", "v1.2.3", rev, "1.2.3"},
		{"", "v0.0.0-20261202152549-0123456789ab+dirty", nil, "0.0.0-20261202152549-0123456789ab+dirty"},
		{"v1.4.0", "v1.2.3", rev, "1.4.0"},
		{"1.4.0-rc.1", "", nil, "1.4.0-rc.1"},
		{"dev", "", rev, "0.0.0-dev"},
		{"release 42/b", "", nil, "0.0.0-dev+release-42-b"},
		{"v1.2", "", nil, "0.0.0-dev+v1-2"},
	} {
		got := from(tc.build, tc.main, tc.settings)
		if got != tc.want || !IsSemVer(got) {
			t.Errorf("from(%q, %q, %v) = %q (SemVer: %v), want %q", tc.build, tc.main, tc.settings, got, IsSemVer(got), tc.want)
		}
	}
	if !IsSemVer(String()) {
		t.Fatalf("String() = %q: not SemVer", String())
	}
	if w := WithGo(); w != String()+" ("+runtime.Version()+")" || !strings.HasPrefix(w, String()) {
		t.Fatalf("WithGo() = %q", w)
	}
}
