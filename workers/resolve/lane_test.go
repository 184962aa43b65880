package resolve

import (
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
)

// Picking a request's lane reads only whether the view holds its connection:
// it opens no record (Connection), which would decrypt on the subscription's
// goroutine.
func TestLaneOfOpensNoRecord(t *testing.T) {
	w, conns := newFastWorker(t)
	for _, tc := range []struct{ conn, lane string }{{"c1", "c1"}, {"nope", ""}} {
		before := conns.openCount()
		var f endpoint.Fields
		lane, err := w.laneOf(events.OpResolve)(newRequest(t, "bio", tc.conn, events.ResolveRequest{Secret: "db1"}), &f)
		if err != nil || lane != tc.lane || f.Conn != tc.conn || f.Group != "bio" {
			t.Errorf("%s: lane %q, fields %+v, err %v; want lane %q", tc.conn, lane, f, err, tc.lane)
		}
		if n := conns.openCount() - before; n != 0 {
			t.Errorf("%s: the lane pick opened %d records", tc.conn, n)
		}
	}
}
