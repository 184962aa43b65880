package s3

import (
	"sort"
	"sync"
)

// written remembers the stream sequences this sink has put in S3, so that
// the copies JetStream redelivers of a message already archived (a retry
// that outlived the ack wait, a batch queued behind a slow call) are acked
// without being written into a second object. Only exact sequences are
// remembered: a message of the export between two archived ones that is
// still pending is never taken for archived. A sequence counts only with the
// receive time it had, so a stream recreated under the same name (its
// sequences start again) is never mistaken for the old one. Bounded: at most
// 9/8 maxSpans runs of consecutive sequences per stream, the oldest forgotten.
type written struct {
	mu      sync.Mutex
	streams map[string][]span
}

// span is a run of consecutive sequences lo..hi received between rlo and rhi
// (Unix nanoseconds).
type span struct {
	lo, hi   uint64
	rlo, rhi int64
}

const maxSpans = 1 << 16

// has reports whether seq, received at recv, was archived.
func (w *written) has(stream string, seq uint64, recv int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	spans := w.streams[stream]
	i := sort.Search(len(spans), func(i int) bool { return spans[i].hi >= seq })
	if i == len(spans) || spans[i].lo > seq {
		return false
	}
	if recv < spans[i].rlo || recv > spans[i].rhi {
		// The stream's sequences started again: forget the old ones.
		delete(w.streams, stream)
		return false
	}
	return true
}

// add remembers seq, received at recv, as archived.
func (w *written) add(stream string, seq uint64, recv int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.streams == nil {
		w.streams = map[string][]span{}
	}
	spans := w.streams[stream]
	i := sort.Search(len(spans), func(i int) bool { return spans[i].hi >= seq })
	if i < len(spans) && spans[i].lo <= seq {
		return // already there
	}
	grow := func(s *span) { s.rlo, s.rhi = min(s.rlo, recv), max(s.rhi, recv) }
	switch {
	case i > 0 && spans[i-1].hi+1 == seq:
		spans[i-1].hi = seq
		grow(&spans[i-1])
		if i < len(spans) && spans[i].lo == seq+1 { // joins the next run
			spans[i-1].hi = spans[i].hi
			grow(&spans[i-1])
			spans[i-1].rlo, spans[i-1].rhi = min(spans[i-1].rlo, spans[i].rlo), max(spans[i-1].rhi, spans[i].rhi)
			spans = append(spans[:i], spans[i+1:]...)
		}
	case i < len(spans) && spans[i].lo == seq+1:
		spans[i].lo = seq
		grow(&spans[i])
	default:
		spans = append(spans, span{})
		copy(spans[i+1:], spans[i:])
		spans[i] = span{lo: seq, hi: seq, rlo: recv, rhi: recv}
	}
	if len(spans) > maxSpans+maxSpans/8 { // forget in chunks, not a copy per add
		spans = append(spans[:0], spans[len(spans)-maxSpans:]...)
	}
	w.streams[stream] = spans
}
