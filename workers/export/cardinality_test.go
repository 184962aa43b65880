package export

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestStreamCardinality: a log publisher sending on 3,000 distinct subjects
// to an export with log_stream "{subject}" and max_streams 100 makes at most
// 100 streams plus the overflow stream; every event is delivered (those of
// the further subjects in the overflow stream) and the overflow counter
// says how many. CreateLogStream is paced under CloudWatch's quota, and a
// throttled create (the fake's quota lowered to 20/s) is retried, never lost.
func TestStreamCardinality(t *testing.T) {
	const n, maxStreams = 3000, 100
	for _, tt := range []struct {
		name string
		rate int // the fake's CreateLogStream quota per second
	}{
		{"quota 50/s", awsfake.LogsCreateStreamTPS},
		{"quota 20/s", 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.cw.SetCreateStreamRate(tt.rate)
			exp := cwExport(fmt.Sprintf("card-%d", tt.rate), "logs.card.>")
			exp.CloudWatch.MaxStreams = maxStreams
			overflow := testutil.ToFloat64(cloudwatch.OverflowEvents.WithLabelValues(exp.Name))
			e.worker(nil, exp)
			e.publish(0, n, subjectsN("logs.card", n), "")
			natstest.Eventually(t, 120*time.Second, "every event delivered and acked", func() bool {
				ack, pending := consumerPending(t, e.js, exp.Name)
				return ack == 0 && pending == 0 && len(cwIDs(e.cw)) >= n
			})
			group := "/platform/" + exp.Name
			streams := e.cw.Streams(group)
			if len(streams) > maxStreams+1 {
				t.Fatalf("%d streams, want at most %d + overflow", len(streams), maxStreams)
			}
			ids := cwIDs(e.cw)
			for i := range n {
				if ids[i] == 0 {
					t.Fatalf("event %d lost", i)
				}
			}
			inOverflow := map[int]bool{}
			for _, ev := range e.cw.Events(group, events.DefaultOverflowStream) {
				var x event
				if json.Unmarshal([]byte(ev.Message), &x) == nil {
					inOverflow[x.ID] = true
				}
			}
			own := 0
			for _, s := range streams {
				if s != events.DefaultOverflowStream {
					own += len(e.cw.Events(group, s))
					if !strings.HasPrefix(s, "logs.card.s") {
						t.Fatalf("stream %q", s)
					}
				}
			}
			if len(inOverflow) != n-maxStreams || len(streams) != maxStreams+1 {
				t.Fatalf("%d events in the overflow stream, %d streams; want %d and %d", len(inOverflow), len(streams), n-maxStreams, maxStreams+1)
			}
			if got := testutil.ToFloat64(cloudwatch.OverflowEvents.WithLabelValues(exp.Name)) - overflow; int(got) < n-maxStreams {
				t.Fatalf("overflow counter grew by %v, want at least %d", got, n-maxStreams)
			}
			creates, throttled := 0, 0
			for _, c := range e.cw.Calls() {
				if c.Op == awsfake.OpCreateLogStream {
					switch c.Error {
					case "":
						creates++
					case "ThrottlingException":
						throttled++
					}
				}
			}
			t.Logf("%d streams, %d events in them, %d in the overflow stream; %d CreateLogStream calls, %d throttled",
				len(streams), own, len(inOverflow), creates, throttled)
			if creates > maxStreams+1 {
				t.Fatalf("%d streams created", creates)
			}
			if tt.rate < awsfake.LogsCreateStreamTPS && throttled == 0 {
				t.Logf("no create was throttled at %d/s", tt.rate)
			}
		})
	}
}
