package all

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// TestEveryBlockRegistered checks that the table and events agree: every sink
// block of an export has exactly one registered kind, and every kind reads a
// block events knows.
func TestEveryBlockRegistered(t *testing.T) {
	var blocks []string
	for _, k := range Kinds {
		if k.New == nil {
			t.Errorf("kind %s has no factory", k.Block)
		}
		blocks = append(blocks, k.Block)
	}
	if kinds := events.SinkKinds(); !slices.Equal(blocks, kinds) {
		t.Fatalf("registered %v, events has the blocks %v", blocks, kinds)
	}
}

// TestOpenChecksProvider checks that a sink is only built on a connection of
// the provider its block declares, with the messages the worker logs.
func TestOpenChecksProvider(t *testing.T) {
	aws := events.Connection{Name: "a", Provider: events.ProviderAWS}
	gcp := events.Connection{Name: "g", Provider: events.ProviderGCP}
	cw := events.Export{Name: "x", CloudWatch: &events.CloudWatchSink{LogGroup: "/a"}}
	cl := events.Export{Name: "y", CloudLogging: &events.CloudLoggingSink{Project: "my-project", LogID: "l"}}
	for _, tc := range []struct {
		exp  events.Export
		conn events.Connection
		msg  string
	}{
		{cw, gcp, "export x: connection g is not an aws connection"},
		{cl, aws, "export y: connection a is not a gcp connection"},
		{events.Export{Name: "z"}, aws, "export z: no sink"},
	} {
		_, err := Open(context.Background(), tc.exp, tc.conn, sink.Clients{})
		if !errors.Is(err, events.ErrBadRequest) || err.Error() != tc.msg {
			t.Errorf("Open(%s, %s) = %v, want bad_request %q", tc.exp.Name, tc.conn.Name, err, tc.msg)
		}
	}
}
