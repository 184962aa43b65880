package events

import "time"

// Accepted is the subject of the broadcast by which the workers running
// export tell each other which stream sequences a sink call accepted
// (ExportAccepted): cloudbridge.v1.accepted.<export>. Core NATS, fire and
// forget; only the workers publish or subscribe to it.
func (s Subjects) Accepted(export string) string { return s.base() + ".accepted." + export }

// Bounds of an ExportAccepted broadcast: a message carries at most
// MaxAcceptedRanges ranges (a worker splits a longer list), so it stays well
// under MaxRequestSize.
const MaxAcceptedRanges = 1024

// ExportAccepted is broadcast on cloudbridge.v1.accepted.<export> after a sink
// call of export was accepted (and on reconnect, for the worker's recent
// ones): the stream sequences it carried, as inclusive ranges [first, last].
// Stream, StreamCreated and ConsumerCreated name the incarnation of the
// stream and of the export's durable consumer that the sequences belong to:
// a receiver ignores ranges of any other (a stream deleted and created again
// restarts its sequences).
type ExportAccepted struct {
	Export          string     `json:"export"`
	Worker          string     `json:"worker"`
	Stream          string     `json:"stream"`
	StreamCreated   time.Time  `json:"stream_created"`
	ConsumerCreated time.Time  `json:"consumer_created"`
	Ranges          [][]uint64 `json:"ranges"`
}

// Validate checks the names and the ranges: 1 to MaxAcceptedRanges of them,
// each with 1 ≤ first ≤ last.
func (a *ExportAccepted) Validate() error {
	if err := CheckName("export", a.Export); err != nil {
		return err
	}
	if a.Worker == "" || len(a.Worker) > 64 {
		return Errorf(CodeBadRequest, "worker: 1 to 64 characters")
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
	return nil
}
