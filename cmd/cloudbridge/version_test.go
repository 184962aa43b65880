package main

import (
	"encoding/json"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/internal/version"
)

// srvVersion is the version the worker at url announces in $SRV.INFO.
func srvVersion(t *testing.T, url string) string {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subject, err := micro.ControlSubject(micro.InfoVerb, "cloudbridge", "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := nc.Request(subject, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatalf("%s: %s: %v", subject, m.Data, err)
	}
	return info.Version
}

// TestVersionAgrees: `cloudbridge version` (and --version, --json) prints
// the version the worker's micro service announces in $SRV.INFO (it printed
// "dev (go…)" while $SRV.INFO said 0.1.0), with the Go version.
func TestVersionAgrees(t *testing.T) {
	v := srvVersion(t, startWorker(t))
	if v != version.String() || !version.IsSemVer(v) {
		t.Fatalf("$SRV.INFO version %q, want the build's %q (SemVer)", v, version.String())
	}
	want := "cloudbridge " + v + " (" + runtime.Version() + ")\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if out, errOut, code := cb(t, "", args...); code != 0 || out != want {
			t.Errorf("cloudbridge %s: exit %d, stdout %q (want %q), stderr %q", args[0], code, out, want, errOut)
		}
	}
	out, errOut, code := cb(t, "", "version", "--json")
	var j struct{ Version, Go string }
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 || j.Version != v || j.Go != runtime.Version() {
		t.Fatalf("version --json: exit %d, stdout %q, stderr %q (%v)", code, out, errOut, err)
	}
}
