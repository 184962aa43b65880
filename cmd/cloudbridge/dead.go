package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cloudbridge/cloudbridge/events"
)

type deadCmd struct {
	Ls     deadLsCmd     `cmd:"" aliases:"list" help:"List the dead letters of an export (oldest first)."`
	Show   deadShowCmd   `cmd:"" help:"Show one dead letter, its payload decoded."`
	Replay deadReplayCmd `cmd:"" help:"Republish dead letters' original events to their subjects (each once) and remove them."`
	Purge  deadPurgeCmd  `cmd:"" help:"Remove dead letters without replaying them."`
}

// deadFilter selects dead letters.
type deadFilter struct {
	Export string `arg:"" help:"Export name (see export ls)."`
	Reason string `name:"reason" help:"Only dead letters with this reason: too_large, too_old, expired, invalid, rejected, undeliverable (default: any)."`
	Since  string `name:"since" help:"Only dead letters written since: a time (RFC 3339, e.g. 2026-12-01T10:00:00Z) or a duration ago (e.g. 1h); default: all." placeholder:"T"`
}

func (d deadFilter) query() (events.DeadQuery, error) {
	q := events.DeadQuery{Export: d.Export, Reason: d.Reason}
	if d.Since != "" {
		if t, err := time.Parse(time.RFC3339Nano, d.Since); err == nil {
			q.Since = &t
		} else if ago, err := time.ParseDuration(d.Since); err == nil && ago >= 0 {
			t := time.Now().Add(-ago).UTC()
			q.Since = &t
		} else {
			return q, usageError{fmt.Errorf("--since %q: want an RFC 3339 time or a duration such as 1h", d.Since)}
		}
	}
	return q, q.Validate()
}

type deadLsCmd struct{ deadFilter }

func (c *deadLsCmd) Run(e *env) error {
	q, err := c.query()
	if err != nil {
		return err
	}
	var out events.DeadList
	if err := e.f.request(e, events.ResourceDead, events.VerbList, q, &out); err != nil {
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, out)
	}
	rows := make([][]string, 0, len(out.DeadLetters))
	for _, d := range out.DeadLetters {
		rows = append(rows, []string{strconv.FormatUint(d.Seq, 10), d.Time.Format(time.RFC3339), d.Subject, d.Reason, strconv.Itoa(d.Size), orDash(d.Detail)})
	}
	if err := printTable(e.stdout, "dead letters of "+q.Export, []string{"SEQ", "TIME", "SUBJECT", "REASON", "BYTES", "DETAIL"}, rows); err != nil {
		return err
	}
	if out.Truncated {
		fmt.Fprintf(e.stderr, "(only the first %d shown; narrow with --reason or --since)\n", len(rows))
	}
	return nil
}

type deadShowCmd struct {
	Export string `arg:"" help:"Export name (see export ls)."`
	Seq    uint64 `arg:"" help:"The event's sequence in the log stream (SEQ of dead ls)."`
}

func (c *deadShowCmd) Run(e *env) error {
	ref := events.DeadRef{Export: c.Export, Seq: c.Seq}
	if err := ref.Validate(); err != nil {
		return err
	}
	var out events.DeadLetter
	if err := e.f.request(e, events.ResourceDead, events.VerbGet, ref, &out); err != nil {
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, out)
	}
	payload := string(out.Payload)
	if !utf8.Valid(out.Payload) {
		payload = fmt.Sprintf("(%d bytes of binary; --json shows them in base64)", len(out.Payload))
	}
	rows := [][]string{
		{"export", out.Export}, {"seq", strconv.FormatUint(out.Seq, 10)}, {"subject", out.Subject},
		{"reason", out.Reason}, {"detail", orDash(out.Detail)}, {"time", out.Time.Format(time.RFC3339Nano)},
	}
	if err := printTable(e.stdout, "fields", []string{"FIELD", "VALUE"}, rows); err != nil {
		return err
	}
	_, err := fmt.Fprintf(e.stdout, "\npayload:\n%s\n", payload)
	return err
}

type deadReplayCmd struct{ deadFilter }

func (c *deadReplayCmd) Run(e *env) error {
	return runDeadBatch(e, c.deadFilter, events.VerbReplay, "replayed")
}

type deadPurgeCmd struct{ deadFilter }

func (c *deadPurgeCmd) Run(e *env) error {
	return runDeadBatch(e, c.deadFilter, events.VerbPurge, "removed")
}

// runDeadBatch asks for replay or purge until the worker reports no more.
func runDeadBatch(e *env, filter deadFilter, verb, done string) error {
	q, err := filter.query()
	if err != nil {
		return err
	}
	total := events.DeadResult{Export: q.Export}
	err = e.f.with(e, func(ctx context.Context, client *events.Client) error {
		for {
			var out events.DeadResult
			if err := client.Request(ctx, client.Subjects().AdminDead(verb), q, &out); err != nil {
				return err
			}
			total.Count += out.Count
			if !out.More || out.Count == 0 {
				return nil
			}
		}
	})
	if err != nil {
		if total.Count > 0 {
			fmt.Fprintf(e.stderr, "%s %d dead letter(s) of %s before the failure\n", done, total.Count, q.Export)
		}
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, total)
	}
	_, err = fmt.Fprintf(e.stdout, "%s %d dead letter(s) of %s\n", done, total.Count, q.Export)
	return err
}
