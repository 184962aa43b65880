package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/internal/version"
)

// cli is the command line: serve, and the verbs that talk to workers over NATS.
// The global flags (clientFlags) are accepted before or after the verb.
type cli struct {
	clientFlags `embed:""`

	Serve      serveCmd      `cmd:"" help:"Run a worker. Without --nats-url it starts an embedded NATS server with JetStream (data in --data-dir)."`
	Conn       connCmd       `cmd:"" help:"Manage connections: put, get, ls, rm, test."`
	Secret     secretCmd     `cmd:"" help:"Manage secrets of the built-in store: put, ls, rm."`
	Export     exportCmd     `cmd:"" help:"Manage log export blocks: put, get, ls, rm."`
	Dead       deadCmd       `cmd:"" help:"Dead letters of an export: ls, show, replay, purge."`
	Resolve    resolveCmd    `cmd:"" help:"Resolve a secret through a connection, as a group."`
	Token      tokenCmd      `cmd:"" help:"Get short-lived cloud credentials through a connection, as a group."`
	Invalidate invalidateCmd `cmd:"" help:"Drop cached values of a connection (or one secret) on every worker."`
	Admin      adminCmd      `cmd:"" help:"Administrative operations: rekey."`
	Logs       logsCmd       `cmd:"" help:"Log pipeline helpers: send."`
	Audit      auditCmd      `cmd:"" help:"Audit events: tail, fingerprint."`
	Health     healthCmd     `cmd:"" help:"Probe a worker's /readyz (for container health checks): exit 0 when ready, 1 otherwise."`
	VersionCmd versionCmd    `cmd:"" name:"version" help:"Print the version."`
}

// clientFlags are the global flags: how to reach NATS, and output.
type clientFlags struct {
	config.NATS `embed:""`
	JSON        bool          `name:"json" help:"Print JSON for scripts (the wire's shape) instead of tables."`
	Timeout     time.Duration `name:"timeout" env:"CLOUDBRIDGE_TIMEOUT" default:"10s" help:"How long the CLI waits for a reply (not serve's --request-timeout)."`
	InboxPrefix string        `name:"inbox-prefix" env:"CLOUDBRIDGE_INBOX_PREFIX" help:"Prefix of the reply subjects (inboxes), e.g. _INBOX_logs for a NATS user that may only subscribe to _INBOX_logs.>. Default _INBOX." placeholder:"PREFIX"`

	url   string     // the URL connected to
	async chan error // permission violations reported by the server
}

// env is what a verb runs with.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	f      *clientFlags
}

// connect opens a NATS connection for a CLI verb and returns a client.
func (f *clientFlags) connect() (*nats.Conn, *events.Client, error) {
	if err := f.NATS.Validate(); err != nil {
		return nil, nil, usageError{err}
	}
	if f.InboxPrefix != "" {
		if err := events.CheckSubjectFilter("--inbox-prefix", f.InboxPrefix); err != nil || strings.ContainsAny(f.InboxPrefix, "*>") {
			return nil, nil, usageError{fmt.Errorf("--inbox-prefix %q: want a literal subject prefix such as _INBOX_logs", f.InboxPrefix)}
		}
	}
	f.url = f.CLIURL(os.Getenv)
	auth, err := f.Auth().Options()
	if err != nil {
		return nil, nil, usageError{err}
	}
	f.async = make(chan error, 1)
	opts := append(auth, nats.Name("cloudbridge-cli"), nats.Timeout(5*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case f.async <- err:
				default:
				}
			}
		}))
	if f.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(f.InboxPrefix))
	}
	nc, err := nats.Connect(f.url, opts...)
	switch {
	case err == nil:
	case isAuthError(err):
		return nil, nil, events.Errorf(events.CodeUnauthorized, "NATS at %s refused the credentials (%v): check --nats-user/--nats-password, --nats-token, --nats-nkey or --nats-creds", bus.RedactURL(f.url), err)
	default:
		return nil, nil, events.Errorf(events.CodeUnavailable, "connecting to NATS at %s: %v (start a worker with 'cloudbridge serve', or point --nats-url, CLOUDBRIDGE_NATS_URL or NATS_URL at your NATS)", bus.RedactURL(f.url), err)
	}
	return nc, events.NewClient(nc, f.Prefix), nil
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

// context bounds a verb by --timeout, and ends it at once when the server
// reports a permissions violation (which it does asynchronously).
func (f *clientFlags) context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancelT := context.WithTimeout(parent, f.Timeout)
	ctx, cancelC := context.WithCancelCause(ctx)
	async := f.async
	go func() {
		select {
		case err := <-async:
			cancelC(err)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancelC(nil); cancelT() }
}

// explain turns what a verb's request ran into into the error reported: a
// permissions violation reported while it waited is forbidden, and "no
// worker answers" names the NATS it asked.
func (f *clientFlags) explain(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); errors.Is(cause, nats.ErrPermissionViolation) {
		return events.Errorf(events.CodeForbidden, "NATS at %s refused: %s (the NATS user lacks the permission)",
			bus.RedactURL(f.url), strings.TrimPrefix(cause.Error(), nats.ErrPermissionViolation.Error()+": "))
	}
	// Only "no worker answers" gets the hint: an unavailable reply of a
	// worker (a cloud down, a record under an unknown key) came through NATS.
	var we *events.Error
	if errors.As(err, &we) && we.Code == events.CodeUnavailable && errors.Is(err, nats.ErrNoResponders) {
		return events.Errorf(events.CodeUnavailable, "%s at NATS %s (start one with 'cloudbridge serve', or point --nats-url, CLOUDBRIDGE_NATS_URL or NATS_URL at the NATS your workers use)", we.Message, bus.RedactURL(f.url))
	}
	return err
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

cloudbridge --version (or: cloudbridge version) prints the version; cloudbridge help [COMMAND] is --help.
Every serve flag, every global flag but --json, and health --http-addr have an environment twin
CLOUDBRIDGE_<FLAG>, e.g. --nats-url and CLOUDBRIDGE_NATS_URL (--help shows it); the other verbs' own
flags (--keys, --reason, ...) have none.
Exit codes: ` + events.ExitCodesHelp() + "."

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "Usage: cloudbridge <command> [flags]\n\nRun 'cloudbridge --help' for the commands, 'cloudbridge <command> --help' for one of them.")
		return 2
	}
	for i, a := range args { // --version before any verb (resolve has a --version of the secret)
		if a == "--version" {
			if len(args) == 1 {
				fmt.Fprintf(stdout, "cloudbridge %s\n", version.WithGo())
				return 0
			}
			// With more arguments it is the verb version, which refuses
			// the ones it does not take ("--version extra").
			args = append(append([]string{"version"}, args[:i]...), args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") {
			break
		}
	}
	if args[0] == "help" { // cloudbridge help [command...] is --help
		args = append(append([]string{}, args[1:]...), "--help")
	}
	var c cli
	exit := -1
	vars := kong.Vars{}
	for k, v := range config.Vars() {
		vars[k] = v
	}
	parser, err := kong.New(&c,
		kong.Name("cloudbridge"),
		kong.Description(cliDescription),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exit = code; panic(exitPanic{}) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Help(printHelp),
		vars,
	)
	if err != nil {
		fmt.Fprintf(stderr, "cloudbridge: %v\n", err)
		return 1
	}
	kctx, err := parseArgs(parser, args, &exit)
	if exit >= 0 {
		return exit
	}
	if err == nil {
		err = checkGlobals(kctx)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cloudbridge: %s\n", usageText(err))
		fmt.Fprintf(stderr, "%s\n", usageHint(args, kctx, err))
		return 2
	}
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, f: &c.clientFlags}
	if err := kctx.Run(e); err != nil {
		return report(stderr, err)
	}
	return 0
}

// missingValue matches kong's error for a flag given last without its value
// ("--file: expected string value but got "EOL" (<EOL>)").
var missingValue = regexp.MustCompile(`^(--?[A-Za-z0-9-]+): expected [^:]* but got "EOL" \(<EOL>\)$`)

// usageText is a parse error as printed: a flag missing its value is named
// plainly instead of with kong's tokens.
func usageText(err error) string {
	msg := err.Error()
	if m := missingValue.FindStringSubmatch(msg); m != nil {
		return m[1] + ": expected a value"
	}
	return msg
}

// usageHint is the line printed after a parse error.
func usageHint(args []string, kctx *kong.Context, err error) string {
	var verb []string
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil {
		kctx = pe.Context
	}
	if kctx != nil {
		for _, w := range strings.Fields(kctx.Command()) {
			if !strings.HasPrefix(w, "<") {
				verb = append(verb, w)
			}
		}
	}
	cmd := strings.Join(verb, " ")
	if (cmd == "conn put" || cmd == "export put") && strings.Contains(err.Error(), "unexpected argument") {
		file := "FILE"
		for i, a := range args {
			if i > 0 && args[i-1] == "put" && !strings.HasPrefix(a, "-") {
				file = a
			}
		}
		return fmt.Sprintf("Give the file with -f: cloudbridge %s -f %s (or -f - for stdin).", cmd, file)
	}
	if cmd != "" {
		return fmt.Sprintf("Run 'cloudbridge %s --help' for its usage, 'cloudbridge --help' for the commands.", cmd)
	}
	return "Run 'cloudbridge --help' for the commands."
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
