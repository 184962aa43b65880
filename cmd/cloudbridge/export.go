package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
)

type exportCmd struct {
	Put exportPutCmd `cmd:"" help:"Create or replace an export block from a JSON file (or - for stdin)."`
	Get exportGetCmd `cmd:"" help:"Show an export block."`
	Ls  exportLsCmd  `cmd:"" aliases:"list" help:"List export blocks."`
	Rm  exportRmCmd  `cmd:"" aliases:"delete" help:"Delete an export block (its durable consumer goes too)."`
}

type exportPutCmd struct {
	clientFlags
	File string `short:"f" required:"" help:"JSON file with the export block, or - for stdin." placeholder:"FILE"`
}

func (c *exportPutCmd) Run(e *env) error {
	body, err := readInput(e, c.File, events.MaxRequestSize)
	if err != nil {
		return err
	}
	var x json.RawMessage
	if err := json.Unmarshal(body, &x); err != nil {
		return usageError{fmt.Errorf("%s: not JSON: %w", c.File, err)}
	}
	var out events.Export
	if err := c.request(e, events.ResourceExports, events.VerbPut, x, &out); err != nil {
		return err
	}
	if c.JSON {
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
	return "-"
}

type exportGetCmd struct {
	clientFlags
	Name string `arg:"" help:"Export name."`
}

func (c *exportGetCmd) Run(e *env) error {
	var out events.Export
	if err := c.request(e, events.ResourceExports, events.VerbGet, events.NameRequest{Name: c.Name}, &out); err != nil {
		return err
	}
	return printJSON(e.stdout, out)
}

type exportLsCmd struct {
	clientFlags
}

func (c *exportLsCmd) Run(e *env) error {
	var out events.ExportList
	if err := c.request(e, events.ResourceExports, events.VerbList, events.Empty{}, &out); err != nil {
		return err
	}
	if c.JSON {
		return printJSON(e.stdout, out)
	}
	rows := [][]string{}
	for _, x := range out.Exports {
		rows = append(rows, []string{x.Name, x.Connection, strings.Join(x.Subjects, ","), orDash(x.MinLevel), sinkName(x)})
	}
	return printTable(e.stdout, []string{"NAME", "CONNECTION", "SUBJECTS", "MIN LEVEL", "SINK"}, rows)
}

type exportRmCmd struct {
	clientFlags
	Name string `arg:"" help:"Export name."`
}

func (c *exportRmCmd) Run(e *env) error {
	if err := c.request(e, events.ResourceExports, events.VerbDelete, events.NameRequest{Name: c.Name}, nil); err != nil {
		return err
	}
	return c.done(e, "export %s deleted", c.Name)
}

type logsCmd struct {
	Send logsSendCmd `cmd:"" help:"Publish log events to a subject (a convenience publisher): one message, or one per line of stdin with -."`
}

type logsSendCmd struct {
	clientFlags
	Subject string `arg:"" help:"Subject, e.g. logs.app.web."`
	Message string `arg:"" help:"The event (JSON or text), or - to send each line of stdin as one event."`
}

func (c *logsSendCmd) Run(e *env) error {
	if err := events.CheckSubjectFilter("subject", c.Subject); err != nil || strings.ContainsAny(c.Subject, "*>") {
		return usageError{fmt.Errorf("subject %q: want a literal subject such as logs.app.web", c.Subject)}
	}
	nc, _, err := c.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	n := 0
	send := func(b []byte) error {
		ctx, cancel := c.context(e.ctx)
		defer cancel()
		if _, err := js.PublishMsg(&nats.Msg{Subject: c.Subject, Data: b}, nats.Context(ctx)); err != nil {
			return events.Errorf(events.CodeUnavailable, "publishing to %s: %v (is the subject captured by the CLOUDBRIDGE_LOGS stream?)", c.Subject, err)
		}
		n++
		return nil
	}
	if c.Message == "-" {
		if err := eachLine(e.stdin, send); err != nil {
			return err
		}
	} else if err := send([]byte(c.Message)); err != nil {
		return err
	}
	if !c.JSON {
		fmt.Fprintf(e.stdout, "%d event(s) stored on %s\n", n, c.Subject)
	}
	return nil
}
