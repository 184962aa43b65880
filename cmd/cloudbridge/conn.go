package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/cloudbridge/cloudbridge/events"
)

type connCmd struct {
	Put  connPutCmd  `cmd:"" help:"Create or replace a connection from a JSON file (or - for stdin). Fields shown as [redacted] keep their stored value."`
	Get  connGetCmd  `cmd:"" help:"Show a connection, sensitive fields redacted."`
	Ls   connLsCmd   `cmd:"" aliases:"list" help:"List connections."`
	Rm   connRmCmd   `cmd:"" aliases:"delete" help:"Delete a connection and its built-in secrets."`
	Test connTestCmd `cmd:"" help:"Check a connection: credentials, identity, and optionally a secret and its keys."`
}

type connPutCmd struct {
	File string `short:"f" required:"" help:"JSON file with the connection object, or - for stdin." placeholder:"FILE"`
}

func (c *connPutCmd) Run(e *env) error {
	conn, err := readJSON(e, c.File, events.MaxRequestSize)
	if err != nil {
		return err
	}
	var out events.Connection
	if err := e.f.request(e, events.ResourceConnections, events.VerbPut, conn, &out); err != nil {
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "connection %s stored (provider %s, groups %s)\n", out.Name, out.Provider, strings.Join(out.Groups, ","))
	if len(out.Secrets) == 0 {
		fmt.Fprintln(e.stderr, "warning: the connection has no secrets allowlist, so it allows no secret; add \"secrets\": [\"*\"] to allow any")
	}
	return nil
}

// request sends an admin request and decodes the reply.
func (f *clientFlags) request(e *env, resource, verb string, req, out any) error {
	return f.with(e, func(ctx context.Context, client *events.Client) error {
		return client.Request(ctx, client.Subjects().Admin(resource, verb), req, out)
	})
}

// with connects, runs fn with a client under the --timeout deadline, and closes.
func (f *clientFlags) with(e *env, fn func(ctx context.Context, client *events.Client) error) error {
	nc, client, err := f.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := f.context(e.ctx)
	defer cancel()
	return f.explain(ctx, fn(ctx, client))
}

type connGetCmd struct {
	Name string `arg:"" help:"Connection name."`
}

func (c *connGetCmd) Run(e *env) error {
	var out events.Connection
	if err := e.f.request(e, events.ResourceConnections, events.VerbGet, events.NameRequest{Name: c.Name}, &out); err != nil {
		return err
	}
	return e.f.show(e, out)
}

type connLsCmd struct {
}

func (c *connLsCmd) Run(e *env) error {
	var out events.ConnectionList
	if err := e.f.request(e, events.ResourceConnections, events.VerbList, events.Empty{}, &out); err != nil {
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, out)
	}
	rows := make([][]string, 0, len(out.Connections))
	for _, x := range out.Connections {
		rows = append(rows, []string{x.Name, x.Provider, strings.Join(x.Groups, ","), orDash(strings.Join(x.Secrets, ",")), events.Duration(x.TTL()).String()})
	}
	return printTable(e.stdout, "connections", []string{"NAME", "PROVIDER", "GROUPS", "SECRETS", "CACHE TTL"}, rows)
}

type connRmCmd struct {
	Name string `arg:"" help:"Connection name."`
}

func (c *connRmCmd) Run(e *env) error {
	if err := e.f.request(e, events.ResourceConnections, events.VerbDelete, events.NameRequest{Name: c.Name}, nil); err != nil {
		return err
	}
	return e.f.done(e, "connection %s deleted", c.Name)
}

type connTestCmd struct {
	Group  string   `arg:"" help:"Group to test as: one of the connection's groups."`
	Name   string   `arg:"" name:"conn" help:"Connection name."`
	Secret string   `help:"Also read this secret (default: credentials and identity only)."`
	Keys   []string `help:"Keys the secret must have (comma-separated; default: none checked)."`
}

func (c *connTestCmd) Run(e *env) error {
	var out *events.TestReply
	err := e.f.with(e, func(ctx context.Context, client *events.Client) (err error) {
		out, err = client.Test(ctx, c.Group, c.Name, events.TestRequest{Secret: c.Secret, Keys: c.Keys})
		return err
	})
	if err != nil {
		return err
	}
	if e.f.JSON {
		if err := printJSON(e.stdout, out); err != nil {
			return err
		}
	} else {
		rows := [][]string{}
		for _, s := range out.Steps {
			status, detail := "ok", s.Detail
			if !s.OK {
				status = "FAIL"
				if s.Error != nil {
					detail = string(s.Error.Code) + ": " + s.Error.Message
				}
			}
			rows = append(rows, []string{s.Name, status, detail})
		}
		if err := printTable(e.stdout, "steps", []string{"STEP", "RESULT", "DETAIL"}, rows); err != nil {
			return err
		}
	}
	if !out.OK {
		return errTestFailed
	}
	return nil
}

var errTestFailed = fmt.Errorf("test failed")
