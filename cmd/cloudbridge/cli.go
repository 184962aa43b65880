package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/config"
)

// cli is the command line: serve, and the verbs that talk to workers over NATS.
type cli struct {
	Serve      serveCmd      `cmd:"" help:"Run a worker. Without --nats-url it starts an embedded NATS server with JetStream (data in --data-dir)."`
	Conn       connCmd       `cmd:"" help:"Manage connections: put, get, ls, rm, test."`
	Secret     secretCmd     `cmd:"" help:"Manage secrets of the built-in store: put, ls, rm."`
	Export     exportCmd     `cmd:"" help:"Manage log export blocks: put, get, ls, rm."`
	Resolve    resolveCmd    `cmd:"" help:"Resolve a secret through a connection, as a group."`
	Token      tokenCmd      `cmd:"" help:"Get short-lived cloud credentials through a connection, as a group."`
	Invalidate invalidateCmd `cmd:"" help:"Drop cached values of a connection (or one secret) on every worker."`
	Admin      adminCmd      `cmd:"" help:"Administrative operations: rekey."`
	Logs       logsCmd       `cmd:"" help:"Log pipeline helpers: send."`
}

// clientFlags are the flags of every verb that talks to a worker.
type clientFlags struct {
	config.NATS `embed:""`
	JSON        bool          `name:"json" help:"Print JSON for scripts instead of tables."`
	Timeout     time.Duration `name:"timeout" env:"CLOUDBRIDGE_TIMEOUT" default:"10s" help:"How long to wait for a reply."`
}

// env is what a verb runs with.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// connect opens a NATS connection for a CLI verb and returns a client.
func (f *clientFlags) connect() (*nats.Conn, *events.Client, error) {
	if err := f.NATS.Validate(); err != nil {
		return nil, nil, usageError{err}
	}
	url := f.URL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	auth, err := f.Auth().Options()
	if err != nil {
		return nil, nil, usageError{err}
	}
	nc, err := nats.Connect(url, append(auth, nats.Name("cloudbridge-cli"), nats.Timeout(5*time.Second))...)
	if err != nil {
		return nil, nil, events.Errorf(events.CodeUnavailable, "connecting to NATS at %s: %v (start a worker with 'cloudbridge serve', or pass --nats-url)", url, err)
	}
	return nc, events.NewClient(nc, f.Prefix), nil
}

func (f *clientFlags) context(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, f.Timeout)
}

// usageError is a mistake in the command line.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// cliDescription is the top of --help; its exit codes come from the error
// table of package events.
var cliDescription = `cloudbridge resolves data-connection credentials from AWS Secrets Manager, Google Secret
Manager or its own encrypted store, vends short-lived cloud credentials, and exports log
streams to CloudWatch Logs and Google Cloud Logging, as a service on NATS.

Every flag has an environment twin CLOUDBRIDGE_<FLAG>, e.g. --nats-url and CLOUDBRIDGE_NATS_URL.
Exit codes: ` + events.ExitCodesHelp() + "."

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var c cli
	exit := -1
	parser, err := kong.New(&c,
		kong.Name("cloudbridge"),
		kong.Description(cliDescription),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exit = code; panic(exitPanic{}) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintf(stderr, "cloudbridge: %v\n", err)
		return 1
	}
	kctx, err := parseArgs(parser, args, &exit)
	if exit >= 0 {
		return exit
	}
	if err != nil {
		fmt.Fprintf(stderr, "cloudbridge: %v\n", err)
		return 2
	}
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	if err := kctx.Run(e); err != nil {
		return report(stderr, err)
	}
	return 0
}

type exitPanic struct{}

// parseArgs parses, turning kong's exit (after --help) into a return.
func parseArgs(p *kong.Kong, args []string, exit *int) (kctx *kong.Context, err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(exitPanic); !ok {
				panic(r)
			}
		}
	}()
	return p.Parse(args)
}

// report prints an error and returns the exit code.
func report(stderr io.Writer, err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "cloudbridge: %v\n", err)
		return 2
	}
	var we *events.Error
	if errors.As(err, &we) {
		fmt.Fprintf(stderr, "cloudbridge: %s: %s\n", we.Code, err.Error())
		return we.Code.ExitCode()
	}
	fmt.Fprintf(stderr, "cloudbridge: %v\n", err)
	return 1
}
