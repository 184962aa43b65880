package export

import (
	"context"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestStatusOfUnknownExport: exports.status of a name no block runs answers
// not_found with the message every other not-found has (export "x": not
// found, as exports get says), the name quoted.
func TestStatusOfUnknownExport(t *testing.T) {
	e := newEnv(t)
	w := e.worker(nil, cwExport("known", "logs.k.>"))
	for _, name := range []string{"nosuch", "no such"} {
		_, err := w.Status(context.Background(), name)
		want := &events.Error{Code: events.CodeNotFound, Message: `export "` + name + `": not found`}
		if got := events.AsWire(err); got == nil || got.Code != want.Code || got.Message != want.Message {
			t.Errorf("Status(%q): %#v, want %#v", name, got, want)
		}
	}
	if l, err := w.Status(context.Background(), "known"); err != nil || len(l.Exports) != 1 {
		t.Fatalf("Status of a running export: %v %+v", err, l)
	}
}
