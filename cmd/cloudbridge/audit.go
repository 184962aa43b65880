package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
)

type auditCmd struct {
	Tail        auditTailCmd        `cmd:"" help:"Follow the audit stream: one line per request (resolve, test, token, invalidate, admin)."`
	Fingerprint auditFingerprintCmd `cmd:"" help:"Print the fingerprint of a secret's current value, as audit events carry it (computed by a worker: the CLI never needs the master key)."`
}

type auditTailCmd struct {
	Group string `name:"group" help:"Only events of this group (default: any)."`
	Conn  string `name:"conn" help:"Only events of this connection (default: any)."`
	Op    string `name:"op" enum:"resolve,test,token,invalidate,admin," default:"" help:"Only events of this operation: resolve, test, token, invalidate or admin (default: any)."`
	All   bool   `name:"all" help:"Start with the oldest stored event instead of the next one."`
	Last  int    `name:"last" default:"0" help:"Start with the last N stored events that match the filters (0: only new ones, unless --all)."`
	Count int    `name:"count" default:"0" help:"Stop after N events (0: follow until interrupted)."`
}

// filter is the subject the tail consumes: the audit subjects narrowed by
// what the flags fix.
func (c *auditTailCmd) filter(s events.Subjects) string {
	if c.Op == events.OpAdmin {
		return s.AuditAdmin(">")
	}
	if c.Op == "" && c.Group == "" && c.Conn == "" {
		return s.AuditWildcard()
	}
	if c.Op == "" && c.Group == "" {
		// Admin events of the connection too: filtered below.
		return s.AuditWildcard()
	}
	star := func(v string) string {
		if v == "" {
			return "*"
		}
		return v
	}
	return s.Audit(star(c.Op), star(c.Group), star(c.Conn))
}

func (c *auditTailCmd) matches(ev events.AuditEvent) bool {
	return (c.Op == "" || ev.Op == c.Op) && (c.Group == "" || ev.Group == c.Group) && (c.Conn == "" || ev.Connection == c.Conn)
}

func (c *auditTailCmd) Run(e *env) error {
	for _, f := range []struct{ name, v string }{{"--group", c.Group}, {"--conn", c.Conn}} {
		if f.v != "" && !events.ValidName(f.v) {
			return usageError{fmt.Errorf("%s %q: not a valid name (want %s)", f.name, f.v, events.NamePattern)}
		}
	}
	if c.Last < 0 || c.Count < 0 {
		return usageError{fmt.Errorf("--last and --count: not negative")}
	}
	if c.All && c.Last > 0 {
		return usageError{fmt.Errorf("--all and --last %d: give one (--all starts with the oldest event, --last N with the last N)", c.Last)}
	}
	nc, client, err := e.f.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	s := client.Subjects()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{c.filter(s)}, DeliverPolicy: jetstream.DeliverNewPolicy}
	octx, cancel := e.f.context(e.ctx)
	stream, err := js.Stream(octx, s.AuditStream())
	if err == nil && c.Last > 0 && !c.All {
		var info *jetstream.StreamInfo
		if info, err = stream.Info(octx); err == nil {
			var start uint64
			if start, err = c.lastStart(octx, stream, cfg.FilterSubjects[0], info.State); err == nil {
				cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
			}
		}
	}
	if c.All {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	var cons jetstream.Consumer
	if err == nil {
		cons, err = stream.OrderedConsumer(octx, cfg)
	}
	err = e.f.explain(octx, err)
	cancel()
	if err != nil {
		return events.Wrap(events.CodeUnavailable, err, "reading the audit stream %s", s.AuditStream())
	}
	if !e.f.JSON {
		fmt.Fprintf(e.stdout, "%-24s  %-16s  %-12s  %-16s  %-20s  %-11s  %8s  %-12s  %s\n",
			"TIME", "OP", "GROUP", "CONN", "SECRET", "OUTCOME", "MS", "FINGERPRINT", "REQUEST")
	}
	seen := 0
	for c.Count == 0 || seen < c.Count {
		if e.ctx.Err() != nil {
			return nil
		}
		mctx, mcancel := context.WithTimeout(e.ctx, time.Second)
		msgs, err := cons.Fetch(64, jetstream.FetchContext(mctx))
		if err != nil {
			mcancel()
			continue
		}
		for m := range msgs.Messages() {
			var ev events.AuditEvent
			if json.Unmarshal(m.Data(), &ev) != nil || !c.matches(ev) {
				continue
			}
			seen++
			if e.f.JSON {
				b, _ := events.Marshal(ev)
				fmt.Fprintf(e.stdout, "%s\n", b)
			} else {
				what := ev.Op
				if ev.Verb != "" {
					what = ev.Verb
				}
				fmt.Fprintf(e.stdout, "%-24s  %-16s  %-12s  %-16s  %-20s  %-11s  %8.2f  %-12s  %s\n",
					ev.Time.Format("2006-01-02T15:04:05.000Z"), what, orDash(ev.Group), orDash(ev.Connection),
					orDash(clip(ev.Secret, 20)), outcomeCell(ev), ev.LatencyMS, orDash(clip(ev.Fingerprint, 12)), ev.RequestID)
			}
			if c.Count > 0 && seen >= c.Count {
				break
			}
		}
		mcancel()
	}
	return nil
}

// outcomeCell is the OUTCOME column of ev: a summary of throttled
// refusals shows how many requests it stands for, "throttled(999)".
func outcomeCell(ev events.AuditEvent) string {
	if ev.Count > 1 {
		return fmt.Sprintf("%s(%d)", ev.Outcome, ev.Count)
	}
	return ev.Outcome
}

// lastStart is the stream sequence from which the tail shows the last
// c.Last events that match its flags (not the last c.Last of the stream,
// which may hold none of them): it reads the stream backwards, in windows
// each twice the one before, counting the matches. With fewer matches
// stored it is the first sequence; with none stored, the next one.
func (c *auditTailCmd) lastStart(ctx context.Context, stream jetstream.Stream, filter string, st jetstream.StreamState) (uint64, error) {
	if st.Msgs == 0 || st.LastSeq < st.FirstSeq {
		return st.LastSeq + 1, nil
	}
	need, window, end := c.Last, uint64(256), st.LastSeq
	for {
		from := st.FirstSeq
		if end-st.FirstSeq+1 > window {
			from = end - window + 1
		}
		seqs, err := c.matchesIn(ctx, stream, filter, from, end)
		if err != nil {
			return 0, err
		}
		if len(seqs) >= need {
			return seqs[len(seqs)-need], nil
		}
		need -= len(seqs)
		if from == st.FirstSeq {
			if need == c.Last {
				return st.LastSeq + 1, nil // none matches: only new ones
			}
			return st.FirstSeq, nil
		}
		end, window = from-1, window*2
	}
}

// matchesIn lists the sequences in [from, end] of the events that match.
func (c *auditTailCmd) matchesIn(ctx context.Context, stream jetstream.Stream, filter string, from, end uint64) ([]uint64, error) {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			seq := meta.Sequence.Stream
			if seq > end {
				return seqs, nil
			}
			var ev events.AuditEvent
			if json.Unmarshal(m.Data(), &ev) == nil && c.matches(ev) {
				seqs = append(seqs, seq)
			}
			if seq == end || meta.NumPending == 0 {
				return seqs, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 {
			return seqs, nil // nothing stored past from matches the filter
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-1], "") + "…"
}

type auditFingerprintCmd struct {
	Conn    string `arg:"" help:"Connection name."`
	Secret  string `arg:"" help:"Secret name."`
	Version string `name:"version" help:"A version of the secret (default: the current one)."`
}

func (c *auditFingerprintCmd) Run(e *env) error {
	req := events.FingerprintRequest{Connection: c.Conn, Secret: c.Secret, Version: c.Version}
	if err := req.Validate(); err != nil {
		return err
	}
	var out events.FingerprintReply
	if err := e.f.request(e, events.ResourceAudit, events.VerbFingerprint, req, &out); err != nil {
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, out)
	}
	_, err := fmt.Fprintln(e.stdout, out.Fingerprint)
	return err
}
