package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/cloudbridge/cloudbridge/internal/config"
)

// globals are groups of the global flags (clientFlags). They are accepted
// before or after the verb, but a verb's --help lists only the groups it
// uses, and a flag of another group given on the command line is a usage
// error (its env twin is ignored: one environment may serve worker and CLI).
type globals uint8

const (
	gNATS    globals = 1 << iota // --nats-url, --nats-user, …: how to reach NATS
	gPrefix                      // --prefix: the subjects' prefix
	gJSON                        // --json
	gTimeout                     // --timeout: how long the CLI waits
	gInbox                       // --inbox-prefix: the CLI's reply subjects

	gClient = gNATS | gPrefix | gJSON | gTimeout | gInbox // a verb that asks workers over NATS
)

// globalsUser is a verb that uses fewer global flags than gClient.
type globalsUser interface{ usesGlobals() globals }

func (*serveCmd) usesGlobals() globals    { return gNATS | gPrefix }
func (*healthCmd) usesGlobals() globals   { return gJSON | gTimeout }
func (*versionCmd) usesGlobals() globals  { return gJSON }
func (*logsSendCmd) usesGlobals() globals { return gNATS | gJSON | gTimeout | gInbox }

// groupOf is the group of a global flag (0: not one, e.g. --help).
func groupOf(name string) globals {
	switch {
	case strings.HasPrefix(name, "nats-"):
		return gNATS
	case name == "prefix":
		return gPrefix
	case name == "json":
		return gJSON
	case name == "timeout":
		return gTimeout
	case name == "inbox-prefix":
		return gInbox
	}
	return 0
}

// usedBy is what a command node uses: a verb's own declaration (gClient by
// default), a group of verbs the union of its verbs'.
func usedBy(n *kong.Node) globals {
	if len(n.Children) == 0 {
		if n.Target.IsValid() && n.Target.CanAddr() {
			if u, ok := n.Target.Addr().Interface().(globalsUser); ok {
				return u.usesGlobals()
			}
		}
		return gClient
	}
	var g globals
	for _, c := range n.Children {
		if c.Type == kong.CommandNode {
			g |= usedBy(c)
		}
	}
	return g
}

// selectedCommand is the command a parse (or --help) reached, or the root.
func selectedCommand(ctx *kong.Context) *kong.Node {
	for i := len(ctx.Path) - 1; i >= 0; i-- {
		if c := ctx.Path[i].Command; c != nil {
			return c
		}
	}
	return ctx.Model.Node
}

// natsURLHelp is --nats-url's help as the verb sees it.
func natsURLHelp(n *kong.Node) string {
	switch {
	case n.Parent == nil: // cloudbridge --help: both
		return ""
	case n.Name == "serve":
		return "NATS server URL(s) to join, comma-separated. Without it serve starts an embedded NATS server (--listen, --data-dir). NATS_URL is not read."
	}
	return "NATS server URL(s) of the workers, comma-separated. Default: CLOUDBRIDGE_NATS_URL, else NATS_URL, else " + config.DefaultCLIURL + "."
}

// printHelp is kong's help with the global flags the command does not use
// left out.
func printHelp(opts kong.HelpOptions, ctx *kong.Context) error {
	n := selectedCommand(ctx)
	used := usedBy(n)
	for _, f := range ctx.Model.Flags {
		if g := groupOf(f.Name); g != 0 && used&g == 0 {
			f.Hidden = true
		}
		if f.Name == "nats-url" {
			if h := natsURLHelp(n); h != "" {
				f.Help = h
			}
		}
	}
	return kong.DefaultHelpPrinter(opts, ctx)
}

// checkGlobals refuses a global flag, given on the command line, that the
// verb does not use.
func checkGlobals(kctx *kong.Context) error {
	n := selectedCommand(kctx)
	used := usedBy(n)
	for _, el := range kctx.Path {
		if el.Flag == nil {
			continue
		}
		if g := groupOf(el.Flag.Name); g != 0 && used&g == 0 {
			return notUsed(verbPath(n), el.Flag.Name)
		}
	}
	// A zero or negative --timeout (or CLOUDBRIDGE_TIMEOUT) would end every
	// request before it is sent, reported as a timeout of the workers.
	if used&gTimeout != 0 {
		for _, f := range kctx.Model.Flags {
			if f.Name != "timeout" || !f.Target.IsValid() {
				continue
			}
			if v, ok := f.Target.Interface().(time.Duration); ok && v <= 0 {
				return fmt.Errorf("--timeout %s: want a positive duration, e.g. 10s", v)
			}
		}
	}
	return nil
}

// verbPath is a command's words after cloudbridge, e.g. "logs send".
func verbPath(n *kong.Node) string {
	var path []string
	for ; n != nil && n.Parent != nil; n = n.Parent {
		path = append([]string{n.Name}, path...)
	}
	return strings.Join(path, " ")
}

func notUsed(cmd, flag string) error {
	why := ""
	switch {
	case cmd == "serve" && flag == "timeout":
		why = ": it is how long a CLI verb waits for a reply; a worker's deadline of one request is --request-timeout, of shutdown --shutdown-timeout"
	case cmd == "serve" && flag == "json":
		why = ": it makes CLI verbs print JSON; serve prints logs, in the format of --log-format (json or console)"
	case cmd == "serve" && flag == "inbox-prefix":
		why = ": it is the prefix of the CLI's reply subjects"
	case cmd == "health":
		why = ": health probes the worker's --http-addr over HTTP, not NATS"
	case cmd == "logs send" && flag == "prefix":
		why = ": logs send publishes to SUBJECT as given"
	}
	return fmt.Errorf("%s does not take --%s%s", cmd, flag, why)
}
