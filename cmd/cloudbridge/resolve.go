package main

import (
	"context"
	"fmt"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
)

type resolveCmd struct {
	Group   string   `arg:"" help:"Group to resolve as: one of the connection's groups."`
	Conn    string   `arg:"" help:"Connection name."`
	Secret  string   `arg:"" help:"Secret name, ARN or resource name."`
	Keys    []string `help:"Only these keys of the credentials (comma-separated; default: all)."`
	Fresh   bool     `help:"Bypass the worker's cache."`
	Version string   `help:"Version: AWS stage or version id, GCP version number or alias (default: the current one)."`
}

func (c *resolveCmd) Run(e *env) error {
	var out *events.ResolveReply
	err := e.f.with(e, func(ctx context.Context, client *events.Client) (err error) {
		out, err = client.Resolve(ctx, c.Group, c.Conn, events.ResolveRequest{Secret: c.Secret, Keys: c.Keys, Fresh: c.Fresh, Version: c.Version})
		return err
	})
	if err != nil {
		return err
	}
	return e.f.show(e, out)
}

type tokenCmd struct {
	Group    string        `arg:"" help:"Group to ask as: one of the connection's groups."`
	Conn     string        `arg:"" help:"Connection name."`
	Scopes   []string      `help:"OAuth scopes (GCP; comma-separated; default: cloud-platform)."`
	Duration time.Duration `help:"Requested lifetime, e.g. 1h (default: the provider's)."`
}

func (c *tokenCmd) Run(e *env) error {
	if c.Duration < 0 {
		return usageError{fmt.Errorf("--duration %s: not negative", c.Duration)}
	}
	var out *events.TokenReply
	err := e.f.with(e, func(ctx context.Context, client *events.Client) (err error) {
		out, err = client.Token(ctx, c.Group, c.Conn, events.TokenRequest{Scopes: c.Scopes, Duration: events.Duration(c.Duration)})
		return err
	})
	if err != nil {
		return err
	}
	return e.f.show(e, out)
}

type invalidateCmd struct {
	Conn   string `arg:"" help:"Connection name."`
	Secret string `arg:"" optional:"" help:"Only this secret (default: every cached secret of the connection)."`
}

func (c *invalidateCmd) Run(e *env) error {
	req := events.InvalidateRequest{Connection: c.Conn, Secret: c.Secret}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := e.f.with(e, func(ctx context.Context, client *events.Client) error {
		// The broadcast itself cannot tell an unknown connection: ask the
		// registry first, so a typo fails with not_found.
		if err := client.Request(ctx, client.Subjects().Admin(events.ResourceConnections, events.VerbGet), events.NameRequest{Name: c.Conn}, nil); err != nil {
			return err
		}
		return client.Request(ctx, client.Subjects().Invalidate(), req, nil)
	}); err != nil {
		return err
	}
	if c.Secret != "" {
		// Not an error when no worker had it cached (nothing to drop), nor
		// for a secret the provider does not hold: that cannot be told
		// without calling it, and dropping nothing is harmless.
		return e.f.done(e, "secret %s of %s dropped from every worker's cache (nothing to drop where it was not cached)", c.Secret, c.Conn)
	}
	return e.f.done(e, "cache entries of %s dropped on every worker", c.Conn)
}

type adminCmd struct {
	Rekey rekeyCmd `cmd:"" help:"Re-seal every stored connection and secret under the workers' current master key (start workers with the new --master-key-file and the old one as --previous-master-key-file first)."`
}

type rekeyCmd struct {
}

func (c *rekeyCmd) Run(e *env) error {
	var out events.RekeyReply
	if err := e.f.with(e, func(ctx context.Context, client *events.Client) error {
		return client.Request(ctx, client.Subjects().AdminRekey(), events.Empty{}, &out)
	}); err != nil {
		return err
	}
	if e.f.JSON {
		if err := printJSON(e.stdout, out); err != nil {
			return err
		}
	} else if len(out.Failed) == 0 {
		fmt.Fprintf(e.stdout, "re-sealed %d records; every record is now sealed under key %s\n", out.Resealed, out.Current)
	} else {
		fmt.Fprintf(e.stdout, "re-sealed %d records under key %s; %d could not be opened and were left as they are:\n", out.Resealed, out.Current, len(out.Failed))
		for _, name := range out.Failed {
			fmt.Fprintf(e.stdout, "  %s\n", name)
		}
	}
	if len(out.Failed) > 0 {
		return fmt.Errorf("rekey incomplete: %d records not re-sealed (put them again or delete them, then rekey again)", len(out.Failed))
	}
	return nil
}
