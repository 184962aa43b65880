package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/bus"
)

type exportCmd struct {
	Put exportPutCmd `cmd:"" help:"Create or replace an export block from a JSON file (or - for stdin)."`
	Get exportGetCmd `cmd:"" help:"Show an export block."`
	Ls  exportLsCmd  `cmd:"" aliases:"list" help:"List export blocks."`
	Rm  exportRmCmd  `cmd:"" aliases:"delete" help:"Delete an export block (its durable consumer goes too)."`
}

type exportPutCmd struct {
	File string `short:"f" required:"" help:"JSON file with the export block, or - for stdin." placeholder:"FILE"`
}

func (c *exportPutCmd) Run(e *env) error {
	x, err := readJSON(e, c.File, events.MaxRequestSize)
	if err != nil {
		return err
	}
	var out events.Export
	if err := e.f.request(e, events.ResourceExports, events.VerbPut, x, &out); err != nil {
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "export %s stored (%s via %s)\n", out.Name, sinkName(out), out.Connection)
	return nil
}

func sinkName(x events.Export) string {
	if x.CloudLogging != nil {
		return "cloud_logging " + x.CloudLogging.Project + "/" + x.CloudLogging.LogID
	}
	if x.CloudWatch != nil {
		return "cloudwatch " + x.CloudWatch.LogGroup
	}
	if x.S3 != nil {
		prefix := x.S3.Prefix
		if prefix == "" {
			prefix = events.DefaultS3Prefix
		}
		return "s3 " + x.S3.Bucket + "/" + prefix
	}
	if name, _ := x.Sink(); name != "" {
		return name // a sink kind added without its line here
	}
	return "-"
}

type exportGetCmd struct {
	Name string `arg:"" help:"Export name."`
}

// exportShown is an export block with its health (admin.exports.status),
// as export get and export ls print it; status is absent when no worker
// runs the block (or none answered).
type exportShown struct {
	events.Export
	Status *events.ExportStatus `json:"status,omitempty"`
}

// exportStatus asks for the health of one block (name) or all; a failure
// leaves it out: the blocks are still shown.
func (f *clientFlags) exportStatus(e *env, name string) map[string]*events.ExportStatus {
	var out events.ExportStatusList
	if err := f.request(e, events.ResourceExports, events.VerbStatus, events.ExportStatusRequest{Name: name}, &out); err != nil {
		return nil
	}
	m := make(map[string]*events.ExportStatus, len(out.Exports))
	for i := range out.Exports {
		m[out.Exports[i].Export] = &out.Exports[i]
	}
	return m
}

func (c *exportGetCmd) Run(e *env) error {
	var out events.Export
	if err := e.f.request(e, events.ResourceExports, events.VerbGet, events.NameRequest{Name: c.Name}, &out); err != nil {
		return err
	}
	return e.f.show(e, exportShown{Export: out, Status: e.f.exportStatus(e, c.Name)[c.Name]})
}

type exportLsCmd struct {
}

func (c *exportLsCmd) Run(e *env) error {
	var out events.ExportList
	if err := e.f.request(e, events.ResourceExports, events.VerbList, events.Empty{}, &out); err != nil {
		return err
	}
	var status map[string]*events.ExportStatus
	if len(out.Exports) > 0 {
		status = e.f.exportStatus(e, "")
	}
	if e.f.JSON {
		shown := struct {
			Exports []exportShown `json:"exports"`
		}{Exports: []exportShown{}}
		for _, x := range out.Exports {
			shown.Exports = append(shown.Exports, exportShown{Export: x, Status: status[x.Name]})
		}
		return printJSON(e.stdout, shown)
	}
	rows := [][]string{}
	for _, x := range out.Exports {
		row := []string{x.Name, x.Connection, strings.Join(x.Subjects, ","), orDash(x.MinLevel), sinkName(x)}
		rows = append(rows, append(row, healthColumns(status[x.Name])...))
	}
	return printTable(e.stdout, "exports", []string{"NAME", "CONNECTION", "SUBJECTS", "MIN LEVEL", "SINK",
		"LAG", "LAST DELIVERY", "RETRIES", "DEAD", "LAST ERROR"}, rows)
}

// healthColumns are the health columns of export ls.
func healthColumns(st *events.ExportStatus) []string {
	if st == nil {
		return []string{"-", "-", "-", "-", "not running"}
	}
	last := "never"
	if st.LastDelivery != nil {
		last = st.LastDelivery.UTC().Format(time.RFC3339)
	}
	lastErr := "-"
	if le := st.LastError; le != nil {
		lastErr = le.Time.UTC().Format(time.RFC3339) + " " + le.Message
		if le.Cause != "" {
			lastErr += " (cause: " + le.Cause + ")"
		}
	}
	return []string{strconv.FormatUint(st.Lag, 10), last, strconv.FormatUint(st.Retries, 10), strconv.FormatUint(st.DeadLetters, 10), lastErr}
}

type exportRmCmd struct {
	Name string `arg:"" help:"Export name."`
}

func (c *exportRmCmd) Run(e *env) error {
	if err := e.f.request(e, events.ResourceExports, events.VerbDelete, events.NameRequest{Name: c.Name}, nil); err != nil {
		return err
	}
	return e.f.done(e, "export %s deleted", c.Name)
}

type logsCmd struct {
	Send logsSendCmd `cmd:"" help:"Publish log events to a subject (a convenience publisher): one message, or one per line of stdin with -."`
}

type logsSendCmd struct {
	Subject string `arg:"" help:"Subject, e.g. logs.app.web."`
	Message string `arg:"" help:"The event (JSON or text), or - to send each line of stdin as one event."`
}

func (c *logsSendCmd) Run(e *env) error {
	if err := events.CheckSubjectFilter("subject", c.Subject); err != nil || strings.ContainsAny(c.Subject, "*>") {
		return usageError{fmt.Errorf("subject %q: want a literal subject such as logs.app.web", c.Subject)}
	}
	// $ subjects are NATS's own (the JetStream API, KV buckets, services):
	// never a log subject, and a publish there acts ($KV.<bucket>.<key>
	// writes a KV record, $JS.API.STREAM.DELETE.<s> deletes a stream).
	if strings.HasPrefix(c.Subject, "$") {
		return usageError{fmt.Errorf("subject %q: a NATS system subject ($JS, $KV, $SRV, ...), not a log subject; nothing was sent", c.Subject)}
	}
	// The service's own subjects (default prefix) and reply inboxes are
	// answered or read by someone: a publish there is a request to a
	// worker (an admin verb, a forged audit event) or a forged reply.
	if service := events.DefaultPrefix + "." + events.Version + "."; strings.HasPrefix(c.Subject, service) || strings.HasPrefix(c.Subject, "_INBOX.") ||
		(e.f.InboxPrefix != "" && strings.HasPrefix(c.Subject, e.f.InboxPrefix+".")) {
		return usageError{fmt.Errorf("subject %q: a cloudbridge service subject or a reply inbox, not a log subject (log subjects are the workers' --logs-subjects, default logs.>); nothing was sent", c.Subject)}
	}
	nc, _, err := e.f.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	// Before anything is published, check that the acks can come back: with
	// an inbox the user may not subscribe to, the event would be stored while
	// the CLI waits for an ack that never arrives and reports a failure.
	if err := checkInbox(nc); err != nil {
		return e.f.explainInbox(err)
	}
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	n := 0
	var stream string
	send := func(b []byte) error {
		ctx, cancel := e.f.context(e.ctx)
		defer cancel()
		ack, err := js.PublishMsg(&nats.Msg{Subject: c.Subject, Data: b}, nats.Context(ctx))
		if err != nil {
			return c.failed(e, ctx, err, n)
		}
		stream = ack.Stream
		n++
		return nil
	}
	if c.Message == "-" {
		err = eachLine(e.stdin, send)
	} else {
		err = send([]byte(c.Message))
	}
	if err != nil {
		if n > 0 && !e.f.JSON {
			fmt.Fprintf(e.stdout, "%d event(s) stored on %s before the failure\n", n, c.Subject)
		}
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, map[string]any{"subject": c.Subject, "stream": stream, "stored": n})
	}
	fmt.Fprintf(e.stdout, "%d event(s) stored on %s\n", n, c.Subject)
	return nil
}

// failed explains a publish that got no ack. Only a missed deadline leaves it
// open whether the event was stored; every other failure means it was not.
func (c *logsSendCmd) failed(e *env, ctx context.Context, err error, stored int) error {
	if werr := e.f.explain(ctx, err); werr != err {
		return werr // a permissions violation: the server dropped the event
	}
	switch {
	case errors.Is(err, nats.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return events.Errorf(events.CodeNotFound, "no JetStream stream captures %s, so the event was not stored (serve captures --logs-subjects, default logs.>)", c.Subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return events.Errorf(events.CodeTimeout, "no ack from JetStream for %s within %s: the event may or may not be stored", c.Subject, e.f.Timeout)
	}
	if errors.Is(err, nats.ErrInvalidJSAck) {
		// Something that is not JetStream answered: a service's request
		// subject (it received the message and acted on it), not a stream.
		return events.Errorf(events.CodeBadRequest, "%s is answered by a service, not captured by a JetStream stream: the message went to that service and was not stored as a log event (log subjects are the workers' --logs-subjects, default logs.>)", c.Subject)
	}
	var apiErr *nats.APIError
	if errors.As(err, &apiErr) {
		return events.Errorf(events.CodeUnavailable, "JetStream refused the event on %s (not stored): %s", c.Subject, apiErr.Description)
	}
	return events.Errorf(events.CodeUnavailable, "publishing to %s: %v", c.Subject, err)
}

// checkInbox subscribes to a reply inbox and waits for the server's answer:
// a subscribe permissions violation arrives before the flush's PONG.
func checkInbox(nc *nats.Conn) error {
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return err
	}
	return nil
}

func (f *clientFlags) explainInbox(err error) error {
	if errors.Is(err, nats.ErrPermissionViolation) {
		return events.Errorf(events.CodeForbidden, "NATS at %s refused: %s; nothing was sent (a user limited to other inboxes needs --inbox-prefix, e.g. --inbox-prefix _INBOX_logs)",
			bus.RedactURL(f.url), strings.TrimPrefix(err.Error(), nats.ErrPermissionViolation.Error()+": "))
	}
	return events.Errorf(events.CodeUnavailable, "NATS at %s: %v", bus.RedactURL(f.url), err)
}
