package audit

import (
	"time"

	"github.com/cloudbridge/cloudbridge/events"
)

// Summaries of throttled refusals.
//
// A flood of requests refused with throttled would otherwise store one event
// per refusal: a requester could make the audit stream store events without
// end, and take the server's CPU from everyone else's requests, at no cost
// to itself. So, per audit subject and requester (the whole Requester NATS
// told, or none), the first throttled event of a window (SummaryWindow) is
// published at once, as any event; the window's further throttled events
// are only counted, into one summary event published once the window has
// ended: the fields of the first of them (its request_id is the first
// request counted), with Count (the throttled requests it stands for,
// itself included) and Until (the receipt of the last), and no reply key:
// the requests it stands for may each have named another. Its requester is
// every one's, so a flood is never recorded as another requester's. Nothing
// is lost: the Counts (1 for an event without one) add up to the throttled
// requests. Every other outcome is an event of its own.

// Summary defaults.
const (
	// DefaultSummaryWindow is the window of a subject's throttled events
	// (per requester).
	DefaultSummaryWindow = time.Second
	// DefaultMaxSummaries bounds the windows open (subject and requester):
	// past it a throttled event of another is published on its own (and
	// counted in cloudbridge_audit_summaries_full_total).
	DefaultMaxSummaries = 4096
)

// windowKey names a window: an audit subject and the requester, all it
// holds (a zero one, none, is its own).
type windowKey struct {
	subject   string
	requester events.Requester
	told      bool
}

// keyOf is the window of ev on subject.
func keyOf(subject string, ev *events.AuditEvent) windowKey {
	k := windowKey{subject: subject}
	if ev.Requester != nil {
		k.requester, k.told = *ev.Requester, true
	}
	return k
}

// window is a subject's (and requester's) summary window: open until ends; sum is the summary
// of the throttled events counted in it, nil while there is none.
type window struct {
	ends time.Time
	sum  *events.AuditEvent
}

// throttledOutcome is the outcome summarised.
const throttledOutcome = string(events.CodeThrottled)

// summarise takes a throttled event: false when it is to be published at
// once (the first of its subject's window, or past the bound of windows),
// with due, the summary of the subject's window that ended before it, if
// any, to be published first; true when it was counted into the summary of
// its subject's open window. Called under p.mu's read lock.
func (p *Publisher) summarise(subject string, ev *events.AuditEvent) (counted bool, due *events.AuditEvent) {
	now := time.Now()
	p.sumMu.Lock()
	defer p.sumMu.Unlock()
	key := keyOf(subject, ev)
	w := p.windows[key]
	switch {
	case w != nil && now.Before(w.ends):
		if w.sum == nil {
			s := *ev
			// One request's reply key would not be every one's.
			s.Sealed, s.ReplyKey = false, ""
			s.Count = 1
			until := ev.Time
			s.Until = &until
			w.sum = &s
			return true, nil
		}
		w.sum.Count++
		if ev.Time.After(*w.sum.Until) {
			*w.sum.Until = ev.Time
		}
		return true, nil
	case w != nil:
		// Its window ended and the sweep has not taken it yet: its
		// summary goes first, and this event opens the next window.
		due, w.sum = w.sum, nil
		w.ends = now.Add(p.cfg.SummaryWindow)
	case len(p.windows) < p.cfg.MaxSummaries:
		p.windows[key] = &window{ends: now.Add(p.cfg.SummaryWindow)}
	default:
		p.sumFull.Inc()
		p.logTooMany.Warn().Str("subject", subject).Int("windows", len(p.windows)).
			Msg("audit: too many subjects and requesters with throttled requests to summarise: event published on its own")
	}
	return false, due
}

// takeSummaries removes the windows ended at now (every window when all) and
// returns the summaries they hold.
func (p *Publisher) takeSummaries(now time.Time, all bool) []item {
	p.sumMu.Lock()
	defer p.sumMu.Unlock()
	var out []item
	for key, w := range p.windows {
		if !all && now.Before(w.ends) {
			continue
		}
		if w.sum != nil {
			out = append(out, item{subject: key.subject, ev: w.sum})
		}
		delete(p.windows, key)
	}
	return out
}

// Pending is the number of summary windows open, for tests.
func (p *Publisher) Pending() int {
	p.sumMu.Lock()
	defer p.sumMu.Unlock()
	return len(p.windows)
}

// sweep publishes the summaries of the windows that ended, a few times a
// window, until Stop (which publishes the rest): one goroutine for all the
// subjects.
func (p *Publisher) sweep() {
	t := time.NewTicker(max(p.cfg.SummaryWindow/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stopping:
			return
		case now := <-t.C:
			p.mu.RLock()
			if !p.closed { // else Stop takes them
				for _, it := range p.takeSummaries(now, false) {
					p.enqueue(it)
				}
			}
			p.mu.RUnlock()
		}
	}
}

// enqueue puts it in the buffer without waiting (a full buffer is counted);
// called under p.mu's read lock with the publisher open.
func (p *Publisher) enqueue(it item) {
	select {
	case p.ch <- it:
	default:
		p.full.Add(standsFor(it.ev))
		p.logFull.Warn().Str("subject", it.subject).Msg("audit buffer full: event dropped")
		release(it.ev)
	}
}
