package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// buildVersion is set at build time: -ldflags "-X main.buildVersion=v1.2.3".
var buildVersion string

// version is the build's version: the -X value, else the module version or
// VCS revision Go recorded, else "dev".
func version() string {
	v := buildVersion
	if v == "" {
		v = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok {
			if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				v = bi.Main.Version
			} else {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" && len(s.Value) >= 12 {
						v = "dev-" + s.Value[:12]
					}
				}
			}
		}
	}
	return v + " (" + runtime.Version() + ")"
}

type versionCmd struct{}

func (versionCmd) Run(e *env) error {
	if e.f.JSON {
		return printJSON(e.stdout, map[string]string{"version": version()})
	}
	_, err := fmt.Fprintf(e.stdout, "cloudbridge %s\n", version())
	return err
}
