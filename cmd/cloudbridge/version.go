package main

import (
	"fmt"
	"runtime"

	"github.com/cloudbridge/cloudbridge/internal/version"
)

// versionCmd prints internal/version's version, the one the worker's micro
// service announces in $SRV.INFO, and the Go version.
type versionCmd struct{}

func (versionCmd) Run(e *env) error {
	if e.f.JSON {
		return printJSON(e.stdout, map[string]string{"version": version.String(), "go": runtime.Version()})
	}
	_, err := fmt.Fprintf(e.stdout, "cloudbridge %s\n", version.WithGo())
	return err
}
