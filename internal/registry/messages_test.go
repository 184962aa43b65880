package registry_test

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
)

// An export whose sink needs another provider than its connection's says so
// in a sentence that reads right for every provider.
func TestExportWrongProviderMessage(t *testing.T) {
	e := newEnv(t)
	r := e.open(seal.New(newKey(t)), registry.Options{LogsSubjects: []string{"logs.>"}})
	c := ctx(t)
	if _, err := r.PutConnection(c, builtinConn(t, "b")); err != nil {
		t.Fatal(err)
	}
	var x events.Export
	if err := events.Decode([]byte(`{"name":"e","connection":"b","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`), &x); err != nil {
		t.Fatal(err)
	}
	_, err := r.PutExport(c, x)
	wantCode(t, err, events.CodeBadRequest)
	const want = `connection: "b" has provider builtin; this sink needs a connection of provider aws`
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q, want it to say %q", err, want)
	}
}
