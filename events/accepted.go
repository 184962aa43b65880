package events

import "time"

// Accepted is the subject of the broadcast by which the workers running
// export tell each other which stream sequences a sink call accepted
// (ExportAccepted): cloudbridge.v1.accepted.<export>. Core NATS, fire and
// forget; only the workers publish or subscribe to it.
func (s Subjects) Accepted(export string) string { return s.base() + ".accepted." + export }

// Bounds of an ExportAccepted broadcast: a message carries at most
// MaxAcceptedRanges ranges (a worker splits a longer list), so it stays well
// under MaxRequestSize (each range with its stored times is at most about
// 90 bytes).
const MaxAcceptedRanges = 512

// ExportAccepted is broadcast on cloudbridge.v1.accepted.<export> after a sink
// call of export was accepted (and on reconnect, for the worker's recent
// ones): the stream sequences it carried, as inclusive ranges [first, last].
// Stream, StreamCreated and ConsumerCreated name the incarnation of the
// stream and of the export's durable consumer that the sequences belong to:
// a receiver ignores ranges of any other (a stream deleted and created again
// restarts its sequences). Stored[i] is [oldest, newest] of the stored
// times (unix nanoseconds, the server's clock) of the messages of Ranges[i]:
// a receiver suppresses a message only when its sequence is in a range and
// its stored time within that range's, so a sequence the stream reused (a
// stream created again, an R1 stream that lost its last messages) is not
// mistaken for the accepted one. Runner names the publishing export runner
// of Worker (a new one after a spec change is another).
type ExportAccepted struct {
	Export          string     `json:"export"`
	Worker          string     `json:"worker"`
	Runner          string     `json:"runner"`
	Stream          string     `json:"stream"`
	StreamCreated   time.Time  `json:"stream_created"`
	ConsumerCreated time.Time  `json:"consumer_created"`
	Ranges          [][]uint64 `json:"ranges"`
	Stored          [][]int64  `json:"stored"`
}

// Validate checks the names and the ranges: 1 to MaxAcceptedRanges of them,
// each with 1 ≤ first ≤ last, and as many stored times, each with
// 1 ≤ oldest ≤ newest.
func (a *ExportAccepted) Validate() error {
	if err := CheckName("export", a.Export); err != nil {
		return err
	}
	if a.Worker == "" || len(a.Worker) > 64 {
		return Errorf(CodeBadRequest, "worker: 1 to 64 characters")
	}
	if a.Runner == "" || len(a.Runner) > 64 {
		return Errorf(CodeBadRequest, "runner: 1 to 64 characters")
	}
	if a.Stream == "" || len(a.Stream) > 255 {
		return Errorf(CodeBadRequest, "stream: 1 to 255 characters")
	}
	if a.StreamCreated.IsZero() || a.ConsumerCreated.IsZero() {
		return Errorf(CodeBadRequest, "stream_created and consumer_created: required")
	}
	if len(a.Ranges) == 0 || len(a.Ranges) > MaxAcceptedRanges {
		return Errorf(CodeBadRequest, "ranges: 1 to %d", MaxAcceptedRanges)
	}
	for i, r := range a.Ranges {
		if len(r) != 2 || r[0] == 0 || r[0] > r[1] {
			return Errorf(CodeBadRequest, "ranges[%d]: want 1 ≤ first ≤ last", i)
		}
	}
	if len(a.Stored) != len(a.Ranges) {
		return Errorf(CodeBadRequest, "stored: one [oldest, newest] per range")
	}
	for i, t := range a.Stored {
		if len(t) != 2 || t[0] < 1 || t[0] > t[1] {
			return Errorf(CodeBadRequest, "stored[%d]: want 1 ≤ oldest ≤ newest", i)
		}
	}
	return nil
}
