// Package version is the build's version, the one source of what
// `cloudbridge version` prints and of the micro service's version in
// $SRV.INFO (and PING, STATS).
package version

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// build is set at build time:
// -ldflags "-X github.com/cloudbridge/cloudbridge/internal/version.build=v1.2.3".
var build string

// Dev is the version of a build that names none.
const Dev = "0.0.0-dev"

// semver is SemVer 2.0.0, as the micro protocol requires of a service's
// version.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// IsSemVer reports whether v is a SemVer 2.0.0 version (without a leading v).
func IsSemVer(v string) bool { return semver.MatchString(v) }

var (
	once   sync.Once
	cached string
)

// String is the build's version, always SemVer (without the leading v): the
// -X value, else the main module's version Go recorded, else Dev with the
// VCS revision as build metadata (0.0.0-dev+0123456789ab), else Dev.
func String() string {
	once.Do(func() {
		var main string
		var settings []debug.BuildSetting
		if bi, ok := debug.ReadBuildInfo(); ok {
			main, settings = bi.Main.Version, bi.Settings
		}
		cached = from(build, main, settings)
	})
	return cached
}

// WithGo is String and the Go version, as `cloudbridge version` prints it:
// 0.0.0-dev (go1.26.8).
func WithGo() string { return String() + " (" + runtime.Version() + ")" }

// from maps the -X value, the main module's version and the build settings
// to a SemVer version.
func from(build, main string, settings []debug.BuildSetting) string {
	if build != "" {
		return semverOf(build)
	}
	if main != "" && main != "(devel)" {
		return semverOf(main)
	}
	for _, s := range settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return Dev + "+" + metadata(s.Value[:12])
		}
	}
	return Dev
}

// semverOf is v without its leading v when that is SemVer, else Dev with v
// as build metadata (a -X value such as "release-42" or "dev").
func semverOf(v string) string {
	if s := strings.TrimPrefix(v, "v"); IsSemVer(s) {
		return s
	}
	if v == "dev" {
		return Dev
	}
	return Dev + "+" + metadata(v)
}

// metadata is s as one SemVer build-metadata identifier: every character
// outside [0-9A-Za-z-] becomes '-'.
func metadata(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
			return r
		}
		return '-'
	}, s)
}
